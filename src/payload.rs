//! The lock file's JSON: what an owner writes, and what a contender can read
//! out of whatever bytes it finds (SPEC section 4).

use serde_json::{Map, Value};

/// What this process writes into its lock file.
pub struct OwnPayload<'a> {
  pub pid: u32,
  pub created_at: String,
  pub config_path: &'a str,
  pub port: Option<u16>,
  pub start_time: Option<u64>,
}

impl OwnPayload<'_> {
  /// Compact JSON, keys in the order the TypeScript readers' fixtures expect.
  pub fn to_bytes(&self) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("pid".into(), self.pid.into());
    map.insert("createdAt".into(), self.created_at.clone().into());
    map.insert("configPath".into(), self.config_path.into());
    if let Some(port) = self.port {
      map.insert("port".into(), port.into());
    }
    if let Some(start) = self.start_time {
      map.insert("startTime".into(), start.into());
    }
    map.insert("kernelLock".into(), true.into());
    serde_json::to_vec(&Value::Object(map)).expect("a map of plain values serialises")
  }
}

/// What a contender read from a lock file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
  /// The file was empty or not JSON: a writer may have died mid-write.
  pub torn: bool,
  /// `pid` when it is a usable owner: an integer from 1 to 2^31-1.
  pub pid: Option<u32>,
  /// `pid` as read when it is any JSON number, for the timeout message.
  pub raw_pid: Option<f64>,
  pub created_at: Option<String>,
  pub config_path: Option<String>,
  pub start_time: Option<f64>,
  pub port: Option<u16>,
  pub kernel_lock: bool,
}

impl Payload {
  pub fn parse(bytes: &[u8]) -> Payload {
    let torn = Payload { torn: true, ..Payload::default() };
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
      return torn;
    };
    let Value::Object(map) = value else {
      return Payload::default();
    };
    let raw_pid = map.get("pid").and_then(Value::as_f64);
    let pid = raw_pid.filter(|p| p.fract() == 0.0 && *p >= 1.0 && *p <= 2_147_483_647.0);
    let port = map.get("port").and_then(Value::as_f64);
    let port = port.filter(|p| p.fract() == 0.0 && (1.0..=65535.0).contains(p));
    Payload {
      torn: false,
      pid: pid.map(|p| p as u32),
      raw_pid,
      created_at: map.get("createdAt").and_then(Value::as_str).map(String::from),
      config_path: map.get("configPath").and_then(Value::as_str).map(String::from),
      start_time: map.get("startTime").and_then(Value::as_f64),
      port: port.map(|p| p as u16),
      kernel_lock: map.get("kernelLock") == Some(&Value::Bool(true)),
    }
  }

  /// Whether the payload names an owner that can be judged by pid.
  pub fn has_owner(&self) -> bool {
    self.pid.is_some()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn writes_keys_in_the_typescript_order() {
    let own = OwnPayload {
      pid: 42,
      created_at: "2026-01-01T00:00:00.000Z".into(),
      config_path: "/c/openclaw.json",
      port: Some(18789),
      start_time: Some(777),
    };
    let text = String::from_utf8(own.to_bytes()).unwrap();
    let expected = concat!(
      r#"{"pid":42,"createdAt":"2026-01-01T00:00:00.000Z","configPath":"/c/openclaw.json","#,
      r#""port":18789,"startTime":777,"kernelLock":true}"#
    );
    assert_eq!(text, expected);
  }

  #[test]
  fn reads_back_what_it_writes() {
    let own = OwnPayload {
      pid: 7,
      created_at: "x".into(),
      config_path: "/c",
      port: None,
      start_time: None,
    };
    let read = Payload::parse(&own.to_bytes());
    assert_eq!(read.pid, Some(7));
    assert!(read.kernel_lock && !read.torn);
    assert_eq!(read.port, None);
  }

  #[test]
  fn empty_and_truncated_files_are_torn() {
    assert!(Payload::parse(b"").torn);
    assert!(Payload::parse(br#"{"pid":"#).torn);
    assert!(Payload::parse(b"\xff\xfe").torn);
  }

  #[test]
  fn json_that_is_not_an_object_has_no_owner_but_is_not_torn() {
    for text in ["null", "[]", "\"x\"", "42"] {
      let read = Payload::parse(text.as_bytes());
      assert!(!read.torn && !read.has_owner(), "{text}");
    }
  }

  #[test]
  fn unusable_pids_leave_no_owner_but_keep_the_number_for_messages() {
    for (text, raw) in [("0", 0.0), ("-3", -3.0), ("1.5", 1.5), ("2147483648", 2147483648.0)] {
      let read = Payload::parse(format!(r#"{{"pid":{text}}}"#).as_bytes());
      assert_eq!(read.pid, None, "{text}");
      assert_eq!(read.raw_pid, Some(raw));
    }
    assert_eq!(Payload::parse(br#"{"pid":"12"}"#).raw_pid, None);
  }

  #[test]
  fn optional_fields_of_the_wrong_type_are_dropped() {
    let read = Payload::parse(br#"{"pid":9,"startTime":"abc","port":70000,"createdAt":5}"#);
    assert_eq!(read.pid, Some(9));
    assert_eq!((read.start_time, read.port, read.created_at), (None, None, None));
    assert!(!Payload::parse(br#"{"pid":9,"kernelLock":"yes"}"#).kernel_lock);
  }
}

#[cfg(test)]
mod properties {
  use super::*;
  use proptest::prelude::*;

  proptest! {
    /// Whatever bytes sit in a lock file, reading them never panics, and a
    /// usable pid is always in range.
    #[test]
    fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
      let read = Payload::parse(&bytes);
      prop_assert!(read.pid.is_none_or(|p| (1..=2_147_483_647).contains(&p)));
    }

    /// JSON-shaped input with arbitrary field values, the likelier garbage.
    #[test]
    fn json_with_arbitrary_fields_parses_without_panic(
      pid in prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "\"[a-z]{0,4}\"",
        Just("null".to_string()),
      ],
      start in prop_oneof![any::<f64>().prop_map(|f| format!("{f:e}")), Just("\"x\"".to_string())],
      port in any::<i32>(),
    ) {
      let text = format!(r#"{{"pid":{pid},"startTime":{start},"port":{port},"createdAt":"x"}}"#);
      let read = Payload::parse(text.as_bytes());
      prop_assert!(read.port.is_none_or(|p| p >= 1));
    }

    /// What an owner writes, a contender reads back.
    #[test]
    fn own_payload_round_trips(
      pid in 1u32..=i32::MAX as u32,
      port in proptest::option::of(1u16..),
      start in proptest::option::of(any::<u32>()),
      config in "\\PC{0,40}",
    ) {
      let created_at = crate::clock::iso(0.0);
      let start_time = start.map(u64::from);
      let own = OwnPayload { pid, created_at, config_path: &config, port, start_time };
      let read = Payload::parse(&own.to_bytes());
      prop_assert_eq!(read.pid, Some(pid));
      prop_assert_eq!(read.port, port);
      prop_assert_eq!(read.start_time, start.map(f64::from));
      prop_assert_eq!(read.config_path.as_deref(), Some(config.as_str()));
      prop_assert!(read.kernel_lock);
    }
  }
}
