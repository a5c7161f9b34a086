//! Messages we send to the server, encoded into a caller's buffer.
//!
//! Each function appends one complete message; the length is written as a
//! placeholder and back-patched once the body is known, so nothing is built
//! twice. Layouts: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use crate::error::{ProtocolError, Result};

/// Protocol 3.0, the version pgdog speaks.
pub const PROTOCOL_VERSION: i32 = 196_608;
const SSL_REQUEST_CODE: i32 = 80_877_103;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// Write `tag`, a length placeholder, the body `f` writes, then patch the
/// length (which counts itself, not the tag).
#[inline]
fn write_body(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    write_untagged(buf, f);
}

/// Only for messages whose size pgdog bounds itself (startup parameters,
/// names, passwords, the SQL it writes: kilobytes): a message carrying
/// data of any size goes through [`write_body_checked`].
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn write_untagged(buf: &mut BytesMut, f: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_i32(0);
    f(buf);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// [`write_body`] for bodies whose counts and lengths can overflow: on an
/// error nothing of the message stays in `buf`.
fn write_body_checked(
    buf: &mut BytesMut,
    tag: u8,
    f: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<()> {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    let result = f(buf).and_then(|()| {
        let len = len32("message", buf.len() - start - 1)?;
        buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        Ok(())
    });
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// A 16-bit count as the server reads it (unsigned: up to 65,535).
fn count16(context: &'static str, n: usize) -> Result<u16> {
    u16::try_from(n).map_err(|_| ProtocolError::TooLarge {
        context,
        value: n,
        max: u16::MAX as usize,
    })
}

/// A 32-bit length.
fn len32(context: &'static str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| ProtocolError::TooLarge {
        context,
        value: n,
        max: i32::MAX as usize,
    })
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// StartupMessage. `params` are `(name, value)` pairs such as `user`,
/// `database`, `application_name` and `replication` (`database` for logical
/// replication mode).
pub fn startup(params: &[(&str, &str)], buf: &mut BytesMut) {
    write_untagged(buf, |buf| {
        buf.put_i32(PROTOCOL_VERSION);
        for (name, value) in params {
            put_cstr(buf, name);
            put_cstr(buf, value);
        }
        buf.put_u8(0);
    });
}

pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

/// CancelRequest with the key from BackendKeyData (4 bytes in protocol 3.0).
pub fn cancel_request(process_id: i32, secret_key: &[u8], buf: &mut BytesMut) {
    write_untagged(buf, |buf| {
        buf.put_i32(CANCEL_REQUEST_CODE);
        buf.put_i32(process_id);
        buf.put_slice(secret_key);
    });
}

/// PasswordMessage: a cleartext or MD5-hashed password.
pub fn password(password: &[u8], buf: &mut BytesMut) {
    write_body(buf, b'p', |buf| {
        buf.put_slice(password);
        buf.put_u8(0);
    });
}

pub fn sasl_initial_response(mechanism: &str, data: &[u8], buf: &mut BytesMut) -> Result<()> {
    write_body_checked(buf, b'p', |buf| {
        put_cstr(buf, mechanism);
        buf.put_i32(len32("SASL initial response", data.len())?);
        buf.put_slice(data);
        Ok(())
    })
}

pub fn sasl_response(data: &[u8], buf: &mut BytesMut) {
    write_body(buf, b'p', |buf| buf.put_slice(data));
}

pub fn query(sql: &str, buf: &mut BytesMut) {
    write_body(buf, b'Q', |buf| put_cstr(buf, sql));
}

/// Parse: prepare `sql` as statement `name` ("" for the unnamed one).
pub fn parse(name: &str, sql: &str, param_types: &[u32], buf: &mut BytesMut) -> Result<()> {
    write_body_checked(buf, b'P', |buf| {
        put_cstr(buf, name);
        put_cstr(buf, sql);
        buf.put_u16(count16("Parse parameter types", param_types.len())?);
        for oid in param_types {
            buf.put_u32(*oid);
        }
        Ok(())
    })
}

/// Format code of a Bind parameter or result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text = 0,
    Binary = 1,
}

/// Bind `statement` into `portal`. Each parameter is `None` for NULL or its
/// bytes in the format given by `param_formats` (one entry for all, or one
/// per parameter, as the protocol allows).
pub fn bind<'a>(
    portal: &str,
    statement: &str,
    param_formats: &[Format],
    params: impl IntoIterator<Item = Option<&'a [u8]>>,
    result_formats: &[Format],
    buf: &mut BytesMut,
) -> Result<()> {
    write_body_checked(buf, b'B', |buf| {
        put_cstr(buf, portal);
        put_cstr(buf, statement);
        buf.put_u16(count16("Bind parameter formats", param_formats.len())?);
        for f in param_formats {
            buf.put_i16(*f as i16);
        }
        let count_at = buf.len();
        buf.put_u16(0);
        let mut count = 0usize;
        for p in params {
            match p {
                None => buf.put_i32(-1),
                Some(v) => {
                    buf.put_i32(len32("Bind parameter value", v.len())?);
                    buf.put_slice(v);
                }
            }
            count += 1;
        }
        let count = count16("Bind parameters", count)?;
        buf[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
        buf.put_u16(count16("Bind result formats", result_formats.len())?);
        for f in result_formats {
            buf.put_i16(*f as i16);
        }
        Ok(())
    })
}

/// What Describe and Close act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement = b'S' as isize,
    Portal = b'P' as isize,
}

pub fn describe(target: Target, name: &str, buf: &mut BytesMut) {
    write_body(buf, b'D', |buf| {
        buf.put_u8(target as u8);
        put_cstr(buf, name);
    });
}

