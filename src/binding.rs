//! The Node.js edge. Each export validates nothing (the JS entry did), hands
//! the work to the addon's runtime and returns a promise of a JSON string,
//! which the JS entry turns into a handle or a `GatewayLockError`.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Function, Object};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Error, Result, Status};
use napi_derive::napi;
use serde_json::{json, Value};

use crate::acquire::{self, Request};
use crate::error::LockError;
use crate::registry::{self, Emit, Held};
use crate::runtime;

type Resolver = Box<dyn FnOnce(Env) -> Result<String>>;
type EventSink = ThreadsafeFunction<String, (), String, Status, false, true>;

thread_local! {
  /// The environment of this JS thread: its raw pointer and our key for it.
  static ENV: Cell<Option<(usize, u64)>> = const { Cell::new(None) };
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

/// Runs `work` on the addon's runtime; a panic inside becomes an error result.
fn spawn_settled<F>(env: &Env, lock_dir: Option<String>, work: F) -> Result<Object<'_>>
where
  F: Future<Output = Value> + Send + 'static,
{
  let (deferred, promise) = env.create_deferred::<String, Resolver>()?;
  let settle = move |value: Value| {
    let text = value.to_string();
    deferred.resolve(Box::new(move |_| Ok(text)));
  };
  match runtime::get() {
    Ok(rt) => {
      rt.spawn(async move {
        let outcome = match tokio::spawn(work).await {
          Ok(value) => value,
          Err(join) => failure(&LockError::Internal(panic_text(join)), Vec::new()),
        };
        settle(outcome);
      });
    }
    Err(e) => {
      let dir = lock_dir.unwrap_or_default();
      settle(failure(&LockError::dir(&dir, e), Vec::new()));
    }
  }
  Ok(promise)
}

fn panic_text(join: tokio::task::JoinError) -> String {
  if !join.is_panic() {
    return "task cancelled".into();
  }
  let payload = join.into_panic();
  payload
    .downcast_ref::<&str>()
    .map(|s| s.to_string())
    .or_else(|| payload.downcast_ref::<String>().cloned())
    .unwrap_or_else(|| "panic".into())
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
#[napi(catch_unwind, ts_return_type = "Promise<string>")]
pub fn acquire<'env>(
  env: &'env Env,
  request: String,
  on_event: Option<Function<String, ()>>,
) -> Result<Object<'env>> {
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
            tokio::spawn(acquire::watch(handle, held));
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
  spawn_settled(env, lock_dir, work)
}

/// Releases a handle; a second call finds nothing and succeeds.
#[napi(catch_unwind, ts_return_type = "Promise<string>")]
pub fn release(env: &Env, handle: f64) -> Result<Object<'_>> {
  let work = async move {
    let Some(held) = registry::take(handle as u64) else {
      return json!({ "ok": true });
    };
    match held.take_for_release().map(|lock| lock.release()) {
      Some(Err(e)) => failure(&LockError::release(&held.lock_path, e), Vec::new()),
      _ => json!({ "ok": true }),
    }
  };
  spawn_settled(env, None, work)
}

/// The report of `inspectGatewayLock`.
#[napi(catch_unwind, ts_return_type = "Promise<string>")]
pub fn inspect(env: &Env, request: String) -> Result<Object<'_>> {
  let work = async move {
    let request = match parse_request(&request) {
      Ok(request) => request,
      Err(e) => return failure(&e, Vec::new()),
    };
    match acquire::inspect(&request).await {
      Ok(report) => json!({ "ok": true, "report": report }),
      Err(e) => failure(&e, Vec::new()),
    }
  };
  spawn_settled(env, None, work)
}

/// `gatelock clear`: `{ok, outcome: "none" | "removed" | "refused", status, evidence}`.
#[napi(catch_unwind, ts_return_type = "Promise<string>")]
pub fn clear(env: &Env, request: String, force: bool) -> Result<Object<'_>> {
  let work = async move {
    let request = match parse_request(&request) {
      Ok(request) => request,
      Err(e) => return failure(&e, Vec::new()),
    };
    match acquire::clear(&request, force).await {
      Ok(acquire::Cleared::Nothing) => json!({ "ok": true, "outcome": "none" }),
      Ok(acquire::Cleared::Removed(report)) => {
        json!({ "ok": true, "outcome": "removed", "report": report })
      }
      Ok(acquire::Cleared::Refused(report)) => {
        json!({ "ok": true, "outcome": "refused", "report": report })
      }
      Err(e) => failure(&e, Vec::new()),
    }
  };
  spawn_settled(env, None, work)
}

/// The port of the live gateway that holds the lock, if any.
#[napi(catch_unwind, ts_return_type = "Promise<string>")]
pub fn active_port(env: &Env, request: String) -> Result<Object<'_>> {
  let work = async move {
    let port = match parse_request(&request) {
      Ok(request) => acquire::active_port(&request).await,
      Err(_) => None,
    };
    json!({ "ok": true, "port": port })
  };
  spawn_settled(env, None, work)
}

/// Panics on purpose, so tests can show a panic becomes a rejection.
#[napi(catch_unwind, ts_return_type = "Promise<string>")]
pub fn panic_for_test(env: &Env) -> Result<Object<'_>> {
  spawn_settled(env, None, async { panic!("deliberate panic for a test") })
}

#[allow(dead_code)]
fn unused(_: Error) {}
