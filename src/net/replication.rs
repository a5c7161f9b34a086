//! Replication-mode commands (`replication=database` connections) and the
//! COPY BOTH stream of START_REPLICATION
//! (<https://www.postgresql.org/docs/current/protocol-replication.html>).

use bytes::BytesMut;
use pgdog_protocol::backend::Message;
use pgdog_protocol::replication::{pg_now, ClientMessage, ServerMessage};
use pgdog_protocol::{frontend, Lsn};

use super::connection::Connection;
use super::error::{ConnectionError, Result};

/// IDENTIFY_SYSTEM's answer.
#[derive(Debug, Clone)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// CREATE_REPLICATION_SLOT's answer.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub name: String,
    /// The LSN from which the slot's stream is consistent; with a snapshot,
    /// exactly what that snapshot sees.
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
}

/// What CREATE_REPLICATION_SLOT does with the slot's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it for other sessions (`pg_export_snapshot` style).
    Export,
    /// Use it in this session's transaction, which must be a REPEATABLE READ
    /// transaction that has run nothing yet.
    Use,
    NoExport,
}

/// Slot names Postgres accepts: lower-case letters, digits, underscore, at
/// most 63 bytes. Checked here so the name can go into commands unquoted.
pub fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Connection {
    pub async fn identify_system(&mut self) -> Result<SystemIdentity> {
        let rows = self.query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| self.usage("IDENTIFY_SYSTEM returned no row"))?;
        Ok(SystemIdentity {
            system_id: row.text(0).unwrap_or_default().to_string(),
            timeline: row.text(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            xlogpos: row.text(2).and_then(Lsn::parse).unwrap_or_default(),
            dbname: row.text(3).map(str::to_string),
        })
    }

    /// Create a logical slot using pgoutput.
    pub async fn create_replication_slot(
        &mut self,
        name: &str,
        temporary: bool,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot> {
        if !valid_slot_name(name) {
            return Err(self.usage(&format!(
                "invalid replication slot name \"{name}\": use lower-case letters, digits and underscores, at most 63 characters"
            )));
        }
        let temp = if temporary { " TEMPORARY" } else { "" };
        let sql = if self.server_version_num() >= 150000 {
            let action = match snapshot {
                SnapshotAction::Export => "export",
                SnapshotAction::Use => "use",
                SnapshotAction::NoExport => "nothing",
            };
            format!("CREATE_REPLICATION_SLOT {name}{temp} LOGICAL pgoutput (SNAPSHOT '{action}')")
        } else {
            let action = match snapshot {
                SnapshotAction::Export => "EXPORT_SNAPSHOT",
                SnapshotAction::Use => "USE_SNAPSHOT",
                SnapshotAction::NoExport => "NOEXPORT_SNAPSHOT",
            };
            format!("CREATE_REPLICATION_SLOT {name}{temp} LOGICAL pgoutput {action}")
        };
        let rows = self.query(&sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| self.usage("CREATE_REPLICATION_SLOT returned no row"))?;
        let consistent_point = row
            .text(1)
            .and_then(Lsn::parse)
            .ok_or_else(|| self.usage("CREATE_REPLICATION_SLOT returned no consistent point"))?;
        Ok(CreatedSlot {
            name: row.text(0).unwrap_or(name).to_string(),
            consistent_point,
            snapshot_name: row.text(2).map(str::to_string),
        })
    }

    pub async fn drop_replication_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        if !valid_slot_name(name) {
            return Err(self.usage(&format!("invalid replication slot name \"{name}\"")));
        }
        let wait = if wait { " WAIT" } else { "" };
        self.execute(&format!("DROP_REPLICATION_SLOT {name}{wait}"))
            .await
    }

    /// START_REPLICATION of a logical slot from `start` with pgoutput
    /// options; the connection turns into a COPY BOTH stream.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
    ) -> Result<ReplicationStream<'_>> {
        if !valid_slot_name(slot) {
            return Err(self.usage(&format!("invalid replication slot name \"{slot}\"")));
        }
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("\"{k}\" '{}'", v.replace('\'', "''")))
            .collect();
        let sql = format!(
            "START_REPLICATION SLOT {slot} LOGICAL {start} ({})",
            opts.join(", ")
        );
        self.start_copy(&sql, "starting replication", |m| match m {
            Message::CopyBothResponse(_) => Ok(()),
            other => Err(other),
        })
        .await?;
        Ok(ReplicationStream {
            conn: self,
            scratch: BytesMut::with_capacity(64),
        })
    }

    fn usage(&self, reason: &str) -> ConnectionError {
        ConnectionError::Usage {
            server: self.addr().clone(),
            reason: reason.to_string(),
        }
    }
}

/// A running START_REPLICATION: receive WAL messages, send status updates.
/// [`ReplicationStream::recv`] is cancel-safe, so it can race a timer in
/// `tokio::select!`.
#[derive(Debug)]
pub struct ReplicationStream<'a> {
    conn: &'a mut Connection,
    /// Reused buffer for status updates.
    scratch: BytesMut,
}

impl ReplicationStream<'_> {
    /// The next message; `None` when the server ended the stream.
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>> {
        loop {
            match self.conn.recv().await? {
                Message::CopyData(data) => {
                    return ServerMessage::parse(data).map(Some).map_err(|source| {
                        self.conn.mark_broken();
                        ConnectionError::Protocol {
                            server: self.conn.addr().clone(),
                            source,
                        }
                    })
                }
                Message::CopyDone => {
                    // The server ends its side; finish ours and drain.
                    frontend::copy_done(self.conn.buffer());
                    self.conn.flush().await?;
                }
                Message::CommandComplete { .. }
                | Message::RowDescription(_)
                | Message::DataRow(_) => {}
                Message::ReadyForQuery { .. } => return Ok(None),
                Message::ErrorResponse(fields) => {
                    let err = self.conn.server_error(fields);
                    self.conn.mark_broken();
                    return Err(err);
                }
                other => {
                    self.conn.mark_broken();
                    return Err(self.conn.unexpected(&other, "streaming replication"));
                }
            }
        }
    }

    /// Whether the next [`ReplicationStream::recv`] returns without waiting.
    pub fn has_buffered_message(&self) -> bool {
        self.conn.has_buffered_message()
    }

    /// Tell the server what has been written, flushed (durable on the
    /// destination) and applied. The slot's `confirmed_flush_lsn` follows
    /// `flush`.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply: bool,
    ) -> Result<()> {
        self.scratch.clear();
        ClientMessage::StandbyStatusUpdate {
            write,
            flush,
            apply,
            time: pg_now(),
            reply,
        }
        .encode(&mut self.scratch);
        frontend::copy_data(&self.scratch, self.conn.buffer()).map_err(|source| {
            ConnectionError::Protocol {
                server: self.conn.addr().clone(),
                source,
            }
        })?;
        self.conn.flush().await
    }

    /// End the stream from our side and wait for the server to finish.
    pub async fn stop(self) -> Result<()> {
        frontend::copy_done(self.conn.buffer());
        self.conn.flush().await?;
        loop {
            match self.conn.recv().await? {
                Message::ReadyForQuery { .. } => return Ok(()),
                Message::ErrorResponse(fields) => return Err(self.conn.server_error(fields)),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_slot_name;

    #[test]
    fn slot_names() {
        assert!(valid_slot_name("pgdog_slot_1"));
        assert!(!valid_slot_name("Bad"));
        assert!(!valid_slot_name("a-b"));
        assert!(!valid_slot_name(""));
        assert!(!valid_slot_name(&"a".repeat(64)));
    }
}
