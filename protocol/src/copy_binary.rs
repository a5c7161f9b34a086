//! Binary COPY: the `PGCOPY` stream format, streamed.
//!
//! Layout (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>):
//! an 11-byte signature `PGCOPY\n\377\r\n\0`, a 32-bit flags field (bit 16
//! means every tuple carries an OID; any other bit in 16..=31 is critical and
//! must make a reader stop), a 32-bit header-extension length and that many
//! bytes to skip; then tuples, each a 16-bit field count followed by fields
//! of a 32-bit length (-1 for NULL) and that many bytes; then a trailer, a
//! field count of -1.
//!
//! [`Decoder`] is fed CopyData bodies with any boundaries. A row that lies
//! inside one chunk is handed out as a slice of that chunk (no copy); only a
//! row that spans chunks is assembled in a carry buffer.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};

pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
const FLAG_OIDS: u32 = 1 << 16;
const CRITICAL_FLAGS: u32 = 0xffff_0000;
/// Signature, flags and an empty extension.
pub const HEADER_LEN: usize = 19;
pub const TRAILER: &[u8; 2] = &[0xff, 0xff];

/// One tuple: its bytes (field count word included) in one `Bytes`.
/// Field lengths were checked when the row was split, so walking them here
/// cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    data: Bytes,
    fields: u16,
    has_oid: bool,
}

impl Row {
    /// Number of fields (the OID column, if any, not counted).
    pub fn len(&self) -> usize {
        self.fields as usize
    }

    pub fn is_empty(&self) -> bool {
        self.fields == 0
    }

    /// The tuple exactly as it was on the wire; what to send on a binary
    /// COPY FROM stream with the same columns (and no OIDs).
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }

    /// The same row, borrowed.
    pub fn as_ref(&self) -> RowRef<'_> {
        RowRef {
            data: &self.data,
            fields: self.fields,
            has_oid: self.has_oid,
        }
    }

    /// Byte range of each field inside [`Row::as_bytes`], `None` for NULL.
    pub fn ranges(&self) -> FieldRanges<'_> {
        self.as_ref().ranges()
    }

    /// Field `i`: `None` when out of range, `Some(None)` when NULL.
    pub fn field(&self, i: usize) -> Option<Option<&[u8]>> {
        let range = self.ranges().nth(i)?;
        Some(range.map(|r| &self.data[r]))
    }
}

/// A row borrowed from the chunk it arrived in (see
/// [`Decoder::push_slice`]): what the hot path routes without taking a
/// reference count per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    data: &'a [u8],
    fields: u16,
    has_oid: bool,
}

impl<'a> RowRef<'a> {
    pub fn len(&self) -> usize {
        self.fields as usize
    }

    pub fn is_empty(&self) -> bool {
        self.fields == 0
    }

    /// The tuple exactly as it was on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Byte range of each field inside [`RowRef::as_bytes`].
    pub fn ranges(&self) -> FieldRanges<'a> {
        let mut pos = 2;
        if self.has_oid {
            pos += 4 + read_len(self.data, pos).max(0) as usize;
        }
        FieldRanges {
            data: self.data,
            pos,
            left: self.fields,
        }
    }

    /// Field `i`: `None` when out of range, `Some(None)` when NULL.
    pub fn field(&self, i: usize) -> Option<Option<&'a [u8]>> {
        let data = self.data;
        let range = self.ranges().nth(i)?;
        Some(range.map(|r| &data[r]))
    }
}

fn read_len(data: &[u8], pos: usize) -> i32 {
    match data.get(pos..pos + 4) {
        Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => -1,
    }
}

/// Lazy iterator over a row's field ranges.
#[derive(Debug, Clone)]
pub struct FieldRanges<'a> {
    data: &'a [u8],
    pos: usize,
    left: u16,
}

impl Iterator for FieldRanges<'_> {
    type Item = Option<Range<usize>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = read_len(self.data, self.pos);
        self.pos += 4;
        if len < 0 {
            return Some(None);
        }
        let start = self.pos;
        self.pos += len as usize;
        Some(Some(start..self.pos))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Where a row scan stands: resumable, so a row spanning chunks is not
