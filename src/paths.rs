//! Where the lock lives: the OpenClaw config path rules, driven by `env`, and
//! the `gateway.<h8>.lock` name (reference section 2).

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// What path resolution reads besides `env`: the caller's working directory
/// and `os.homedir()`, both taken by the JS entry at call time.
pub struct PathInputs<'a> {
  pub env: &'a HashMap<String, String>,
  pub cwd: &'a str,
  pub os_home: Option<&'a str>,
}

const LEGACY_STATE_DIRS: [&str; 4] = [".openclaw", ".clawdbot", ".moldbot", ".moltbot"];
const CONFIG_NAMES: [&str; 4] = ["openclaw.json", "clawdbot.json", "moldbot.json", "moltbot.json"];

/// The config path that names the lock, as the TypeScript `resolveConfigPath`
/// computes it. `exists` answers like `fs.existsSync`.
pub fn config_path(inputs: &PathInputs, exists: &dyn Fn(&str) -> bool) -> String {
  let home = home_dir(inputs);
  if let Some(explicit) = var(inputs, "OPENCLAW_CONFIG_PATH") {
    return user_path(inputs, &home, &explicit);
  }
  let state_dir = state_dir(inputs, &home, exists);

  for name in CONFIG_NAMES {
    let candidate = join(&state_dir, name);
    if exists(&candidate) {
      return candidate;
    }
  }
  if var(inputs, "OPENCLAW_STATE_DIR").is_some() {
    return join(&state_dir, "openclaw.json");
  }
  candidate_search(inputs, &home, &state_dir, exists)
}

fn candidate_search(
  inputs: &PathInputs,
  home: &str,
  state_dir: &str,
  exists: &dyn Fn(&str) -> bool,
) -> String {
  let explicit =
    var(inputs, "OPENCLAW_CONFIG_PATH").or_else(|| var(inputs, "CLAWDBOT_CONFIG_PATH"));
  let candidates: Vec<String> = match &explicit {
    Some(path) => vec![user_path(inputs, home, path)],
    None => {
      let mut dirs = Vec::new();
      if let Some(dir) =
        var(inputs, "OPENCLAW_STATE_DIR").or_else(|| var(inputs, "CLAWDBOT_STATE_DIR"))
      {
        dirs.push(user_path(inputs, home, &dir));
      }
      dirs.extend(LEGACY_STATE_DIRS.iter().map(|leaf| join(home, leaf)));
      dirs.iter().flat_map(|dir| CONFIG_NAMES.iter().map(move |name| join(dir, name))).collect()
    }
  };
  if let Some(found) = candidates.iter().find(|candidate| exists(candidate)) {
    return found.clone();
  }
  match explicit {
    Some(path) => user_path(inputs, home, &path),
    None => join(state_dir, "openclaw.json"),
  }
}

fn state_dir(inputs: &PathInputs, home: &str, exists: &dyn Fn(&str) -> bool) -> String {
  if let Some(dir) = var(inputs, "OPENCLAW_STATE_DIR").or_else(|| var(inputs, "CLAWDBOT_STATE_DIR"))
  {
    return user_path(inputs, home, &dir);
  }
  LEGACY_STATE_DIRS
    .iter()
    .map(|leaf| join(home, leaf))
    .find(|dir| exists(dir))
    .unwrap_or_else(|| join(home, ".openclaw"))
}

fn home_dir(inputs: &PathInputs) -> String {
  let fallback = || {
    var(inputs, "HOME")
      .or_else(|| var(inputs, "USERPROFILE"))
      .or_else(|| inputs.os_home.map(str::trim).filter(|h| !h.is_empty()).map(String::from))
  };
  let home = match var(inputs, "OPENCLAW_HOME") {
    Some(custom) if custom == "~" || custom.starts_with("~/") || custom.starts_with("~\\") => {
      fallback().map(|base| format!("{base}{}", &custom[1..]))
    }
    Some(custom) => Some(custom),
    None => fallback(),
  };
  resolve(inputs.cwd, home.as_deref().unwrap_or("."))
}

/// `resolveUserPath`: expands a leading `~` (alone or before a separator).
fn user_path(inputs: &PathInputs, home: &str, input: &str) -> String {
  let trimmed = input.trim();
  let tilde = trimmed == "~" || trimmed.starts_with("~/") || trimmed.starts_with("~\\");
  if tilde {
    return resolve(inputs.cwd, &format!("{home}{}", &trimmed[1..]));
  }
  resolve(inputs.cwd, trimmed)
}

/// A trimmed, non-empty variable.
fn var(inputs: &PathInputs, name: &str) -> Option<String> {
  let value = inputs.env.get(name)?.trim();
  (!value.is_empty()).then(|| value.to_string())
}

/// The lock file name for a config path: `gateway.<first 8 hex of sha256>.lock`.
pub fn lock_file_name(config_path: &str) -> String {
  format!("gateway.{}.lock", hash8(config_path))
}

