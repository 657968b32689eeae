//! The acquisition loop (SPEC 5), the read-only report (`inspect`), the active
//! port lookup, and the owner's watch over its own path (SPEC 5.2).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock;
use crate::error::LockError;
use crate::lockfile::{self, Created, FileId, Found, FoundFile, LockDir, OwnedLock};
use crate::owner::{self, Case, Judgement, KernelLock, Reclaim, Status};
use crate::paths::{self, PathInputs};
use crate::payload::{OwnPayload, Payload};
use crate::probe::PROBE_TIMEOUT;
use crate::registry::{self, Cancel, Emit, Held};
use crate::wait::Waiter;

/// The options after the JS entry has validated and defaulted them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
  pub env: HashMap<String, String>,
  pub cwd: String,
  pub os_home: Option<String>,
  pub lock_dir: String,
  #[serde(default)]
  pub timeout_ms: u64,
  #[serde(default)]
  pub poll_interval_ms: u64,
  #[serde(default)]
  pub stale_ms: u64,
  pub platform: String,
  pub port: Option<u16>,
}

/// The platform name Node uses for the OS this was built for.
pub const REAL_PLATFORM: &str = if cfg!(target_os = "linux") {
  "linux"
} else if cfg!(target_os = "macos") {
  "darwin"
} else if cfg!(windows) {
  "win32"
} else {
  "unknown"
};

/// Where the lock for this request lives.
pub struct Location {
  pub config_path: String,
  pub lock_name: String,
  pub lock_path: String,
}

pub fn locate(req: &Request) -> Location {
  let inputs = PathInputs { env: &req.env, cwd: &req.cwd, os_home: req.os_home.as_deref() };
  let config_path = paths::config_path(&inputs, &|p| std::fs::metadata(p).is_ok());
  let lock_name = paths::lock_file_name(&config_path);
  let lock_path = paths::join(&req.lock_dir, &lock_name);
  Location { config_path, lock_name, lock_path }
}

/// A won lock, with what `release()` and the watcher need.
pub struct Won {
  pub location: Location,
  pub lock: OwnedLock,
  pub payload: Vec<u8>,
}

fn since(start: Instant) -> u64 {
  start.elapsed().as_millis() as u64
}

fn with_pid(mut event: Value, pid: Option<f64>) -> Value {
  if let (Some(pid), Some(map)) = (pid, event.as_object_mut()) {
    map.insert("ownerPid".into(), json!(pid));
  }
  event
}

/// What judging the entry at the lock path led to.
enum Step {
  /// Try to create again at once.
  Retry,
  /// Someone holds it: wait for this file to change hands.
  Wait(Judged),
}

/// The file a waiter waits on.
struct Judged {
  id: FileId,
  kernel_held: bool,
  owner: Option<u32>,
}

struct Attempt<'a> {
  req: &'a Request,
  location: &'a Location,
  dir: &'a LockDir,
  started: Instant,
  emit: &'a Emit,
  attempts: u64,
  recoveries: u64,
  contention_reported: bool,
  last_pid: Option<f64>,
}

/// What the decision table reads about a found file, for this request.
fn case_for<'p>(
  req: &Request,
  payload: &'p Payload,
  found: &FoundFile,
  probe_bound: Option<Duration>,
) -> Case<'p> {
  Case {
    payload,
    kernel: if found.kernel_free { KernelLock::Free } else { KernelLock::Held },
    own_pid: std::process::id(),
    held_here: registry::held_here(found.id),
    same_platform: req.platform == REAL_PLATFORM,
    linux: req.platform == "linux",
    probe_bound,
    now_ms: clock::now_ms(),
    mtime_ms: Some(found.mtime_ms),
    stale_ms: req.stale_ms as f64,
  }
}

/// A judgement in the report's words: a lock an acquire would reclaim now is
/// "dead", whatever row or age rule decided it.
fn report_status(judgement: &Judgement) -> &'static str {
  match (judgement.status, judgement.reclaim) {
    (_, Some(_)) => "dead",
    (Status::Alive, None) => "alive",
    _ => "unknown",
  }
}

