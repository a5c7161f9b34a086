//! Messages the server sends, typed.
//!
//! Layouts follow
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>.
//! Bodies keep the frame's `Bytes`; strings are checked for UTF-8 when read.

use std::ops::Range;

use bytes::Bytes;

use crate::error::{ProtocolError, Result};
use crate::frame::Frame;
use crate::reader::Reader;
use crate::Str;

/// One server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Authentication(Authentication),
    ParameterStatus {
        name: Str,
        value: Str,
    },
    BackendKeyData {
        process_id: i32,
        secret_key: Bytes,
    },
    ReadyForQuery {
        status: TransactionStatus,
    },
    RowDescription(RowDescription),
    DataRow(DataRow),
    CommandComplete {
        tag: Str,
    },
    EmptyQueryResponse,
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    ParameterDescription {
        types: Vec<u32>,
    },
    PortalSuspended,
    CopyInResponse(CopyResponse),
    CopyOutResponse(CopyResponse),
    CopyBothResponse(CopyResponse),
    CopyData(Bytes),
    CopyDone,
    NotificationResponse {
        process_id: i32,
        channel: Str,
        payload: Str,
    },
    NegotiateProtocolVersion {
        newest_minor: i32,
        unrecognized_options: Vec<Str>,
    },
}

/// `R` messages: what the server asks of us to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// SASL mechanisms offered, in the server's order.
    Sasl {
        mechanisms: Vec<Str>,
    },
    SaslContinue {
        data: Bytes,
    },
    SaslFinal {
        data: Bytes,
    },
    /// Kerberos, GSSAPI, SSPI: known to the protocol, not supported by pgdog.
    Unsupported {
        code: i32,
    },
}

/// The transaction state reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

/// Fields of an ErrorResponse or NoticeResponse, all kept
/// (<https://www.postgresql.org/docs/current/protocol-error-fields.html>).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// `(field code, value)` in the order the server sent them.
    pub fields: Vec<(u8, Str)>,
}

impl ErrorFields {
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }
    /// Localized severity (`S`), e.g. `ERROR`.
    pub fn severity(&self) -> &str {
        self.get(b'V').or_else(|| self.get(b'S')).unwrap_or("ERROR")
    }
    /// SQLSTATE (`C`).
    pub fn code(&self) -> &str {
        self.get(b'C').unwrap_or("XX000")
    }
    pub fn message(&self) -> &str {
        self.get(b'M').unwrap_or("")
    }
    pub fn detail(&self) -> Option<&str> {
        self.get(b'D')
    }
    pub fn hint(&self) -> Option<&str> {
        self.get(b'H')
    }
    pub fn schema(&self) -> Option<&str> {
        self.get(b's')
    }
    pub fn table(&self) -> Option<&str> {
        self.get(b't')
    }
    pub fn constraint(&self) -> Option<&str> {
        self.get(b'n')
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity(),
            self.message(),
            self.code()
        )?;
        if let Some(d) = self.detail() {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = self.hint() {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: Str,
    pub table_oid: u32,
    pub column_id: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: i16,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowDescription {
    pub fields: Vec<FieldDescription>,
}

/// A DataRow: the body plus the byte range of each non-NULL column,
/// validated when parsed so reading a column cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow {
    body: Bytes,
    ranges: Vec<Option<Range<usize>>>,
}

impl DataRow {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    /// Column `i`, `None` when NULL or out of range.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let range = self.ranges.get(i)?.clone()?;
        self.body.get(range)
    }
    /// Column `i` as shared `Bytes`.
    pub fn get_bytes(&self, i: usize) -> Option<Bytes> {
        let range = self.ranges.get(i)?.clone()?;
        Some(self.body.slice(range))
    }
    /// Column `i` as text; `None` when NULL or not UTF-8.
    pub fn text(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.get(i)?).ok()
    }
    pub fn is_null(&self, i: usize) -> bool {
        matches!(self.ranges.get(i), Some(None))
    }
}

