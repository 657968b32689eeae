//! The Node.js edge. Each export validates nothing (the JS entry did), hands
//! the work to the addon's runtime and returns at once; the outcome comes back
//! as a JSON string through the environment's completion channel, and the JS
//! entry turns it into a handle or a `GatewayLockError`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use napi::bindgen_prelude::{Function, FunctionRef};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Error, Result, Status};
use napi_derive::napi;
use serde_json::{json, Value};

use crate::acquire::{self, Request};
use crate::error::LockError;
use crate::registry::{self, Emit, Held};
use crate::runtime;

type EventSink = ThreadsafeFunction<String, (), String, Status, false, true>;
type DoneSink = ThreadsafeFunction<String, (), String, Status, false, false>;

thread_local! {
  /// The environment of this JS thread: its raw pointer and our key for it.
  static ENV: Cell<Option<(usize, u64)>> = const { Cell::new(None) };
  /// The JS function that settles the entry's promises, per environment.
  static SETTLER: RefCell<Option<(usize, FunctionRef<String, ()>)>> = const { RefCell::new(None) };
  /// The completion channel, how many calls wait on it, and which busy
  /// period it is in (an idle probe from an earlier one is stale).
  static DONE: RefCell<Option<Arc<DoneSink>>> = const { RefCell::new(None) };
  static PENDING: Cell<u32> = const { Cell::new(0) };
  static BUSY_PERIOD: Cell<u64> = const { Cell::new(0) };
  static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// How long an idle completion channel is kept for the next call.
const IDLE_RELEASE: Duration = Duration::from_millis(10);

/// Registers the JS function that settles the entry's promises.
#[napi(catch_unwind)]
pub fn init(env: &Env, on_done: Function<String, ()>) -> Result<()> {
  SETTLER.set(Some((env.raw() as usize, on_done.create_ref()?)));
  Ok(())
}

/// The completion channel, counting one more pending call. It is referenced
/// only while calls are pending, so it keeps Node alive exactly as long as
/// there is work to wait for; 10 ms after the last call settles it is
/// released, so no handle outlives the work (Jest reports live ones).
fn done_sink(env: &Env) -> Result<Arc<DoneSink>> {
  let existing = DONE.with_borrow(|done| done.clone());
  let sink = match existing {
    Some(sink) => sink,
    None => {
      let sink = Arc::new(new_sink(env)?);
      DONE.set(Some(sink.clone()));
      sink
    }
  };
  if PENDING.get() == 0 {
    BUSY_PERIOD.set(BUSY_PERIOD.get() + 1);
    // SAFETY: on the JS thread of the environment that made the sink.
    unsafe { napi::sys::napi_ref_threadsafe_function(env.raw(), sink.raw()) };
  }
  PENDING.set(PENDING.get() + 1);
  Ok(sink)
}

fn new_sink(env: &Env) -> Result<DoneSink> {
  let settler = SETTLER.with_borrow(|settler| match settler {
    Some((raw, settler)) if *raw == env.raw() as usize => settler.borrow_back(env).ok(),
    _ => None,
  });
  let settler =
    settler.ok_or_else(|| Error::new(Status::GenericFailure, "gatelock: not initialised"))?;
  settler.build_threadsafe_function::<String>().callee_handled::<false>().build_callback(|ctx| {
    match ctx.value.strip_prefix("0 ") {
      Some(period) => release_if_idle(period),
      None => settled_one(&ctx.env),
    }
    Ok(ctx.value)
  })
}

/// One call settled: when none is left, stop keeping Node alive and probe
/// for idleness a little later.
fn settled_one(env: &Env) {
  let left = PENDING.get().saturating_sub(1);
  PENDING.set(left);
  if left > 0 {
    return;
  }
  let Some(sink) = DONE.with_borrow(|done| done.clone()) else {
    return;
  };
  // SAFETY: on the JS thread of the environment that made the sink.
  unsafe { napi::sys::napi_unref_threadsafe_function(env.raw(), sink.raw()) };
  if !PROBING.replace(true) {
    probe_later(sink);
  }
}

/// Sends an idle probe through the channel after `IDLE_RELEASE`; one at a
/// time, so a busy caller pays for one every 10 ms, not one per call.
fn probe_later(sink: Arc<DoneSink>) {
  let probe = format!("0 {}", BUSY_PERIOD.get());
  match runtime::get() {
    Ok(rt) => {
      rt.spawn(async move {
        tokio::time::sleep(IDLE_RELEASE).await;
        sink.call(probe, ThreadsafeFunctionCallMode::NonBlocking);
      });
    }
    Err(_) => PROBING.set(false),
  }
}

/// The idle probe came back: release the channel if no call came since it
/// was sent, probe again if calls came and went, or let the next idle do it.
fn release_if_idle(period: &str) {
  PROBING.set(false);
  if PENDING.get() > 0 {
    return;
  }
  if period.parse() == Ok(BUSY_PERIOD.get()) {
    DONE.take();
  } else if let Some(sink) = DONE.with_borrow(|done| done.clone()) {
    PROBING.set(true);
    probe_later(sink);
  }
}

/// Our key for the calling environment, registering a teardown hook the first
/// time: a worker's locks go with the worker (SPEC 7).
fn env_key(env: &Env) -> Result<u64> {
  let raw = env.raw() as usize;
  if let Some((known, key)) = ENV.get() {
    if known == raw {
      return Ok(key);
    }
  }
  let key = registry::next_id();
  registry::add_env(key);
  env.add_env_cleanup_hook(key, registry::teardown_env)?;
  ENV.set(Some((raw, key)));
  Ok(key)
}

fn parse_request(text: &str) -> std::result::Result<Request, LockError> {
  serde_json::from_str(text).map_err(|e| LockError::Internal(format!("bad request: {e}")))
}

/// Parses a request on the JS thread, then runs `work` with it on the
/// addon's runtime as call `id`.
fn spawn_with_request<W, F>(env: &Env, id: f64, request: &str, work: W) -> Result<()>
where
  W: FnOnce(Request) -> F,
  F: Future<Output = Value> + Send + 'static,
{
  match parse_request(request) {
    Ok(request) => {
      let lock_dir = Some(request.lock_dir.clone());
      spawn_settled(env, id, lock_dir, work(request))
    }
    Err(e) => spawn_settled(env, id, None, async move { failure(&e, Vec::new()) }),
  }
}

/// Runs `work` on the addon's runtime and reports its outcome as call `id`;
/// a panic inside becomes an error result.
fn spawn_settled<F>(env: &Env, id: f64, lock_dir: Option<String>, work: F) -> Result<()>
where
  F: Future<Output = Value> + Send + 'static,
{
  let sink = done_sink(env)?;
  let settle = move |value: Value| {
    // "<id> <json>": one string, which the JS entry splits at the space.
    sink.call(format!("{id} {value}"), ThreadsafeFunctionCallMode::NonBlocking);
  };
  match runtime::get() {
    Ok(rt) => {
      rt.spawn(async move {
        let outcome = match CatchUnwind(Box::pin(work)).await {
          Ok(value) => value,
          Err(panic) => failure(&LockError::Internal(panic_text(panic)), Vec::new()),
        };
        settle(outcome);
      });
    }
    Err(e) => {
      let dir = lock_dir.unwrap_or_default();
      settle(failure(&LockError::dir(&dir, e), Vec::new()));
    }
  }
  Ok(())
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
  payload
    .downcast_ref::<&str>()
    .map(|s| s.to_string())
    .or_else(|| payload.downcast_ref::<String>().cloned())
    .unwrap_or_else(|| "panic".into())
}

/// Polls a future inside `catch_unwind`, so a panic in the addon's work
/// becomes an error result instead of tearing down a runtime thread.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
  type Output = std::result::Result<F::Output, Box<dyn Any + Send>>;

  fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
    let inner = self.0.as_mut();
    match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
      Ok(Poll::Pending) => Poll::Pending,
      Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
      Err(payload) => Poll::Ready(Err(payload)),
    }
  }
}

