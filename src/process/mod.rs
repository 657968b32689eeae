//! What the operating system says about a pid: does it exist, when did it
//! start, what is its command line. Each answer may be "cannot tell" (`None`).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{cmdline, own_start_identity, start_times};

#[cfg(not(target_os = "linux"))]
mod sysinfo_backend;
#[cfg(not(target_os = "linux"))]
pub use sysinfo_backend::{cmdline, own_start_identity, start_times};

/// What `kill(pid, 0)` and the process table say about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
  /// No such process (`ESRCH`).
  Missing,
  /// It exited and waits to be reaped: it will never release anything.
  #[cfg_attr(windows, allow(dead_code))]
  Zombie,
  /// It exists; `EPERM` counts, since that is a process of another user.
  Exists,
}

/// A process's start, in two forms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartTimes {
  /// The start identity in the unit the TypeScript readers use on this OS:
  /// Linux clock ticks since boot, macOS seconds and Windows milliseconds
  /// since the epoch.
  pub identity: f64,
  /// The start as milliseconds since the epoch, for comparing with `createdAt`.
  pub epoch_ms: Option<f64>,
}

#[cfg(unix)]
pub fn pid_state(pid: u32) -> PidState {
  // SAFETY: signal 0 only checks for existence and permission.
  let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
  if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
    return PidState::Missing;
  }
  if is_zombie(pid) {
    return PidState::Zombie;
  }
  PidState::Exists
}

#[cfg(target_os = "linux")]
use linux::is_zombie;
#[cfg(all(unix, not(target_os = "linux")))]
use sysinfo_backend::is_zombie;

#[cfg(windows)]
pub use sysinfo_backend::pid_state;
