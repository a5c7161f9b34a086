//! Checks shared by the fuzz targets.
//!
//! A parser that returns `Ok` promises that everything it hands out can be
//! read without failing: column ranges lie inside the body, tuples walk to
//! their declared length, and encoding then parsing again gives the same
//! message. These functions read every such thing and assert those promises,
//! so a broken invariant shows up as a crash here rather than as a panic or
//! a wrong row in the engine. Where the crate has no encoder to round-trip
//! through, a few lines written here from the protocol docs stand in for it.

use bytes::{Bytes, BytesMut};
use pgdog_protocol::backend::{self, ErrorFields};
use pgdog_protocol::pgoutput::{self, Column, Tuple};
use pgdog_protocol::replication::{ClientMessage, ServerMessage};

/// Walk everything a parsed backend message exposes, and check it against
/// `body`, the bytes it was parsed from: written back out by [`reencode`]
/// (independent of the parser), every message that keeps all its bytes must
/// give the same body.
pub fn check_backend(msg: &backend::Message, body: &[u8]) {
    let _ = msg.name();
    match msg {
        backend::Message::DataRow(row) => {
            for i in 0..=row.len() {
                let value = row.get(i);
                assert_eq!(value, row.get_bytes(i).as_deref());
                assert_eq!(row.is_null(i), i < row.len() && value.is_none());
                if let Some(text) = row.text(i) {
                    assert_eq!(Some(text.as_bytes()), value);
                }
            }
            assert!(row.get(row.len()).is_none());
        }
        backend::Message::ErrorResponse(fields) | backend::Message::NoticeResponse(fields) => {
            check_error_fields(fields);
        }
        backend::Message::CopyData(body) => check_copy_data(body),
        _ => {}
    }
    if let Some(again) = reencode(msg) {
        assert_eq!(again, body, "{msg:?}");
    }
}

