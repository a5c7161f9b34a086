//! Writes generated seeds for every fuzz target into `<corpus>/<target>/`,
//! so the corpus is never empty even before captured fixtures exist.
//!
//! Usage: `cargo run --example seeds -- <corpus dir>` (seed.sh runs it).
//! Each seed is built with the crate's own encoders (or, for server
//! messages, which the crate only parses, by hand) and prefixed with the
//! control bytes its target reads first. Names start with `gen-` and are
//! stable, so running it again overwrites rather than piles up.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use pgdog_protocol::copy_binary::{self, Encoder};
use pgdog_protocol::frontend;
use pgdog_protocol::pgoutput::{
    Column, Message, OldTuple, PreparedTransaction, Relation, RelationColumn, Tuple,
};
use pgdog_protocol::replication::{ClientMessage, ServerMessage};
use pgdog_protocol::Lsn;

fn main() -> std::io::Result<()> {
    let Some(corpus) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: seeds <corpus dir>");
        std::process::exit(2);
    };
    let mut out = Seeds { corpus, written: 0 };
    copy_seeds(&mut out)?;
    pgoutput_seeds(&mut out)?;
    if let Some(fixtures) = std::env::args_os().nth(2).map(PathBuf::from) {
        session_seeds(&mut out, &fixtures.join("pgoutput"))?;
    }
    backend_seeds(&mut out)?;
    println!("wrote {} generated seeds", out.written);
    Ok(())
}

struct Seeds {
    corpus: PathBuf,
    written: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(Path::new(&dir).join(format!("gen-{name}")), bytes)?;
        self.written += 1;
        Ok(())
    }
}

// ---- binary COPY -------------------------------------------------------

/// Rows of an `orders`-like table: bigint, int, text, NULL, timestamptz,
/// bool, and an empty text.
fn copy_rows() -> Vec<Vec<Option<Vec<u8>>>> {
    (0..3i64)
        .map(|id| {
            vec![
                Some(id.to_be_bytes().to_vec()),
                Some((id as i32 * 7).to_be_bytes().to_vec()),
                Some(format!("customer {id}").into_bytes()),
                None,
                Some(768_000_000_000_000i64.to_be_bytes().to_vec()),
                Some(vec![id as u8 & 1]),
                Some(Vec::new()),
            ]
        })
        .collect()
}

fn copy_stream(header: bool, rows: &[Vec<Option<Vec<u8>>>]) -> BytesMut {
    let mut buf = BytesMut::new();
    if header {
        Encoder::header(&mut buf);
    }
    for row in rows {
        Encoder::row(row.iter().map(|f| f.as_deref()), &mut buf).unwrap();
    }
    Encoder::trailer(&mut buf);
    buf
}

/// The copy_binary target's input: flags, cut offsets, stream.
fn copy_input(flags: u8, cuts: &[u16], stream: &[u8]) -> Vec<u8> {
    assert_eq!(cuts.len(), (flags & 0b111) as usize);
    let mut out = vec![flags];
    for c in cuts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(stream);
    out
}

fn copy_seeds(out: &mut Seeds) -> std::io::Result<()> {
    let rows = copy_rows();
    let stream = copy_stream(true, &rows);
    out.write("copy_binary", "rows", &copy_input(0, &[], &stream))?;
    // Cuts inside the header, inside a length word and inside a value.
    out.write(
        "copy_binary",
        "rows-cut",
        &copy_input(3, &[5, 21, 40], &stream),
    )?;
    // Header supplied by the target (flag bit 3).
    out.write(
        "copy_binary",
        "rows-no-header",
        &copy_input(0b1000, &[], &copy_stream(false, &rows)),
    )?;
    out.write(
        "copy_binary",
        "empty",
        &copy_input(0, &[], &copy_stream(true, &[])),
    )?;

    // OIDs and a header extension, written by hand (the encoder writes
    // neither).
    let mut oids = BytesMut::new();
    oids.put_slice(copy_binary::SIGNATURE);
    oids.put_u32(1 << 16);
    oids.put_u32(4);
    oids.put_slice(b"ext!");
    oids.put_i16(2);
    oids.put_i32(4);
    oids.put_u32(16_385);
    oids.put_i32(8);
    oids.put_i64(42);
    oids.put_i32(-1);
    Encoder::trailer(&mut oids);
    out.write("copy_binary", "oids-extension", &copy_input(0, &[], &oids))?;

    // A 100-byte value spanning two chunks, with the 64-byte row limit.
    let big = vec![vec![Some(vec![b'x'; 100])]];
    out.write(
        "copy_binary",
        "over-limit",
        &copy_input(0b1_0001, &[60], &copy_stream(true, &big)),
    )?;
    Ok(())
}

