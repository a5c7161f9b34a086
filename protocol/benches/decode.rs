//! Throughput of the two decoders on the data-mover's hot paths: splitting a
//! binary COPY stream into rows, and decoding pgoutput row changes.
//!
//! Run with `cargo bench -p pgdog-protocol`; every benchmark reports bytes
//! per second of wire data (CopyData or XLogData payload) consumed.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use pgdog_protocol::copy_binary::{Decoder as CopyDecoder, Encoder as CopyEncoder};
use pgdog_protocol::pgoutput::{Column, Decoder as PgoutputDecoder, Message, OldTuple, Tuple};

fn main() {
    divan::main();
}

/// Rows in the COPY stream and messages in the pgoutput stream.
const ROWS: usize = 100_000;
/// CopyData chunk size for the "arbitrary boundaries" case; a rough match for
/// what one socket read yields.
const CHUNK: usize = 64 * 1024;

/// A small deterministic generator so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    fn text(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let len = self.range(lo, hi);
        (0..len).map(|_| b'a' + (self.next() % 26) as u8).collect()
    }
}

/// The values of one row of an `orders`-like table, in binary form:
/// id bigint, tenant int, name text (10..200 bytes), email text, a NULL
/// column, created_at timestamptz, paid bool, amount float8.
fn row_values(rng: &mut Rng, id: i64) -> Vec<Option<Vec<u8>>> {
    vec![
        Some(id.to_be_bytes().to_vec()),
        Some((rng.range(0, 1000) as i32).to_be_bytes().to_vec()),
        Some(rng.text(10, 200)),
        Some(rng.text(10, 60)),
        None,
        Some((rng.next() as i64 >> 8).to_be_bytes().to_vec()),
        Some(vec![(rng.next() & 1) as u8]),
        Some((rng.next() as f64 / 7.0).to_be_bytes().to_vec()),
    ]
}

/// A binary COPY stream of [`ROWS`] rows, cut the way Postgres sends it (one
/// CopyData per row; the header travels with the first row, the trailer
/// alone) or into `CHUNK`-sized pieces with arbitrary boundaries.
struct CopyStream {
    per_row: Vec<Bytes>,
    chunked: Vec<Bytes>,
    len: usize,
}

impl CopyStream {
    fn build() -> CopyStream {
        let mut rng = Rng(0x5eed);
        let mut buf = BytesMut::new();
        let mut ends = Vec::with_capacity(ROWS + 1);
        CopyEncoder::header(&mut buf);
        for id in 0..ROWS {
            let row = row_values(&mut rng, id as i64);
            CopyEncoder::row(row.iter().map(|f| f.as_deref()), &mut buf).unwrap();
            ends.push(buf.len());
        }
        CopyEncoder::trailer(&mut buf);
        ends.push(buf.len());
        // Every chunk shares one allocation, as frame bodies split off a
        // read buffer do.
        let all = buf.freeze();
        let mut per_row = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in ends {
            per_row.push(all.slice(start..end));
            start = end;
        }
        let chunked = (0..all.len())
            .step_by(CHUNK)
            .map(|s| all.slice(s..(s + CHUNK).min(all.len())))
            .collect();
        CopyStream {
            per_row,
            chunked,
            len: all.len(),
        }
    }
}

/// Split `chunks` into rows, reading each row's first field as the sharding
/// key the way the engine does. Returns the sum of keys so nothing is
/// optimized away.
fn split_rows(chunks: &[Bytes]) -> i64 {
    let mut decoder = CopyDecoder::new();
    let mut keys = 0i64;
    for chunk in chunks {
        decoder.push(chunk.clone()).unwrap();
        while let Some(row) = decoder.next_row().unwrap() {
            let key = match row.field(0) {
                Some(Some(v)) => v.try_into().map(i64::from_be_bytes).unwrap_or(0),
                _ => 0,
            };
            keys = keys.wrapping_add(key);
            black_box(&row);
        }
    }
    decoder.finish().unwrap();
    keys
}

#[divan::bench_group(name = "copy_binary")]
mod copy_binary {
    use super::*;
    use std::sync::OnceLock;

    fn stream() -> &'static CopyStream {
        static STREAM: OnceLock<CopyStream> = OnceLock::new();
        STREAM.get_or_init(CopyStream::build)
    }

    /// One CopyData message per row, as `COPY ... TO STDOUT` sends them.
    #[divan::bench]
    fn one_chunk_per_row(bencher: Bencher) {
        let s = stream();
        bencher
            .counter(BytesCount::new(s.len))
            .bench(|| split_rows(black_box(&s.per_row)));
    }

    /// 64 KiB chunks cutting rows anywhere.
    #[divan::bench]
    fn chunks_64k(bencher: Bencher) {
        let s = stream();
        bencher
            .counter(BytesCount::new(s.len))
            .bench(|| split_rows(black_box(&s.chunked)));
    }
}

/// pgoutput messages, each an XLogData payload as the decoder receives it.
struct PgoutputStream {
    messages: Vec<Bytes>,
    len: usize,
}

