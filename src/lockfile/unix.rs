//! POSIX backend: `flock(2)` kernel locks, `O_TMPFILE` (Linux) or a named
//! temporary file linked in with `linkat`, and `*at` calls on a directory fd.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{is_temp_name, random_suffix, temp_prefix, EntryKind, FileId};
use crate::error::LockError;

/// The payload is a few hundred bytes; anything past this is not ours.
const MAX_PAYLOAD: u64 = 64 * 1024;
/// A leftover temporary file younger than this may still be in use.
const TEMP_GRACE_SECS: i64 = 2;

fn cstr(s: &str) -> io::Result<CString> {
  CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
  if rc < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(rc)
  }
}

fn errno(err: &io::Error) -> i32 {
  err.raw_os_error().unwrap_or(0)
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
  loop {
    match call() {
      Err(e) if errno(&e) == libc::EINTR => continue,
      other => return other,
    }
  }
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
  // SAFETY: an all-zero stat is a valid out-parameter, filled by fstat.
  let mut st: libc::stat = unsafe { std::mem::zeroed() };
  // SAFETY: fd is open for the duration of the call; st is a valid pointer.
  check(unsafe { libc::fstat(fd, &mut st) })?;
  Ok(st)
}

fn lstat_at(dir: RawFd, name: &str) -> io::Result<libc::stat> {
  let name = cstr(name)?;
  // SAFETY: as in fstat; AT_SYMLINK_NOFOLLOW stats the entry itself.
  let mut st: libc::stat = unsafe { std::mem::zeroed() };
  // SAFETY: name is NUL-terminated and st is a valid pointer.
  check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
  Ok(st)
}

// The field types differ between Linux and macOS; the casts are needed there.
#[allow(clippy::unnecessary_cast)]
fn id_of(st: &libc::stat) -> FileId {
  FileId { dev: st.st_dev as u64, ino: st.st_ino as u64 }
}

fn kind_of(st: &libc::stat) -> Option<EntryKind> {
  match st.st_mode & libc::S_IFMT {
    libc::S_IFREG => None,
    libc::S_IFLNK => Some(EntryKind::Symlink),
    libc::S_IFDIR => Some(EntryKind::Directory),
    _ => Some(EntryKind::Other),
  }
}

#[allow(clippy::unnecessary_cast)]
fn mtime_ms(st: &libc::stat) -> f64 {
  st.st_mtime as f64 * 1000.0 + (st.st_mtime_nsec as f64 / 1e6).floor()
}

fn open_at(dir: RawFd, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
  let name = cstr(name)?;
  // SAFETY: name is NUL-terminated; the returned fd is owned by the File.
  let fd =
    retry(|| check(unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) }))?;
  // SAFETY: fd was just returned by openat and is owned by nobody else.
  Ok(unsafe { File::from_raw_fd(fd) })
}

fn unlink_at(dir: RawFd, name: &str, flags: libc::c_int) -> io::Result<()> {
  let name = cstr(name)?;
  // SAFETY: name is NUL-terminated.
  check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(|_| ())
}

/// Non-blocking `flock`: `Ok(true)` taken, `Ok(false)` held elsewhere.
fn try_flock(fd: RawFd, op: libc::c_int) -> io::Result<bool> {
  // SAFETY: flock on an open fd has no memory effects.
  match retry(|| check(unsafe { libc::flock(fd, op | libc::LOCK_NB) })) {
    Ok(_) => Ok(true),
    Err(e) if errno(&e) == libc::EWOULDBLOCK => Ok(false),
    Err(e) => Err(e),
  }
}

/// The lock directory, held open. Owners keep a shared `flock` on it so that
/// temporary-file cleaners which honour BSD locks leave it alone.
pub struct LockDir {
  pub path: String,
  fd: OwnedFd,
}

impl LockDir {
  fn raw(&self) -> RawFd {
    self.fd.as_raw_fd()
  }

  /// Another descriptor of the same open directory (and its shared lock).
  pub fn try_clone(&self) -> io::Result<LockDir> {
    Ok(LockDir { path: self.path.clone(), fd: self.fd.try_clone()? })
  }