fn failure(err: &LockError, events: Vec<Value>) -> Value {
  json!({ "ok": false, "error": err.to_json(), "events": events })
}

/// Telemetry: each event goes to the JS callback at once through a weak
/// threadsafe function (it never keeps the process alive), numbered, and is
/// kept so the JS entry can deliver any still in flight before it settles.
fn event_sink(on_event: Option<Function<String, ()>>) -> Result<(Emit, Arc<Mutex<Vec<Value>>>)> {
  let sink: Option<EventSink> = match on_event {
    Some(f) => Some(
      f.build_threadsafe_function::<String>().weak::<true>().callee_handled::<false>().build()?,
    ),
    None => None,
  };
  let kept = Arc::new(Mutex::new(Vec::new()));
  let counter = AtomicU64::new(0);
  let log = kept.clone();
  let emit: Emit = Arc::new(move |event: Value| {
    let index = counter.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut log) = log.lock() {
      log.push(event.clone());
    }
    if let Some(sink) = &sink {
      let text = json!({ "i": index, "e": event }).to_string();
      sink.call(text, ThreadsafeFunctionCallMode::NonBlocking);
    }
  });
  Ok((emit, kept))
}

/// Starts an acquire; resolves to `{ok, handle, lockPath, configPath, events}`
/// or `{ok: false, error, events}`.
#[napi(catch_unwind)]
pub fn acquire(
  env: &Env,
  id: f64,
  request: String,
  on_event: Option<Function<String, ()>>,
) -> Result<()> {
  let key = env_key(env)?;
  let (emit, kept) = event_sink(on_event)?;
  let request = parse_request(&request);
  let lock_dir = request.as_ref().ok().map(|r| r.lock_dir.clone());
  let work = async move {
    let events = |kept: &Arc<Mutex<Vec<Value>>>| kept.lock().map(|l| l.clone()).unwrap_or_default();
    let request = match request {
      Ok(request) => request,
      Err(e) => return failure(&e, Vec::new()),
    };
    let Some((acquire_id, cancel)) = registry::begin_acquire(key) else {
      return failure(&LockError::Internal("environment torn down".into()), Vec::new());
    };
    let result = acquire::acquire(&request, &emit, &cancel).await;
    match result {
      Ok(won) => {
        let lock_path = won.location.lock_path.clone();
        let config_path = won.location.config_path.clone();
        let held = Held::new(key, lock_path.clone(), won.payload, won.lock, emit.clone());
        drop(emit);
        match registry::finish_acquire(key, acquire_id, Some(held)) {
          Some((handle, held)) => {
            tokio::spawn(acquire::watch(held));
            json!({
              "ok": true,
              "handle": handle,
              "lockPath": lock_path,
              "configPath": config_path,
              "events": events(&kept),
            })
          }
          None => failure(&LockError::Internal("environment torn down".into()), events(&kept)),
        }
      }
      Err(e) => {
        registry::finish_acquire(key, acquire_id, None);
        failure(&e, events(&kept))
      }
    }
  };
  spawn_settled(env, id, lock_dir, work)
}

