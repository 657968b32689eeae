//! The addon's own tokio runtime: every file system call, `/proc` read, probe
//! and wait runs here, never on the JS thread or libuv's thread pool.

use std::io;
use std::sync::Mutex;

use tokio::runtime::{Builder, Runtime};

static RUNTIME: Mutex<Option<&'static Runtime>> = Mutex::new(None);

/// The runtime, built on first use. Building needs descriptors (epoll, an
/// eventfd); when the process has none left this fails with `EMFILE` and a
/// later call tries again, instead of panicking.
pub fn get() -> io::Result<&'static Runtime> {
  let mut slot = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
  if let Some(runtime) = *slot {
    return Ok(runtime);
  }
  let runtime = Builder::new_multi_thread()
    .worker_threads(2)
    .max_blocking_threads(4)
    .thread_name("gatelock")
    .enable_all()
    .build()?;
  // Never dropped: lock handles and watchers live as long as the process.
  let runtime: &'static Runtime = Box::leak(Box::new(runtime));
  *slot = Some(runtime);
  Ok(runtime)
}