  /// Best effort: a cleaner holding the directory exclusively for a moment
  /// must not make an acquire fail.
  pub fn hold_shared(&self) {
    let _ = try_flock(self.raw(), libc::LOCK_SH);
  }
}

/// Creates the directory `0700` if needed, refuses a symlink or a directory of
/// another user, and tightens one of ours that is open to group or others.
pub fn prepare_dir(path: &str) -> Result<LockDir, LockError> {
  let fail = |e| LockError::dir(path, e);
  let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
  // Usually the directory exists: open it first, create it only when missing.
  let opened = match open_at(libc::AT_FDCWD, path, flags, 0) {
    Err(e) if errno(&e) == libc::ENOENT => {
      make_dir(path).map_err(fail)?;
      open_at(libc::AT_FDCWD, path, flags, 0)
    }
    other => other,
  };
  let dir = match opened {
    Ok(file) => OwnedFd::from(file),
    Err(e) if matches!(errno(&e), libc::ELOOP | libc::ENOTDIR) => {
      let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
      if is_link {
        let why = format!("EACCES: lock directory {path} is a symbolic link");
        let message = format!("failed to prepare gateway lock directory at {path}");
        return Err(LockError::Refused { message, code: "EACCES", why });
      }
      return Err(fail(e));
    }
    Err(e) => return Err(fail(e)),
  };

  let st = fstat(dir.as_raw_fd()).map_err(fail)?;
  // SAFETY: geteuid cannot fail.
  let me = unsafe { libc::geteuid() };
  if st.st_uid != me {
    let why = format!("EACCES: lock directory {path} is owned by uid {}, not {me}", st.st_uid);
    let message = format!("failed to prepare gateway lock directory at {path}");
    return Err(LockError::Refused { message, code: "EACCES", why });
  }
  if st.st_mode & 0o077 != 0 {
    // SAFETY: fchmod on an open directory fd.
    check(unsafe { libc::fchmod(dir.as_raw_fd(), 0o700) }).map_err(fail)?;
  }
  Ok(LockDir { path: path.to_string(), fd: dir })
}

/// Creates the lock directory `0700`, and its missing parents as `mkdir -p` does.
fn make_dir(path: &str) -> io::Result<()> {
  if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
    if !parent.exists() {
      std::fs::create_dir_all(parent)?;
    }
  }
  let c_path = cstr(path)?;
  // SAFETY: c_path is NUL-terminated.
  match check(unsafe { libc::mkdir(c_path.as_ptr(), 0o700) }) {
    Err(e) if errno(&e) != libc::EEXIST => Err(e),
    _ => Ok(()),
  }
}

/// A lock this process owns: the open, kernel-locked file and the directory.
pub struct OwnedLock {
  pub dir: LockDir,
  pub name: String,
  pub id: FileId,
  file: File,
}

impl OwnedLock {
  /// Whether the lock path still names this very file.
  pub fn path_is_ours(&self) -> io::Result<bool> {
    match lstat_at(self.dir.raw(), &self.name) {
      Ok(st) => Ok(id_of(&st) == self.id),
      Err(e) if errno(&e) == libc::ENOENT => Ok(false),
      Err(e) => Err(e),
    }
  }

  /// Removes the path if it still names our inode; then the kernel lock goes
  /// with the descriptor. Another process's lock at the path is left alone.
  pub fn release(self) -> io::Result<()> {
    let ours = self.path_is_ours()?;
    if ours {
      match unlink_at(self.dir.raw(), &self.name, 0) {
        Err(e) if errno(&e) != libc::ENOENT => return Err(e),
        _ => {}
      }
    }
    drop(self.file);
    Ok(())
  }
}

pub enum Created {
  Owned(OwnedLock),
  /// Something is already at the lock path.
  Exists,
}