/// Releases a handle; a second call finds nothing and succeeds.
#[napi(catch_unwind)]
pub fn release(env: &Env, id: f64, handle: f64) -> Result<()> {
  let work = async move {
    let Some(held) = registry::take(handle as u64) else {
      return json!({ "ok": true });
    };
    match held.take_for_release().map(|lock| lock.release()) {
      Some(Err(e)) => failure(&LockError::release(&held.lock_path, e), Vec::new()),
      _ => json!({ "ok": true }),
    }
  };
  spawn_settled(env, id, None, work)
}

/// The report of `inspectGatewayLock`.
#[napi(catch_unwind)]
pub fn inspect(env: &Env, id: f64, request: String) -> Result<()> {
  spawn_with_request(env, id, &request, |request| async move {
    match acquire::inspect(&request).await {
      Ok(report) => json!({ "ok": true, "report": report }),
      Err(e) => failure(&e, Vec::new()),
    }
  })
}

/// `gatelock clear`: `{ok, outcome: "none" | "removed" | "refused", status, evidence}`.
#[napi(catch_unwind)]
pub fn clear(env: &Env, id: f64, request: String, force: bool) -> Result<()> {
  spawn_with_request(env, id, &request, move |request| async move {
    let (outcome, report) = match acquire::clear(&request, force).await {
      Ok(acquire::Cleared::Nothing) => ("none", Value::Null),
      Ok(acquire::Cleared::Removed(report)) => ("removed", report),
      Ok(acquire::Cleared::Refused(report)) => ("refused", report),
      Err(e) => return failure(&e, Vec::new()),
    };
    json!({ "ok": true, "outcome": outcome, "report": report })
  })
}

/// The port of the live gateway that holds the lock, if any.
#[napi(catch_unwind)]
pub fn active_port(env: &Env, id: f64, request: String) -> Result<()> {
  spawn_with_request(env, id, &request, |request| async move {
    json!({ "ok": true, "port": acquire::active_port(&request).await })
  })
}

/// Panics on purpose, so tests can show a panic becomes a rejection.
#[napi(catch_unwind)]
pub fn panic_for_test(env: &Env, id: f64) -> Result<()> {
  spawn_settled(env, id, None, async { panic!("deliberate panic for a test") })
}