impl Attempt<'_> {
  async fn judge_existing(&mut self, deadline: Instant) -> Result<Step, LockError> {
    let lock_path = &self.location.lock_path;
    let name = &self.location.lock_name;
    let found =
      lockfile::open_existing(self.dir, name).map_err(|e| LockError::read(lock_path, e))?;
    let found = match found {
      Found::Vanished => return Ok(Step::Retry),
      Found::NotAFile(kind) => {
        lockfile::remove_entry(self.dir, name, kind)
          .map_err(|e| LockError::create(lock_path, e))?;
        return Ok(Step::Retry);
      }
      Found::File(found) => found,
    };

    let payload = Payload::parse(&found.bytes);
    self.last_pid = payload.raw_pid;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let probe = Some(PROBE_TIMEOUT.min(remaining.max(Duration::from_millis(1))));
    let judgement =
      owner::judge(&case_for(self.req, &payload, &found, probe), &owner::System).await;

    if !self.contention_reported {
      self.contention_reported = true;
      self.report("acquire-contention", &judgement, None);
    }
    let Some(reason) = judgement.reclaim else {
      let judged = Judged { id: found.id, kernel_held: !found.kernel_free, owner: payload.pid };
      found.close();
      return Ok(Step::Wait(judged));
    };
    if found.reclaim(self.dir, name).map_err(|e| LockError::reclaim(lock_path, e))? {
      self.recoveries += 1;
      self.contention_reported = false;
      self.report("stale-lock-recovered", &judgement, Some(reason));
    }
    Ok(Step::Retry)
  }

  fn report(&self, event: &str, judgement: &Judgement, reason: Option<Reclaim>) {
    let mut body = json!({
      "event": event,
      "lockPath": self.location.lock_path,
      "ownerStatus": judgement.status,
      "waitedMs": since(self.started),
      "attempt": self.attempts,
      "evidence": judgement.evidence,
    });
    if let Some(reason) = reason {
      body["reason"] = json!(reason.as_str());
    }
    (self.emit)(with_pid(body, self.last_pid));
  }
}

/// Takes the lock, or fails with the timeout or an OS error.
pub async fn acquire(req: &Request, emit: &Emit, cancel: &Cancel) -> Result<Won, LockError> {
  let location = locate(req);
  let dir = lockfile::prepare_dir(&req.lock_dir)?;
  let mut start = json!({
    "event": "acquire-start",
    "lockPath": location.lock_path,
    "configPath": location.config_path,
    "timeoutMs": req.timeout_ms,
    "pollIntervalMs": req.poll_interval_ms,
    "staleMs": req.stale_ms,
    "platform": req.platform,
  });
  if let Some(port) = req.port {
    start["port"] = json!(port);
  }
  emit(start);

  let started = Instant::now();
  let deadline = started + Duration::from_millis(req.timeout_ms);
  let start_time =
    (req.platform == REAL_PLATFORM).then(crate::process::own_start_identity).flatten();
  // Stamped at each create: a lock won after a long wait says when it was won.
  let payload = || {
    let created_at = clock::iso(clock::now_ms());
    let config_path = &location.config_path;
    OwnPayload { pid: std::process::id(), created_at, config_path, port: req.port, start_time }
      .to_bytes()
  };

  let mut waiter = Waiter::new(&dir.path, &location.lock_name, &location.lock_path);
  let mut retries_in_row = 0;
  let mut attempt = Attempt {
    req,
    location: &location,
    dir: &dir,
    started,
    emit,
    attempts: 0,
    recoveries: 0,
    contention_reported: false,
    last_pid: None,
  };
  loop {
    if cancel.is_cancelled() {
      return Err(LockError::Internal("the JavaScript environment was torn down".into()));
    }
    attempt.attempts += 1;
    let payload = payload();
    let created = lockfile::create(&dir, &location.lock_name, &payload);
    match created.map_err(|e| LockError::create(&location.lock_path, e))? {
      Created::Owned(lock) => {
        lock.dir.hold_shared();
        emit(json!({
          "event": "acquire-success",
          "lockPath": location.lock_path,
          "configPath": location.config_path,
          "waitedMs": since(started),
          "attempts": attempt.attempts,
          "staleRecoveries": attempt.recoveries,
        }));
        return Ok(Won { location, lock, payload });
      }
      Created::Exists if attempt.attempts == 1 => {
        // Litter of writers killed mid-create never blocks anyone; it is
        // swept by contenders only, so an uncontended acquire stays short.
        lockfile::sweep_temp_files(&dir, &location.lock_name);
      }
      Created::Exists => {}
    }

    // A reclaim is followed by a new attempt at once, even past the deadline;
    // a path that keeps changing is not, or the loop could outlive it.
    let judged = match attempt.judge_existing(deadline).await? {
      Step::Retry if retries_in_row < MAX_RETRIES_IN_ROW || Instant::now() < deadline => {
        retries_in_row += 1;
        tokio::task::yield_now().await;
        continue;
      }
      Step::Retry => None,
      Step::Wait(judged) => Some(judged),
    };
    retries_in_row = 0;

    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
      let timeout = json!({
        "event": "acquire-timeout",
        "lockPath": location.lock_path,
        "waitedMs": since(started),
        "timeoutMs": req.timeout_ms,
        "attempts": attempt.attempts,
      });
      emit(with_pid(timeout, attempt.last_pid));
      return Err(LockError::Locked { owner_pid: attempt.last_pid, timeout_ms: req.timeout_ms });
    }
    let pause = remaining.min(Duration::from_millis(req.poll_interval_ms.max(1)));
    match judged {
      Some(judged) => {
        let changed =
          || lockfile::changed_since(&dir, &location.lock_name, judged.id, judged.kernel_held);
        // A pid means something only for an owner without a kernel lock.
        let owner = judged.owner.filter(|_| !judged.kernel_held);
        waiter.wait(pause, owner, cancel, changed).await;
      }
      None => tokio::time::sleep(pause.min(Duration::from_millis(1))).await,
    }
  }
}

