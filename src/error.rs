//! One error type with a stable code per failure, mapped to `GatewayLockError`
//! by the JS entry.

use std::io;

use serde_json::{json, Value};

/// Why an acquire, inspect or release did not succeed.
#[derive(Debug)]
pub enum LockError {
  /// The owner stayed alive (or unknown) until the deadline.
  Locked { owner_pid: Option<f64>, timeout_ms: u64 },
  /// An OS error, with the message that names the path it happened at.
  Os { message: String, source: io::Error },
  /// An OS-like refusal we decided ourselves (symlinked or foreign directory).
  Refused { message: String, code: &'static str, why: String },
  /// A panic or another bug inside the addon, turned into a rejection.
  Internal(String),
}

impl LockError {
  pub fn os(message: impl Into<String>, source: io::Error) -> Self {
    LockError::Os { message: message.into(), source }
  }

  pub fn dir(dir: &str, source: io::Error) -> Self {
    Self::os(format!("failed to prepare gateway lock directory at {dir}"), source)
  }

  pub fn create(lock_path: &str, source: io::Error) -> Self {
    Self::os(format!("failed to acquire gateway lock at {lock_path}"), source)
  }

  pub fn read(lock_path: &str, source: io::Error) -> Self {
    Self::os(format!("failed to read gateway lock at {lock_path}"), source)
  }

  pub fn reclaim(lock_path: &str, source: io::Error) -> Self {
    let message =
      format!("failed to remove gateway lock file (stale-owner recovery) at {lock_path}");
    Self::os(message, source)
  }

  pub fn release(lock_path: &str, source: io::Error) -> Self {
    Self::os(format!("failed to remove gateway lock file (release) at {lock_path}"), source)
  }

  pub fn message(&self) -> String {
    match self {
      LockError::Locked { owner_pid, timeout_ms } => {
        let owner = owner_pid.map(|pid| format!(" (pid {})", js_number(pid))).unwrap_or_default();
        format!("gateway already running{owner}; lock timeout after {timeout_ms}ms")
      }
      LockError::Os { message, .. } | LockError::Refused { message, .. } => message.clone(),
      LockError::Internal(why) => format!("gatelock internal error: {why}"),
    }
  }

  pub fn code(&self) -> String {
    match self {
      LockError::Locked { .. } => "ELOCKED".into(),
      LockError::Os { source, .. } => os_code(source),
      LockError::Refused { code, .. } => (*code).into(),
      LockError::Internal(_) => "EINTERNAL".into(),
    }
  }

  /// The error as the JS entry rebuilds it: message, code and the cause.
  pub fn to_json(&self) -> Value {
    let cause = match self {
      LockError::Os { source, .. } => Some(json!({
        "message": format!("{}: {}", os_code(source), source),
        "code": os_code(source),
        "errno": source.raw_os_error().map(|n| -n),
      })),
      LockError::Refused { code, why, .. } => Some(json!({ "message": why, "code": code })),
      _ => None,
    };
    json!({ "message": self.message(), "code": self.code(), "cause": cause })
  }
}

/// Formats a JSON number as JavaScript's `String(n)` does for the usual cases.
pub fn js_number(n: f64) -> String {
  if n.fract() == 0.0 && n.abs() < 1e21 {
    format!("{}", n as i128)
  } else {
    format!("{n}")
  }
}

/// The symbolic name of an OS error ("EACCES"), as Node prints it.
pub fn os_code(err: &io::Error) -> String {
  match err.raw_os_error() {
    Some(n) => errno_name(n).map(str::to_string).unwrap_or_else(|| format!("E{n}")),
    None => match err.kind() {
      io::ErrorKind::NotFound => "ENOENT".into(),
      io::ErrorKind::PermissionDenied => "EACCES".into(),
      io::ErrorKind::AlreadyExists => "EEXIST".into(),
      io::ErrorKind::TimedOut => "ETIMEDOUT".into(),
      io::ErrorKind::InvalidInput => "EINVAL".into(),
      _ => "EIO".into(),
    },
  }
}

#[cfg(unix)]
fn errno_name(n: i32) -> Option<&'static str> {
  let name = match n {
    libc::EPERM => "EPERM",
    libc::ENOENT => "ENOENT",
    libc::ESRCH => "ESRCH",
    libc::EINTR => "EINTR",
    libc::EIO => "EIO",
    libc::EBADF => "EBADF",
    libc::EAGAIN => "EAGAIN",
    libc::ENOMEM => "ENOMEM",
    libc::EACCES => "EACCES",
    libc::EBUSY => "EBUSY",
    libc::EEXIST => "EEXIST",
    libc::EXDEV => "EXDEV",
    libc::ENOTDIR => "ENOTDIR",
    libc::EISDIR => "EISDIR",
    libc::EINVAL => "EINVAL",
    libc::ENFILE => "ENFILE",
    libc::EMFILE => "EMFILE",
    libc::EFBIG => "EFBIG",
    libc::ENOSPC => "ENOSPC",
    libc::EROFS => "EROFS",
    libc::EMLINK => "EMLINK",
    libc::ENAMETOOLONG => "ENAMETOOLONG",
    libc::ENOTEMPTY => "ENOTEMPTY",
    libc::ELOOP => "ELOOP",
    libc::EDQUOT => "EDQUOT",
    libc::ENOTSUP => "ENOTSUP",
    libc::ENOLCK => "ENOLCK",
    libc::ETIMEDOUT => "ETIMEDOUT",
    libc::ECONNREFUSED => "ECONNREFUSED",
    _ => return None,
  };
  Some(name)
}

#[cfg(windows)]
fn errno_name(n: i32) -> Option<&'static str> {
  let name = match n {
    2 | 3 => "ENOENT",
    5 => "EACCES",
    32 | 33 => "EBUSY",
    80 | 183 => "EEXIST",
    112 => "ENOSPC",
    145 => "ENOTEMPTY",
    _ => return None,
  };
  Some(name)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn timeout_message_matches_the_typescript_one() {
    let err = LockError::Locked { owner_pid: Some(4242.0), timeout_ms: 800 };
    assert_eq!(err.message(), "gateway already running (pid 4242); lock timeout after 800ms");
    let err = LockError::Locked { owner_pid: None, timeout_ms: 5000 };
    assert_eq!(err.message(), "gateway already running; lock timeout after 5000ms");
    let err = LockError::Locked { owner_pid: Some(1.5), timeout_ms: 1 };
    assert!(err.message().contains("(pid 1.5)"));
  }

  #[test]
  fn os_errors_carry_their_symbolic_code() {
    let err = LockError::create("/x", io::Error::from_raw_os_error(libc::EROFS));
    assert_eq!(err.code(), "EROFS");
    assert_eq!(err.message(), "failed to acquire gateway lock at /x");
  }
}