/// rescanned from its start.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    pos: usize,
    /// Fields still to read, once the count word has been read.
    fields_left: Option<u16>,
    /// The OID field is still to be read.
    oid_pending: bool,
}

enum Progress {
    /// The row ends at this offset.
    Row { end: usize, fields: u16 },
    /// The trailer, 2 bytes.
    Trailer,
    /// At least this many more bytes are needed.
    Need(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Done,
}

/// Streaming decoder for one binary COPY stream.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    has_oids: bool,
    /// Field count of the first row; every other row must match.
    fields: Option<u16>,
    /// Unread part of the latest chunk.
    current: Bytes,
    /// Start of a row (or the header) that spans chunks, and its scan.
    carry: BytesMut,
    scan: Scan,
    /// Rows are limited to this size (a bad length cannot grow `carry`
    /// without bound).
    max_row: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::with_max_row(crate::frame::DEFAULT_MAX_FRAME)
    }

    pub fn with_max_row(max_row: usize) -> Self {
        Self {
            state: State::Header,
            has_oids: false,
            fields: None,
            current: Bytes::new(),
            carry: BytesMut::new(),
            scan: Scan::default(),
            max_row,
        }
    }

    /// Feed the next CopyData body. Call [`Decoder::next_row`] until it
    /// returns `Ok(None)` before pushing again.
    pub fn push(&mut self, chunk: Bytes) -> Result<()> {
        if !self.current.is_empty() {
            // The caller did not drain; keep the order anyway.
            self.carry.extend_from_slice(&self.current);
        }
        if self.state == State::Done && !chunk.is_empty() {
            return Err(ProtocolError::Copy("data after the trailer"));
        }
        self.current = chunk;
        Ok(())
    }

    /// Feed a chunk by reference and hand each complete row to `on_row`
    /// as a borrowed [`RowRef`]: no allocation or reference count per row
    /// when rows lie inside the chunk (as Postgres sends them: one
    /// CopyData per row). The header, a row spanning chunks and everything
    /// after the trailer take the general path.
    pub fn push_slice<E: From<ProtocolError>>(
        &mut self,
        chunk: &[u8],
        mut on_row: impl FnMut(RowRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.state != State::Rows || !self.carry.is_empty() || !self.current.is_empty() {
            self.push(Bytes::copy_from_slice(chunk))?;
            while let Some(row) = self.next_row()? {
                on_row(row.as_ref())?;
            }
            return Ok(());
        }
        let mut pos = 0;
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            let mut scan = self.fresh_scan();
            match scan_row(rest, &mut scan)? {
                Progress::Row { end, fields } => {
                    self.check_fields(fields)?;
                    on_row(RowRef {
                        data: &rest[..end],
                        fields,
                        has_oid: self.has_oids,
                    })?;
                    pos += end;
                }
                Progress::Trailer => {
                    self.state = State::Done;
                    if pos + 2 != chunk.len() {
                        return Err(ProtocolError::Copy("data after the trailer").into());
                    }
                    return Ok(());
                }
                Progress::Need(_) => {
                    // The row goes on in the next chunk.
                    self.carry.extend_from_slice(rest);
                    self.scan = scan;
                    self.check_size()?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The number of fields per row, once the first row was seen.
    pub fn field_count(&self) -> Option<u16> {
        self.fields
    }

    pub fn has_oids(&self) -> bool {
        self.has_oids
    }

    /// True once the trailer has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Call after the last chunk (at CopyDone): an error unless the stream
    /// ended with its trailer.
    pub fn finish(&self) -> Result<()> {
        match self.state {
            State::Done if self.carry.is_empty() && self.current.is_empty() => Ok(()),
            State::Done => Err(ProtocolError::Copy("data after the trailer")),
            State::Header => Err(ProtocolError::Copy("stream ended before the header")),
            State::Rows => Err(ProtocolError::Copy("stream ended without a trailer")),
        }
    }

    /// The next complete row, `Ok(None)` when more input is needed or the
    /// trailer was reached.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        loop {
            match self.state {
                State::Done => {
                    if !self.current.is_empty() || !self.carry.is_empty() {
                        return Err(ProtocolError::Copy("data after the trailer"));
                    }
                    return Ok(None);
                }
                State::Header => {
                    if !self.read_header()? {
                        return Ok(None);
                    }
                }
                State::Rows => return self.read_row(),
            }
        }
    }

    /// Take the header off the front when complete. Headers are small, so
    /// this path always gathers into `carry`.
    fn read_header(&mut self) -> Result<bool> {
        let cur = std::mem::take(&mut self.current);
        self.carry.extend_from_slice(&cur);
        let buf = &self.carry[..];
        if buf.len() < HEADER_LEN {
            if !SIGNATURE.starts_with(&buf[..buf.len().min(SIGNATURE.len())]) {
                return Err(ProtocolError::Copy(
                    "bad signature (not a binary COPY stream)",
                ));
            }
            return Ok(false);
        }
        if &buf[..11] != SIGNATURE {
            return Err(ProtocolError::Copy(
                "bad signature (not a binary COPY stream)",
            ));
        }
        let flags = u32::from_be_bytes([buf[11], buf[12], buf[13], buf[14]]);
        if flags & CRITICAL_FLAGS & !FLAG_OIDS != 0 {
            return Err(ProtocolError::Copy("unknown critical flag in header"));
        }
        let ext = i32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]);
        if ext < 0 {
            return Err(ProtocolError::Copy("negative header extension length"));
        }
        let total = HEADER_LEN + ext as usize;
        if total > self.max_row {
            return Err(ProtocolError::Copy("header extension too long"));
        }
        if buf.len() < total {
            return Ok(false);
        }
        self.has_oids = flags & FLAG_OIDS != 0;
        let _ = self.carry.split_to(total);
        // What followed the header is row data; move it back to `current`
        // so the first rows are zero-copy too.
        self.current = std::mem::take(&mut self.carry).freeze();
        self.carry = BytesMut::new();
        self.scan = self.fresh_scan();
        self.state = State::Rows;
        Ok(true)
    }

    fn fresh_scan(&self) -> Scan {
        Scan {
            pos: 0,
            fields_left: None,
            oid_pending: self.has_oids,
        }
    }

    fn read_row(&mut self) -> Result<Option<Row>> {
        if self.carry.is_empty() {
            // Fast path: scan inside the current chunk.
            let mut scan = self.fresh_scan();
            match scan_row(&self.current, &mut scan)? {
                Progress::Row { end, fields } => {
                    self.check_fields(fields)?;
                    let data = self.current.split_to(end);
                    return Ok(Some(self.row(data, fields)));
                }
                Progress::Trailer => {
                    let _ = self.current.split_to(2);
                    self.state = State::Done;
                    return self.next_row();
                }
                Progress::Need(_) => {
                    if self.current.is_empty() {
                        return Ok(None);
                    }
                    // The row continues in the next chunk.
                    self.carry.extend_from_slice(&self.current);
                    self.current = Bytes::new();
                    self.scan = scan;
                    self.check_size()?;
                    return Ok(None);
                }
            }
        }
        // Slow path: a row spanning chunks, resumed where it stopped.
        loop {
            let mut scan = self.scan;
            match scan_row(&self.carry, &mut scan)? {
                Progress::Row { end, fields } => {
                    self.check_fields(fields)?;
                    let data = self.carry.split_to(end).freeze();
                    self.scan = self.fresh_scan();
                    return Ok(Some(self.row(data, fields)));
                }
                Progress::Trailer => {
                    let _ = self.carry.split_to(2);
                    self.state = State::Done;
                    return self.next_row();
                }
                Progress::Need(n) => {
                    self.scan = scan;
                    if self.current.is_empty() {
                        return Ok(None);
                    }
                    let take = n.min(self.current.len());
                    let more = self.current.split_to(take);
                    self.carry.extend_from_slice(&more);
                    self.check_size()?;
                }
            }
        }
    }

    fn check_size(&self) -> Result<()> {
        if self.carry.len() > self.max_row {
            return Err(ProtocolError::Copy("row larger than the configured limit"));
        }
        Ok(())
    }

    fn check_fields(&mut self, got: u16) -> Result<()> {
        match self.fields {
            None => {
                self.fields = Some(got);
                Ok(())
            }
            Some(expected) if expected == got => Ok(()),
            Some(expected) => Err(ProtocolError::FieldCount { expected, got }),
        }
    }

    fn row(&self, data: Bytes, fields: u16) -> Row {
        Row {
            data,
            fields,
            has_oid: self.has_oids,
        }
    }
}