// ---- pgoutput ----------------------------------------------------------

/// The pgoutput target's mode byte.
fn mode(version: u32, in_stream: bool) -> u8 {
    (version as u8 - 1) | (u8::from(in_stream) << 2)
}

fn text_tuple(id: i64) -> Tuple {
    let id = id.to_string();
    Tuple::from_columns([
        Column::Text(id.as_bytes()),
        Column::Text(b"customer"),
        Column::Null,
        Column::Text(b"2024-05-17 12:34:56.789+00"),
        Column::Unchanged,
    ])
    .unwrap()
}

fn binary_tuple(id: i64) -> Tuple {
    Tuple::from_columns([
        Column::Binary(&id.to_be_bytes()),
        Column::Binary(b"customer"),
        Column::Null,
        Column::Binary(&768_000_000_000_000i64.to_be_bytes()),
        Column::Unchanged,
    ])
    .unwrap()
}

fn relation() -> Relation {
    let column = |key, name: &str, type_oid, type_modifier| RelationColumn {
        key,
        name: name.into(),
        type_oid,
        type_modifier,
    };
    Relation {
        oid: 16_384,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: b'd',
        columns: vec![
            column(true, "id", 20, -1),
            column(false, "customer", 1043, 68),
            column(false, "note", 25, -1),
            column(false, "created_at", 1184, -1),
            column(false, "payload", 3802, -1),
        ],
    }
}

fn txn() -> PreparedTransaction {
    PreparedTransaction {
        lsn: Lsn(0x16_b374_d848),
        end_lsn: Lsn(0x16_b374_d900),
        timestamp: 768_000_000_000_000,
        xid: 771,
        gid: "pgdog-2pc-1".into(),
    }
}

/// Change messages, with the streamed xid when `xid` is `Some`.
fn changes(xid: Option<u32>) -> Vec<(&'static str, Message)> {
    vec![
        (
            "relation",
            Message::Relation {
                xid,
                relation: relation(),
            },
        ),
        (
            "type",
            Message::Type {
                xid,
                oid: 16_400,
                namespace: "public".into(),
                name: "mood".into(),
            },
        ),
        (
            "insert-text",
            Message::Insert {
                xid,
                relation: 16_384,
                new: text_tuple(1),
            },
        ),
        (
            "insert-binary",
            Message::Insert {
                xid,
                relation: 16_384,
                new: binary_tuple(1),
            },
        ),
        (
            "update",
            Message::Update {
                xid,
                relation: 16_384,
                old: None,
                new: text_tuple(2),
            },
        ),
        (
            "update-key",
            Message::Update {
                xid,
                relation: 16_384,
                old: Some(OldTuple::Key(Tuple::from_columns([
                    Column::Text(b"2"),
                    Column::Null,
                ])
                .unwrap())),
                new: text_tuple(3),
            },
        ),
        (
            "update-old",
            Message::Update {
                xid,
                relation: 16_384,
                old: Some(OldTuple::Old(binary_tuple(3))),
                new: binary_tuple(4),
            },
        ),
        (
            "delete-key",
            Message::Delete {
                xid,
                relation: 16_384,
                old: OldTuple::Key(Tuple::from_columns([Column::Text(b"4")]).unwrap()),
            },
        ),
        (
            "delete-old",
            Message::Delete {
                xid,
                relation: 16_384,
                old: OldTuple::Old(text_tuple(4)),
            },
        ),
        (
            "truncate",
            Message::Truncate {
                xid,
                options: 1,
                relations: vec![16_384, 16_390],
            },
        ),
        (
            "message",
            Message::Message {
                xid,
                transactional: true,
                lsn: Lsn(0x16_b374_d848),
                prefix: "pgdog".into(),
                content: Bytes::from_static(b"resharding checkpoint"),
            },
        ),
    ]
}