/// What a contender would conclude now, without reclaiming anything.
pub async fn inspect(req: &Request) -> Result<Value, LockError> {
  let location = locate(req);
  let mut report = json!({
    "lockPath": location.lock_path,
    "configPath": location.config_path,
    "exists": false,
    "status": "free",
    "evidence": [],
  });
  let Some((_dir, found)) = look(req, &location)? else {
    return Ok(report);
  };
  let found = match found {
    Found::NotAFile(kind) => {
      report["exists"] = json!(true);
      report["status"] = json!("dead");
      let what = format!("{kind:?}").to_lowercase();
      report["evidence"] = json!([{ "check": "entry", "result": what }]);
      return Ok(report);
    }
    Found::File(found) => found,
    Found::Vanished => return Ok(report),
  };
  let payload = Payload::parse(&found.bytes);
  let case = case_for(req, &payload, &found, Some(PROBE_TIMEOUT));
  // Let go of the kernel lock before the slow checks: a report never makes a
  // starting contender wait.
  found.close();
  let judgement = owner::judge(&case, &owner::System).await;
  let status = report_status(&judgement);
  report["exists"] = json!(true);
  report["status"] = json!(status);
  report["evidence"] = json!(judgement.evidence);
  report["owner"] = json!({
    "pid": payload.raw_pid,
    "createdAt": payload.created_at,
    "startTime": payload.start_time,
    "port": payload.port,
    "kernelLock": payload.kernel_lock,
  });
  report["torn"] = json!(payload.torn);
  report["mtimeMs"] = json!(case.mtime_ms);
  report["ports"] = json!(port_lines(payload.port, req.port).await);
  Ok(report)
}

/// The recorded port and the one asked about, each probed, for the report.
async fn port_lines(recorded: Option<u16>, asked: Option<u16>) -> Vec<Value> {
  let mut lines = Vec::new();
  for (port, is_recorded) in [(recorded, true), (asked.filter(|a| Some(*a) != recorded), false)] {
    if let Some(port) = port {
      let state = crate::probe::probe(port, PROBE_TIMEOUT).await;
      lines.push(json!({ "port": port, "recorded": is_recorded, "state": state.as_str() }));
    }
  }
  lines
}

/// What `gatelock clear` did.
pub enum Cleared {
  /// There was no lock.
  Nothing,
  /// The lock was removed; its report as judged.
  Removed(Value),
  /// Not removed: its owner is alive, or unknown without `force`.
  Refused(Value),
}

/// Removes a lock an acquire would reclaim now (and an unknown one with
/// `force`), under the same kernel-lock and inode checks as a reclaim.
pub async fn clear(req: &Request, force: bool) -> Result<Cleared, LockError> {
  let location = locate(req);
  let lock_path = &location.lock_path;
  let Some((dir, found)) = look(req, &location)? else {
    return Ok(Cleared::Nothing);
  };
  let found = match found {
    Found::NotAFile(kind) => {
      lockfile::remove_entry(&dir, &location.lock_name, kind)
        .map_err(|e| LockError::reclaim(lock_path, e))?;
      let what = format!("{kind:?}").to_lowercase();
      let evidence = json!([{ "check": "entry", "result": what }]);
      return Ok(Cleared::Removed(json!({ "status": "dead", "evidence": evidence })));
    }
    Found::File(found) => found,
    Found::Vanished => return Ok(Cleared::Nothing),
  };
  let payload = Payload::parse(&found.bytes);
  let case = case_for(req, &payload, &found, Some(PROBE_TIMEOUT));
  let judgement = owner::judge(&case, &owner::System).await;
  let status = report_status(&judgement);
  let report =
    json!({ "status": status, "evidence": judgement.evidence, "ownerPid": payload.raw_pid });
  let removable = status == "dead" || (status == "unknown" && force);
  if !removable {
    found.close();
    return Ok(Cleared::Refused(report));
  }
  let removed =
    found.reclaim(&dir, &location.lock_name).map_err(|e| LockError::reclaim(lock_path, e))?;
  Ok(if removed { Cleared::Removed(report) } else { Cleared::Refused(report) })
}