/// The body of a backend message, written from its parsed fields by hand
/// (the crate has no encoder for server messages). `None` for the one kind
/// that drops bytes: unsupported authentication methods.
fn reencode(msg: &backend::Message) -> Option<Vec<u8>> {
    use backend::{Authentication, Message, TransactionStatus};

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    fn copy_response(out: &mut Vec<u8>, r: &backend::CopyResponse) {
        out.push(r.format);
        out.extend_from_slice(&(r.column_formats.len() as i16).to_be_bytes());
        for f in &r.column_formats {
            out.extend_from_slice(&f.to_be_bytes());
        }
    }

    let mut out = Vec::new();
    match msg {
        Message::Authentication(auth) => {
            let code: i32 = match auth {
                Authentication::Ok => 0,
                Authentication::CleartextPassword => 3,
                Authentication::Md5Password { .. } => 5,
                Authentication::Sasl { .. } => 10,
                Authentication::SaslContinue { .. } => 11,
                Authentication::SaslFinal { .. } => 12,
                Authentication::Unsupported { .. } => return None,
            };
            out.extend_from_slice(&code.to_be_bytes());
            match auth {
                Authentication::Md5Password { salt } => out.extend_from_slice(salt),
                Authentication::Sasl { mechanisms } => {
                    for m in mechanisms {
                        cstr(&mut out, m);
                    }
                    out.push(0);
                }
                Authentication::SaslContinue { data } | Authentication::SaslFinal { data } => {
                    out.extend_from_slice(data)
                }
                _ => {}
            }
        }
        Message::ParameterStatus { name, value } => {
            cstr(&mut out, name);
            cstr(&mut out, value);
        }
        Message::BackendKeyData {
            process_id,
            secret_key,
        } => {
            out.extend_from_slice(&process_id.to_be_bytes());
            out.extend_from_slice(secret_key);
        }
        Message::ReadyForQuery { status } => out.push(match status {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }),
        Message::RowDescription(desc) => {
            out.extend_from_slice(&(desc.fields.len() as i16).to_be_bytes());
            for f in &desc.fields {
                cstr(&mut out, &f.name);
                out.extend_from_slice(&f.table_oid.to_be_bytes());
                out.extend_from_slice(&f.column_id.to_be_bytes());
                out.extend_from_slice(&f.type_oid.to_be_bytes());
                out.extend_from_slice(&f.type_size.to_be_bytes());
                out.extend_from_slice(&f.type_modifier.to_be_bytes());
                out.extend_from_slice(&f.format.to_be_bytes());
            }
        }
        Message::DataRow(row) => {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for i in 0..row.len() {
                match row.get(i) {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        Message::CommandComplete { tag } => cstr(&mut out, tag),
        Message::ErrorResponse(fields) | Message::NoticeResponse(fields) => {
            for (code, value) in &fields.fields {
                out.push(*code);
                cstr(&mut out, value);
            }
            out.push(0);
        }
        Message::EmptyQueryResponse
        | Message::ParseComplete
        | Message::BindComplete
        | Message::CloseComplete
        | Message::NoData
        | Message::PortalSuspended
        | Message::CopyDone => {}
        Message::ParameterDescription { types } => {
            out.extend_from_slice(&(types.len() as i16).to_be_bytes());
            for t in types {
                out.extend_from_slice(&t.to_be_bytes());
            }
        }
        Message::CopyInResponse(r) | Message::CopyOutResponse(r) | Message::CopyBothResponse(r) => {
            copy_response(&mut out, r)
        }
        Message::CopyData(data) => out.extend_from_slice(data),
        Message::NotificationResponse {
            process_id,
            channel,
            payload,
        } => {
            out.extend_from_slice(&process_id.to_be_bytes());
            cstr(&mut out, channel);
            cstr(&mut out, payload);
        }
        Message::NegotiateProtocolVersion {
            newest_minor,
            unrecognized_options,
        } => {
            out.extend_from_slice(&newest_minor.to_be_bytes());
            out.extend_from_slice(&(unrecognized_options.len() as i32).to_be_bytes());
            for o in unrecognized_options {
                cstr(&mut out, o);
            }
        }
    }
    Some(out)
}

fn check_error_fields(fields: &ErrorFields) {
    let shown = fields.to_string();
    assert!(shown.contains(fields.code()));
    let _ = (
        fields.severity(),
        fields.message(),
        fields.detail(),
        fields.hint(),
    );
    let _ = (fields.schema(), fields.table(), fields.constraint());
}

/// A CopyData body read as a replication message, both directions, and the
/// pgoutput payload of an XLogData at every protocol version.
pub fn check_copy_data(body: &Bytes) {
    if let Ok(msg) = ServerMessage::parse(body.clone()) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        assert_eq!(ServerMessage::parse(buf.freeze()).as_ref(), Ok(&msg));
        if let ServerMessage::XLogData { data, .. } = &msg {
            for version in 1..=pgoutput::MAX_PROTOCOL_VERSION {
                for in_stream in [false, true] {
                    if let Ok(m) = pgoutput::Message::parse(data.clone(), version, in_stream) {
                        check_pgoutput(&m, version, in_stream);
                    }
                }
            }
        }
    }
    if let Ok(msg) = ClientMessage::parse(body.clone()) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        assert_eq!(ClientMessage::parse(buf.freeze()).as_ref(), Ok(&msg));
    }
}

/// Walk every tuple of a parsed pgoutput message, then encode it and parse
/// it again: the result must be the same message, and encoding that must
/// give the same bytes.
pub fn check_pgoutput(msg: &pgoutput::Message, version: u32, in_stream: bool) {
    use pgoutput::Message;

    match msg {
        Message::Insert { new, .. } => walk(new),
        Message::Update { old, new, .. } => {
            if let Some(old) = old {
                walk(old.tuple());
            }
            walk(new);
        }
        Message::Delete { old, .. } => walk(old.tuple()),
        _ => {}
    }
    let mut first = BytesMut::new();
    msg.encode(&mut first)
        .expect("a parsed message re-encodes");
    let first = first.freeze();
    // By the wire tag: a relation, type, insert, update, delete, truncate
    // or logical message carries an xid exactly when it is inside a
    // streamed transaction of a version that has them; nothing else has one.
    let streamed = in_stream && version >= 2;
    if first.first().is_some_and(|tag| b"RYIUDTM".contains(tag)) {
        assert_eq!(msg.streamed_xid().is_some(), streamed, "{msg:?}");
    } else {
        assert_eq!(msg.streamed_xid(), None, "{msg:?}");
    }
    let again = match Message::parse(first.clone(), version, in_stream) {
        Ok(m) => m,
        Err(e) => panic!("{msg:?} encoded as {first:?} does not parse: {e}"),
    };
    assert_eq!(&again, msg);
    let mut second = BytesMut::new();
    again
        .encode(&mut second)
        .expect("a parsed message re-encodes");
    assert_eq!(second.freeze(), first);
}

/// Every column of a parsed tuple is readable, and there are as many as the
/// tuple says.
fn walk(tuple: &Tuple) {
    let mut n = 0;
    let mut raw_len = 0;
    for column in tuple.columns() {
        n += 1;
        raw_len += 1;
        match column {
            Column::Null | Column::Unchanged => assert_eq!(column.bytes(), None),
            Column::Text(v) | Column::Binary(v) => {
                assert_eq!(column.bytes(), Some(v));
                raw_len += 4 + v.len();
            }
        }
    }
    assert_eq!(n, tuple.len());
    assert_eq!(raw_len, tuple.raw().len());
    // Written back by the encoder, the columns give the bytes they came from.
    let rebuilt = Tuple::from_columns(tuple.columns()).expect("a parsed tuple re-encodes");
    assert_eq!(rebuilt.raw(), tuple.raw());
    for i in 0..tuple.len() {
        assert!(tuple.get(i).is_some());
    }
    assert!(tuple.get(tuple.len()).is_none());
}
