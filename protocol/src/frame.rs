//! Framing: split a byte stream into tagged messages.
//!
//! Every message after startup is a 1-byte tag, a 4-byte big-endian length
//! that counts itself but not the tag, and the body
//! (<https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS>).
//! This is the only place that reads that header.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};

/// Default cap on one message: large enough for a 1 GB field plus overhead
/// (Postgres' own limit on a datum), small enough that a corrupt length
/// cannot make us reserve unbounded memory.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// One message: its tag and its body, the body sharing the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// A message header: its tag and the length of its body, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    pub body_len: usize,
}

impl Header {
    /// Header and body together.
    pub fn frame_len(&self) -> usize {
        5 + self.body_len
    }
}

/// Incremental frame splitter. Feed it a growing buffer; it takes complete
/// frames off the front and leaves partial ones in place.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// The largest message accepted.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The header at the front of `buf`, `Ok(None)` while fewer than five
    /// bytes are there. A length under 4 (it counts itself) or over the cap
    /// is an error: nobody may make us wait for, or reserve, more than the
    /// cap. Every reader of message headers goes through here.
    pub fn header(&self, buf: &[u8]) -> Result<Option<Header>> {
        let Some(h) = buf.get(..5) else {
            return Ok(None);
        };
        let tag = h[0];
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        if len < 4 {
            return Err(ProtocolError::LengthTooSmall { tag, len });
        }
        if len as usize > self.max_len {
            return Err(ProtocolError::LengthTooLarge {
                tag,
                len,
                max: self.max_len,
            });
        }
        Ok(Some(Header {
            tag,
            body_len: len as usize - 4,
        }))
    }

    /// Take one complete frame off the front of `buf`, or return `Ok(None)`
    /// when more bytes are needed. On `Ok(None)` the buffer has been
    /// reserved for the rest of the frame, so the caller's next read fills it
    /// in one go.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        let Some(Header { tag, body_len }) = self.header(buf)? else {
            return Ok(None);
        };
        if buf.len() < 5 + body_len {
            // The length is bounded by `max_len` above, so this reservation
            // is too.
            buf.reserve(5 + body_len - buf.len());
            return Ok(None);
        }
        buf.advance(5);
        let body = buf.split_to(body_len).freeze();
        Ok(Some(Frame { tag, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_are_checked_before_any_body_arrives() {
        let d = FrameDecoder::new(1 << 20);
        assert_eq!(d.header(b"d\0\0").unwrap(), None);
        assert_eq!(
            d.header(b"d\0\0\0\x09abc").unwrap(),
            Some(Header {
                tag: b'd',
                body_len: 5
            })
        );
        assert!(matches!(
            d.header(b"d\x7f\xff\xff\xff"),
            Err(ProtocolError::LengthTooLarge { tag: b'd', .. })
        ));
        assert!(matches!(
            d.header(b"d\0\0\0\x03"),
            Err(ProtocolError::LengthTooSmall { tag: b'd', len: 3 })
        ));
    }

    #[test]
    fn splits_frames_across_reads() {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"Z\0\0\0\x05");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"IC\0\0\0\x04");
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.tag, b'Z');
        assert_eq!(&f.body[..], b"I");
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.tag, b'C');
        assert!(f.body.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_lengths_naming_the_tag() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&b"D\0\0\0\x03"[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::LengthTooSmall { tag: b'D', len: 3 });
        assert!(err.to_string().contains("'D'"));
        let mut buf = BytesMut::from(&b"D\x7f\xff\xff\xff"[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::LengthTooLarge { tag: b'D', .. }
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = FrameDecoder::new(1024);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
            // A bogus length never reserves much more than the cap.
            prop_assert!(buf.capacity() <= 4 * 1024);
        }
    }
}