/// CopyInResponse / CopyOutResponse / CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// 0 textual, 1 binary.
    pub format: u8,
    pub column_formats: Vec<i16>,
}

impl Message {
    /// Decode one frame. Errors name the message; the frame's body must be
    /// consumed exactly.
    pub fn parse(frame: Frame) -> Result<Message> {
        let Frame { tag, body } = frame;
        let msg = match tag {
            b'R' => {
                let mut r = Reader::new(body, "Authentication");
                let auth = parse_auth(&mut r)?;
                r.finish()?;
                Message::Authentication(auth)
            }
            b'S' => {
                let mut r = Reader::new(body, "ParameterStatus");
                let name = r.cstr()?;
                let value = r.cstr()?;
                r.finish()?;
                Message::ParameterStatus { name, value }
            }
            b'K' => parse_backend_key_data(body)?,
            b'Z' => parse_ready_for_query(body)?,
            b'T' => Message::RowDescription(parse_row_description(body)?),
            b'D' => Message::DataRow(parse_data_row(body)?),
            b'C' => {
                let mut r = Reader::new(body, "CommandComplete");
                let tag = r.cstr()?;
                r.finish()?;
                Message::CommandComplete { tag }
            }
            b'I' => empty(body, "EmptyQueryResponse", Message::EmptyQueryResponse)?,
            b'E' => Message::ErrorResponse(parse_error_fields(body, "ErrorResponse")?),
            b'N' => Message::NoticeResponse(parse_error_fields(body, "NoticeResponse")?),
            b'1' => empty(body, "ParseComplete", Message::ParseComplete)?,
            b'2' => empty(body, "BindComplete", Message::BindComplete)?,
            b'3' => empty(body, "CloseComplete", Message::CloseComplete)?,
            b'n' => empty(body, "NoData", Message::NoData)?,
            b's' => empty(body, "PortalSuspended", Message::PortalSuspended)?,
            b't' => {
                let mut r = Reader::new(body, "ParameterDescription");
                let n = r.count16()?;
                let mut types = Vec::new();
                for _ in 0..n {
                    types.push(r.u32()?);
                }
                r.finish()?;
                Message::ParameterDescription { types }
            }
            b'G' => Message::CopyInResponse(parse_copy_response(body, "CopyInResponse")?),
            b'H' => Message::CopyOutResponse(parse_copy_response(body, "CopyOutResponse")?),
            b'W' => Message::CopyBothResponse(parse_copy_response(body, "CopyBothResponse")?),
            b'd' => Message::CopyData(body),
            b'c' => empty(body, "CopyDone", Message::CopyDone)?,
            b'A' => parse_notification(body)?,
            b'v' => parse_negotiate_protocol_version(body)?,
            other => {
                return Err(ProtocolError::UnknownTag {
                    context: "backend message",
                    tag: other,
                })
            }
        };
        Ok(msg)
    }

    /// A short name for logs and "unexpected message" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Authentication(_) => "Authentication",
            Message::ParameterStatus { .. } => "ParameterStatus",
            Message::BackendKeyData { .. } => "BackendKeyData",
            Message::ReadyForQuery { .. } => "ReadyForQuery",
            Message::RowDescription(_) => "RowDescription",
            Message::DataRow(_) => "DataRow",
            Message::CommandComplete { .. } => "CommandComplete",
            Message::EmptyQueryResponse => "EmptyQueryResponse",
            Message::ErrorResponse(_) => "ErrorResponse",
            Message::NoticeResponse(_) => "NoticeResponse",
            Message::ParseComplete => "ParseComplete",
            Message::BindComplete => "BindComplete",
            Message::CloseComplete => "CloseComplete",
            Message::NoData => "NoData",
            Message::ParameterDescription { .. } => "ParameterDescription",
            Message::PortalSuspended => "PortalSuspended",
            Message::CopyInResponse(_) => "CopyInResponse",
            Message::CopyOutResponse(_) => "CopyOutResponse",
            Message::CopyBothResponse(_) => "CopyBothResponse",
            Message::CopyData(_) => "CopyData",
            Message::CopyDone => "CopyDone",
            Message::NotificationResponse { .. } => "NotificationResponse",
            Message::NegotiateProtocolVersion { .. } => "NegotiateProtocolVersion",
        }
    }
}

