//! Windows backend: `LockFileEx` on one byte at offset 2^63-1 (never on the
//! payload, so TypeScript readers can still read the file), a named
//! temporary file hard-linked to the lock path, and file identity from the
//! volume serial number and file index.
//
// LIMITATION: the directory's owner and ACL are not checked, and there is no
// shared lock on the directory (SPEC 3 and 5.2 name POSIX mechanisms).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use windows_sys::Win32::Foundation::{ERROR_LOCK_VIOLATION, HANDLE};
use windows_sys::Win32::Storage::FileSystem::{
  GetFileInformationByHandle, LockFileEx, BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_REPARSE_POINT,
  FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
  LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::{is_temp_name, random_suffix, temp_prefix, EntryKind, FileId};
use crate::error::LockError;

const MAX_PAYLOAD: u64 = 64 * 1024;
const SHARE_ALL: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

/// Takes the exclusive lock on byte 2^63-1 without waiting: `Ok(false)` when
/// another handle holds it.
fn try_lock(file: &File) -> io::Result<bool> {
  // SAFETY: an all-zero OVERLAPPED is valid; only the offset is set.
  let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
  overlapped.Anonymous.Anonymous.Offset = u32::MAX;
  overlapped.Anonymous.Anonymous.OffsetHigh = i32::MAX as u32;
  let flags = LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY;
  // SAFETY: the handle is open for the call; overlapped outlives it.
  let ok = unsafe { LockFileEx(file.as_raw_handle() as HANDLE, flags, 0, 1, 0, &mut overlapped) };
  if ok != 0 {
    return Ok(true);
  }
  let err = io::Error::last_os_error();
  if err.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
    return Ok(false);
  }
  Err(err)
}

fn file_id(file: &File) -> io::Result<FileId> {
  // SAFETY: an all-zero info struct is valid and filled by the call.
  let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
  // SAFETY: the handle is open for the call.
  if unsafe { GetFileInformationByHandle(file.as_raw_handle() as HANDLE, &mut info) } == 0 {
    return Err(io::Error::last_os_error());
  }
  let ino = ((info.nFileIndexHigh as u64) << 32) | info.nFileIndexLow as u64;
  Ok(FileId { dev: info.dwVolumeSerialNumber as u64, ino })
}

fn open_shared(path: &Path) -> io::Result<File> {
  OpenOptions::new()
    .read(true)
    .share_mode(SHARE_ALL)
    .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
    .open(path)
}

fn kind_of(meta: &fs::Metadata) -> Option<EntryKind> {
  if meta.file_type().is_symlink() || meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
    Some(EntryKind::Symlink)
  } else if meta.is_dir() {
    Some(EntryKind::Directory)
  } else if meta.is_file() {
    None
  } else {
    Some(EntryKind::Other)
  }
}

fn id_at(path: &Path) -> io::Result<Option<FileId>> {
  match open_shared(path) {
    Ok(file) => file_id(&file).map(Some),
    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
    Err(e) => Err(e),
  }
}

pub struct LockDir {
  pub path: String,
}

impl LockDir {
  fn join(&self, name: &str) -> PathBuf {
    Path::new(&self.path).join(name)
  }

  pub fn try_clone(&self) -> io::Result<LockDir> {
    Ok(LockDir { path: self.path.clone() })
  }

  pub fn hold_shared(&self) {}
}

pub fn prepare_dir(path: &str) -> Result<LockDir, LockError> {
  let fail = |e| LockError::dir(path, e);
  if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
    if !parent.exists() {
      fs::create_dir_all(parent).map_err(fail)?;
    }
  }
  match fs::create_dir(path) {
    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(fail(e)),
    _ => {}
  }
  let meta = fs::symlink_metadata(path).map_err(fail)?;
  match kind_of(&meta) {
    Some(EntryKind::Directory) => Ok(LockDir { path: path.to_string() }),
    Some(EntryKind::Symlink) => {
      let why = format!("EACCES: lock directory {path} is a symbolic link or junction");
      let message = format!("failed to prepare gateway lock directory at {path}");
      Err(LockError::Refused { message, code: "EACCES", why })
    }
    _ => Err(fail(io::Error::from_raw_os_error(267))),
  }
}

pub struct OwnedLock {
  pub dir: LockDir,
  pub name: String,
  pub id: FileId,
  file: File,
}

impl OwnedLock {
  pub fn path_is_ours(&self) -> io::Result<bool> {
    Ok(id_at(&self.dir.join(&self.name))? == Some(self.id))
  }

