//! Judging a lock's owner: the decision table of SPEC section 6, strongest
//! signal first, with the evidence of every check that was made.

use std::time::Duration;

use serde::Serialize;

use crate::argv::is_gateway_argv;
use crate::clock::parse_iso;
use crate::payload::Payload;
use crate::probe::{self, PortState};
use crate::process::{PidState, StartTimes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
  Alive,
  Dead,
  Unknown,
}

/// Why a lock may be taken over, in the TypeScript telemetry's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
  OwnerDead,
  StaleUnknownOwner,
}

impl Reclaim {
  pub fn as_str(self) -> &'static str {
    match self {
      Reclaim::OwnerDead => "owner-dead",
      Reclaim::StaleUnknownOwner => "stale-unknown-owner",
    }
  }
}

/// One check and what it found, e.g. `{ check: "pid", result: "exists" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
  pub check: &'static str,
  pub result: String,
}

/// What the kernel lock on the judged file said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLock {
  /// Another open file description holds it: the owner is alive.
  Held,
  /// We could take it: whoever wrote the file no longer holds it.
  Free,
}

/// The process queries the table needs; tests substitute a fake host.
pub trait Host {
  fn pid_state(&self, pid: u32) -> PidState;
  fn start_times(&self, pid: u32) -> Option<StartTimes>;
  fn cmdline(&self, pid: u32) -> Option<Vec<String>>;
}

/// The real operating system.
pub struct System;

impl Host for System {
  fn pid_state(&self, pid: u32) -> PidState {
    crate::process::pid_state(pid)
  }
  fn start_times(&self, pid: u32) -> Option<StartTimes> {
    crate::process::start_times(pid)
  }
  fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
    crate::process::cmdline(pid)
  }
}

/// Everything about the file and the caller that the table reads.
pub struct Case<'a> {
  pub payload: &'a Payload,
  pub kernel: KernelLock,
  pub own_pid: u32,
  /// A live handle in this process holds this very file (device and inode).
  pub held_here: bool,
  /// The `platform` option names the real OS: start identities are comparable.
  pub same_platform: bool,
  /// The `platform` option is `linux` (row 12).
  pub linux: bool,
  /// Whether row 11 may probe, and its bound; `None` skips the probe.
  pub probe_bound: Option<Duration>,
  /// Milliseconds since the epoch, and the file's modification time.
  pub now_ms: f64,
  pub mtime_ms: Option<f64>,
  pub stale_ms: f64,
}

pub struct Judgement {
  pub status: Status,
  pub reclaim: Option<Reclaim>,
  pub evidence: Vec<Evidence>,
}

/// How much older than its `createdAt` a process may seem before it counts
/// as a later process that reused the pid (row 8).
const START_MARGIN_MS: f64 = 2000.0;
/// How long an empty or torn file may still belong to a writer mid-write.
const TORN_GRACE_MS: f64 = 2000.0;

/// Runs the table, then the age rules for an owner that cannot be judged.
pub async fn judge(case: &Case<'_>, host: &impl Host) -> Judgement {
  let mut evidence = Vec::new();
  let status = match rows_1_to_10(case, host, &mut evidence) {
    Some(status) => status,
    None => rows_11_and_12(case, &mut evidence).await,
  };
  let reclaim = match status {
    Status::Dead => Some(Reclaim::OwnerDead),
    Status::Unknown if !case.payload.has_owner() && aged_out(case, &mut evidence) => {
      Some(Reclaim::StaleUnknownOwner)
    }
    _ => None,
  };
  Judgement { status, reclaim, evidence }
}

fn note(evidence: &mut Vec<Evidence>, check: &'static str, result: impl Into<String>) {
  evidence.push(Evidence { check, result: result.into() });
}

