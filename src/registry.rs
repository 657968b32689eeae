//! The locks this process holds, and the JavaScript environments (main
//! thread, worker threads) that asked for them, so that a worker's teardown
//! cancels its waits and releases its locks (SPEC 7).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::Notify;

use crate::lockfile::{FileId, OwnedLock};

/// Delivers one telemetry event to the JS callback, if there is one.
pub type Emit = Arc<dyn Fn(Value) + Send + Sync>;

/// Cancels one pending acquire.
#[derive(Default)]
pub struct Cancel {
  flag: AtomicBool,
  pub notify: Notify,
}

impl Cancel {
  pub fn cancel(&self) {
    self.flag.store(true, Ordering::SeqCst);
    self.notify.notify_waiters();
  }

  pub fn is_cancelled(&self) -> bool {
    self.flag.load(Ordering::SeqCst)
  }
}

/// A lock held by a handle: the file (gone once released or lost), what is
/// needed to recreate it, and where to report its loss.
pub struct Held {
  pub env: u64,
  pub lock_path: String,
  pub payload: Vec<u8>,
  pub lock: Mutex<Option<OwnedLock>>,
  /// The owner's telemetry callback, dropped on release so that nothing of
  /// the handle outlives it (Jest reports a live threadsafe function).
  pub emit: Mutex<Option<Emit>>,
  /// Wakes the watcher when the handle is released.
  pub released: Notify,
}

fn unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
  mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Held {
  pub fn new(env: u64, lock_path: String, payload: Vec<u8>, lock: OwnedLock, emit: Emit) -> Held {
    Held {
      env,
      lock_path,
      payload,
      lock: Mutex::new(Some(lock)),
      emit: Mutex::new(Some(emit)),
      released: Notify::new(),
    }
  }

  pub fn lock(&self) -> MutexGuard<'_, Option<OwnedLock>> {
    unpoisoned(&self.lock)
  }

  /// Sends an event to the owner's callback, if it still has one.
  pub fn emit(&self, event: Value) {
    let emit = unpoisoned(&self.emit).clone();
    if let Some(emit) = emit {
      emit(event);
    }
  }

  /// Takes the lock out for release, and lets go of everything else.
  pub fn take_for_release(&self) -> Option<OwnedLock> {
    let lock = self.lock().take();
    unpoisoned(&self.emit).take();
    self.released.notify_one();
    lock
  }
}

#[derive(Default)]
struct Registry {
  /// Live environments and their pending acquires.
  envs: HashMap<u64, HashMap<u64, Arc<Cancel>>>,
  held: HashMap<u64, Arc<Held>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
  let mut guard = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
  f(guard.get_or_insert_with(Registry::default))
}

pub fn next_id() -> u64 {
  NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub fn add_env(env: u64) {
  with(|r| {
    r.envs.entry(env).or_default();
  });
}

/// Records a pending acquire; `None` when its environment is already gone.
pub fn begin_acquire(env: u64) -> Option<(u64, Arc<Cancel>)> {
  with(|r| {
    let pending = r.envs.get_mut(&env)?;
    let id = next_id();
    let cancel = Arc::new(Cancel::default());
    pending.insert(id, cancel.clone());
    Some((id, cancel))
  })
}

/// Ends a pending acquire. A lock it won is registered under its environment,
/// or released at once when that environment has been torn down meanwhile.
pub fn finish_acquire(env: u64, acquire: u64, held: Option<Held>) -> Option<(u64, Arc<Held>)> {
  let held = held.map(Arc::new);
  let registered = with(|r| {
    let alive = r.envs.get_mut(&env).map(|pending| pending.remove(&acquire)).is_some();
    let held = held.clone().filter(|_| alive)?;
    let id = next_id();
    r.held.insert(id, held.clone());
    Some((id, held))
  });
  if registered.is_none() {
    if let Some(lock) = held.and_then(|held| held.take_for_release()) {
      let _ = lock.release();
    }
  }
  registered
}

/// Whether a handle of this process holds the file with this identity.
pub fn held_here(id: FileId) -> bool {
  let all: Vec<Arc<Held>> = with(|r| r.held.values().cloned().collect());
  all.iter().any(|held| held.lock().as_ref().is_some_and(|lock| lock.id == id))
}

/// Takes a handle out of the registry, for `release()`.
pub fn take(handle: u64) -> Option<Arc<Held>> {
  with(|r| r.held.remove(&handle))
}

/// An environment is being torn down: cancel its waits and release its
/// locks, synchronously, on its own thread.
pub fn teardown_env(env: u64) {
  let (pending, held) = with(|r| {
    let pending = r.envs.remove(&env).unwrap_or_default();
    let ids: Vec<u64> = r.held.iter().filter(|(_, h)| h.env == env).map(|(id, _)| *id).collect();
    let held: Vec<Arc<Held>> = ids.iter().filter_map(|id| r.held.remove(id)).collect();
    (pending, held)
  });
  for cancel in pending.values() {
    cancel.cancel();
  }
  for held in held {
    if let Some(lock) = held.take_for_release() {
      let _ = lock.release();
    }
  }
}
