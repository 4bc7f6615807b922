//! # resilient-kv
//!
//! A crash-resilient, thread-safe, embedded key-value store for application state: settings,
//! feature flags, session state, counters. Values are JSON-like ([`Value`]) and are stored in
//! the BONJSON binary format by this crate's own codec ([`bonjson`]).
//!
//! ```
//! use resilient_kv::{bonjson, Value};
//!
//! let settings: Value = [("theme", Value::from("dark")), ("volume", Value::Integer(30))]
//!     .into_iter()
//!     .collect();
//! let bytes = bonjson::encode(&settings)?;
//! assert_eq!(bonjson::decode(&bytes)?, settings);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod batch;
pub mod bonjson;
#[cfg(test)]
mod compaction_tests;
mod compactor;
mod error;
mod events;
#[cfg(test)]
mod full_disk_tests;
mod journal;
mod leb128;
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_support;
mod options;
mod pace;
#[cfg(test)]
mod power_loss_tests;
mod prefault;
mod prefetch;
#[cfg(test)]
mod recovery_tests;
#[cfg(feature = "serde")]
mod serde_impl;
mod shared;
mod snapshot;
mod stats;
mod store;
mod sync;
#[cfg(test)]
mod test_support;
#[doc(hidden)]
pub mod testing;
mod value;
pub mod verify;

pub use batch::Batch;
pub use error::{Error, Result};
pub use events::Event;
pub use journal::format::{MAX_KEY_LEN, check_key};
pub use options::{Builder, Durability, MIN_BUFFER_SIZE, MIN_HIGH_WATER_MARK};
#[cfg(feature = "serde")]
pub use serde_impl::{ValueError, from_value, to_value};
pub use snapshot::Snapshot;
pub use stats::Stats;
pub use store::KVStore;
pub use value::Value;

/// Runs the code blocks of README.md as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
