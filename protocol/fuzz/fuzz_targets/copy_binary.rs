//! A binary COPY stream through `copy_binary::Decoder`, cut into CopyData
//! chunks at fuzzer-chosen points.
//!
//! Input layout:
//! - byte 0, flags: bits 0..=2 the number of cut points (0 to 7); bit 3
//!   prepends a standard 19-byte header so the fuzzer can spend its bytes on
//!   rows; bit 4 uses a 64-byte row limit instead of the default.
//! - then two bytes (big-endian) per cut point, an offset into the stream
//!   (taken modulo its length + 1);
//! - then the stream.
//!
//! Checked: every field range of every row lies in the row and walks to its
//! end; the rows and the outcome do not depend on where the chunks were cut
//! and are those of `reference`, a plain whole-input reading of the format;
//! rows re-encoded with `Encoder` decode to the same rows.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgdog_protocol::copy_binary::{Decoder, Encoder, Row, SIGNATURE};
use pgdog_protocol::ProtocolError;

type Fields = Vec<Option<Vec<u8>>>;

/// What one decode produced: the rows before the end or the first error,
/// and how it ended.
#[derive(Debug, PartialEq)]
struct Outcome {
    rows: Vec<Fields>,
    result: Result<(), ProtocolError>,
}

fn decode(mut decoder: Decoder, stream: &Bytes, cuts: &[usize]) -> Outcome {
    let mut rows = Vec::new();
    let mut run = || -> Result<(), ProtocolError> {
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
            decoder.push(stream.slice(start..end))?;
            start = end;
            while let Some(row) = decoder.next_row()? {
                assert_eq!(decoder.field_count(), Some(row.len() as u16));
                rows.push(fields(&row, decoder.has_oids()));
            }
        }
        decoder.finish()
    };
    let result = run();
    Outcome { rows, result }
}

/// Read every field through both accessors and check the layout: ranges in
/// order, each after its 4-byte length word, inside the row; without OIDs
/// (whose field comes first and is not handed out) they account for every
/// byte of the row.
fn fields(row: &Row, has_oids: bool) -> Fields {
    let data = row.as_bytes();
    let mut out = Vec::new();
    // End of the previous field (a lower bound when there is an OID).
    let mut pos = 2;
    for (i, range) in row.ranges().enumerate() {
        let value = match range {
            None => {
                pos += 4;
                None
            }
            Some(r) => {
                if has_oids {
                    assert!(r.start >= pos + 4);
                } else {
                    assert_eq!(r.start, pos + 4);
                }
                assert!(r.start <= r.end && r.end <= data.len());
                pos = r.end;
                Some(data[r].to_vec())
            }
        };
        assert_eq!(row.field(i), Some(value.as_deref()));
        out.push(value);
    }
    assert_eq!(out.len(), row.len());
    assert_eq!(row.field(row.len()), None);
    if has_oids {
        assert!(pos <= data.len());
    } else {
        assert_eq!(pos, data.len());
    }
    out
}

/// The format read the simple way, from the docs
/// (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>),
/// with the whole input at hand: the rows before the end or the first
/// error, and whether the stream was valid.
fn reference(stream: &[u8]) -> (Vec<Fields>, bool) {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = tail;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i32(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
        /// `Some(None)` for NULL, `None` for a bad or truncated field.
        fn field(&mut self) -> Option<Option<Vec<u8>>> {
            match self.i32()? {
                -1 => Some(None),
                len if len < 0 => None,
                len => Some(Some(self.take(len as usize)?.to_vec())),
            }
        }
    }

    let mut rows = Vec::new();
    let mut read = || -> Option<()> {
        let mut p = Cursor(stream);
        if p.take(SIGNATURE.len())? != SIGNATURE {
            return None;
        }
        let flags = p.i32()? as u32;
        // Bit 16: OIDs. Bits 17..=31: critical, none defined.
        if flags & 0xfffe_0000 != 0 {
            return None;
        }
        let extension = p.i32()?;
        p.take(usize::try_from(extension).ok()?)?;
        let mut expected = None;
        loop {
            let count = p.i16()?;
            if count == -1 {
                return p.0.is_empty().then_some(());
            }
            if count < 0 {
                return None;
            }
            if flags & (1 << 16) != 0 {
                p.field()?;
            }
            let row = (0..count).map(|_| p.field()).collect::<Option<Vec<_>>>()?;
            if *expected.get_or_insert(count) != count {
                return None;
            }
            rows.push(row);
        }
    };
    let ok = read().is_some();
    (rows, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let ncuts = (flags & 0b111) as usize;
    let Some(offsets) = rest.get(..2 * ncuts) else {
        return;
    };
    let body = &rest[2 * ncuts..];
    let mut stream = BytesMut::new();
    if flags & 0b1000 != 0 {
        Encoder::header(&mut stream);
    }
    stream.extend_from_slice(body);
    let stream = stream.freeze();
    let mut cuts: Vec<usize> = offsets
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let (expected, valid) = reference(&stream);

    if flags & 0b1_0000 != 0 {
        // A small limit: rows that span chunks are refused past it, rows
        // inside one chunk need no buffering and pass. So the decoder may
        // stop early, but what it hands out is right.
        let limited = decode(Decoder::with_max_row(64), &stream, &cuts);
        assert!(expected.starts_with(&limited.rows));
        if limited.result.is_ok() {
            assert!(valid);
            assert_eq!(limited.rows, expected);
        }
        return;
    }

    let chunked = decode(Decoder::new(), &stream, &cuts);
    let whole = decode(Decoder::new(), &stream, &[]);
    assert_eq!(chunked, whole);
    assert_eq!(whole.rows, expected);
    assert_eq!(whole.result.is_ok(), valid, "{:?}", whole.result);

    // The rows written back out (without OIDs or header extension) read
    // back the same.
    if whole.result.is_ok() {
        let mut again = BytesMut::new();
        Encoder::header(&mut again);
        for row in &whole.rows {
            Encoder::row(row.iter().map(|f| f.as_deref()), &mut again)
                .expect("a decoded row re-encodes");
        }
        Encoder::trailer(&mut again);
        let again = decode(Decoder::new(), &again.freeze(), &[]);
        assert_eq!(again, whole);
    }
});
