//! Encoding pgoutput messages: used by round-trip tests, fixtures and the
//! benchmarks (pgdog itself only decodes them).

use bytes::{BufMut, BytesMut};

use super::{Message, OldTuple, PreparedTransaction};
use crate::error::{ProtocolError, Result};

/// A count or length in the integer type its field has, or an error when
/// it does not fit.
fn count<T: TryFrom<usize>>(context: &'static str, n: usize, max: usize) -> Result<T> {
    T::try_from(n).map_err(|_| ProtocolError::TooLarge {
        context,
        value: n,
        max,
    })
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

fn put_xid(buf: &mut BytesMut, xid: &Option<u32>) {
    if let Some(x) = xid {
        buf.put_u32(*x);
    }
}

fn put_prepared(buf: &mut BytesMut, t: &PreparedTransaction) {
    buf.put_u64(t.lsn.0);
    buf.put_u64(t.end_lsn.0);
    buf.put_i64(t.timestamp);
    buf.put_u32(t.xid);
    put_cstr(buf, &t.gid);
}

fn put_old(buf: &mut BytesMut, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            buf.put_u8(b'K');
            t.encode(buf);
        }
        OldTuple::Old(t) => {
            buf.put_u8(b'O');
            t.encode(buf);
        }
    }
}

impl Message {
    /// Append this message as pgoutput writes it. Streamed xids are written
    /// when present, so a message parsed inside a stream encodes back the same.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        let start = buf.len();
        let result = self.encode_unchecked(buf);
        if result.is_err() {
            buf.truncate(start);
        }
        result
    }

    fn encode_unchecked(&self, buf: &mut BytesMut) -> Result<()> {
        if self.encode_control(buf) {
            return Ok(());
        }
        self.encode_change(buf)
    }

    /// Begin, commit and origin, and the messages that open, close and
    /// prepare streamed and two-phase transactions; false for anything
    /// else, which [`Message::encode_change`] writes.
    fn encode_control(&self, buf: &mut BytesMut) -> bool {
        match self {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                buf.put_u8(b'B');
                buf.put_u64(final_lsn.0);
                buf.put_i64(*commit_time);
                buf.put_u32(*xid);
            }
            Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                buf.put_u8(b'C');
                buf.put_u8(*flags);
                buf.put_u64(commit_lsn.0);
                buf.put_u64(end_lsn.0);
                buf.put_i64(*commit_time);
            }
            Message::Origin { commit_lsn, name } => {
                buf.put_u8(b'O');
                buf.put_u64(commit_lsn.0);
                put_cstr(buf, name);
            }
            Message::StreamStart { xid, first_segment } => {
                buf.put_u8(b'S');
                buf.put_u32(*xid);
                buf.put_u8(*first_segment as u8);
            }
            Message::StreamStop => buf.put_u8(b'E'),
            Message::StreamCommit {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                buf.put_u8(b'c');
                buf.put_u32(*xid);
                buf.put_u8(*flags);
                buf.put_u64(commit_lsn.0);
                buf.put_u64(end_lsn.0);
                buf.put_i64(*commit_time);
            }
            Message::StreamAbort { xid, subxid, abort } => {
                buf.put_u8(b'A');
                buf.put_u32(*xid);
                buf.put_u32(*subxid);
                if let Some((lsn, time)) = abort {
                    buf.put_u64(lsn.0);
                    buf.put_i64(*time);
                }
            }
            Message::BeginPrepare(t) => {
                buf.put_u8(b'b');
                put_prepared(buf, t);
            }
            Message::Prepare { flags, txn } => {
                buf.put_u8(b'P');
                buf.put_u8(*flags);
                put_prepared(buf, txn);
            }
            Message::CommitPrepared { flags, txn } => {
                buf.put_u8(b'K');
                buf.put_u8(*flags);
                put_prepared(buf, txn);
            }
            Message::RollbackPrepared {
                flags,
                prepare_end_lsn,
                rollback_end_lsn,
                prepare_time,
                rollback_time,
                xid,
                gid,
            } => {
                buf.put_u8(b'r');
                buf.put_u8(*flags);
                buf.put_u64(prepare_end_lsn.0);
                buf.put_u64(rollback_end_lsn.0);
                buf.put_i64(*prepare_time);
                buf.put_i64(*rollback_time);
                buf.put_u32(*xid);
                put_cstr(buf, gid);
            }
            Message::StreamPrepare { flags, txn } => {
                buf.put_u8(b'p');
                buf.put_u8(*flags);
                put_prepared(buf, txn);
            }
            _ => return false,
        }
        true
    }

    /// What a transaction holds: relations and types, row changes,
    /// truncates and logical messages. Control messages are written by
    /// [`Message::encode_control`].
    fn encode_change(&self, buf: &mut BytesMut) -> Result<()> {
        match self {
            Message::Relation { xid, relation } => {
                buf.put_u8(b'R');
                put_xid(buf, xid);
                buf.put_u32(relation.oid);
                put_cstr(buf, &relation.namespace);
                put_cstr(buf, &relation.name);
                buf.put_u8(relation.replica_identity);
                buf.put_u16(count(
                    "Relation columns",
                    relation.columns.len(),
                    u16::MAX.into(),
                )?);
                for c in &relation.columns {
                    buf.put_u8(c.key as u8);
                    put_cstr(buf, &c.name);
                    buf.put_u32(c.type_oid);
                    buf.put_i32(c.type_modifier);
                }
            }
            Message::Type {
                xid,
                oid,
                namespace,
                name,
            } => {
                buf.put_u8(b'Y');
                put_xid(buf, xid);
                buf.put_u32(*oid);
                put_cstr(buf, namespace);
                put_cstr(buf, name);
            }
            Message::Insert { xid, relation, new } => {
                buf.put_u8(b'I');
                put_xid(buf, xid);
                buf.put_u32(*relation);
                buf.put_u8(b'N');
                new.encode(buf);
            }
            Message::Update {
                xid,
                relation,
                old,
                new,
            } => {
                buf.put_u8(b'U');
                put_xid(buf, xid);
                buf.put_u32(*relation);
                if let Some(old) = old {
                    put_old(buf, old);
                }
                buf.put_u8(b'N');
                new.encode(buf);
            }
            Message::Delete { xid, relation, old } => {
                buf.put_u8(b'D');
                put_xid(buf, xid);
                buf.put_u32(*relation);
                put_old(buf, old);
            }
            Message::Truncate {
                xid,
                options,
                relations,
            } => {
                buf.put_u8(b'T');
                put_xid(buf, xid);
                buf.put_u32(count(
                    "Truncate relations",
                    relations.len(),
                    u32::MAX as usize,
                )?);
                buf.put_u8(*options);
                for r in relations {
                    buf.put_u32(*r);
                }
            }
            Message::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content,
            } => {
                buf.put_u8(b'M');
                put_xid(buf, xid);
                buf.put_u8(*transactional as u8);
                buf.put_u64(lsn.0);
                put_cstr(buf, prefix);
                buf.put_u32(count("Message content", content.len(), u32::MAX as usize)?);
                buf.put_slice(content);
            }
            _ => {}
        }
        Ok(())
    }
}
