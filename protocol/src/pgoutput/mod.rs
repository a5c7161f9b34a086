//! pgoutput, the logical decoding output plugin, protocol versions 1 to 4
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>).
//!
//! Stage two of replication decoding: the payload of one XLogData, given the
//! `proto_version` that was asked for in START_REPLICATION. Which relation a
//! change belongs to and which shard it goes to is the engine's business.
//!
//! Inside a streamed transaction (between Stream Start and Stream Stop,
//! version 2+), Relation, Type, Insert, Update, Delete, Truncate and Message
//! carry the transaction's xid before their own fields; [`Decoder`] tracks
//! that state.

mod encode;
mod tuple;

use bytes::Bytes;

pub use tuple::{Column, Columns, Tuple};

use crate::error::{ProtocolError, Result};
use crate::reader::Reader;
use crate::{Lsn, Str};

/// Highest `proto_version` this module decodes.
pub const MAX_PROTOCOL_VERSION: u32 = 4;

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key sent with `K` old tuples).
    pub key: bool,
    pub name: Str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: Str,
    pub name: Str,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns only (others are NULL).
    Key(Tuple),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Old(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Old(t) => t,
        }
    }
}

/// Fields shared by the two-phase commit messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedTransaction {
    pub lsn: Lsn,
    pub end_lsn: Lsn,
    pub timestamp: i64,
    pub xid: u32,
    pub gid: Str,
}

/// One pgoutput message. `xid` fields marked "streamed" are `Some` only
/// inside a streamed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin {
        commit_lsn: Lsn,
        name: Str,
    },
    Relation {
        xid: Option<u32>,
        relation: Relation,
    },
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: Str,
        name: Str,
    },
    Insert {
        xid: Option<u32>,
        relation: u32,
        new: Tuple,
    },
    Update {
        xid: Option<u32>,
        relation: u32,
        old: Option<OldTuple>,
        new: Tuple,
    },
    Delete {
        xid: Option<u32>,
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        xid: Option<u32>,
        /// Bit 1 CASCADE, bit 2 RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`), sent with the
    /// `messages 'true'` option.
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: Str,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
        /// Abort LSN and time: version 4 with parallel streaming only.
        abort: Option<(Lsn, i64)>,
    },
    BeginPrepare(PreparedTransaction),
    Prepare {
        flags: u8,
        txn: PreparedTransaction,
    },
    CommitPrepared {
        flags: u8,
        txn: PreparedTransaction,
    },
    RollbackPrepared {
        flags: u8,
        prepare_end_lsn: Lsn,
        rollback_end_lsn: Lsn,
        prepare_time: i64,
        rollback_time: i64,
        xid: u32,
        gid: Str,
    },
    StreamPrepare {
        flags: u8,
        txn: PreparedTransaction,
    },
}

/// Decodes a session's pgoutput messages in order, tracking whether a
/// streamed transaction is open (which decides the xid prefix).
#[derive(Debug, Clone)]
pub struct Decoder {
    version: u32,
    in_stream: bool,
}