/// BackendKeyData: the process id and the cancel key.
fn parse_backend_key_data(body: Bytes) -> Result<Message> {
    let mut r = Reader::new(body, "BackendKeyData");
    let process_id = r.i32()?;
    // 4 bytes in protocol 3.0; up to 256 in 3.2.
    let secret_key = r.rest();
    if secret_key.len() < 4 || secret_key.len() > 256 {
        return Err(r.invalid(secret_key.len() as i64));
    }
    Ok(Message::BackendKeyData {
        process_id,
        secret_key,
    })
}

/// ReadyForQuery: the transaction status.
fn parse_ready_for_query(body: Bytes) -> Result<Message> {
    let mut r = Reader::new(body, "ReadyForQuery");
    let status = match r.u8()? {
        b'I' => TransactionStatus::Idle,
        b'T' => TransactionStatus::InTransaction,
        b'E' => TransactionStatus::Failed,
        other => return Err(r.unknown_kind(other as i64)),
    };
    r.finish()?;
    Ok(Message::ReadyForQuery { status })
}

/// NotificationResponse: a NOTIFY's process, channel and payload.
fn parse_notification(body: Bytes) -> Result<Message> {
    let mut r = Reader::new(body, "NotificationResponse");
    let process_id = r.i32()?;
    let channel = r.cstr()?;
    let payload = r.cstr()?;
    r.finish()?;
    Ok(Message::NotificationResponse {
        process_id,
        channel,
        payload,
    })
}

/// NegotiateProtocolVersion: the newest minor version the server speaks,
/// and the options it did not know.
fn parse_negotiate_protocol_version(body: Bytes) -> Result<Message> {
    let mut r = Reader::new(body, "NegotiateProtocolVersion");
    let newest_minor = r.i32()?;
    let n = r.count32()?;
    let mut unrecognized_options = Vec::new();
    for _ in 0..n {
        unrecognized_options.push(r.cstr()?);
    }
    r.finish()?;
    Ok(Message::NegotiateProtocolVersion {
        newest_minor,
        unrecognized_options,
    })
}

fn empty(body: Bytes, context: &'static str, msg: Message) -> Result<Message> {
    Reader::new(body, context).finish()?;
    Ok(msg)
}

fn parse_auth(r: &mut Reader) -> Result<Authentication> {
    let code = r.i32()?;
    Ok(match code {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = r.bytes(4)?;
            Authentication::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue { data: r.rest() },
        12 => Authentication::SaslFinal { data: r.rest() },
        2 | 6 | 7 | 8 | 9 => {
            // Kerberos V5, SCM credentials, GSS, GSS continue, SSPI. Their
            // bodies are not needed to refuse them.
            r.rest();
            Authentication::Unsupported { code }
        }
        other => return Err(r.unknown_kind(other as i64)),
    })
}

fn parse_row_description(body: Bytes) -> Result<RowDescription> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.count16()?;
    let mut fields = Vec::new();
    for _ in 0..n {
        fields.push(FieldDescription {
            name: r.cstr()?,
            table_oid: r.u32()?,
            column_id: r.i16()?,
            type_oid: r.u32()?,
            type_size: r.i16()?,
            type_modifier: r.i32()?,
            format: r.i16()?,
        });
    }
    r.finish()?;
    Ok(RowDescription { fields })
}

fn parse_data_row(body: Bytes) -> Result<DataRow> {
    let mut r = Reader::new(body.clone(), "DataRow");
    let n = r.count16()?;
    // Each column costs at least its 4-byte length, so the count is
    // checked against the body before anything is reserved.
    if n as usize * 4 > r.remaining() {
        return Err(r.invalid(n as i64));
    }
    let mut ranges = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len == -1 {
            ranges.push(None);
        } else if len < 0 {
            return Err(r.invalid(len as i64));
        } else {
            ranges.push(Some(r.skip(len as usize)?));
        }
    }
    r.finish()?;
    Ok(DataRow { body, ranges })
}

