//! Waiting for a lock to change hands without sleeping a whole poll period
//! (SPEC 5 step 4). On Linux a waiter wakes when the lock path is removed or
//! replaced (inotify on the directory), when the file's last writer closes it
//! (the owner died or released: inotify on the file), or when the recorded
//! owner process exits (a pidfd). Elsewhere it checks the kernel lock at a
//! short interval. Whatever happens, the wait ends at the poll interval.

use std::time::Duration;

use crate::registry::Cancel;

/// What one acquire waits with. On Linux the inotify instance is made at
/// the first wait only, since an uncontended acquire never waits, and it is
/// closed off the acquire's path: closing an inotify instance can take the
/// kernel several milliseconds.
pub struct Waiter {
  #[cfg(target_os = "linux")]
  watcher: Option<linux::Watcher>,
  #[cfg(target_os = "linux")]
  paths: (String, String, String),
}

impl Waiter {
  pub fn new(dir: &str, lock_name: &str, lock_path: &str) -> Waiter {
    #[cfg(not(target_os = "linux"))]
    let _ = (dir, lock_name, lock_path);
    Waiter {
      #[cfg(target_os = "linux")]
      watcher: None,
      #[cfg(target_os = "linux")]
      paths: (dir.to_string(), lock_name.to_string(), lock_path.to_string()),
    }
  }

  /// Waits until `changed` says the judged file changed hands, the owner
  /// process exits, `pause` ends or the acquire is cancelled.
  pub async fn wait(
    &mut self,
    pause: Duration,
    owner: Option<u32>,
    cancel: &Cancel,
    changed: impl Fn() -> bool,
  ) {
    #[cfg(target_os = "linux")]
    {
      if self.watcher.is_none() {
        let (dir, name, path) = &self.paths;
        self.watcher = linux::Watcher::new(dir, name, path);
      }
      if let Some(watcher) = &self.watcher {
        watcher.watch_file();
        // Checked after arming the watch, so a change in between is not missed.
        if changed() {
          return;
        }
        return watcher.wait(pause, owner, cancel).await;
      }
    }
    let _ = owner;
    poll_until(pause, cancel, changed).await
  }
}

#[cfg(target_os = "linux")]
impl Drop for Waiter {
  fn drop(&mut self) {
    if let (Some(watcher), Ok(runtime)) =
      (self.watcher.take(), tokio::runtime::Handle::try_current())
    {
      runtime.spawn_blocking(move || drop(watcher));
    }
  }
}

#[cfg(target_os = "linux")]
mod linux {
  use std::ffi::CString;
  use std::io;
  use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
  use std::time::Duration;

  use tokio::io::unix::AsyncFd;

  use crate::registry::Cancel;

  const DIR_EVENTS: u32 = libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;
  const FILE_EVENTS: u32 = libc::IN_CLOSE_WRITE | libc::IN_DELETE_SELF | libc::IN_ATTRIB;

  /// An inotify instance watching the lock directory, and the lock file when
  /// one is being waited on.
  pub struct Watcher {
    inotify: AsyncFd<OwnedFd>,
    dir_wd: i32,
    lock_name: Vec<u8>,
    lock_path: CString,
  }

  impl Watcher {
    /// `None` when inotify is not available (no descriptors, a limit of
    /// watches): the waiter then polls.
    pub fn new(dir: &str, lock_name: &str, lock_path: &str) -> Option<Watcher> {
      // SAFETY: plain syscall; the fd is owned below.
      let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
      if fd < 0 {
        return None;
      }
      // SAFETY: fd was just returned and is owned by nobody else.
      let owned = unsafe { OwnedFd::from_raw_fd(fd) };
      let c_dir = CString::new(dir).ok()?;
      // SAFETY: c_dir is NUL-terminated.
      let dir_wd = unsafe { libc::inotify_add_watch(fd, c_dir.as_ptr(), DIR_EVENTS) };
      if dir_wd < 0 {
        return None;
      }
      Some(Watcher {
        inotify: register(owned)?,
        dir_wd,
        lock_name: lock_name.as_bytes().to_vec(),
        lock_path: CString::new(lock_path).ok()?,
      })
    }