/// Creates the lock so that its path never exists without the complete
/// payload and a held kernel lock (SPEC 5 step 2).
pub fn create(dir: &LockDir, name: &str, payload: &[u8]) -> io::Result<Created> {
  // Everything that can fail for want of a descriptor happens before the link.
  let own_dir = dir.try_clone()?;
  #[cfg(target_os = "linux")]
  match create_unnamed(dir, name, payload) {
    Ok(Some(file)) => return finish(own_dir, name, file),
    Ok(None) => {}
    Err(e) if errno(&e) == libc::EEXIST => return Ok(Created::Exists),
    Err(e) => return Err(e),
  }
  let file = match create_named(dir, name, payload) {
    Ok(Some(file)) => file,
    Ok(None) => match create_in_place(dir, name, payload)? {
      Some(file) => file,
      None => return Ok(Created::Exists),
    },
    Err(e) if errno(&e) == libc::EEXIST => return Ok(Created::Exists),
    Err(e) => return Err(e),
  };
  finish(own_dir, name, file)
}

fn finish(dir: LockDir, name: &str, file: File) -> io::Result<Created> {
  let st = fstat(file.as_raw_fd())?;
  Ok(Created::Owned(OwnedLock { dir, name: name.to_string(), id: id_of(&st), file }))
}

/// Fills a fresh private file: payload, exact mode, exclusive kernel lock.
fn fill(file: &mut File, payload: &[u8]) -> io::Result<()> {
  // Exactly 0600 whatever the umask took off.
  // SAFETY: fchmod on an open fd.
  check(unsafe { libc::fchmod(file.as_raw_fd(), 0o600) })?;
  if !try_flock(file.as_raw_fd(), libc::LOCK_EX)? {
    return Err(io::Error::from_raw_os_error(libc::EWOULDBLOCK));
  }
  retry(|| file.write_all(payload))
}

/// Linux: an unnamed `O_TMPFILE` linked in through `/proc/self/fd`. A crash
/// before the link leaves nothing behind. `Ok(None)` means "not available
/// here, use a named temporary file".
#[cfg(target_os = "linux")]
fn create_unnamed(dir: &LockDir, name: &str, payload: &[u8]) -> io::Result<Option<File>> {
  let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
  let Ok(mut file) = open_at(dir.raw(), ".", flags, 0o600) else {
    return Ok(None);
  };
  fill(&mut file, payload)?;
  let proc_path = cstr(&format!("/proc/self/fd/{}", file.as_raw_fd()))?;
  let target = cstr(name)?;
  // SAFETY: both paths are NUL-terminated; AT_SYMLINK_FOLLOW resolves the
  // magic /proc link to the unnamed inode.
  let rc = unsafe {
    libc::linkat(
      libc::AT_FDCWD,
      proc_path.as_ptr(),
      dir.raw(),
      target.as_ptr(),
      libc::AT_SYMLINK_FOLLOW,
    )
  };
  match check(rc) {
    Ok(_) => Ok(Some(file)),
    Err(e) if errno(&e) == libc::EEXIST => Err(e),
    // /proc hidden or not permitted, or a file system that refuses: fall back.
    Err(e)
      if matches!(
        errno(&e),
        libc::ENOENT | libc::EPERM | libc::EACCES | libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL
      ) =>
    {
      Ok(None)
    }
    Err(e) => Err(e),
  }
}

/// A named temporary file, locked at once, linked to the lock path, then
/// unnamed again. `Ok(None)` means the file system has no hard links.
fn create_named(dir: &LockDir, name: &str, payload: &[u8]) -> io::Result<Option<File>> {
  let temp = format!("{}{}.tmp", temp_prefix(name), random_suffix());
  let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
  let mut file = open_at(dir.raw(), &temp, flags, 0o600)?;
  let linked = fill(&mut file, payload).and_then(|_| {
    let (from, to) = (cstr(&temp)?, cstr(name)?);
    // SAFETY: both names are NUL-terminated and relative to the same dir fd.
    check(unsafe { libc::linkat(dir.raw(), from.as_ptr(), dir.raw(), to.as_ptr(), 0) })
  });
  let _ = unlink_at(dir.raw(), &temp, 0);
  match linked {
    Ok(_) => Ok(Some(file)),
    Err(e) if matches!(errno(&e), libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK) => Ok(None),
    Err(e) => Err(e),
  }
}