  pub fn release(self) -> io::Result<()> {
    if self.path_is_ours()? {
      match fs::remove_file(self.dir.join(&self.name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
      }
    }
    drop(self.file);
    Ok(())
  }
}

pub enum Created {
  Owned(OwnedLock),
  Exists,
}

fn fill(file: &mut File, payload: &[u8]) -> io::Result<()> {
  if !try_lock(file)? {
    return Err(io::Error::from_raw_os_error(ERROR_LOCK_VIOLATION as i32));
  }
  file.write_all(payload)?;
  file.flush()
}

fn create_new(path: &Path) -> io::Result<File> {
  OpenOptions::new().read(true).write(true).create_new(true).share_mode(SHARE_ALL).open(path)
}

pub fn create(dir: &LockDir, name: &str, payload: &[u8]) -> io::Result<Created> {
  let target = dir.join(name);
  let temp = dir.join(&format!("{}{}.tmp", temp_prefix(name), random_suffix()));
  let mut file = create_new(&temp)?;
  let linked = fill(&mut file, payload).and_then(|_| fs::hard_link(&temp, &target));
  let _ = fs::remove_file(&temp);
  let file = match linked {
    Ok(()) => file,
    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Created::Exists),
    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
      drop(file);
      let mut file = match create_new(&target) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Created::Exists),
        Err(e) => return Err(e),
      };
      if let Err(e) = fill(&mut file, payload) {
        let _ = fs::remove_file(&target);
        return Err(e);
      }
      file
    }
    Err(e) => return Err(e),
  };
  let id = file_id(&file)?;
  Ok(Created::Owned(OwnedLock { dir: dir.try_clone()?, name: name.to_string(), id, file }))
}

pub enum Found {
  Vanished,
  NotAFile(EntryKind),
  File(FoundFile),
}

pub struct FoundFile {
  pub id: FileId,
  pub bytes: Vec<u8>,
  pub mtime_ms: f64,
  pub kernel_free: bool,
  file: File,
}

pub fn open_existing(dir: &LockDir, name: &str) -> io::Result<Found> {
  let path = dir.join(name);
  let meta = match fs::symlink_metadata(&path) {
    Ok(meta) => meta,
    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Vanished),
    Err(e) => return Err(e),
  };
  if let Some(kind) = kind_of(&meta) {
    return Ok(Found::NotAFile(kind));
  }
  let mut file = match open_shared(&path) {
    Ok(file) => file,
    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Vanished),
    Err(e) => return Err(e),
  };
  let kernel_free = try_lock(&file)?;
  let mut bytes = Vec::new();
  (&mut file).take(MAX_PAYLOAD).read_to_end(&mut bytes)?;
  let modified = file.metadata()?.modified()?;
  let mtime_ms = match modified.duration_since(UNIX_EPOCH) {
    Ok(d) => d.as_millis() as f64,
    Err(e) => -(e.duration().as_millis() as f64),
  };
  Ok(Found::File(FoundFile { id: file_id(&file)?, bytes, mtime_ms, kernel_free, file }))
}

impl FoundFile {
  pub fn reclaim(self, dir: &LockDir, name: &str) -> io::Result<bool> {
    if !self.kernel_free || id_at(&dir.join(name))? != Some(self.id) {
      return Ok(false);
    }
    match fs::remove_file(dir.join(name)) {
      Ok(()) => Ok(true),
      Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
      Err(e) => Err(e),
    }
  }

  pub fn close(self) {
    drop(self.file);
  }
}

pub fn remove_entry(dir: &LockDir, name: &str, kind: EntryKind) -> io::Result<()> {
  let path = dir.join(name);
  let removed = match kind {
    EntryKind::Directory => fs::remove_dir(&path),
    // A symlink to a directory is removed as a directory entry on Windows.
    _ => fs::remove_file(&path).or_else(|_| fs::remove_dir(&path)),
  };
  match removed {
    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
    Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
      Err(io::Error::from_raw_os_error(145))
    }
    other => other,
  }
}

pub fn sweep_temp_files(dir: &LockDir, name: &str) {
  let Ok(entries) = fs::read_dir(&dir.path) else {
    return;
  };
  for entry in entries.flatten() {
    let candidate = entry.file_name().to_string_lossy().into_owned();
    if !is_temp_name(name, &candidate) {
      continue;
    }
    let path = entry.path();
    let old = entry
      .metadata()
      .and_then(|m| m.modified())
      .ok()
      .and_then(|m| m.elapsed().ok())
      .is_some_and(|age| age.as_secs() > 2);
    let free = open_shared(&path).and_then(|f| try_lock(&f)).unwrap_or(false);
    if old && free {
      let _ = fs::remove_file(&path);
    }
  }
}

pub fn changed_since(dir: &LockDir, name: &str, judged: FileId, was_held: bool) -> bool {
  let path = dir.join(name);
  match id_at(&path) {
    Ok(Some(id)) if id == judged => {}
    _ => return true,
  }
  was_held && open_shared(&path).and_then(|f| try_lock(&f)).unwrap_or(true)
}
