//! serde support for [`Value`] (placeholder, being written).
use crate::Value;

/// An error converting between a Rust type and a [`Value`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

/// Converts a serializable Rust value into a [`Value`].
pub fn to_value<T: serde::Serialize>(_value: &T) -> Result<Value, ValueError> {
    Err(ValueError("not yet".into()))
}

/// Converts a [`Value`] into a Rust type.
pub fn from_value<T: serde::de::DeserializeOwned>(_value: Value) -> Result<T, ValueError> {
    Err(ValueError("not yet".into()))
}
