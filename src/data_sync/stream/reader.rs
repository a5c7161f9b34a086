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

/// Messages read ahead at most: enough to ride out a group commit, small
/// enough to keep memory flat (messages share the read buffer's chunks).
pub const QUEUE: usize = 8192;

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

pub type Item = Result<Option<ServerMessage>, ConnectionError>;

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
            let end = !matches!(item, Ok(Some(_)));
            permit.send(item);
            if end {
                return Ok(());
            }
        }
        stream.stop().await
    })
}