/// A read-only look at the lock path: the directory (never created here) and
/// what is at the path; `None` when there is no directory.
fn look(req: &Request, location: &Location) -> Result<Option<(LockDir, Found)>, LockError> {
  if let Err(e) = std::fs::symlink_metadata(&req.lock_dir) {
    if e.kind() == std::io::ErrorKind::NotFound {
      return Ok(None);
    }
  }
  let dir = lockfile::prepare_dir(&req.lock_dir)?;
  let found = lockfile::open_existing(&dir, &location.lock_name)
    .map_err(|e| LockError::read(&location.lock_path, e))?;
  Ok(Some((dir, found)))
}

/// The recorded port of a live gateway owner, judged without a port probe and
/// with an unreadable command line counting as not alive (reference 1.6).
pub async fn active_port(req: &Request) -> Option<u16> {
  let location = locate(req);
  let Some((_dir, Found::File(found))) = look(req, &location).ok()? else {
    return None;
  };
  let payload = Payload::parse(&found.bytes);
  let port = payload.port?;
  // An owner that cannot be verified is not alive here, on any platform.
  let case = Case { linux: true, ..case_for(req, &payload, &found, None) };
  found.close();
  let judgement = owner::judge(&case, &owner::System).await;
  (judgement.status == Status::Alive).then_some(port)
}

/// Immediate retries allowed past the deadline before it is enforced.
const MAX_RETRIES_IN_ROW: u32 = 3;

/// How often an owner checks that its path still names its file.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Watches a held lock's path and recreates the file if it was removed
/// (SPEC 5.2). Ends when the handle lets go of its lock (release, teardown)
/// or the lock is lost.
pub async fn watch(held: std::sync::Arc<Held>) {
  loop {
    tokio::select! {
      _ = tokio::time::sleep(WATCH_INTERVAL) => {}
      _ = held.released.notified() => return,
    }
    let mut slot = held.lock();
    let Some(lock) = slot.as_ref() else {
      return;
    };
    if lock.path_is_ours().unwrap_or(true) {
      continue;
    }
    let (name, dir_path) = (lock.name.clone(), lock.dir.path.clone());
    // The old file is gone from the path: dropping it drops its kernel lock.
    let (owner_pid, reason) = match recreate(&dir_path, &name, &held.payload) {
      Ok(Ok(fresh)) => {
        *slot = Some(fresh);
        continue;
      }
      Ok(Err(owner_pid)) => (owner_pid, "replaced"),
      Err(_) => (None, "unrecoverable"),
    };
    *slot = None;
    drop(slot);
    lost(&held, owner_pid, reason);
    return;
  }
}

/// `Ok(Ok(lock))`: our file is back. `Ok(Err(pid))`: another process's lock
/// is at the path now.
fn recreate(
  dir_path: &str,
  name: &str,
  payload: &[u8],
) -> Result<Result<OwnedLock, Option<f64>>, LockError> {
  let dir = lockfile::prepare_dir(dir_path)?;
  for _ in 0..3 {
    match lockfile::create(&dir, name, payload).map_err(|e| LockError::create(dir_path, e))? {
      Created::Owned(lock) => {
        lock.dir.hold_shared();
        return Ok(Ok(lock));
      }
      Created::Exists => {}
    }
    match lockfile::open_existing(&dir, name).map_err(|e| LockError::read(dir_path, e))? {
      Found::Vanished => continue,
      Found::NotAFile(kind) => {
        lockfile::remove_entry(&dir, name, kind).map_err(|e| LockError::create(dir_path, e))?;
      }
      Found::File(found) => {
        let pid = Payload::parse(&found.bytes).raw_pid;
        found.close();
        return Ok(Err(pid));
      }
    }
  }
  Err(LockError::Internal("the lock path kept changing".into()))
}

fn lost(held: &Held, owner_pid: Option<f64>, reason: &str) {
  let event = json!({ "event": "lock-lost", "lockPath": held.lock_path, "reason": reason });
  held.emit(with_pid(event, owner_pid));
}
