//! The lock file itself: the directory it lives in, creating it complete and
//! locked before its path exists, reading and kernel-locking a found file,
//! and removing a file only while its inode is the one that was judged.
//!
//! Every operation is relative to an open descriptor of the lock directory, so
//! a directory swapped under us cannot redirect a create or an unlink.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// Identity of a file: device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
  pub dev: u64,
  pub ino: u64,
}

/// The kind of a non-file entry found at the lock path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
  Symlink,
  Directory,
  Other,
}

/// The temporary names this crate creates next to a lock: `.gateway.<h8>.lock.<random>.tmp`.
pub fn temp_prefix(lock_name: &str) -> String {
  format!(".{lock_name}.")
}

pub fn is_temp_name(lock_name: &str, candidate: &str) -> bool {
  candidate
    .strip_prefix(&temp_prefix(lock_name))
    .and_then(|rest| rest.strip_suffix(".tmp"))
    .is_some_and(|random| !random.is_empty() && random.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A name unlikely to collide: pid, clock and a counter, mixed.
pub fn random_suffix() -> String {
  use std::sync::atomic::{AtomicU64, Ordering};
  static COUNTER: AtomicU64 = AtomicU64::new(0);
  let nanos = std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map(|d| d.as_nanos() as u64)
    .unwrap_or(0);
  let mut x = nanos ^ ((std::process::id() as u64) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
  // splitmix64 finaliser: spreads the bits so names differ in every position.
  x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
  format!("{:016x}", x ^ (x >> 31))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn temp_names_match_only_their_own_lock() {
    let lock = "gateway.0123abcd.lock";
    let name = format!("{}{}.tmp", temp_prefix(lock), random_suffix());
    assert!(is_temp_name(lock, &name));
    assert!(!is_temp_name("gateway.ffffffff.lock", &name));
    assert!(!is_temp_name(lock, ".gateway.0123abcd.lock..tmp"));
    assert!(!is_temp_name(lock, "gateway.0123abcd.lock"));
    assert!(!is_temp_name(lock, ".gateway.0123abcd.lock.x/y.tmp"));
  }
}
