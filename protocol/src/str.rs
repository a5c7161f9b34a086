//! A UTF-8 string that shares a frame's buffer.

use bytes::Bytes;

use crate::error::{ProtocolError, Result};

/// Validated UTF-8 held as `Bytes`, so names and values parsed from a
/// message point into the message instead of being copied.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Str(Bytes);

impl Str {
    pub fn from_bytes(bytes: Bytes, context: &'static str) -> Result<Str> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Str(bytes)),
            Err(_) => Err(ProtocolError::InvalidUtf8 { context }),
        }
    }

    pub fn from_static(s: &'static str) -> Str {
        Str(Bytes::from_static(s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Checked in `from_bytes`; every constructor goes through a &str or
        // that check, so this never fails. `unwrap_or` keeps it panic-free.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