impl Decoder {
    pub fn new(version: u32) -> Self {
        Self {
            version,
            in_stream: false,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// True between Stream Start and Stream Stop.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    pub fn decode(&mut self, data: Bytes) -> Result<Message> {
        let msg = Message::parse(data, self.version, self.in_stream)?;
        match msg {
            Message::StreamStart { .. } => self.in_stream = true,
            Message::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(msg)
    }
}

impl Message {
    /// Parse one message. `in_stream` says whether a streamed transaction
    /// block is open.
    pub fn parse(data: Bytes, version: u32, in_stream: bool) -> Result<Message> {
        let mut r = Reader::new(data, "pgoutput message");
        let tag = r.u8()?;
        let msg = match tag {
            // What a transaction holds; inside a streamed transaction
            // (protocol 2 and later) each starts with its xid.
            b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M' => {
                let streamed = in_stream && version >= 2;
                let xid = if streamed { Some(r.u32()?) } else { None };
                parse_change(tag, xid, &mut r)?
            }
            _ => parse_control(tag, version, &mut r)?,
        };
        r.finish()?;
        Ok(msg)
    }

    /// The xid a change belongs to inside a streamed transaction.
    pub fn streamed_xid(&self) -> Option<u32> {
        match self {
            Message::Relation { xid, .. }
            | Message::Type { xid, .. }
            | Message::Insert { xid, .. }
            | Message::Update { xid, .. }
            | Message::Delete { xid, .. }
            | Message::Truncate { xid, .. }
            | Message::Message { xid, .. } => *xid,
            _ => None,
        }
    }
}

impl Relation {
    /// A Relation message's body after its xid.
    fn parse(r: &mut Reader) -> Result<Relation> {
        let oid = r.u32()?;
        let namespace = r.cstr()?;
        let name = r.cstr()?;
        let replica_identity = r.u8()?;
        let n = r.count16()?;
        let mut columns = Vec::new();
        for _ in 0..n {
            let flags = r.u8()?;
            columns.push(RelationColumn {
                key: flags & 1 != 0,
                name: r.cstr()?,
                type_oid: r.u32()?,
                type_modifier: r.i32()?,
            });
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }
}

/// The old tuple that `kind` announces: `K` the key's columns, `O` the
/// whole row.
fn old_tuple(r: &mut Reader, kind: u8) -> Result<OldTuple> {
    match kind {
        b'K' => Ok(OldTuple::Key(Tuple::parse(r)?)),
        b'O' => Ok(OldTuple::Old(Tuple::parse(r)?)),
        other => Err(r.unknown_kind(other as i64)),
    }
}

/// An Update's old tuple, then the `N` of its new one; none when the
/// message goes straight to `N`.
fn update_old(r: &mut Reader) -> Result<Option<OldTuple>> {
    let kind = r.u8()?;
    if kind == b'N' {
        return Ok(None);
    }
    let old = old_tuple(r, kind)?;
    expect(r, b'N')?;
    Ok(Some(old))
}

/// A relation, type, row change, truncate or logical message, after its
/// tag and (in a streamed transaction) its xid.
fn parse_change(tag: u8, xid: Option<u32>, r: &mut Reader) -> Result<Message> {
    Ok(match tag {
        b'R' => Message::Relation {
            xid,
            relation: Relation::parse(r)?,
        },
        b'Y' => Message::Type {
            xid,
            oid: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let relation = r.u32()?;
            expect(r, b'N')?;
            Message::Insert {
                xid,
                relation,
                new: Tuple::parse(r)?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = update_old(r)?;
            Message::Update {
                xid,
                relation,
                old,
                new: Tuple::parse(r)?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            let old = old_tuple(r, kind)?;
            Message::Delete { xid, relation, old }
        }
        b'T' => {
            let n = r.count32()?;
            let options = r.u8()?;
            let mut relations = Vec::new();
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate {
                xid,
                options,
                relations,
            }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = Lsn(r.u64()?);
            let prefix = r.cstr()?;
            let len = r.count32()?;
            Message::Message {
                xid,
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
        other => {
            return Err(ProtocolError::UnknownTag {
                context: "pgoutput message",
                tag: other,
            })
        }
    })
}

/// Begin, commit and origin, and the messages that open, close and prepare
/// streamed and two-phase transactions, after the tag.
fn parse_control(tag: u8, version: u32, r: &mut Reader) -> Result<Message> {
    Ok(match tag {
        b'B' => Message::Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => Message::Commit {
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
        },
        b'O' => Message::Origin {
            commit_lsn: Lsn(r.u64()?),
            name: r.cstr()?,
        },
        b'S' => Message::StreamStart {
            xid: r.u32()?,
            first_segment: r.u8()? == 1,
        },
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit {
            xid: r.u32()?,
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
        },
        b'A' => {
            let xid = r.u32()?;
            let subxid = r.u32()?;
            // Version 4 adds the abort LSN and time, but only when the
            // subscriber asked for parallel streaming; their presence is
            // told by the length.
            let abort = if version >= 4 && r.remaining() > 0 {
                Some((Lsn(r.u64()?), r.i64()?))
            } else {
                None
            };
            Message::StreamAbort { xid, subxid, abort }
        }
        b'b' => Message::BeginPrepare(prepared(r)?),
        b'P' => Message::Prepare {
            flags: r.u8()?,
            txn: prepared(r)?,
        },
        b'K' => Message::CommitPrepared {
            flags: r.u8()?,
            txn: prepared(r)?,
        },
        b'r' => Message::RollbackPrepared {
            flags: r.u8()?,
            prepare_end_lsn: Lsn(r.u64()?),
            rollback_end_lsn: Lsn(r.u64()?),
            prepare_time: r.i64()?,
            rollback_time: r.i64()?,
            xid: r.u32()?,
            gid: r.cstr()?,
        },
        b'p' => Message::StreamPrepare {
            flags: r.u8()?,
            txn: prepared(r)?,
        },
        other => {
            return Err(ProtocolError::UnknownTag {
                context: "pgoutput message",
                tag: other,
            })
        }
    })
}

fn expect(r: &mut Reader, want: u8) -> Result<()> {
    let got = r.u8()?;
    if got != want {
        return Err(r.unknown_kind(got as i64));
    }
    Ok(())
}

fn prepared(r: &mut Reader) -> Result<PreparedTransaction> {
    Ok(PreparedTransaction {
        lsn: Lsn(r.u64()?),
        end_lsn: Lsn(r.u64()?),
        timestamp: r.i64()?,
        xid: r.u32()?,
        gid: r.cstr()?,
    })
}

#[cfg(test)]
mod tests;
