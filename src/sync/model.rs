//! Loom stand-ins (`cfg(loom)` only); see the parent module for what each one promises.
#![allow(
    unreachable_pub,
    reason = "the channel types are reached through `KVStore::subscribe` in loom builds"
)]
#![allow(
    clippy::expect_used,
    reason = "a guard is only ever absent inside `Condvar::wait_for`, which puts it back"
)]

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;
use std::time::Duration;

pub(crate) use loom::sync::Arc;
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};
pub(crate) use loom::thread::JoinHandle;

/// `parking_lot::Mutex`'s shape over loom's mutex (no poisoning).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

/// A held [`Mutex`]; the inner guard is only absent while a [`Condvar`] waits with it.
pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_deref().expect("guard present outside a wait")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_deref_mut().expect("guard present outside a wait")
    }
}

/// `parking_lot::Condvar`'s shape over loom's (loom does not model timeouts: a timed wait is
/// a wait, so a model that relied on a timeout to make progress reports a deadlock).
#[derive(Debug, Default)]
pub(crate) struct Condvar(loom::sync::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(loom::sync::Condvar::new())
    }

    pub(crate) fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) {
        let inner = guard.0.take().expect("guard present before a wait");
        let (inner, _) = self
            .0
            .wait_timeout(inner, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        guard.0 = Some(inner);
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// `arc_swap::ArcSwap`'s shape: `load` holds a strong count.
pub(crate) struct ArcSwap<T>(loom::sync::Mutex<Arc<T>>);

impl<T> ArcSwap<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        ArcSwap(loom::sync::Mutex::new(value))
    }

    pub(crate) fn load(&self) -> Arc<T> {
        self.load_full()
    }

    pub(crate) fn load_full(&self) -> Arc<T> {
        Arc::clone(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
        std::mem::replace(
            &mut *self.0.lock().unwrap_or_else(PoisonError::into_inner),
            value,
        )
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        drop(self.swap(value));
    }
}

/// `crossbeam_channel`'s shape (unbounded; `bounded` ignores its capacity, which the store
/// only uses for one-shot replies).
pub mod channel {
    use super::*;

    struct State<T> {
        queue: VecDeque<T>,
        senders: usize,
        receiver: bool,
    }

    struct Chan<T> {
        state: loom::sync::Mutex<State<T>>,
        ready: loom::sync::Condvar,
    }

    impl<T> Chan<T> {
        fn state(&self) -> loom::sync::MutexGuard<'_, State<T>> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// The sending side.
    pub struct Sender<T>(Arc<Chan<T>>);

    /// The receiving side.
    pub struct Receiver<T>(Arc<Chan<T>>);

    /// The other side is gone.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Disconnected;

    pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        let chan = Arc::new(Chan {
            state: loom::sync::Mutex::new(State {
                queue: VecDeque::new(),
                senders: 1,
                receiver: true,
            }),
            ready: loom::sync::Condvar::new(),
        });
        (Sender(Arc::clone(&chan)), Receiver(chan))
    }

    pub(crate) fn bounded<T>(_capacity: usize) -> (Sender<T>, Receiver<T>) {
        unbounded()
    }

    impl<T> Sender<T> {
        /// Queues `value`; fails if the receiver is gone.
        pub fn send(&self, value: T) -> Result<(), Disconnected> {
            let mut state = self.0.state();
            if !state.receiver {
                return Err(Disconnected);
            }
            state.queue.push_back(value);
            drop(state);
            self.0.ready.notify_all();
            Ok(())
        }
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            self.0.state().senders += 1;
            Sender(Arc::clone(&self.0))
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            self.0.state().senders -= 1;
            self.0.ready.notify_all();
        }
    }

    impl<T> Receiver<T> {
        /// Waits for a value; fails once the queue is empty and every sender is gone.
        pub fn recv(&self) -> Result<T, Disconnected> {
            let mut state = self.0.state();
            loop {
                if let Some(value) = state.queue.pop_front() {
                    return Ok(value);
                }
                if state.senders == 0 {
                    return Err(Disconnected);
                }
                state = self
                    .0
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }

        /// A queued value, if any.
        pub fn try_recv(&self) -> Result<T, Disconnected> {
            self.0.state().queue.pop_front().ok_or(Disconnected)
        }

        /// Whether nothing is queued now.
        pub fn is_empty(&self) -> bool {
            self.0.state().queue.is_empty()
        }

        /// Every value queued now.
        pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
            std::iter::from_fn(move || self.try_recv().ok())
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            self.0.state().receiver = false;
        }
    }
}

pub(crate) fn spawn<F>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    loom::thread::Builder::new().name(name.into()).spawn(f)
}

pub(crate) fn back_off() {
    loom::thread::yield_now();
}
