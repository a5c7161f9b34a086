//! Text COPY: rows of `COPY ... (FORMAT text)`, streamed.
//!
//! Layout (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.2>):
//! one row per line, ended by a newline; fields separated by a tab; `\N`
//! is NULL; backslash escapes `\b \f \n \r \t \v \\`, `\NNN` (octal) and
//! `\xHH` stand for bytes. A raw newline byte therefore always ends a row,
//! which is what makes splitting cheap. pgdog reads this format only for
//! tables whose types cannot travel in binary between servers (arrays of
//! user-defined types, composite types).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use crate::error::{ProtocolError, Result};

/// Splits CopyData bodies into rows (each without its newline). A row
/// inside one chunk is a slice of it; only a row spanning chunks is copied.
#[derive(Debug, Default)]
pub struct Splitter {
    current: Bytes,
    carry: BytesMut,
    max_row: usize,
}

impl Splitter {
    pub fn new() -> Self {
        Self::with_max_row(crate::frame::DEFAULT_MAX_FRAME)
    }

    pub fn with_max_row(max_row: usize) -> Self {
        Self {
            current: Bytes::new(),
            carry: BytesMut::new(),
            max_row,
        }
    }

    /// Feed the next CopyData body; drain [`Splitter::next_row`] first.
    pub fn push(&mut self, chunk: Bytes) {
        if !self.current.is_empty() {
            self.carry.extend_from_slice(&self.current);
        }
        self.current = chunk;
    }

    /// The next complete row, `Ok(None)` when more input is needed.
    pub fn next_row(&mut self) -> Result<Option<Bytes>> {
        match self.current.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = self.current.split_to(end + 1);
                let row = if self.carry.is_empty() {
                    line.slice(..end)
                } else {
                    self.carry.extend_from_slice(&line[..end]);
                    std::mem::take(&mut self.carry).freeze()
                };
                Ok(Some(row))
            }
            None => {
                self.carry.extend_from_slice(&self.current);
                self.current = Bytes::new();
                if self.carry.len() > self.max_row {
                    return Err(ProtocolError::Copy(
                        "text row larger than the configured limit",
                    ));
                }
                Ok(None)
            }
        }
    }

    /// Call at the end: an error if a row was left without its newline.
    pub fn finish(&self) -> Result<()> {
        if self.carry.is_empty() && self.current.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Copy("text COPY stream ended inside a row"))
        }
    }
}

/// Field `i` of a row, unescaped: `None` when out of range, `Some(None)`
/// for NULL. Borrowed unless it held escapes.
pub fn field(row: &[u8], i: usize) -> Option<Option<Cow<'_, [u8]>>> {
    let raw = row.split(|&b| b == b'\t').nth(i)?;
    if raw == b"\\N" {
        return Some(None);
    }
    if !raw.contains(&b'\\') {
        return Some(Some(Cow::Borrowed(raw)));
    }
    Some(Some(Cow::Owned(unescape(raw))))
}

fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 == raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                let mut digits = 1;
                while digits < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                // As PostgreSQL does: the low byte of up to three digits.
                out.push(v.to_le_bytes()[0]);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    digits += 1;
                }
                out.push(v.to_le_bytes()[0]);
            }
            // Any other escaped character stands for itself.
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rows_across_chunks_and_fields() {
        let mut s = Splitter::new();
        s.push(Bytes::from_static(b"1\ta\\tb\t\\N\n2\tx"));
        let row = s.next_row().unwrap().unwrap();
        assert_eq!(&row[..], b"1\ta\\tb\t\\N");
        assert_eq!(field(&row, 0), Some(Some(Cow::Borrowed(&b"1"[..]))));
        assert_eq!(field(&row, 1).unwrap().unwrap().as_ref(), b"a\tb");
        assert_eq!(field(&row, 2), Some(None));
        assert_eq!(field(&row, 3), None);
        assert!(s.next_row().unwrap().is_none());
        assert!(s.finish().is_err());
        s.push(Bytes::from_static(b"y\n"));
        assert_eq!(&s.next_row().unwrap().unwrap()[..], b"2\txy");
        s.finish().unwrap();
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(b"a\\\\b\\n\\101\\x41\\q\\"), b"a\\b\nAAq\\");
    }

    #[test]
    fn oversized_row_is_refused() {
        let mut s = Splitter::with_max_row(4);
        s.push(Bytes::from_static(b"123456"));
        assert!(s.next_row().is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), cut in any::<usize>()) {
            let mut s = Splitter::new();
            let cut = cut % (data.len() + 1);
            for chunk in [&data[..cut], &data[cut..]] {
                s.push(Bytes::copy_from_slice(chunk));
                while let Ok(Some(row)) = s.next_row() {
                    for i in 0..4 {
                        let _ = field(&row, i);
                    }
                }
            }
        }
    }
}