/// Execute `portal`, returning at most `max_rows` rows (0 for all).
pub fn execute(portal: &str, max_rows: i32, buf: &mut BytesMut) {
    write_body(buf, b'E', |buf| {
        put_cstr(buf, portal);
        buf.put_i32(max_rows);
    });
}

pub fn sync(buf: &mut BytesMut) {
    write_body(buf, b'S', |_| {});
}

pub fn flush(buf: &mut BytesMut) {
    write_body(buf, b'H', |_| {});
}

pub fn close(target: Target, name: &str, buf: &mut BytesMut) {
    write_body(buf, b'C', |buf| {
        buf.put_u8(target as u8);
        put_cstr(buf, name);
    });
}

/// CopyData with `data` as its body.
pub fn copy_data(data: &[u8], buf: &mut BytesMut) -> Result<()> {
    copy_data_header(data.len(), buf)?;
    buf.put_slice(data);
    Ok(())
}

/// Only the 5-byte CopyData header for a body of `len` bytes, for callers
/// that write the body themselves (or send it from another buffer).
pub fn copy_data_header(len: usize, buf: &mut BytesMut) -> Result<()> {
    let len = len32("CopyData", len.saturating_add(4))?;
    buf.put_u8(b'd');
    buf.put_i32(len);
    Ok(())
}

pub fn copy_done(buf: &mut BytesMut) {
    write_body(buf, b'c', |_| {});
}

pub fn copy_fail(message: &str, buf: &mut BytesMut) {
    write_body(buf, b'f', |buf| put_cstr(buf, message));
}

pub fn terminate(buf: &mut BytesMut) {
    write_body(buf, b'X', |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut buf = BytesMut::new();
        f(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn startup_with_replication() {
        let got = enc(|b| {
            startup(
                &[
                    ("user", "u"),
                    ("database", "d"),
                    ("replication", "database"),
                ],
                b,
            )
        });
        let mut want = Vec::new();
        let body = b"\x00\x03\x00\x00user\0u\0database\0d\0replication\0database\0\0";
        want.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        want.extend_from_slice(body);
        assert_eq!(got, want);
    }

    #[test]
    fn fixed_messages_byte_exact() {
        assert_eq!(enc(ssl_request), b"\0\0\0\x08\x04\xd2\x16\x2f");
        assert_eq!(
            enc(|b| cancel_request(7, &[1, 2, 3, 4], b)),
            b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07\x01\x02\x03\x04"
        );
        assert_eq!(enc(sync), b"S\0\0\0\x04");
        assert_eq!(enc(flush), b"H\0\0\0\x04");
        assert_eq!(enc(copy_done), b"c\0\0\0\x04");
        assert_eq!(enc(terminate), b"X\0\0\0\x04");
        assert_eq!(enc(|b| query("SELECT 1", b)), b"Q\0\0\0\x0dSELECT 1\0");
        assert_eq!(enc(|b| password(b"pw", b)), b"p\0\0\0\x07pw\0");
        assert_eq!(
            enc(|b| sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x", b).unwrap()),
            b"p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x"
        );
        assert_eq!(enc(|b| sasl_response(b"c=biws", b)), b"p\0\0\0\x0ac=biws");
        assert_eq!(enc(|b| copy_data(b"ab", b).unwrap()), b"d\0\0\0\x06ab");
        let mut h = enc(|b| copy_data_header(2, b).unwrap());
        h.extend_from_slice(b"ab");
        assert_eq!(h, b"d\0\0\0\x06ab");
        assert_eq!(enc(|b| copy_fail("no", b)), b"f\0\0\0\x07no\0");
        assert_eq!(
            enc(|b| describe(Target::Statement, "s1", b)),
            b"D\0\0\0\x08Ss1\0"
        );
        assert_eq!(enc(|b| close(Target::Portal, "", b)), b"C\0\0\0\x06P\0");
        assert_eq!(enc(|b| execute("", 0, b)), b"E\0\0\0\x09\0\0\0\0\0");
    }

    #[test]
    fn parse_and_bind_byte_exact() {
        assert_eq!(
            enc(|b| parse("s", "SELECT $1", &[20], b).unwrap()),
            b"P\0\0\0\x16s\0SELECT $1\0\0\x01\0\0\0\x14"
        );
        let got = enc(|b| {
            bind(
                "",
                "s",
                &[Format::Binary],
                [Some(&[0u8, 0, 0, 0, 0, 0, 0, 7][..]), None],
                &[Format::Text],
                b,
            )
            .unwrap()
        });
        let want: &[u8] = b"B\0\0\0\x21\0s\0\0\x01\0\x01\0\x02\0\0\0\x08\0\0\0\0\0\0\0\x07\xff\xff\xff\xff\0\x01\0\0";
        assert_eq!(got, want);
    }

    #[test]
    fn counts_past_the_protocol_are_errors_not_wraps() {
        // 32,768 parameters: past i16, fine as the server's unsigned count.
        let many = vec![None; 40_000];
        let mut b = BytesMut::new();
        bind("", "s", &[], many.iter().copied(), &[], &mut b).unwrap();
        assert_eq!(
            &b[b.len() - 4 - 40_000 * 4..b.len() - 40_000 * 4 - 2],
            &[0x9c, 0x40]
        );
        // 65,536: no room, an error, and nothing half-written.
        let too_many = vec![None; 65_536];
        let mut b = BytesMut::from(&b"keep"[..]);
        let err = bind("", "s", &[], too_many.iter().copied(), &[], &mut b).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                context: "Bind parameters",
                value: 65_536,
                ..
            }
        ));
        assert_eq!(&b[..], b"keep");
        let types = vec![23u32; 70_000];
        assert!(parse("s", "x", &types, &mut b).is_err());
        assert_eq!(&b[..], b"keep");
    }
}
