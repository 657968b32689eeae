//! Whether a command line is an OpenClaw gateway's (reference section 4.7,
//! with the `.cmd/.exe` strip and the retitled `openclaw-gateway` process).

const ENTRY_SUFFIXES: [&str; 6] = [
  "dist/index.js",
  "dist/entry.js",
  "openclaw.mjs",
  "scripts/run-node.mjs",
  "src/index.ts",
  "src/entry.ts",
];

fn normalize(arg: &str) -> String {
  arg.trim().replace('\\', "/").to_lowercase()
}

fn strip_exe_suffix(arg: &str) -> &str {
  for ext in [".bat", ".cmd", ".exe"] {
    if let Some(stem) = arg.strip_suffix(ext) {
      return stem;
    }
  }
  arg
}

fn names_binary(first: &str, binary: &str) -> bool {
  first == binary || first.ends_with(&format!("/{binary}"))
}

/// `isGatewayArgv(args, { allowGatewayBinary: true })`.
pub fn is_gateway_argv(args: &[String]) -> bool {
  let normalized: Vec<String> = args.iter().map(|a| normalize(a)).collect();
  let Some(first) = normalized.first() else {
    return false;
  };
  let first = strip_exe_suffix(first);
  if names_binary(first, "openclaw-gateway") {
    return true;
  }
  if !normalized.iter().any(|a| a == "gateway") {
    return false;
  }
  if normalized.iter().any(|a| ENTRY_SUFFIXES.iter().any(|s| a.ends_with(s))) {
    return true;
  }
  names_binary(first, "openclaw")
}

/// `/proc/<pid>/cmdline`: NUL-separated, each entry trimmed, empty ones dropped.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn parse_proc_cmdline(bytes: &[u8]) -> Vec<String> {
  String::from_utf8_lossy(bytes)
    .split('\0')
    .map(str::trim)
    .filter(|a| !a.is_empty())
    .map(String::from)
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
  }

  #[test]
  fn reference_vectors() {
    let cases: [(&[&str], bool); 14] = [
      (&["node", "dist/index.js", "--port", "18789"], false),
      (&["NODE", "C:\\OpenClaw\\DIST\\ENTRY.JS", "gateway"], true),
      (&["bun", "/srv/openclaw/scripts/run-node.mjs", "gateway"], true),
      (&["node", "/srv/openclaw/openclaw.mjs", "gateway"], true),
      (&["tsx", "/srv/openclaw/src/entry.ts", "gateway"], true),
      (&["tsx", "/srv/openclaw/src/index.ts", "gateway"], true),
      (&["C:\\bin\\openclaw.cmd", "gateway"], true),
      (&["/usr/local/bin/openclaw-gateway", "gateway"], true),
      (&["C:\\bin\\openclaw-gateway.EXE", "gateway"], true),
      (&["openclaw-gateway"], true),
      (&["node", "/srv/openclaw/custom.js", "gateway"], false),
      (&["python", "gateway", "script.py"], false),
      (&["C:\\Users\\me\\AppData\\Roaming\\npm\\openclaw.cmd", "gateway", "run"], true),
      (&["/Applications/Safari.app/Contents/MacOS/Safari"], false),
    ];
    for (args, expected) in cases {
      assert_eq!(is_gateway_argv(&argv(args)), expected, "{args:?}");
    }
  }

  #[test]
  fn an_empty_command_line_is_not_a_gateway() {
    assert!(!is_gateway_argv(&[]));
  }

  #[test]
  fn proc_cmdline_is_split_and_trimmed() {
    let parsed = parse_proc_cmdline(b" node \0 gateway \0\0 --port \0 18789 \0");
    assert_eq!(parsed, argv(&["node", "gateway", "--port", "18789"]));
    assert!(parse_proc_cmdline(b" \0\t\0 ").is_empty());
  }
}

#[cfg(test)]
mod properties {
  use super::*;
  use proptest::prelude::*;

  proptest! {
    #[test]
    fn argv_rules_never_panic(args in proptest::collection::vec("\\PC{0,24}", 0..6)) {
      let _ = is_gateway_argv(&args);
    }

    #[test]
    fn cmdline_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
      let parsed = parse_proc_cmdline(&bytes);
      prop_assert!(parsed.iter().all(|a| !a.is_empty() && !a.contains('\0')));
    }
  }
}