/// Transaction framing messages, which never carry a streamed xid.
fn framing() -> Vec<(&'static str, Message)> {
    vec![
        (
            "begin",
            Message::Begin {
                final_lsn: Lsn(0x16_b374_d848),
                commit_time: 768_000_000_000_000,
                xid: 770,
            },
        ),
        (
            "commit",
            Message::Commit {
                flags: 0,
                commit_lsn: Lsn(0x16_b374_d848),
                end_lsn: Lsn(0x16_b374_d878),
                commit_time: 768_000_000_000_000,
            },
        ),
        (
            "origin",
            Message::Origin {
                commit_lsn: Lsn(0x16_b374_d848),
                name: "pg_16400".into(),
            },
        ),
        (
            "stream-start",
            Message::StreamStart {
                xid: 771,
                first_segment: true,
            },
        ),
        ("stream-stop", Message::StreamStop),
        (
            "stream-commit",
            Message::StreamCommit {
                xid: 771,
                flags: 0,
                commit_lsn: Lsn(0x16_b374_d848),
                end_lsn: Lsn(0x16_b374_d878),
                commit_time: 768_000_000_000_000,
            },
        ),
        ("begin-prepare", Message::BeginPrepare(txn())),
        (
            "prepare",
            Message::Prepare {
                flags: 0,
                txn: txn(),
            },
        ),
        (
            "commit-prepared",
            Message::CommitPrepared {
                flags: 0,
                txn: txn(),
            },
        ),
        (
            "rollback-prepared",
            Message::RollbackPrepared {
                flags: 0,
                prepare_end_lsn: Lsn(0x16_b374_d878),
                rollback_end_lsn: Lsn(0x16_b374_d900),
                prepare_time: 768_000_000_000_000,
                rollback_time: 768_000_000_100_000,
                xid: 771,
                gid: "pgdog-2pc-1".into(),
            },
        ),
        (
            "stream-prepare",
            Message::StreamPrepare {
                flags: 0,
                txn: txn(),
            },
        ),
    ]
}

fn encode(msg: &Message) -> BytesMut {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).unwrap();
    buf
}

/// Captured sessions (`fixtures/pgoutput/session-v<N>-*.bin`: a u32 length
/// before each message) split into one seed per message, with the mode
/// byte the message needs: its version and whether a stream was open.
/// At most a few seeds per message tag, so a long capture does not flood
/// the corpus.
fn session_seeds(out: &mut Seeds, dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("session").to_string();
        let Some(version) = name
            .strip_prefix("session-v")
            .and_then(|r| r.split('-').next())
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let mut data = Bytes::from(std::fs::read(&path)?);
        let mut decoder = pgdog_protocol::pgoutput::Decoder::new(version);
        let mut per_tag = [0u8; 256];
        let mut n = 0;
        while data.len() >= 4 {
            let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            if data.len() < 4 + len {
                break;
            }
            let msg = data.slice(4..4 + len);
            data = data.slice(4 + len..);
            let in_stream = decoder.in_stream();
            let tag = msg.first().copied().unwrap_or(0) as usize;
            if decoder.decode(msg.clone()).is_err() {
                break;
            }
            if per_tag[tag] < 4 {
                per_tag[tag] += 1;
                let mut input = vec![mode(version, in_stream)];
                input.extend_from_slice(&msg);
                out.write("pgoutput", &format!("fixture-{name}-{n}"), &input)?;
            }
            n += 1;
        }
    }
    Ok(())
}

fn pgoutput_seeds(out: &mut Seeds) -> std::io::Result<()> {
    let mut write = |name: &str, version: u32, in_stream: bool, msg: &Message| {
        let mut input = vec![mode(version, in_stream)];
        input.extend_from_slice(&encode(msg));
        out.write("pgoutput", &format!("{name}-v{version}"), &input)
    };
    for (name, msg) in framing() {
        write(name, 4, false, &msg)?;
    }
    for (name, msg) in changes(None) {
        write(name, 1, false, &msg)?;
    }
    for (name, msg) in changes(Some(771)) {
        write(&format!("{name}-streamed"), 2, true, &msg)?;
    }
    let abort = |abort| Message::StreamAbort {
        xid: 771,
        subxid: 772,
        abort,
    };
    write("stream-abort", 2, false, &abort(None))?;
    write(
        "stream-abort-parallel",
        4,
        false,
        &abort(Some((Lsn(0x16_b374_d900), 768_000_000_000_000))),
    )?;
    Ok(())
}

