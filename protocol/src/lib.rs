//! Sans-IO PostgreSQL wire protocol for pgdog.
//!
//! Bytes go in, typed messages come out; nothing here does I/O, spawns tasks
//! or panics on any input. The layers, in the order bytes flow through them:
//!
//! - [`frame`]: split a byte stream into `(tag, body)` frames.
//! - [`backend`]: what the server sends, typed; [`frontend`]: what we send.
//! - [`copy_binary`]: rows of a `COPY ... (FORMAT binary)` stream;
//!   [`copy_text`]: rows of a text one.
//! - [`replication`]: the streaming replication envelope inside CopyData
//!   (`w`, `k`, `r`, `h`).
//! - [`pgoutput`]: logical decoding messages inside XLogData.

// Counts and lengths go through checked conversions: a narrowing `as`
// would wrap silently on input nobody expected.
#![warn(clippy::cast_possible_truncation)]
// No function runs past 100 lines (clippy.toml at the root sets it).
#![warn(clippy::too_many_lines)]

pub mod backend;
pub mod copy_binary;
pub mod copy_text;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod pgoutput;
pub mod reader;
pub mod replication;
mod str;

pub use error::{ProtocolError, Result};
pub use str::Str;

/// A log sequence number: a byte position in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// Parse the `X/Y` text form Postgres prints.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsn_text_round_trip() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn::ZERO));
        assert_eq!(Lsn::parse("junk"), None);
        assert_eq!(Lsn::parse("1/"), None);
        assert_eq!(Lsn::parse("100000000/0"), None);
    }
}