fn rows_1_to_10(case: &Case, host: &impl Host, evidence: &mut Vec<Evidence>) -> Option<Status> {
  let payload = case.payload;
  match case.kernel {
    KernelLock::Held => {
      note(evidence, "kernel-lock", "held");
      return Some(Status::Alive);
    }
    KernelLock::Free if payload.kernel_lock => {
      note(evidence, "kernel-lock", "released");
      return Some(Status::Dead);
    }
    KernelLock::Free => note(evidence, "kernel-lock", "none"),
  }

  let Some(pid) = payload.pid else {
    note(evidence, "payload", if payload.torn { "torn" } else { "no-owner" });
    return Some(Status::Unknown);
  };
  if pid == case.own_pid {
    // A pid means nothing across a restart or a PID namespace: only a handle
    // this process holds on this very file makes it ours.
    note(evidence, "pid", if case.held_here { "own-held" } else { "own-leftover" });
    return Some(if case.held_here { Status::Alive } else { Status::Dead });
  }

  match host.pid_state(pid) {
    PidState::Missing => {
      note(evidence, "pid", "missing");
      return Some(Status::Dead);
    }
    PidState::Zombie => {
      note(evidence, "pid", "zombie");
      return Some(Status::Dead);
    }
    PidState::Exists => note(evidence, "pid", "exists"),
  }

  let started = host.start_times(pid);
  if let (Some(recorded), true) = (payload.start_time, case.same_platform) {
    match started {
      Some(now) if now.identity == recorded => {
        note(evidence, "start-time", "matches");
        return Some(Status::Alive);
      }
      Some(_) => {
        note(evidence, "start-time", "differs");
        return Some(Status::Dead);
      }
      None => note(evidence, "start-time", "unreadable"),
    }
  }

  let created = payload.created_at.as_deref().and_then(parse_iso);
  if let (Some(start), Some(created)) = (started.and_then(|s| s.epoch_ms), created) {
    if start > created + START_MARGIN_MS {
      note(evidence, "started", "after-lock");
      return Some(Status::Dead);
    }
    note(evidence, "started", "before-lock");
  }

  match host.cmdline(pid) {
    Some(args) if is_gateway_argv(&args) => {
      note(evidence, "cmdline", "gateway");
      Some(Status::Alive)
    }
    Some(_) => {
      note(evidence, "cmdline", "not-gateway");
      Some(Status::Dead)
    }
    None => {
      note(evidence, "cmdline", "unreadable");
      None
    }
  }
}

async fn rows_11_and_12(case: &Case<'_>, evidence: &mut Vec<Evidence>) -> Status {
  if let (Some(port), Some(bound)) = (case.payload.port, case.probe_bound) {
    let state = probe::probe(port, bound).await;
    note(evidence, "port", state.as_str());
    if state == PortState::Free {
      return Status::Dead;
    }
  }
  if case.linux {
    Status::Unknown
  } else {
    note(evidence, "platform", "not-linux");
    Status::Alive
  }
}