// ---- server messages and streams -----------------------------------------

/// A server message: tag, length (counting itself), body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// One of each server message, as `(tag, body)`.
fn server_messages() -> Vec<(&'static str, u8, Vec<u8>)> {
    let mut m = Vec::new();
    m.push(("auth-ok", b'R', 0i32.to_be_bytes().to_vec()));
    m.push(("auth-md5", b'R', [0, 0, 0, 5, 1, 2, 3, 4].to_vec()));
    let mut sasl = 10i32.to_be_bytes().to_vec();
    cstr(&mut sasl, "SCRAM-SHA-256-PLUS");
    cstr(&mut sasl, "SCRAM-SHA-256");
    sasl.push(0);
    m.push(("auth-sasl", b'R', sasl));
    let mut cont = 11i32.to_be_bytes().to_vec();
    cont.extend_from_slice(b"r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096");
    m.push(("auth-sasl-continue", b'R', cont));
    let mut status = Vec::new();
    cstr(&mut status, "server_version");
    cstr(&mut status, "16.4");
    m.push(("parameter-status", b'S', status));
    let mut key = 4242i32.to_be_bytes().to_vec();
    key.extend_from_slice(&[9, 8, 7, 6]);
    m.push(("backend-key-data", b'K', key));
    m.push(("ready-for-query", b'Z', b"I".to_vec()));

    let mut desc = 2i16.to_be_bytes().to_vec();
    for (name, type_oid, size) in [("id", 20u32, 8i16), ("name", 25, -1)] {
        cstr(&mut desc, name);
        desc.extend_from_slice(&16_384u32.to_be_bytes());
        desc.extend_from_slice(&1i16.to_be_bytes());
        desc.extend_from_slice(&type_oid.to_be_bytes());
        desc.extend_from_slice(&size.to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&0i16.to_be_bytes());
    }
    m.push(("row-description", b'T', desc));
    let mut row = 3i16.to_be_bytes().to_vec();
    row.extend_from_slice(&2i32.to_be_bytes());
    row.extend_from_slice(b"42");
    row.extend_from_slice(&(-1i32).to_be_bytes());
    row.extend_from_slice(&0i32.to_be_bytes());
    m.push(("data-row", b'D', row));
    let mut complete = Vec::new();
    cstr(&mut complete, "SELECT 1");
    m.push(("command-complete", b'C', complete));

    let mut error = Vec::new();
    for (code, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "42P01"),
        (b'M', "relation \"orders\" does not exist"),
        (b'D', "detail"),
        (b'H', "hint"),
        (b't', "orders"),
    ] {
        error.push(code);
        cstr(&mut error, value);
    }
    error.push(0);
    m.push(("error-response", b'E', error.clone()));
    m.push(("notice-response", b'N', error));

    for (name, tag) in [
        ("empty-query", b'I'),
        ("parse-complete", b'1'),
        ("bind-complete", b'2'),
        ("close-complete", b'3'),
        ("no-data", b'n'),
        ("portal-suspended", b's'),
        ("copy-done", b'c'),
    ] {
        m.push((name, tag, Vec::new()));
    }
    let mut params = 2i16.to_be_bytes().to_vec();
    params.extend_from_slice(&20u32.to_be_bytes());
    params.extend_from_slice(&25u32.to_be_bytes());
    m.push(("parameter-description", b't', params));
    m.push(("copy-out-binary", b'H', [1, 0, 2, 0, 1, 0, 1].to_vec()));
    m.push(("copy-in-text", b'G', [0, 0, 1, 0, 0].to_vec()));
    m.push(("copy-both", b'W', [0, 0, 0].to_vec()));
    m.push((
        "copy-data-rows",
        b'd',
        copy_stream(true, &copy_rows()).to_vec(),
    ));
    m.push(("copy-data-xlog", b'd', xlog_data(&changes(None)[2].1)));
    let keepalive = ServerMessage::PrimaryKeepalive {
        end: Lsn(0x16_b374_d900),
        send_time: 768_000_000_000_000,
        reply: true,
    };
    let mut buf = BytesMut::new();
    keepalive.encode(&mut buf);
    m.push(("copy-data-keepalive", b'd', buf.to_vec()));
    let status = ClientMessage::StandbyStatusUpdate {
        write: Lsn(0x16_b374_d900),
        flush: Lsn(0x16_b374_d900),
        apply: Lsn(0x16_b374_d848),
        time: 768_000_000_000_000,
        reply: false,
    };
    let mut buf = BytesMut::new();
    status.encode(&mut buf);
    m.push(("copy-data-status", b'd', buf.to_vec()));

    let mut notify = 4242i32.to_be_bytes().to_vec();
    cstr(&mut notify, "pgdog");
    cstr(&mut notify, "resharded");
    m.push(("notification", b'A', notify));
    let mut negotiate = 0i32.to_be_bytes().to_vec();
    negotiate.extend_from_slice(&1i32.to_be_bytes());
    cstr(&mut negotiate, "_pq_.unknown");
    m.push(("negotiate-protocol-version", b'v', negotiate));
    m
}