/// No hard links: exclusive create, kernel lock, then write. A crash between
/// create and write leaves an empty unlocked file, which contenders reclaim
/// after 2 s. `Ok(None)` means the path exists.
fn create_in_place(dir: &LockDir, name: &str, payload: &[u8]) -> io::Result<Option<File>> {
  let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
  let mut file = match open_at(dir.raw(), name, flags, 0o600) {
    Ok(file) => file,
    Err(e) if errno(&e) == libc::EEXIST => return Ok(None),
    Err(e) => return Err(e),
  };
  if let Err(e) = fill(&mut file, payload) {
    let st = fstat(file.as_raw_fd());
    let still_ours =
      st.is_ok_and(|st| lstat_at(dir.raw(), name).is_ok_and(|now| id_of(&now) == id_of(&st)));
    if still_ours {
      let _ = unlink_at(dir.raw(), name, 0);
    }
    return Err(e);
  }
  Ok(Some(file))
}

/// What a contender finds at the lock path.
pub enum Found {
  /// Gone since the failed create: try again at once.
  Vanished,
  /// Not a regular file: not a lock.
  NotAFile(EntryKind),
  File(FoundFile),
}

/// A lock file, opened; `kernel_free` means this contender now holds its
/// kernel lock, so the owner that wrote it no longer does.
pub struct FoundFile {
  pub id: FileId,
  pub bytes: Vec<u8>,
  pub mtime_ms: f64,
  pub kernel_free: bool,
  file: File,
}

/// Opens the entry at the lock path without following links and takes its
/// kernel lock if it is free. Errors other than "gone" reject the acquire:
/// an unreadable file is not evidence of a dead owner.
pub fn open_existing(dir: &LockDir, name: &str) -> io::Result<Found> {
  let flags =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
  let st = match lstat_at(dir.raw(), name) {
    Ok(st) => st,
    Err(e) if errno(&e) == libc::ENOENT => return Ok(Found::Vanished),
    Err(e) => return Err(e),
  };
  if let Some(kind) = kind_of(&st) {
    return Ok(Found::NotAFile(kind));
  }
  let mut file = match open_at(dir.raw(), name, flags, 0) {
    Ok(file) => file,
    Err(e) if errno(&e) == libc::ENOENT => return Ok(Found::Vanished),
    Err(e) if errno(&e) == libc::ELOOP => return Ok(Found::NotAFile(EntryKind::Symlink)),
    Err(e) => return Err(e),
  };
  let st = fstat(file.as_raw_fd())?;
  if let Some(kind) = kind_of(&st) {
    return Ok(Found::NotAFile(kind));
  }
  let kernel_free = try_flock(file.as_raw_fd(), libc::LOCK_EX)?;
  let mut bytes = Vec::new();
  retry(|| {
    bytes.clear();
    (&mut file).take(MAX_PAYLOAD).read_to_end(&mut bytes)
  })?;
  Ok(Found::File(FoundFile { id: id_of(&st), bytes, mtime_ms: mtime_ms(&st), kernel_free, file }))
}

impl FoundFile {
  /// Removes the judged file, only while we hold its kernel lock and the path
  /// still names it. `Ok(false)`: someone else got there first.
  pub fn reclaim(self, dir: &LockDir, name: &str) -> io::Result<bool> {
    if !self.kernel_free {
      return Ok(false);
    }
    let same = match lstat_at(dir.raw(), name) {
      Ok(st) => id_of(&st) == self.id,
      Err(e) if errno(&e) == libc::ENOENT => false,
      Err(e) => return Err(e),
    };
    if !same {
      return Ok(false);
    }
    match unlink_at(dir.raw(), name, 0) {
      Ok(()) => Ok(true),
      Err(e) if errno(&e) == libc::ENOENT => Ok(false),
      Err(e) => Err(e),
    }
    // The kernel lock is dropped with `self.file` here, after the unlink.
  }

  /// Lets go of the file (and the kernel lock, if we took it).
  pub fn close(self) {
    drop(self.file);
  }
}

