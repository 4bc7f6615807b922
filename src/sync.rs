//! Every synchronisation primitive the store's protocol uses, in one place, so that the
//! `loom-tests/` crate can build the library with `--cfg loom` and model-check the real code.
//!
//! In a normal build these are the real things: `std`'s `Arc` and atomics, `parking_lot`'s
//! locks, `arc-swap`, `crossbeam-channel` and `std::thread`. Under `cfg(loom)` they are loom's
//! own primitives or small stand-ins built from them, with the same guarantees the real ones
//! give the store:
//! - `ArcSwap`: a loom mutex around an `Arc`. `load` hands out a strong count, which is what
//!   `arc-swap` guarantees once `swap` returns (it pays every outstanding debt first), so the
//!   writer's `Arc::get_mut` on the spare version sees exactly the readers it must see.
//! - channels: a loom mutex and condition variable around a queue; `send` fails once the
//!   receiver is gone and `recv` fails once every sender is gone, as `crossbeam-channel` does.
//!
//! Statistics counters stay plain `std` atomics in both builds: they take no part in the
//! protocol, and leaving them out keeps loom's state space small.

#[cfg(not(loom))]
mod real {
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};
    pub(crate) use std::thread::JoinHandle;

    pub(crate) use arc_swap::ArcSwap;
    pub(crate) use parking_lot::{Condvar, Mutex};

    /// Channels between the store, its compactor and subscribers.
    pub(crate) mod channel {
        pub(crate) use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
    }

    /// Spawns a named thread.
    pub(crate) fn spawn<F>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        std::thread::Builder::new().name(name.into()).spawn(f)
    }

    /// Waits a moment before looking again for something another thread holds briefly.
    pub(crate) fn back_off() {
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

#[cfg(not(loom))]
pub(crate) use real::*;

#[cfg(loom)]
mod model;

#[cfg(loom)]
pub(crate) use model::*;