pub fn hash8(config_path: &str) -> String {
  let digest = Sha256::digest(config_path.as_bytes());
  digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

pub fn join(dir: &str, leaf: &str) -> String {
  Path::new(dir).join(leaf).to_string_lossy().into_owned()
}

/// Node's `path.resolve(cwd, p)` on POSIX: absolute, normalised, no trailing slash.
#[cfg(not(windows))]
pub fn resolve(cwd: &str, p: &str) -> String {
  let joined = if p.starts_with('/') { p.to_string() } else { format!("{cwd}/{p}") };
  let mut parts: Vec<&str> = Vec::new();
  for part in joined.split('/') {
    match part {
      "" | "." => {}
      ".." => {
        parts.pop();
      }
      _ => parts.push(part),
    }
  }
  format!("/{}", parts.join("/"))
}

/// Node's `path.win32.resolve(cwd, p)` for drive-letter and UNC-free paths.
// LIMITATION: UNC paths and per-drive working directories are not modelled.
#[cfg(windows)]
pub fn resolve(cwd: &str, p: &str) -> String {
  let p = p.replace('/', "\\");
  let absolute = p.len() >= 2 && p.as_bytes()[1] == b':' && p[2..].starts_with('\\');
  let joined = if absolute {
    p
  } else if p.starts_with('\\') {
    format!("{}{}", &cwd[..2.min(cwd.len())], p)
  } else {
    format!("{cwd}\\{p}")
  };
  let (drive, rest) = joined.split_at(2.min(joined.len()));
  let mut parts: Vec<&str> = Vec::new();
  for part in rest.split('\\') {
    match part {
      "" | "." => {}
      ".." => {
        parts.pop();
      }
      _ => parts.push(part),
    }
  }
  format!("{}\\{}", drive.to_uppercase(), parts.join("\\"))
}

#[cfg(all(test, not(windows)))]
mod tests {
  use super::*;

  fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
  }

  fn resolve_with(pairs: &[(&str, &str)], existing: &[&str]) -> String {
    let env = env(pairs);
    let inputs = PathInputs { env: &env, cwd: "/work", os_home: Some("/root") };
    config_path(&inputs, &|p| existing.contains(&p))
  }

  #[test]
  fn example_a_existing_config_under_home() {
    let existing = ["/home/alice/.openclaw", "/home/alice/.openclaw/openclaw.json"];
    let config = resolve_with(&[("HOME", "/home/alice")], &existing);
    assert_eq!(config, "/home/alice/.openclaw/openclaw.json");
    assert_eq!(lock_file_name(&config), "gateway.b33b0d7f.lock");
  }

  #[test]
  fn example_b_state_dir_override_with_nothing_on_disk() {
    let config =
      resolve_with(&[("HOME", "/home/alice"), ("OPENCLAW_STATE_DIR", "/srv/oc/state")], &[]);
    assert_eq!(config, "/srv/oc/state/openclaw.json");
    assert_eq!(lock_file_name(&config), "gateway.a00b32f2.lock");
  }

  #[test]
  fn example_c_macos_home() {
    let existing = ["/Users/alice/.openclaw", "/Users/alice/.openclaw/openclaw.json"];
    let config = resolve_with(&[("HOME", "/Users/alice")], &existing);
    assert_eq!(lock_file_name(&config), "gateway.dd9c04cd.lock");
  }

  #[test]
  fn example_d_windows_config_path_hashes_with_backslashes() {
    assert_eq!(lock_file_name("C:\\Users\\me\\.openclaw\\openclaw.json"), "gateway.0dad65c1.lock");
  }

  #[test]
  fn legacy_state_dir_and_file_names_are_found() {
    let existing = ["/h/.moltbot", "/h/.moltbot/clawdbot.json"];
    assert_eq!(resolve_with(&[("HOME", "/h")], &existing), "/h/.moltbot/clawdbot.json");
  }

  #[test]
  fn clawdbot_config_path_counts_only_when_no_config_exists_in_the_state_dir() {
    let pairs = [("HOME", "/h"), ("CLAWDBOT_CONFIG_PATH", "/etc/c.json")];
    assert_eq!(resolve_with(&pairs, &[]), "/etc/c.json");
    assert_eq!(resolve_with(&pairs, &["/h/.openclaw/openclaw.json"]), "/h/.openclaw/openclaw.json");
  }

  #[test]
  fn tilde_expands_only_before_a_separator() {
    let pairs = [("HOME", "/h"), ("OPENCLAW_CONFIG_PATH", " ~/x.json ")];
    assert_eq!(resolve_with(&pairs, &[]), "/h/x.json");
    let pairs = [("HOME", "/h"), ("OPENCLAW_CONFIG_PATH", "~bob/x.json")];
    assert_eq!(resolve_with(&pairs, &[]), "/work/~bob/x.json");
  }

  #[test]
  fn openclaw_home_with_tilde_uses_home() {
    let pairs = [("HOME", "/h"), ("OPENCLAW_HOME", "~/oc")];
    assert_eq!(resolve_with(&pairs, &[]), "/h/oc/.openclaw/openclaw.json");
  }

  #[test]
  fn home_falls_back_to_userprofile_then_os_home() {
    assert_eq!(resolve_with(&[("USERPROFILE", "/u")], &[]), "/u/.openclaw/openclaw.json");
    assert_eq!(resolve_with(&[], &[]), "/root/.openclaw/openclaw.json");
  }

  #[test]
  fn relative_paths_resolve_against_the_working_directory() {
    assert_eq!(resolve("/a/b", "../c/./d/"), "/a/c/d");
    assert_eq!(resolve("/a", "/x//y/.."), "/x");
  }
}
