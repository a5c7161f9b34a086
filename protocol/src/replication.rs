//! The streaming replication envelope carried in CopyData during
//! `START_REPLICATION`
//! (<https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-START-REPLICATION>).
//!
//! Stage one of replication decoding: the payload of XLogData stays `Bytes`
//! and is decoded by [`crate::pgoutput`] only when the caller asks.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};
use crate::reader::Reader;
use crate::Lsn;

/// Microseconds between the Unix epoch and 2000-01-01, Postgres' epoch.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Now, in Postgres' timestamp form (microseconds since 2000-01-01 UTC).
pub fn pg_now() -> i64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    since_unix - PG_EPOCH_OFFSET_MICROS
}

/// What the server sends inside CopyData while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// `w`: WAL data, for logical replication one output plugin message.
    XLogData {
        start: Lsn,
        end: Lsn,
        send_time: i64,
        data: Bytes,
    },
    /// `k`: keepalive; `reply` asks for a status update right away.
    PrimaryKeepalive {
        end: Lsn,
        send_time: i64,
        reply: bool,
    },
}

/// What we send inside CopyData while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `r`: how far we have written, flushed and applied.
    StandbyStatusUpdate {
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        time: i64,
        reply: bool,
    },
    /// `h`: hot standby feedback (physical replication; kept for completeness).
    HotStandbyFeedback {
        time: i64,
        xmin: u32,
        xmin_epoch: u32,
        catalog_xmin: u32,
        catalog_xmin_epoch: u32,
    },
}

impl ServerMessage {
    pub fn parse(body: Bytes) -> Result<ServerMessage> {
        let mut r = Reader::new(body, "replication message");
        let msg = match r.u8()? {
            b'w' => {
                let start = Lsn(r.u64()?);
                let end = Lsn(r.u64()?);
                let send_time = r.i64()?;
                ServerMessage::XLogData {
                    start,
                    end,
                    send_time,
                    data: r.rest(),
                }
            }
            b'k' => {
                let end = Lsn(r.u64()?);
                let send_time = r.i64()?;
                let reply = r.u8()? != 0;
                r.finish()?;
                ServerMessage::PrimaryKeepalive {
                    end,
                    send_time,
                    reply,
                }
            }
            tag => {
                return Err(ProtocolError::UnknownTag {
                    context: "replication message",
                    tag,
                })
            }
        };
        Ok(msg)
    }

    /// The CopyData body for this message.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ServerMessage::XLogData {
                start,
                end,
                send_time,
                data,
            } => {
                buf.put_u8(b'w');
                buf.put_u64(start.0);
                buf.put_u64(end.0);
                buf.put_i64(*send_time);
                buf.put_slice(data);
            }
            ServerMessage::PrimaryKeepalive {
                end,
                send_time,
                reply,
            } => {
                buf.put_u8(b'k');
                buf.put_u64(end.0);
                buf.put_i64(*send_time);
                buf.put_u8(*reply as u8);
            }
        }
    }
}

impl ClientMessage {
    /// The CopyData body for this message.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ClientMessage::StandbyStatusUpdate {
                write,
                flush,
                apply,
                time,
                reply,
            } => {
                buf.put_u8(b'r');
                buf.put_u64(write.0);
                buf.put_u64(flush.0);
                buf.put_u64(apply.0);
                buf.put_i64(*time);
                buf.put_u8(*reply as u8);
            }
            ClientMessage::HotStandbyFeedback {
                time,
                xmin,
                xmin_epoch,
                catalog_xmin,
                catalog_xmin_epoch,
            } => {
                buf.put_u8(b'h');
                buf.put_i64(*time);
                buf.put_u32(*xmin);
                buf.put_u32(*xmin_epoch);
                buf.put_u32(*catalog_xmin);
                buf.put_u32(*catalog_xmin_epoch);
            }
        }
    }

    pub fn parse(body: Bytes) -> Result<ClientMessage> {
        let mut r = Reader::new(body, "standby message");
        let msg = match r.u8()? {
            b'r' => ClientMessage::StandbyStatusUpdate {
                write: Lsn(r.u64()?),
                flush: Lsn(r.u64()?),
                apply: Lsn(r.u64()?),
                time: r.i64()?,
                reply: r.u8()? != 0,
            },
            b'h' => ClientMessage::HotStandbyFeedback {
                time: r.i64()?,
                xmin: r.u32()?,
                xmin_epoch: r.u32()?,
                catalog_xmin: r.u32()?,
                catalog_xmin_epoch: r.u32()?,
            },
            tag => {
                return Err(ProtocolError::UnknownTag {
                    context: "standby message",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn server_messages_round_trip_and_layout() {
        let w = ServerMessage::XLogData {
            start: Lsn(0x1_0000_0010),
            end: Lsn(0x1_0000_0020),
            send_time: 42,
            data: Bytes::from_static(b"B..."),
        };
        let mut buf = BytesMut::new();
        w.encode(&mut buf);
        assert_eq!(buf.len(), 1 + 24 + 4);
        assert_eq!(&buf[..9], b"w\0\0\0\x01\0\0\0\x10");
        assert_eq!(ServerMessage::parse(buf.freeze()).unwrap(), w);

        let k = ServerMessage::PrimaryKeepalive {
            end: Lsn(5),
            send_time: -1,
            reply: true,
        };
        let mut buf = BytesMut::new();
        k.encode(&mut buf);
        assert_eq!(buf.len(), 18);
        assert_eq!(ServerMessage::parse(buf.freeze()).unwrap(), k);
        assert!(ServerMessage::parse(Bytes::from_static(b"k\0\0")).is_err());
        assert!(ServerMessage::parse(Bytes::from_static(b"x")).is_err());
        assert!(ServerMessage::parse(Bytes::new()).is_err());
    }

    #[test]
    fn client_messages_round_trip_and_layout() {
        let r = ClientMessage::StandbyStatusUpdate {
            write: Lsn(3),
            flush: Lsn(2),
            apply: Lsn(1),
            time: 7,
            reply: false,
        };
        let mut buf = BytesMut::new();
        r.encode(&mut buf);
        assert_eq!(buf.len(), 34);
        assert_eq!(buf[0], b'r');
        assert_eq!(ClientMessage::parse(buf.freeze()).unwrap(), r);

        let h = ClientMessage::HotStandbyFeedback {
            time: 1,
            xmin: 2,
            xmin_epoch: 3,
            catalog_xmin: 4,
            catalog_xmin_epoch: 5,
        };
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        assert_eq!(buf.len(), 25);
        assert_eq!(ClientMessage::parse(buf.freeze()).unwrap(), h);
    }

    #[test]
    fn pg_now_is_after_2020() {
        // 2020-01-01 in Postgres microseconds.
        assert!(pg_now() > 631_152_000_000_000);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ServerMessage::parse(Bytes::from(body.clone()));
            let _ = ClientMessage::parse(Bytes::from(body));
        }
    }
}