/// Advance `scan` over `buf` as far as it goes.
#[inline]
fn scan_row(buf: &[u8], scan: &mut Scan) -> Result<Progress> {
    let fields_left = match scan.fields_left {
        Some(n) => n,
        None => {
            let Some(b) = buf.get(scan.pos..scan.pos + 2) else {
                return Ok(Progress::Need(scan.pos + 2 - buf.len()));
            };
            let count = i16::from_be_bytes([b[0], b[1]]);
            if count == -1 {
                return Ok(Progress::Trailer);
            }
            if count < 0 {
                return Err(ProtocolError::InvalidValue {
                    context: "binary COPY field count",
                    value: count as i64,
                });
            }
            scan.pos += 2;
            scan.fields_left = Some(count as u16);
            count as u16
        }
    };
    let total = fields_left + scan.oid_pending as u16;
    let mut left = total;
    while left > 0 {
        let Some(b) = buf.get(scan.pos..scan.pos + 4) else {
            scan.fields_left = Some(left - scan.oid_pending as u16);
            return Ok(Progress::Need(scan.pos + 4 - buf.len()));
        };
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let next = if len == -1 {
            scan.pos + 4
        } else if len < 0 {
            return Err(ProtocolError::InvalidValue {
                context: "binary COPY field length",
                value: len as i64,
            });
        } else {
            scan.pos + 4 + len as usize
        };
        if next > buf.len() {
            // Keep `pos` at this field's length word: it is re-read on resume.
            scan.fields_left = Some(left - scan.oid_pending as u16);
            return Ok(Progress::Need(next - buf.len()));
        }
        scan.pos = next;
        if scan.oid_pending {
            scan.oid_pending = false;
        }
        left -= 1;
    }
    let fields = count_word(buf);
    Ok(Progress::Row {
        end: scan.pos,
        fields,
    })
}

