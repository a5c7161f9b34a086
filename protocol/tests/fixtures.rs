//! Decode the captures in `fixtures/` (real bytes from real servers, see
//! fixtures/README.md) and check the values against what the SQL wrote.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use pgdog_protocol::copy_binary::Decoder;
use pgdog_protocol::pgoutput::{self, Column, Message, OldTuple};

fn fixture(rel: &str) -> Bytes {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(rel);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

type Row = Vec<Option<Vec<u8>>>;

/// Decode a COPY capture fed in chunks of `chunk` bytes.
fn copy_rows(data: &Bytes, chunk: usize) -> Vec<Row> {
    let mut d = Decoder::new();
    let mut rows = Vec::new();
    let mut rest = data.clone();
    while !rest.is_empty() {
        let piece = rest.split_to(chunk.min(rest.len()));
        d.push(piece).unwrap();
        while let Some(row) = d.next_row().unwrap() {
            rows.push(
                (0..row.len())
                    .map(|i| row.field(i).unwrap().map(<[u8]>::to_vec))
                    .collect(),
            );
        }
    }
    d.finish().unwrap();
    rows
}

fn be_i64(v: &[u8]) -> i64 {
    i64::from_be_bytes(v.try_into().unwrap())
}

fn be_i32(v: &[u8]) -> i32 {
    i32::from_be_bytes(v.try_into().unwrap())
}

/// Elements of a one-dimensional binary array: (element type OID, values).
fn array(mut v: &[u8]) -> (u32, Vec<Option<Vec<u8>>>) {
    let ndim = v.get_i32();
    let _has_null = v.get_i32();
    let elem = v.get_u32();
    if ndim == 0 {
        return (elem, vec![]);
    }
    let len = v.get_i32();
    let _lower = v.get_i32();
    let mut out = Vec::new();
    for _ in 0..len {
        let n = v.get_i32();
        if n < 0 {
            out.push(None);
        } else {
            out.push(Some(v[..n as usize].to_vec()));
            v.advance(n as usize);
        }
    }
    (elem, out)
}

fn check_copy(rel: &str) {
    let data = fixture(rel);
    let whole = copy_rows(&data, data.len());
    // Any chunking gives the same rows.
    for chunk in [1, 7, 4096] {
        assert_eq!(
            copy_rows(&data, chunk),
            whole,
            "{rel} in {chunk}-byte chunks"
        );
    }
    assert_eq!(whole.len(), 3);
    assert!(whole.iter().all(|r| r.len() == 15));

    let r = &whole[0];
    let f = |i: usize| r[i].as_deref().unwrap();
    assert_eq!(be_i64(f(0)), 1);
    assert_eq!(be_i32(f(1)), -42);
    assert!(!f(2).is_empty(), "numeric");
    assert_eq!(std::str::from_utf8(f(3)).unwrap(), "żółw 🐢");
    assert_eq!(f(4), b"short");
    assert_eq!(f(5), [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(f(6), [1]);
    assert_eq!(f64::from_be_bytes(f(7).try_into().unwrap()), 2.5);
    // 2024-02-29 12:34:56.789 UTC in microseconds since 2000-01-01.
    assert_eq!(be_i64(f(8)), 8825 * 86_400_000_000 + 45_296_789_000);
    assert_eq!(be_i32(f(9)), 8825);
    assert_eq!(
        f(10),
        [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11
        ]
    );
    // jsonb: a version byte, then text.
    assert_eq!(f(11)[0], 1);
    assert_eq!(
        std::str::from_utf8(&f(11)[1..]).unwrap(),
        r#"{"k": [1, null, "v"]}"#
    );
    let (elem, ints) = array(f(12));
    assert_eq!(elem, 23, "int4[]");
    assert_eq!(
        ints,
        vec![
            Some(1i32.to_be_bytes().to_vec()),
            None,
            Some(3i32.to_be_bytes().to_vec())
        ]
    );
    let (elem, texts) = array(f(13));
    assert_eq!(elem, 25, "text[]");
    assert_eq!(
        texts,
        vec![Some(b"a".to_vec()), None, Some(b"b c".to_vec())]
    );
    assert_eq!(f(14), b"happy", "an enum travels as its label");

    let r = &whole[1];
    assert_eq!(be_i64(r[0].as_deref().unwrap()), 2);
    assert!(r[1..].iter().all(Option::is_none), "NULLs everywhere");

    let r = &whole[2];
    let f = |i: usize| r[i].as_deref().unwrap();
    assert_eq!(f(3), b"");
    assert_eq!(f(4).len(), 120_000, "the TOASTed text");
    assert!(f(4).chunks(2).all(|c| c == b"ab"));
    assert_eq!(f(5), b"");
    assert_eq!(f(6), [0]);
    assert_eq!(f64::from_be_bytes(f(7).try_into().unwrap()), -1e300);
    assert_eq!(be_i32(f(9)), -10957, "1970-01-01");
    assert_eq!(f(10), [0; 16]);
    assert_eq!(array(f(12)), (23, vec![]));
}

#[test]
fn copy_binary_pg15() {
    check_copy("copy/types-pg15.bin");
}

#[test]
fn copy_binary_pg17() {
    check_copy("copy/types-pg17.bin");
}

/// The messages of a session capture (u32 length + pgoutput message each).
fn session(rel: &str, version: u32) -> Vec<Message> {
    let mut data = fixture(rel);
    let mut decoder = pgoutput::Decoder::new(version);
    let mut out = Vec::new();
    while data.has_remaining() {
        let len = data.get_u32() as usize;
        let msg = data.split_to(len);
        out.push(
            decoder
                .decode(msg)
                .unwrap_or_else(|e| panic!("message {}: {e}", out.len())),
        );
    }
    out
}

/// A column's value as text, whichever format it came in (the binary
/// values checked here are bigint or text).
fn value(c: Option<Column<'_>>, binary_int: bool) -> String {
    match c {
        Some(Column::Text(v)) => String::from_utf8(v.to_vec()).unwrap(),
        Some(Column::Binary(v)) if binary_int => be_i64(v).to_string(),
        Some(Column::Binary(v)) => String::from_utf8(v.to_vec()).unwrap(),
        Some(Column::Null) => "NULL".into(),
        Some(Column::Unchanged) => "UNCHANGED".into(),
        None => "MISSING".into(),
    }
}

fn check_session(rel: &str, version: u32) {
    let msgs = session(rel, version);
    let binary = version >= 2;
    let kinds: String = msgs
        .iter()
        .map(|m| match m {
            Message::Begin { .. } => 'B',
            Message::Commit { .. } => 'C',
            Message::Relation { .. } => 'R',
            Message::Insert { .. } => 'I',
            Message::Update { .. } => 'U',
            Message::Delete { .. } => 'D',
            Message::Truncate { .. } => 'T',
            Message::Message { .. } => 'M',
            Message::StreamStart { .. } => 'S',
            Message::StreamStop => 'E',
            Message::StreamCommit { .. } => 'c',
            _ => '?',
        })
        .collect();
    // The small transactions, in order.
    // TRUNCATE resends both relations first (its cache invalidation).
    assert!(kinds.starts_with("BRICBUCBUCBRIUCBDCBRRTCBMC"), "{kinds}");
    let mut it = msgs.iter();
    let mut next = |want: char| loop {
        let m = it.next().unwrap();
        let k = match m {
            Message::Insert { .. } => 'I',
            Message::Update { .. } => 'U',
            Message::Delete { .. } => 'D',
            Message::Truncate { .. } => 'T',
            Message::Message { .. } => 'M',
            Message::Relation { .. } => 'R',
            _ => '-',
        };
        if k == want {
            return m.clone();
        }
    };
    let Message::Relation { relation, .. } = next('R') else {
        unreachable!()
    };
    assert_eq!(
        (relation.namespace.as_str(), relation.name.as_str()),
        ("public", "a")
    );
    assert_eq!(relation.columns.len(), 3);
    assert!(relation.columns[0].key && !relation.columns[1].key);
    assert_eq!(relation.columns[0].type_oid, 20);
    let Message::Insert { new, .. } = next('I') else {
        unreachable!()
    };
    assert_eq!(value(new.get(0), binary), "1");
    assert_eq!(value(new.get(1), false), "one");
    assert_eq!(
        value(new.get(2), false).len(),
        400 * 32,
        "the TOASTed value in full"
    );
    // Key change: the old key, and the TOASTed value left unchanged.
    let Message::Update { old, new, .. } = next('U') else {
        unreachable!()
    };
    let Some(OldTuple::Key(key)) = old else {
        panic!("K old tuple")
    };
    assert_eq!(value(key.get(0), binary), "1");
    assert_eq!(
        value(key.get(1), false),
        "NULL",
        "non-key columns are NULL in a K tuple"
    );
    assert_eq!(value(new.get(0), binary), "2");
    assert_eq!(value(new.get(2), false), "UNCHANGED");
    let Message::Update { old, new, .. } = next('U') else {
        unreachable!()
    };
    assert!(old.is_none());
    assert_eq!(value(new.get(1), false), "two");
    assert_eq!(value(new.get(2), false), "UNCHANGED");
    let Message::Relation { relation, .. } = next('R') else {
        unreachable!()
    };
    assert_eq!(relation.replica_identity, b'f');
    next('I');
    let Message::Update { old, new, .. } = next('U') else {
        unreachable!()
    };
    let Some(OldTuple::Old(full)) = old else {
        panic!("O old tuple")
    };
    assert_eq!(value(full.get(1), false), "x");
    assert_eq!(value(new.get(1), false), "y");
    let Message::Delete {
        old: OldTuple::Key(key),
        ..
    } = next('D')
    else {
        panic!("D with K")
    };
    assert_eq!(value(key.get(0), binary), "2");
    let Message::Truncate {
        relations, options, ..
    } = next('T')
    else {
        unreachable!()
    };
    assert_eq!((relations.len(), options), (2, 0));
    let Message::Message {
        transactional,
        prefix,
        content,
        ..
    } = next('M')
    else {
        unreachable!()
    };
    assert!(transactional);
    assert_eq!((prefix.as_str(), &content[..]), ("pgdog", &b"hello"[..]));

    // The large transaction: 500 inserts, streamed in progress where the
    // protocol allows it.
    let inserts = msgs
        .iter()
        .filter(|m| matches!(m, Message::Insert { .. }))
        .count();
    assert_eq!(inserts, 2 + 500);
    if version >= 2 {
        assert!(
            kinds.contains('S') && kinds.contains('E') && kinds.ends_with('c'),
            "{kinds}"
        );
        let streamed = msgs
            .iter()
            .filter(|m| matches!(m, Message::Insert { xid: Some(_), .. }))
            .count();
        assert_eq!(streamed, 500);
    } else {
        assert!(kinds.ends_with('C') && !kinds.contains('S'), "{kinds}");
    }
}

#[test]
fn pgoutput_v1_pg15() {
    check_session("pgoutput/session-v1-pg15.bin", 1);
}

#[test]
fn pgoutput_v4_pg17() {
    check_session("pgoutput/session-v4-pg17.bin", 4);
}