/// A CopyData body carrying `msg` as XLogData.
fn xlog_data(msg: &Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ServerMessage::XLogData {
        start: Lsn(0x16_b374_d848),
        end: Lsn(0x16_b374_d900),
        send_time: 768_000_000_000_000,
        data: encode(msg).freeze(),
    }
    .encode(&mut buf);
    buf.to_vec()
}

fn backend_seeds(out: &mut Seeds) -> std::io::Result<()> {
    let messages = server_messages();
    let by_name = |name: &str| {
        let (_, tag, body) = messages
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("no seed message {name}"));
        frame(*tag, body)
    };
    for (name, tag, body) in &messages {
        let mut input = vec![*tag];
        input.extend_from_slice(body);
        out.write("backend", name, &input)?;
    }

    // Streams as a server sends them, for the frame target. Its first byte
    // is the read size: 0 for one read, 7 to cut every frame somewhere.
    let login: Vec<u8> = [
        "auth-ok",
        "parameter-status",
        "backend-key-data",
        "ready-for-query",
    ]
    .iter()
    .flat_map(|n| by_name(n))
    .collect();
    let query: Vec<u8> = [
        "row-description",
        "data-row",
        "data-row",
        "command-complete",
        "notice-response",
        "ready-for-query",
    ]
    .iter()
    .flat_map(|n| by_name(n))
    .collect();
    let error: Vec<u8> = ["error-response", "ready-for-query"]
        .iter()
        .flat_map(|n| by_name(n))
        .collect();

    // COPY OUT in binary, one CopyData per row as Postgres sends it.
    let mut copy = by_name("copy-out-binary");
    let stream = copy_stream(true, &copy_rows());
    let mut row_ends = vec![copy_binary::HEADER_LEN];
    let mut pos = copy_binary::HEADER_LEN;
    for row in copy_rows() {
        let mut buf = BytesMut::new();
        Encoder::row(row.iter().map(|f| f.as_deref()), &mut buf).unwrap();
        pos += buf.len();
        row_ends.push(pos);
    }
    let mut start = 0;
    for end in row_ends.into_iter().skip(1).chain([stream.len()]) {
        let mut buf = BytesMut::new();
        frontend::copy_data(&stream[start..end], &mut buf);
        copy.extend_from_slice(&buf);
        start = end;
    }
    copy.extend(by_name("copy-done"));
    copy.extend(by_name("command-complete"));
    copy.extend(by_name("ready-for-query"));

    // A logical replication stream: CopyBoth, then a transaction.
    let mut replication = by_name("copy-both");
    let txn: Vec<Message> = framing()
        .into_iter()
        .filter(|(n, _)| *n == "begin")
        .chain(changes(None))
        .chain(framing().into_iter().filter(|(n, _)| *n == "commit"))
        .map(|(_, m)| m)
        .collect();
    for msg in &txn {
        replication.extend(frame(b'd', &xlog_data(msg)));
    }
    replication.extend(by_name("copy-data-keepalive"));

    for (name, stream) in [
        ("login", login),
        ("query", query),
        ("error", error),
        ("copy-out", copy),
        ("replication", replication),
    ] {
        for step in [0u8, 7] {
            let mut input = vec![step];
            input.extend_from_slice(&stream);
            out.write("frame", &format!("{name}-step{step}"), &input)?;
        }
    }
    Ok(())
}