fn parse_error_fields(body: Bytes, context: &'static str) -> Result<ErrorFields> {
    let mut r = Reader::new(body, context);
    let mut fields = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            break;
        }
        fields.push((code, r.cstr()?));
    }
    r.finish()?;
    Ok(ErrorFields { fields })
}

fn parse_copy_response(body: Bytes, context: &'static str) -> Result<CopyResponse> {
    let mut r = Reader::new(body, context);
    let format = r.u8()?;
    if format > 1 {
        return Err(r.unknown_kind(format as i64));
    }
    let n = r.count16()?;
    let mut column_formats = Vec::new();
    for _ in 0..n {
        column_formats.push(r.i16()?);
    }
    r.finish()?;
    Ok(CopyResponse {
        format,
        column_formats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            tag,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn parse(tag: u8, body: &[u8]) -> Result<Message> {
        Message::parse(frame(tag, body))
    }

    #[test]
    fn authentication_kinds() {
        assert_eq!(
            parse(b'R', &[0, 0, 0, 0]).unwrap(),
            Message::Authentication(Authentication::Ok)
        );
        assert_eq!(
            parse(b'R', &[0, 0, 0, 3]).unwrap(),
            Message::Authentication(Authentication::CleartextPassword)
        );
        assert_eq!(
            parse(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            Message::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] })
        );
        assert_eq!(
            parse(b'R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0").unwrap(),
            Message::Authentication(Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]
            })
        );
        assert_eq!(
            parse(b'R', b"\0\0\0\x0br=abc").unwrap(),
            Message::Authentication(Authentication::SaslContinue {
                data: Bytes::from_static(b"r=abc")
            })
        );
        assert_eq!(
            parse(b'R', b"\0\0\0\x0cv=xyz").unwrap(),
            Message::Authentication(Authentication::SaslFinal {
                data: Bytes::from_static(b"v=xyz")
            })
        );
        assert_eq!(
            parse(b'R', &[0, 0, 0, 7]).unwrap(),
            Message::Authentication(Authentication::Unsupported { code: 7 })
        );
        assert!(parse(b'R', &[0, 0, 0, 99]).is_err());
        assert!(parse(b'R', &[0, 0, 0, 5, 1]).is_err());
        assert!(parse(b'R', &[0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn simple_messages() {
        assert_eq!(
            parse(b'S', b"server_version\x0017.2\0").unwrap(),
            Message::ParameterStatus {
                name: "server_version".into(),
                value: "17.2".into()
            }
        );
        assert_eq!(
            parse(b'K', &[0, 0, 0, 42, 9, 9, 9, 9]).unwrap(),
            Message::BackendKeyData {
                process_id: 42,
                secret_key: Bytes::from_static(&[9, 9, 9, 9])
            }
        );
        assert!(parse(b'K', &[0, 0, 0, 42, 9]).is_err());
        assert_eq!(
            parse(b'Z', b"T").unwrap(),
            Message::ReadyForQuery {
                status: TransactionStatus::InTransaction
            }
        );
        assert!(parse(b'Z', b"X").is_err());
        assert_eq!(
            parse(b'C', b"INSERT 0 1\0").unwrap(),
            Message::CommandComplete {
                tag: "INSERT 0 1".into()
            }
        );
        for (tag, msg) in [
            (b'I', Message::EmptyQueryResponse),
            (b'1', Message::ParseComplete),
            (b'2', Message::BindComplete),
            (b'3', Message::CloseComplete),
            (b'n', Message::NoData),
            (b's', Message::PortalSuspended),
            (b'c', Message::CopyDone),
        ] {
            assert_eq!(parse(tag, b"").unwrap(), msg);
            assert!(matches!(
                parse(tag, b"x"),
                Err(ProtocolError::TrailingBytes { .. })
            ));
        }
        assert_eq!(
            parse(b't', &[0, 2, 0, 0, 0, 23, 0, 0, 0, 25]).unwrap(),
            Message::ParameterDescription {
                types: vec![23, 25]
            }
        );
        assert_eq!(
            parse(b'd', b"abc").unwrap(),
            Message::CopyData(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            parse(b'A', b"\0\0\0\x07chan\0hi\0").unwrap(),
            Message::NotificationResponse {
                process_id: 7,
                channel: "chan".into(),
                payload: "hi".into()
            }
        );
        assert_eq!(
            parse(b'v', b"\0\0\0\0\0\0\0\x01_pq_.x\0").unwrap(),
            Message::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized_options: vec!["_pq_.x".into()]
            }
        );
        let err = parse(b'?', b"").unwrap_err();
        assert!(err.to_string().contains("'?'"), "{err}");
    }

    #[test]
    fn row_description_and_data_row() {
        let mut body = vec![0, 2];
        for name in ["id", "name"] {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&16384u32.to_be_bytes());
            body.extend_from_slice(&1i16.to_be_bytes());
            body.extend_from_slice(&20u32.to_be_bytes());
            body.extend_from_slice(&8i16.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
        }
        let Message::RowDescription(rd) = parse(b'T', &body).unwrap() else {
            panic!()
        };
        assert_eq!(rd.fields.len(), 2);
        assert_eq!(rd.fields[1].name, "name");
        assert_eq!(rd.fields[1].type_oid, 20);
        assert!(parse(b'T', &body[..body.len() - 1]).is_err());

        let body = b"\0\x03\0\0\0\x0242\xff\xff\xff\xff\0\0\0\0";
        let Message::DataRow(row) = parse(b'D', body).unwrap() else {
            panic!()
        };
        assert_eq!(row.len(), 3);
        assert_eq!(row.text(0), Some("42"));
        assert!(row.is_null(1));
        assert_eq!(row.get(1), None);
        assert_eq!(row.get(2), Some(&b""[..]));
        assert_eq!(row.get(3), None);
        // Length past the end, negative length other than -1, huge count.
        assert!(parse(b'D', b"\0\x01\0\0\0\x09ab").is_err());
        assert!(parse(b'D', b"\0\x01\xff\xff\xff\xfe").is_err());
        assert!(parse(b'D', b"\x7f\xff").is_err());
    }

    #[test]
    fn error_response_keeps_every_field() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0Dsome detail\0Hsome hint\0P15\0Fparse_relation.c\0L1392\0RparserOpenTable\0\0";
        let Message::ErrorResponse(e) = parse(b'E', body).unwrap() else {
            panic!()
        };
        assert_eq!(e.fields.len(), 10);
        assert_eq!(e.code(), "42P01");
        assert_eq!(e.severity(), "ERROR");
        assert_eq!(e.message(), "relation \"t\" does not exist");
        assert_eq!(e.detail(), Some("some detail"));
        assert_eq!(e.hint(), Some("some hint"));
        assert_eq!(e.get(b'R'), Some("parserOpenTable"));
        let shown = e.to_string();
        assert!(
            shown.contains("42P01") && shown.contains("some hint"),
            "{shown}"
        );
        assert!(parse(b'N', b"SNOTICE\0").is_err(), "missing terminator");
    }

    #[test]
    fn copy_responses() {
        let body = [1u8, 0, 2, 0, 1, 0, 1];
        for (tag, wrap) in [
            (b'G', Message::CopyInResponse as fn(CopyResponse) -> Message),
            (b'H', Message::CopyOutResponse),
            (b'W', Message::CopyBothResponse),
        ] {
            assert_eq!(
                parse(tag, &body).unwrap(),
                wrap(CopyResponse {
                    format: 1,
                    column_formats: vec![1, 1]
                })
            );
        }
        assert!(parse(b'G', &[2, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn any_body_never_panics(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(tag, &body);
        }

        #[test]
        fn known_tags_never_panic(
            tag in proptest::sample::select(b"RSKZTDCIEN123nstGHWdcAv".to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let _ = parse(tag, &body);
        }
    }
}
