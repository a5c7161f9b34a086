//! The source side of a session, in its own task: reads the replication
//! stream into a bounded queue while the session applies what came before,
//! so the source's WAL sender keeps decoding instead of waiting for
//! destination round trips and commits; and sends the status updates the
//! session publishes.

use pgdog_protocol::replication::ServerMessage;
use pgdog_protocol::Lsn;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::net::{Connection, ConnectionError};

/// Batches read ahead at most, and messages per batch: together enough to
/// ride out a group commit, small enough to keep memory flat (messages
/// share the read buffer's chunks). Batching what is already buffered
/// keeps the hand-over to the session at one wake-up per read, not per
/// message.
pub const QUEUE: usize = 16;
const BATCH: usize = 1024;
/// Bytes of WAL data per batch at most: with wide rows the queue holds
/// at most `QUEUE` times this, not `QUEUE * BATCH` rows.
const BATCH_BYTES: usize = 128 * 1024;

fn size(m: &ServerMessage) -> usize {
    match m {
        ServerMessage::XLogData { data, .. } => data.len(),
        ServerMessage::PrimaryKeepalive { .. } => 0,
    }
}

/// What the session wants the slot told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub write: Lsn,
    pub flush: Lsn,
    /// Bumped for every update, so equal positions are still sent (the
    /// server may be waiting for a reply).
    pub seq: u64,
    /// End the stream after sending this.
    pub stop: bool,
}

/// Messages in order; `Ok(None)` when the server ended the stream.
pub type Item = Result<Option<Vec<ServerMessage>>, ConnectionError>;

/// Start reading `slot` on `repl` from where the slot stands.
pub fn spawn(
    mut repl: Connection,
    slot: String,
    options: Vec<(&'static str, String)>,
    out: mpsc::Sender<Item>,
    mut status: watch::Receiver<Status>,
) -> JoinHandle<Result<(), ConnectionError>> {
    tokio::spawn(async move {
        let mut stream = match repl.start_replication(&slot, Lsn::ZERO, &options).await {
            Ok(s) => s,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return Ok(());
            }
        };
        loop {
            // Room in the queue first: a full queue is the backpressure that
            // lets the WAL sender wait for us.
            let permit = tokio::select! {
                p = out.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let st = *status.borrow_and_update();
                    stream.send_status(st.write, st.flush, st.flush, false).await?;
                    if st.stop {
                        break;
                    }
                    continue;
                }
            };
            // Then a message, still sending status updates meanwhile.
            let item = loop {
                tokio::select! {
                    m = stream.recv() => break m,
                    changed = status.changed() => {
                        if changed.is_err() {
                            return stream.stop().await;
                        }
                        let st = *status.borrow_and_update();
                        stream.send_status(st.write, st.flush, st.flush, false).await?;
                        if st.stop {
                            return stream.stop().await;
                        }
                    }
                }
            };
            let first = match item {
                Ok(Some(m)) => m,
                Ok(None) => {
                    permit.send(Ok(None));
                    return Ok(());
                }
                Err(e) => {
                    permit.send(Err(e));
                    return Ok(());
                }
            };
            let mut batch = Vec::with_capacity(64);
            let mut bytes = size(&first);
            batch.push(first);
            // Everything already read comes along, without waiting.
            let mut ended = None;
            while batch.len() < BATCH && bytes < BATCH_BYTES && stream.has_buffered_message() {
                match stream.recv().await {
                    Ok(Some(m)) => {
                        bytes += size(&m);
                        batch.push(m)
                    }
                    other => {
                        ended = Some(other.map(|_| None));
                        break;
                    }
                }
            }
            permit.send(Ok(Some(batch)));
            if let Some(end) = ended {
                let _ = out.send(end).await;
                return Ok(());
            }
        }
        stream.stop().await
    })
}