fn count_word(buf: &[u8]) -> u16 {
    match buf.get(..2) {
        Some(b) => i16::from_be_bytes([b[0], b[1]]) as u16,
        None => 0,
    }
}

/// Writes a binary COPY stream: header, rows, trailer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoder;

impl Encoder {
    /// Signature, no flags, no extension.
    pub fn header(buf: &mut BytesMut) {
        buf.put_slice(SIGNATURE);
        buf.put_u32(0);
        buf.put_u32(0);
    }

    /// A row from its fields, `None` for NULL. More fields than a 16-bit
    /// count or a field longer than a 32-bit length is an error, and leaves
    /// nothing of the row in `buf`.
    pub fn row<'a>(
        fields: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
        buf: &mut BytesMut,
    ) -> Result<()> {
        let too_large = |context, value, max| ProtocolError::TooLarge {
            context,
            value,
            max,
        };
        let count = i16::try_from(fields.len())
            .map_err(|_| too_large("binary COPY fields", fields.len(), i16::MAX as usize))?;
        let start = buf.len();
        buf.put_i16(count);
        for f in fields {
            match f {
                None => buf.put_i32(-1),
                Some(v) => match i32::try_from(v.len()) {
                    Ok(len) => {
                        buf.put_i32(len);
                        buf.put_slice(v);
                    }
                    Err(_) => {
                        buf.truncate(start);
                        return Err(too_large("binary COPY field", v.len(), i32::MAX as usize));
                    }
                },
            }
        }
        Ok(())
    }

    pub fn trailer(buf: &mut BytesMut) {
        buf.put_slice(TRAILER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        Encoder::header(&mut buf);
        for row in rows {
            Encoder::row(row.iter().map(|f| f.as_deref()), &mut buf).unwrap();
        }
        Encoder::trailer(&mut buf);
        buf.to_vec()
    }

    fn decode_in_chunks(data: &[u8], cuts: &[usize]) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.push(data.len());
        points.sort();
        for end in points {
            d.push(Bytes::copy_from_slice(&data[start..end]))?;
            start = end;
            while let Some(row) = d.next_row()? {
                out.push(
                    (0..row.len())
                        .map(|i| row.field(i).unwrap().map(|f| f.to_vec()))
                        .collect(),
                );
            }
        }
        d.finish()?;
        Ok(out)
    }

    fn sample() -> Vec<Vec<Option<Vec<u8>>>> {
        vec![
            vec![
                Some(7i64.to_be_bytes().to_vec()),
                Some(b"hello".to_vec()),
                None,
            ],
            vec![
                Some(8i64.to_be_bytes().to_vec()),
                Some(Vec::new()),
                Some(vec![1]),
            ],
        ]
    }

    #[test]
    fn round_trip_whole_and_byte_by_byte() {
        let rows = sample();
        let data = stream(&rows);
        assert_eq!(decode_in_chunks(&data, &[]).unwrap(), rows);
        let every: Vec<usize> = (0..data.len()).collect();
        assert_eq!(decode_in_chunks(&data, &every).unwrap(), rows);
    }

    #[test]
    fn rows_inside_a_chunk_are_not_copied() {
        let data = Bytes::from(stream(&sample()));
        let mut d = Decoder::new();
        d.push(data.slice(..HEADER_LEN)).unwrap();
        assert!(d.next_row().unwrap().is_none());
        let body = data.slice(HEADER_LEN..);
        d.push(body.clone()).unwrap();
        let row = d.next_row().unwrap().unwrap();
        // Same allocation: the row points into the pushed chunk.
        assert_eq!(row.as_bytes().as_ptr(), body.as_ptr());
        assert_eq!(row.field(1), Some(Some(&b"hello"[..])));
        assert_eq!(row.field(2), Some(None));
        assert_eq!(row.field(3), None);
        assert!(d.next_row().unwrap().is_some());
        assert!(d.next_row().unwrap().is_none());
        assert!(d.is_done());
        d.finish().unwrap();
    }

    #[test]
    fn borrowed_rows_match_owned_rows_under_any_chunking() {
        let rows = sample();
        let data = stream(&rows);
        for cut in [HEADER_LEN, 1, 7, 25, data.len() - 3] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for chunk in [&data[..cut], &data[cut..]] {
                d.push_slice(chunk, |row| {
                    out.push(
                        (0..row.len())
                            .map(|i| row.field(i).unwrap().map(|f| f.to_vec()))
                            .collect::<Vec<_>>(),
                    );
                    Ok::<(), ProtocolError>(())
                })
                .unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out, rows, "cut at {cut}");
        }
        // Garbage after the trailer, inside the same chunk.
        let mut bad = data.clone();
        bad.push(1);
        let mut d = Decoder::new();
        d.push_slice(&bad[..HEADER_LEN], |_| Ok::<(), ProtocolError>(()))
            .unwrap();
        assert!(d
            .push_slice(&bad[HEADER_LEN..], |_| Ok::<(), ProtocolError>(()))
            .is_err());
    }

    #[test]
    fn header_checks() {
        let mut d = Decoder::new();
        d.push(Bytes::from_static(b"PGCOPX")).unwrap();
        assert!(d.next_row().is_err());

        // Critical flag bit 17 set.
        let mut bad = BytesMut::new();
        bad.put_slice(SIGNATURE);
        bad.put_u32(1 << 17);
        bad.put_u32(0);
        let mut d = Decoder::new();
        d.push(bad.freeze()).unwrap();
        assert_eq!(
            d.next_row().unwrap_err(),
            ProtocolError::Copy("unknown critical flag in header")
        );

        // Non-critical bits are ignored, the extension is skipped, OIDs handled.
        let mut ok = BytesMut::new();
        ok.put_slice(SIGNATURE);
        ok.put_u32(FLAG_OIDS | 0x1);
        ok.put_u32(3);
        ok.put_slice(b"ext");
        ok.put_i16(1);
        ok.put_i32(4);
        ok.put_u32(12345); // the OID
        ok.put_i32(2);
        ok.put_slice(b"ab");
        ok.put_i16(-1);
        let mut d = Decoder::new();
        d.push(ok.freeze()).unwrap();
        let row = d.next_row().unwrap().unwrap();
        assert!(d.has_oids());
        assert_eq!(row.len(), 1);
        assert_eq!(row.field(0), Some(Some(&b"ab"[..])));
        assert!(d.next_row().unwrap().is_none());
        d.finish().unwrap();
    }

    #[test]
    fn field_count_mismatch_and_missing_trailer() {
        let mut data = BytesMut::new();
        Encoder::header(&mut data);
        Encoder::row([Some(&b"a"[..])].into_iter(), &mut data).unwrap();
        Encoder::row([Some(&b"a"[..]), None].into_iter(), &mut data).unwrap();
        let mut d = Decoder::new();
        d.push(data.freeze()).unwrap();
        d.next_row().unwrap().unwrap();
        assert_eq!(
            d.next_row().unwrap_err(),
            ProtocolError::FieldCount {
                expected: 1,
                got: 2
            }
        );

        let data = stream(&sample());
        let mut d = Decoder::new();
        d.push(Bytes::copy_from_slice(&data[..data.len() - 2]))
            .unwrap();
        while d.next_row().unwrap().is_some() {}
        assert_eq!(
            d.finish().unwrap_err(),
            ProtocolError::Copy("stream ended without a trailer")
        );
    }

    #[test]
    fn data_after_trailer_and_bad_lengths() {
        let mut data = stream(&sample());
        data.push(0);
        assert!(decode_in_chunks(&data, &[]).is_err());

        let mut data = BytesMut::new();
        Encoder::header(&mut data);
        data.put_i16(1);
        data.put_i32(-2);
        assert!(decode_in_chunks(&data, &[]).is_err());

        let mut data = BytesMut::new();
        Encoder::header(&mut data);
        data.put_i16(-3);
        assert!(decode_in_chunks(&data, &[]).is_err());
    }

    #[test]
    fn oversized_row_is_refused_not_buffered() {
        let mut data = BytesMut::new();
        Encoder::header(&mut data);
        data.put_i16(1);
        data.put_i32(1_000_000);
        data.put_slice(&[0; 100]);
        let mut d = Decoder::with_max_row(64);
        d.push(data.freeze()).unwrap();
        assert!(d.next_row().is_err());
    }

    fn arb_rows() -> impl Strategy<Value = Vec<Vec<Option<Vec<u8>>>>> {
        (0usize..5).prop_flat_map(|ncols| {
            proptest::collection::vec(
                proptest::collection::vec(
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                    ncols,
                ),
                0..8,
            )
        })
    }

    proptest! {
        #[test]
        fn round_trip_any_chunking(rows in arb_rows(), cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
            let data = stream(&rows);
            prop_assert_eq!(decode_in_chunks(&data, &cuts).unwrap(), rows.clone());
            // The borrowed path gives the same rows.
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            points.push(data.len());
            points.sort();
            let mut d = Decoder::new();
            let mut out = Vec::new();
            let mut start = 0;
            for end in points {
                d.push_slice(&data[start..end], |row| {
                    out.push((0..row.len()).map(|i| row.field(i).unwrap().map(|f| f.to_vec())).collect::<Vec<_>>());
                    Ok::<(), ProtocolError>(())
                }).unwrap();
                start = end;
            }
            d.finish().unwrap();
            prop_assert_eq!(out, rows);
        }

        #[test]
        fn any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
            let mut data = SIGNATURE.to_vec();
            data.extend_from_slice(&[0; 8]);
            data.extend_from_slice(&body);
            let _ = decode_in_chunks(&data, &cuts);
            let _ = decode_in_chunks(&body, &cuts);
        }
    }
}