    /// Starts watching the file now at the lock path. Called before the
    /// caller's final check, so a close that happens after it is not missed.
    pub fn watch_file(&self) {
      let fd = self.inotify.get_ref().as_raw_fd();
      // SAFETY: lock_path is NUL-terminated; IN_DONT_FOLLOW never follows a link.
      unsafe {
        libc::inotify_add_watch(fd, self.lock_path.as_ptr(), FILE_EVENTS | libc::IN_DONT_FOLLOW)
      };
    }

    /// Waits for a relevant event, the owner's exit, the end of `pause`, or
    /// a cancellation.
    pub async fn wait(&self, pause: Duration, owner: Option<u32>, cancel: &Cancel) {
      let pidfd = owner.and_then(open_pidfd);
      let exited = async {
        match &pidfd {
          Some(fd) => {
            let _ = fd.readable().await;
          }
          None => std::future::pending::<()>().await,
        }
      };
      tokio::select! {
        _ = self.next_relevant() => {}
        _ = exited => {}
        _ = tokio::time::sleep(pause) => {}
        _ = cancel.notify.notified() => {}
      }
    }

    async fn next_relevant(&self) {
      let mut buf = [0u8; 4096];
      loop {
        let Ok(mut guard) = self.inotify.readable().await else {
          return std::future::pending().await;
        };
        let read = guard.try_io(|inner| {
          let fd = inner.get_ref().as_raw_fd();
          // SAFETY: buf is valid for its length.
          let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
          if n < 0 {
            Err(io::Error::last_os_error())
          } else {
            Ok(n as usize)
          }
        });
        match read {
          Ok(Ok(n)) if self.any_relevant(&buf[..n]) => return,
          Ok(Ok(_)) | Err(_) => continue,
          Ok(Err(_)) => return std::future::pending().await,
        }
      }
    }

    /// Events on the directory concern us only for our own name; every
    /// event on the watched file does.
    fn any_relevant(&self, mut events: &[u8]) -> bool {
      const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
      let mut relevant = false;
      while events.len() >= HEADER {
        // SAFETY: the kernel writes whole events; read_unaligned copes with
        // the byte buffer's alignment.
        let event: libc::inotify_event =
          unsafe { std::ptr::read_unaligned(events.as_ptr().cast()) };
        let end = (HEADER + event.len as usize).min(events.len());
        let name = &events[HEADER..end];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let on_dir = event.wd == self.dir_wd;
        relevant |= !on_dir || name == self.lock_name.as_slice() || event.mask & DIR_SELF != 0;
        events = &events[end..];
      }
      relevant
    }
  }

  const DIR_SELF: u32 = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED;

  /// A pidfd that becomes readable when the process exits. A pid of
  /// another PID namespace or a reused pid costs at most one poll period.
  fn open_pidfd(pid: u32) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open is a plain syscall; the fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as RawFd;
    if fd < 0 {
      return None;
    }
    // SAFETY: fd was just returned and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    register(owned)
  }

  fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays valid and open until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
  }
}

/// Sleeps `pause`, checking `changed` every few milliseconds so a released
/// kernel lock is seen soon after it happens.
async fn poll_until(pause: Duration, cancel: &Cancel, changed: impl Fn() -> bool) {
  const STEP: Duration = Duration::from_millis(5);
  let deadline = tokio::time::Instant::now() + pause;
  loop {
    let now = tokio::time::Instant::now();
    if now >= deadline {
      return;
    }
    tokio::select! {
      _ = tokio::time::sleep(STEP.min(deadline - now)) => {}
      _ = cancel.notify.notified() => return,
    }
    if changed() {
      return;
    }
  }
}