/// The columns of one row as pgoutput sends them: text format by default
/// (`binary 'false'`), or binary format (`binary 'true'`), where the value
/// bytes are the same as in binary COPY.
fn columns(rng: &mut Rng, id: i64, binary: bool) -> Vec<(Option<Vec<u8>>, bool)> {
    let values = row_values(rng, id);
    if binary {
        return values.into_iter().map(|v| (v, true)).collect();
    }
    let texts = vec![
        Some(id.to_string().into_bytes()),
        Some(rng.range(0, 1000).to_string().into_bytes()),
        values[2].clone(),
        values[3].clone(),
        None,
        Some(b"2024-05-17 12:34:56.789012+00".to_vec()),
        Some(if rng.next() & 1 == 0 { b"t" } else { b"f" }.to_vec()),
        Some(format!("{:.2}", rng.next() as f64 / 1e15).into_bytes()),
    ];
    texts.into_iter().map(|v| (v, false)).collect()
}

fn tuple(cols: &[(Option<Vec<u8>>, bool)]) -> Tuple {
    Tuple::from_columns(cols.iter().map(|(v, binary)| match v {
        None => Column::Null,
        Some(v) if *binary => Column::Binary(v),
        Some(v) => Column::Text(v),
    }))
    .unwrap()
}

impl PgoutputStream {
    /// `ROWS` Insert messages.
    fn inserts(binary: bool) -> PgoutputStream {
        let mut rng = Rng(0xfeed);
        Self::from_messages((0..ROWS).map(|id| Message::Insert {
            xid: None,
            relation: 16384,
            new: tuple(&columns(&mut rng, id as i64, binary)),
        }))
    }

    /// `ROWS` Update messages. Every fourth one changes the key and so
    /// carries the old key (`K`); the rest carry only the new row, as with
    /// the default replica identity.
    fn updates(binary: bool) -> PgoutputStream {
        let mut rng = Rng(0xbeef);
        Self::from_messages((0..ROWS).map(|id| {
            let new = columns(&mut rng, id as i64, binary);
            let old = (id % 4 == 0).then(|| {
                let mut key: Vec<_> = new.iter().map(|_| (None, binary)).collect();
                key[0] = new[0].clone();
                OldTuple::Key(tuple(&key))
            });
            Message::Update {
                xid: None,
                relation: 16384,
                old,
                new: tuple(&new),
            }
        }))
    }

    fn from_messages(msgs: impl Iterator<Item = Message>) -> PgoutputStream {
        let mut buf = BytesMut::new();
        let mut ends = Vec::with_capacity(ROWS);
        for m in msgs {
            m.encode(&mut buf).unwrap();
            ends.push(buf.len());
        }
        let all = buf.freeze();
        let mut messages = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in ends {
            messages.push(all.slice(start..end));
            start = end;
        }
        PgoutputStream {
            messages,
            len: all.len(),
        }
    }
}

/// Sum of the value lengths of every column, so the walk is not optimized
/// away.
fn walk(t: &Tuple) -> usize {
    t.columns()
        .map(|c| match c {
            Column::Text(v) | Column::Binary(v) => v.len() + 1,
            Column::Null | Column::Unchanged => 0,
        })
        .sum()
}

/// Decode every message; with `columns`, also walk every column of every
/// tuple as the apply side does.
fn decode_all(messages: &[Bytes], columns: bool) -> usize {
    let mut decoder = PgoutputDecoder::new(2);
    let mut total = 0;
    for m in messages {
        let msg = decoder.decode(m.clone()).unwrap();
        if columns {
            total += match &msg {
                Message::Insert { new, .. } => walk(new),
                Message::Update { old, new, .. } => {
                    old.as_ref().map_or(0, |o| walk(o.tuple())) + walk(new)
                }
                _ => 0,
            };
        }
        black_box(&msg);
    }
    total
}

#[divan::bench_group(name = "pgoutput")]
mod pgoutput {
    use super::*;
    use std::sync::OnceLock;

    /// Indexed by `[insert, update][text, binary]`.
    fn stream(update: bool, binary: bool) -> &'static PgoutputStream {
        static STREAMS: OnceLock<[[PgoutputStream; 2]; 2]> = OnceLock::new();
        let s = STREAMS.get_or_init(|| {
            [
                [
                    PgoutputStream::inserts(false),
                    PgoutputStream::inserts(true),
                ],
                [
                    PgoutputStream::updates(false),
                    PgoutputStream::updates(true),
                ],
            ]
        });
        &s[update as usize][binary as usize]
    }

    /// `"parse"`: decode only; `"walk"`: decode and walk every column.
    const MODES: [&str; 2] = ["parse", "walk"];

    fn run(bencher: Bencher, update: bool, binary: bool, mode: &str) {
        let s = stream(update, binary);
        let columns = mode == "walk";
        bencher
            .counter(BytesCount::new(s.len))
            .bench(|| decode_all(black_box(&s.messages), columns));
    }

    #[divan::bench(args = MODES)]
    fn insert_text(bencher: Bencher, mode: &str) {
        run(bencher, false, false, mode);
    }

    #[divan::bench(args = MODES)]
    fn insert_binary(bencher: Bencher, mode: &str) {
        run(bencher, false, true, mode);
    }

    #[divan::bench(args = MODES)]
    fn update_text(bencher: Bencher, mode: &str) {
        run(bencher, true, false, mode);
    }

    #[divan::bench(args = MODES)]
    fn update_binary(bencher: Bencher, mode: &str) {
        run(bencher, true, true, mode);
    }
}
