//! `Redacted<T>`: a value handed to the client once (a token, a TOTP secret, recovery codes)
//! that serializes as itself but whose `Debug` prints only a marker and that has no `Display`,
//! so a `{:?}` of a login outcome in a log or a panic message shows no secret. It must never
//! grow a `Display`, a `Deref` or a `Debug` that shows the value.

use serde::{Serialize, Serializer};

/// What `Debug` prints instead of the value.
pub const MARKER: &str = "[redacted]";

pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that must hand it on.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MARKER)
    }
}

/// Transparent: the JSON is exactly that of the value.
impl<T: Serialize> Serialize for Redacted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}
