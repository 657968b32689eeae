//! macOS and Windows: process queries through sysinfo.

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::StartTimes;

fn with_process<T>(pid: u32, read: impl FnOnce(&sysinfo::Process) -> Option<T>) -> Option<T> {
  let mut system = System::new().ok()?;
  let refresh = ProcessRefreshKind::nothing().with_cmd(UpdateKind::Always);
  let target = Pid::from_u32(pid);
  system.refresh_processes_specifics(ProcessesToUpdate::Some(&[target]), true, refresh);
  system.process(target).and_then(read)
}

#[cfg(unix)]
pub fn is_zombie(pid: u32) -> bool {
  with_process(pid, |p| Some(p.status() == sysinfo::ProcessStatus::Zombie)).unwrap_or(false)
}

#[cfg(windows)]
pub fn pid_state(pid: u32) -> super::PidState {
  match with_process(pid, |_| Some(())) {
    Some(()) => super::PidState::Exists,
    None => super::PidState::Missing,
  }
}

#[cfg(target_os = "macos")]
pub fn start_times(pid: u32) -> Option<StartTimes> {
  let seconds = with_process(pid, |p| Some(p.start_time()))? as f64;
  Some(StartTimes { identity: seconds, epoch_ms: Some(seconds * 1000.0) })
}

#[cfg(windows)]
pub fn start_times(pid: u32) -> Option<StartTimes> {
  let ms = windows_creation_ms(pid)?;
  Some(StartTimes { identity: ms, epoch_ms: Some(ms) })
}

#[cfg(not(any(windows, target_os = "macos")))]
pub fn start_times(_pid: u32) -> Option<StartTimes> {
  None
}

pub fn own_start_identity() -> Option<u64> {
  start_times(std::process::id()).map(|t| t.identity as u64)
}

pub fn cmdline(pid: u32) -> Option<Vec<String>> {
  let args = with_process(pid, |p| {
    Some(p.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>())
  })?;
  // An empty command line means the query could not read it (another
  // user's or an elevated process), not that the owner is no gateway.
  (!args.is_empty()).then_some(args)
}

/// The process creation time from `GetProcessTimes`, in ms since the epoch.
#[cfg(windows)]
fn windows_creation_ms(pid: u32) -> Option<f64> {
  use windows_sys::Win32::Foundation::{CloseHandle, FILETIME};
  use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
  };
  const EPOCH_DIFF_100NS: u64 = 116_444_736_000_000_000;
  let zero = FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
  let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
  // SAFETY: the handle is checked before use and closed once.
  unsafe {
    let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
    if handle.is_null() {
      return None;
    }
    let ok = GetProcessTimes(handle, &mut created, &mut exited, &mut kernel, &mut user);
    CloseHandle(handle);
    if ok == 0 {
      return None;
    }
  }
  let ticks = ((created.dwHighDateTime as u64) << 32) | created.dwLowDateTime as u64;
  Some((ticks.checked_sub(EPOCH_DIFF_100NS)? / 10_000) as f64)
}