/// Removes a non-file entry at the lock path as an entry, never following it.
/// A symlink, fifo or socket is first renamed aside, so that a lock file that
/// appeared at the path meanwhile is never the one removed.
pub fn remove_entry(dir: &LockDir, name: &str, kind: EntryKind) -> io::Result<()> {
  if kind == EntryKind::Directory {
    // rmdir removes only an empty directory and never a file.
    return match unlink_at(dir.raw(), name, libc::AT_REMOVEDIR) {
      Err(e) if errno(&e) == libc::EEXIST => Err(io::Error::from_raw_os_error(libc::ENOTEMPTY)),
      Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => Ok(()),
      other => other,
    };
  }
  let aside = format!("{}{}.tmp", temp_prefix(name), random_suffix());
  let (from, to) = (cstr(name)?, cstr(&aside)?);
  // SAFETY: both names are NUL-terminated and relative to the same dir fd.
  match check(unsafe { libc::renameat(dir.raw(), from.as_ptr(), dir.raw(), to.as_ptr()) }) {
    Err(e) if errno(&e) == libc::ENOENT => return Ok(()),
    Err(e) => return Err(e),
    Ok(_) => {}
  }
  let moved = lstat_at(dir.raw(), &aside)?;
  if kind_of(&moved).is_none() {
    // A real lock file took the path meanwhile: put it back unless the path
    // is taken again, in which case its owner recreates it (SPEC 5.2).
    let _ = rename_noreplace(dir.raw(), &aside, name);
    return Ok(());
  }
  unlink_at(dir.raw(), &aside, 0)
}

#[cfg(target_os = "linux")]
fn rename_noreplace(dir: RawFd, from: &str, to: &str) -> io::Result<()> {
  let (from, to) = (cstr(from)?, cstr(to)?);
  // SAFETY: both names are NUL-terminated; renameat2 is a plain syscall.
  let rc = unsafe {
    libc::syscall(libc::SYS_renameat2, dir, from.as_ptr(), dir, to.as_ptr(), libc::RENAME_NOREPLACE)
  };
  check(rc as libc::c_int).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(dir: RawFd, from: &str, to: &str) -> io::Result<()> {
  // link + unlink refuses an existing target just as RENAME_NOREPLACE does.
  let (c_from, c_to) = (cstr(from)?, cstr(to)?);
  // SAFETY: both names are NUL-terminated and relative to the same dir fd.
  check(unsafe { libc::linkat(dir, c_from.as_ptr(), dir, c_to.as_ptr(), 0) })?;
  unlink_at(dir, from, 0)
}

/// Removes leftover temporary files of this lock whose kernel lock is free
/// and that are more than 2 s old. Other names are never touched.
#[allow(clippy::unnecessary_cast)]
pub fn sweep_temp_files(dir: &LockDir, name: &str) {
  let Ok(entries) = std::fs::read_dir(&dir.path) else {
    return;
  };
  let now = std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map(|d| d.as_secs() as i64)
    .unwrap_or(0);
  for entry in entries.flatten() {
    let candidate = entry.file_name().to_string_lossy().into_owned();
    if !is_temp_name(name, &candidate) {
      continue;
    }
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let Ok(file) = open_at(dir.raw(), &candidate, flags, 0) else {
      continue;
    };
    let Ok(st) = fstat(file.as_raw_fd()) else {
      continue;
    };
    let old = now - (st.st_mtime as i64) > TEMP_GRACE_SECS;
    if kind_of(&st).is_none() && old && try_flock(file.as_raw_fd(), libc::LOCK_EX).unwrap_or(false)
    {
      let same = lstat_at(dir.raw(), &candidate).is_ok_and(|now| id_of(&now) == id_of(&st));
      if same {
        let _ = unlink_at(dir.raw(), &candidate, 0);
      }
    }
  }
}

/// Whether the lock path no longer names the judged file, or the kernel lock
/// that was held when it was judged is free now: then waiting is over.
pub fn changed_since(dir: &LockDir, name: &str, judged: FileId, was_held: bool) -> bool {
  match lstat_at(dir.raw(), name) {
    Ok(st) if id_of(&st) == judged => {}
    _ => return true,
  }
  if !was_held {
    return false;
  }
  let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
  let Ok(file) = open_at(dir.raw(), name, flags, 0) else {
    return true;
  };
  // Taking the lock for an instant is the check; it is dropped with `file`.
  try_flock(file.as_raw_fd(), libc::LOCK_EX).unwrap_or(false)
}
