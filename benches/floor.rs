//! The syscall floor of an acquire + release: what the bare create, lock, link
//! and unlink sequence costs with no runtime, no JSON and no JS around it.
//! Prints `floor_ns_per_op <n>`, the median of a few timed batches.
//!
//! Usage: `cargo bench --bench floor [-- <dir>]`; the temporary directory is
//! made inside `<dir>` (default: the system temp dir), so the caller can put
//! it on the same file system as the lock directories it compares with.

// The sequence is Linux's (O_TMPFILE, /proc/self/fd); elsewhere there is no floor to measure.
#[cfg(target_os = "linux")]
mod linux {
  use std::ffi::CString;
  use std::io;
  use std::path::PathBuf;
  use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

  const WARMUP: usize = 500;
  const BATCH: usize = 1000;
  const BATCHES: usize = 15;
  /// Bounds the whole run, whatever the machine's load.
  const BUDGET: Duration = Duration::from_secs(20);
  /// About the size of a real payload, so the write is not an empty one.
  const PAYLOAD: &[u8] = concat!(
    r#"{"pid":12345,"createdAt":"2026-01-01T00:00:00.000Z","#,
    r#""configPath":"/home/user/.openclaw/openclaw.json","startTime":123456,"kernelLock":true}"#,
  )
  .as_bytes();

  fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
      let err = io::Error::last_os_error();
      Err(io::Error::new(err.kind(), format!("{what}: {err}")))
    } else {
      Ok(rc)
    }
  }

  /// One acquire + release at the syscall level.
  fn once(dir: libc::c_int, name: &CString) -> io::Result<()> {
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: "." is NUL-terminated; the fd is closed below on every path.
    let fd = check(unsafe { libc::openat(dir, c".".as_ptr(), flags, 0o600) }, "open")?;
    let result = fill_and_link(fd, dir, name);
    // SAFETY: fd is open and owned here.
    unsafe { libc::close(fd) };
    result
  }

  fn fill_and_link(fd: libc::c_int, dir: libc::c_int, name: &CString) -> io::Result<()> {
    // SAFETY: PAYLOAD is valid for its length.
    let written = unsafe { libc::write(fd, PAYLOAD.as_ptr().cast(), PAYLOAD.len()) };
    if usize::try_from(written).ok() != Some(PAYLOAD.len()) {
      return Err(io::Error::other("short write"));
    }
    // SAFETY: flock on an open fd.
    check(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) }, "flock")?;
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
    // SAFETY: both paths are NUL-terminated.
    let linked = unsafe {
      libc::linkat(libc::AT_FDCWD, proc_path.as_ptr(), dir, name.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    };
    check(linked, "linkat")?;
    // SAFETY: name is NUL-terminated.
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }, "unlink")?;
    Ok(())
  }

  pub fn scratch_dir() -> io::Result<PathBuf> {
    // cargo bench passes `--bench`; the one positional argument is the parent.
    let parent = std::env::args()
      .skip(1)
      .find(|a| !a.starts_with("--"))
      .map_or_else(std::env::temp_dir, PathBuf::from);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = parent.join(format!("gatelock-floor-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
  }

  pub fn run(dir: &std::path::Path) -> io::Result<u128> {
    let c_dir = CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL");
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: c_dir is NUL-terminated.
    let dir_fd = check(unsafe { libc::open(c_dir.as_ptr(), flags) }, "open dir")?;
    let name = CString::new("gateway.00000000.lock").expect("no NUL");
    let started = Instant::now();
    let measure = || -> io::Result<Vec<u128>> {
      for _ in 0..WARMUP {
        once(dir_fd, &name)?;
      }
      let mut per_op = Vec::with_capacity(BATCHES);
      // At least one batch, so there is always a median to print.
      while per_op.is_empty() || (per_op.len() < BATCHES && started.elapsed() < BUDGET) {
        let batch = Instant::now();
        for _ in 0..BATCH {
          once(dir_fd, &name)?;
        }
        per_op.push(batch.elapsed().as_nanos() / BATCH as u128);
      }
      Ok(per_op)
    };
    let result = measure();
    // SAFETY: dir_fd is open and owned here.
    unsafe { libc::close(dir_fd) };
    let mut per_op = result?;
    per_op.sort_unstable();
    Ok(per_op[per_op.len() / 2])
  }
}

#[cfg(target_os = "linux")]
use linux::*;

#[cfg(not(target_os = "linux"))]
fn main() {
  println!("floor_ns_per_op unavailable (Linux only)");
}

#[cfg(target_os = "linux")]
fn main() {
  let dir = match scratch_dir() {
    Ok(dir) => dir,
    Err(e) => {
      eprintln!("floor: cannot make a scratch directory: {e}");
      std::process::exit(1);
    }
  };
  let result = run(&dir);
  let _ = std::fs::remove_dir_all(&dir);
  match result {
    Ok(ns) => println!("floor_ns_per_op {ns}"),
    Err(e) => {
      eprintln!("floor: {e}");
      std::process::exit(1);
    }
  }
}
