//! TupleData: the column values of an Insert, Update or Delete
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-TUPLEDATA>).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};
use crate::reader::Reader;

/// One column of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column<'a> {
    /// `n`
    Null,
    /// `u`: a TOASTed value that did not change; the subscriber keeps its own.
    Unchanged,
    /// `t`: the value in text format.
    Text(&'a [u8]),
    /// `b`: the value in binary format (with `binary 'true'`).
    Binary(&'a [u8]),
}

impl Column<'_> {
    /// Value bytes in whichever format they came.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Column::Text(v) | Column::Binary(v) => Some(v),
            _ => None,
        }
    }
}

/// A validated TupleData, kept as the bytes it arrived in. Columns are read
/// lazily (no allocation per tuple); the layout was checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    /// The column entries, after the 16-bit count.
    data: Bytes,
    count: u16,
}

impl Tuple {
    pub(crate) fn parse(r: &mut Reader) -> Result<Tuple> {
        let count = r.count16()?;
        let start = r.position();
        let mut len = 0usize;
        for _ in 0..count {
            let kind = r.u8()?;
            len += 1;
            match kind {
                b'n' | b'u' => {}
                b't' | b'b' => {
                    let n = r.count32()?;
                    r.skip(n)?;
                    len += 4 + n;
                }
                other => return Err(r.unknown_kind(other as i64)),
            }
        }
        debug_assert_eq!(r.position() - start, len);
        Ok(Tuple {
            data: r.slice_from(start),
            count,
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn columns(&self) -> Columns<'_> {
        Columns {
            data: &self.data,
            pos: 0,
            left: self.count,
        }
    }

    pub fn get(&self, i: usize) -> Option<Column<'_>> {
        self.columns().nth(i)
    }

    /// The raw column entries (without the count), for re-encoding as is.
    pub fn raw(&self) -> &Bytes {
        &self.data
    }

    /// Build a tuple from columns (tests, fixtures and the encoder). More
    /// columns than a 16-bit count or a value longer than a 32-bit length
    /// is an error.
    pub fn from_columns<'a>(cols: impl IntoIterator<Item = Column<'a>>) -> Result<Tuple> {
        let mut data = BytesMut::new();
        let mut count = 0usize;
        for c in cols {
            count += 1;
            match c {
                Column::Null => data.put_u8(b'n'),
                Column::Unchanged => data.put_u8(b'u'),
                Column::Text(v) | Column::Binary(v) => {
                    data.put_u8(if matches!(c, Column::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    let len = i32::try_from(v.len()).map_err(|_| ProtocolError::TooLarge {
                        context: "tuple column value",
                        value: v.len(),
                        max: i32::MAX as usize,
                    })?;
                    data.put_i32(len);
                    data.put_slice(v);
                }
            }
        }
        let count = u16::try_from(count).map_err(|_| ProtocolError::TooLarge {
            context: "tuple columns",
            value: count,
            max: u16::MAX as usize,
        })?;
        Ok(Tuple {
            data: data.freeze(),
            count,
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.count);
        buf.put_slice(&self.data);
    }
}

/// Lazy iterator over a tuple's columns.
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    data: &'a [u8],
    pos: usize,
    left: u16,
}

impl<'a> Iterator for Columns<'a> {
    type Item = Column<'a>;

    fn next(&mut self) -> Option<Column<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let kind = *self.data.get(self.pos)?;
        self.pos += 1;
        match kind {
            b'n' => Some(Column::Null),
            b'u' => Some(Column::Unchanged),
            _ => {
                let b = self.data.get(self.pos..self.pos + 4)?;
                let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let v = self.data.get(self.pos + 4..self.pos + 4 + n)?;
                self.pos += 4 + n;
                Some(if kind == b't' {
                    Column::Text(v)
                } else {
                    Column::Binary(v)
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}
