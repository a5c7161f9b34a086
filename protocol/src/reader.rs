//! A bounds-checked cursor over a message body.
//!
//! Every parser in this crate reads untrusted bytes through [`Reader`]: each
//! accessor returns an error on short input instead of panicking, and slices
//! are handed out as `Bytes` that share the frame's buffer (no copy).

use bytes::Bytes;

use crate::error::{ProtocolError, Result};

/// Cursor over one message body. `context` names the message being parsed and
/// appears in every error.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
    context: &'static str,
}

impl Reader {
    pub fn new(buf: Bytes, context: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            context,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn context(&self) -> &'static str {
        self.context
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.remaining() < n {
            return Err(ProtocolError::Truncated {
                context: self.context,
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.need(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A non-negative 16-bit count, as used for field and column counts.
    pub fn count16(&mut self) -> Result<u16> {
        let v = self.i16()?;
        u16::try_from(v).map_err(|_| self.invalid(v as i64))
    }

    /// A non-negative 32-bit count or length.
    pub fn count32(&mut self) -> Result<usize> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| self.invalid(v as i64))
    }

    /// The next `n` bytes, sharing the underlying buffer.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Skip `n` bytes, returning the range they occupied in the body.
    pub fn skip(&mut self, n: usize) -> Result<std::ops::Range<usize>> {
        self.need(n)?;
        let start = self.pos;
        self.pos += n;
        Ok(start..self.pos)
    }

    /// The bytes read since offset `start`, sharing the buffer.
    pub fn slice_from(&self, start: usize) -> Bytes {
        self.buf.slice(start.min(self.pos)..self.pos)
    }

    /// Everything left.
    pub fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// A NUL-terminated string (the terminator is consumed, not returned),
    /// checked for UTF-8.
    pub fn cstr(&mut self) -> Result<crate::Str> {
        let bytes = self.cstr_bytes()?;
        crate::Str::from_bytes(bytes, self.context)
    }

    /// A NUL-terminated byte string without the UTF-8 check.
    pub fn cstr_bytes(&mut self) -> Result<Bytes> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(ProtocolError::MissingNul {
                context: self.context,
            });
        };
        let out = self.buf.slice(self.pos..self.pos + nul);
        self.pos += nul + 1;
        Ok(out)
    }

    /// Error unless the body has been read to its end.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(ProtocolError::TrailingBytes {
                context: self.context,
                extra: self.remaining(),
            });
        }
        Ok(())
    }

    pub fn invalid(&self, value: i64) -> ProtocolError {
        ProtocolError::InvalidValue {
            context: self.context,
            value,
        }
    }

    pub fn unknown_kind(&self, kind: i64) -> ProtocolError {
        ProtocolError::UnknownKind {
            context: self.context,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(Bytes::from_static(&[0, 1, 2]), "test");
        assert_eq!(r.i16().unwrap(), 1);
        let err = r.i32().unwrap_err();
        assert_eq!(
            err,
            ProtocolError::Truncated {
                context: "test",
                offset: 2,
                needed: 3
            }
        );
        // A failed read consumes nothing.
        assert_eq!(r.u8().unwrap(), 2);
        r.finish().unwrap();
    }

    #[test]
    fn cstr_requires_nul_and_utf8() {
        let mut r = Reader::new(Bytes::from_static(b"abc\0\xff\0x"), "t");
        assert_eq!(r.cstr().unwrap().as_str(), "abc");
        assert_eq!(
            r.cstr().unwrap_err(),
            ProtocolError::InvalidUtf8 { context: "t" }
        );
        assert_eq!(
            r.cstr().unwrap_err(),
            ProtocolError::MissingNul { context: "t" }
        );
    }

    #[test]
    fn negative_counts_are_rejected() {
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff]), "t");
        assert!(matches!(
            r.count16(),
            Err(ProtocolError::InvalidValue { value: -1, .. })
        ));
        let mut r = Reader::new(Bytes::from_static(&[0x80, 0, 0, 0]), "t");
        assert!(r.count32().is_err());
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let r = Reader::new(Bytes::from_static(&[1]), "t");
        assert_eq!(
            r.finish().unwrap_err(),
            ProtocolError::TrailingBytes {
                context: "t",
                extra: 1
            }
        );
    }
}