/// The age rules for a payload with no usable owner (SPEC 5 step 3).
fn aged_out(case: &Case, evidence: &mut Vec<Evidence>) -> bool {
  let payload = case.payload;
  let stale_after = |limit: f64, age: f64| age > limit || age < -limit;
  let (check, stale) = if payload.torn {
    let limit = TORN_GRACE_MS.min(case.stale_ms);
    ("torn-age", case.mtime_ms.is_some_and(|m| stale_after(limit, case.now_ms - m)))
  } else if let Some(created) = payload.created_at.as_deref().and_then(parse_iso) {
    ("created-age", stale_after(case.stale_ms, case.now_ms - created))
  } else {
    ("mtime-age", case.mtime_ms.is_some_and(|m| stale_after(case.stale_ms, case.now_ms - m)))
  };
  note(evidence, check, if stale { "stale" } else { "fresh" });
  stale
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::cell::Cell;

  struct Fake {
    state: PidState,
    start: Option<StartTimes>,
    args: Option<Vec<&'static str>>,
    queried: Cell<bool>,
  }

  impl Host for Fake {
    fn pid_state(&self, _: u32) -> PidState {
      self.queried.set(true);
      self.state
    }
    fn start_times(&self, _: u32) -> Option<StartTimes> {
      self.start
    }
    fn cmdline(&self, _: u32) -> Option<Vec<String>> {
      self.args.as_ref().map(|a| a.iter().map(|s| s.to_string()).collect())
    }
  }

  fn host(state: PidState, start: Option<f64>, args: Option<Vec<&'static str>>) -> Fake {
    let start = start.map(|identity| StartTimes { identity, epoch_ms: Some(1_000_000.0) });
    Fake { state, start, args, queried: Cell::new(false) }
  }

  fn payload(text: &str) -> Payload {
    Payload::parse(text.as_bytes())
  }

  fn case<'a>(payload: &'a Payload, kernel: KernelLock) -> Case<'a> {
    Case {
      payload,
      kernel,
      own_pid: 1,
      held_here: false,
      same_platform: true,
      linux: true,
      probe_bound: None,
      now_ms: 2_000_000.0,
      mtime_ms: Some(2_000_000.0),
      stale_ms: 30_000.0,
    }
  }

  fn run(case: &Case, host: &Fake) -> Judgement {
    tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap()
      .block_on(judge(case, host))
  }

  const GATEWAY: &[&str] = &["node", "/app/dist/index.js", "gateway"];

  #[test]
  fn a_held_kernel_lock_is_alive_without_asking_about_the_pid() {
    let p = payload(r#"{"pid":99,"kernelLock":true}"#);
    let fake = host(PidState::Missing, None, None);
    let j = run(&case(&p, KernelLock::Held), &fake);
    assert_eq!(j.status, Status::Alive);
    assert!(!fake.queried.get());
  }

  #[test]
  fn a_released_kernel_lock_is_dead_even_when_the_pid_lives() {
    let p = payload(r#"{"pid":99,"kernelLock":true}"#);
    let j = run(&case(&p, KernelLock::Free), &host(PidState::Exists, Some(5.0), None));
    assert_eq!((j.status, j.reclaim), (Status::Dead, Some(Reclaim::OwnerDead)));
  }

  #[test]
  fn our_own_pid_is_alive_only_while_we_hold_the_file() {
    let p = payload(r#"{"pid":1}"#);
    let fake = host(PidState::Exists, None, Some(GATEWAY.to_vec()));
    assert_eq!(run(&case(&p, KernelLock::Free), &fake).status, Status::Dead);
    let held = Case { held_here: true, ..case(&p, KernelLock::Free) };
    assert_eq!(run(&held, &fake).status, Status::Alive);
  }

  #[test]
  fn a_missing_or_zombie_pid_is_dead() {
    let p = payload(r#"{"pid":99}"#);
    for state in [PidState::Missing, PidState::Zombie] {
      assert_eq!(run(&case(&p, KernelLock::Free), &host(state, None, None)).status, Status::Dead);
    }
  }

  #[test]
  fn start_identity_decides_before_the_command_line() {
    let p = payload(r#"{"pid":99,"startTime":111}"#);
    let gateway = Some(GATEWAY.to_vec());
    let j = run(&case(&p, KernelLock::Free), &host(PidState::Exists, Some(222.0), gateway.clone()));
    assert_eq!(j.status, Status::Dead);
    let j = run(&case(&p, KernelLock::Free), &host(PidState::Exists, Some(111.0), Some(vec!["x"])));
    assert_eq!(j.status, Status::Alive);
  }

  #[test]
  fn a_process_started_after_the_lock_was_written_reused_the_pid() {
    let p = payload(r#"{"pid":99,"createdAt":"1970-01-01T00:00:00.000Z"}"#);
    let j =
      run(&case(&p, KernelLock::Free), &host(PidState::Exists, Some(1.0), Some(GATEWAY.to_vec())));
    assert_eq!(j.status, Status::Dead);
    assert!(j.evidence.contains(&Evidence { check: "started", result: "after-lock".into() }));
  }

  #[test]
  fn the_command_line_decides_when_it_is_readable() {
    let p = payload(r#"{"pid":99}"#);
    let alive =
      run(&case(&p, KernelLock::Free), &host(PidState::Exists, None, Some(GATEWAY.to_vec())));
    assert_eq!(alive.status, Status::Alive);
    let other = Some(vec!["node", "-e", "0"]);
    assert_eq!(
      run(&case(&p, KernelLock::Free), &host(PidState::Exists, None, other)).status,
      Status::Dead
    );
  }

  #[test]
  fn an_unreadable_live_owner_is_unknown_on_linux_and_never_ages_out() {
    let p = payload(r#"{"pid":99,"createdAt":"1970-01-01T00:00:00.000Z"}"#);
    let j = run(&case(&p, KernelLock::Free), &host(PidState::Exists, None, None));
    assert_eq!((j.status, j.reclaim), (Status::Unknown, None));
    let mac = Case { linux: false, ..case(&p, KernelLock::Free) };
    assert_eq!(run(&mac, &host(PidState::Exists, None, None)).status, Status::Alive);
  }

  #[test]
  fn an_ownerless_payload_ages_out_by_created_at_including_the_future() {
    let fake = host(PidState::Exists, None, None);
    let old = payload(r#"{"pid":0,"createdAt":"1970-01-01T00:00:00.000Z"}"#);
    assert_eq!(run(&case(&old, KernelLock::Free), &fake).reclaim, Some(Reclaim::StaleUnknownOwner));
    let future = payload(r#"{"pid":0,"createdAt":"2999-01-01T00:00:00.000Z"}"#);
    assert_eq!(
      run(&case(&future, KernelLock::Free), &fake).reclaim,
      Some(Reclaim::StaleUnknownOwner)
    );
    let fresh = payload(r#"{"pid":0,"createdAt":"1970-01-01T00:33:20.000Z"}"#);
    assert_eq!(run(&case(&fresh, KernelLock::Free), &fake).reclaim, None);
  }

  #[test]
  fn a_torn_file_waits_two_seconds_then_is_reclaimed() {
    let fake = host(PidState::Exists, None, None);
    let torn = payload("");
    let young = Case { mtime_ms: Some(1_999_000.0), ..case(&torn, KernelLock::Free) };
    assert_eq!(run(&young, &fake).reclaim, None);
    let old = Case { mtime_ms: Some(1_997_000.0), ..case(&torn, KernelLock::Free) };
    assert_eq!(run(&old, &fake).reclaim, Some(Reclaim::StaleUnknownOwner));
  }
}
