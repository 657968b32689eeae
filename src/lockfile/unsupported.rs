//! Platforms without a kernel-lock backend yet: everything fails loudly.

use std::io;

// LIMITATION: Windows has no lock-file backend yet (LockFileEx on one byte at
// offset 2^63-1 is the plan); every call rejects with ENOTSUP.
fn unsupported() -> io::Error {
  io::Error::new(
    io::ErrorKind::Unsupported,
    "gatelock has no lock-file backend on this platform",
  )
}

pub struct LockDir;
pub struct OwnedLock;
pub struct Found;

pub fn prepare_dir(_path: &str) -> Result<LockDir, crate::error::LockError> {
  Err(crate::error::LockError::os(
    "gatelock is not supported on this platform yet",
    unsupported(),
  ))
}
