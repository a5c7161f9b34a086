//! The one error type of the protocol crate: everything a parser can reject.

use thiserror::Error;

/// Why a byte sequence could not be decoded.
///
/// Every variant names where in the protocol the problem was found (a message
/// tag, a field) so the connection layer can say "server sent a malformed
/// DataRow" rather than "unexpected end of input".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The input ended before a field could be read.
    #[error("{context}: message truncated, needed {needed} more bytes at offset {offset}")]
    Truncated {
        context: &'static str,
        offset: usize,
        needed: usize,
    },
    /// A frame header declared a length under 4 (the length counts itself).
    #[error("message '{}' declares length {len}, below the minimum of 4", tag_char(*tag))]
    LengthTooSmall { tag: u8, len: u32 },
    /// A frame header declared a length above the configured cap.
    #[error("message '{}' declares length {len}, above the limit of {max} bytes", tag_char(*tag))]
    LengthTooLarge { tag: u8, len: u32, max: usize },
    /// A message tag this side of the protocol does not know.
    #[error("{context}: unknown message tag '{}' (0x{tag:02x})", tag_char(*tag))]
    UnknownTag { context: &'static str, tag: u8 },
    /// A message body had bytes left after every field was read.
    #[error("{context}: {extra} unexpected trailing bytes")]
    TrailingBytes { context: &'static str, extra: usize },
    /// A C string without its terminating NUL.
    #[error("{context}: string is not NUL-terminated")]
    MissingNul { context: &'static str },
    /// A string that is not valid UTF-8.
    #[error("{context}: string is not valid UTF-8")]
    InvalidUtf8 { context: &'static str },
    /// A count or length field that is negative or otherwise out of range.
    #[error("{context}: invalid value {value}")]
    InvalidValue { context: &'static str, value: i64 },
    /// A sub-kind byte (authentication code, tuple column kind, ...) not known.
    #[error("{context}: unknown kind {kind}")]
    UnknownKind { context: &'static str, kind: i64 },
    /// Binary COPY stream problems (signature, flags, trailer).
    #[error("binary COPY: {0}")]
    Copy(&'static str),
    /// Something to encode that the protocol has no room for: more
    /// parameters than a 16-bit count holds, a value longer than a 32-bit
    /// length.
    #[error("{context}: {value} is more than the protocol allows ({max})")]
    TooLarge {
        context: &'static str,
        value: usize,
        max: usize,
    },
    /// A binary COPY row whose field count differs from the first row's.
    #[error("binary COPY: row has {got} fields, expected {expected}")]
    FieldCount { expected: u16, got: u16 },
}

fn tag_char(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
