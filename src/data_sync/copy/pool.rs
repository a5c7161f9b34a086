//! Sessions the table copies share: per source server, readers inside its
//! shared snapshot; per destination shard, sessions for `COPY FROM` and the
//! progress records. A copy takes sessions, gives them back when it ends
//! well, and a failed one drops them; so a move of thousands of tables
//! opens about as many sessions as it runs copies at once, not several per
//! table.

use std::sync::Mutex;

use crate::net::{ConnectOptions, Connection};

use super::super::error::Result;
use super::super::snapshot::SharedSnapshot;
use super::super::Ctx;

/// One source server the copy reads, with its shared snapshot.
#[derive(Debug)]
pub struct ServerCopy {
    pub snapshot: SharedSnapshot,
    /// How to reach the server.
    options: ConnectOptions,
    /// Idle readers, each in a REPEATABLE READ transaction of `snapshot`
    /// (any number of COPYs may run in one such transaction).
    readers: Mutex<Vec<Connection>>,
}

impl ServerCopy {
    pub fn new(snapshot: SharedSnapshot, options: ConnectOptions) -> ServerCopy {
        ServerCopy {
            snapshot,
            options,
            readers: Mutex::new(Vec::new()),
        }
    }

    /// An idle reader, or a new one that imports the snapshot.
    pub async fn reader(&self) -> Result<Connection> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => self.snapshot.reader(&self.options).await,
        }
    }

    pub fn give_back(&self, reader: Connection) {
        if !reader.is_broken() {
            self.readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(reader);
        }
    }

    /// Close the readers, then let the snapshot go.
    pub async fn finish(self) {
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        for r in readers {
            r.close().await;
        }
        self.snapshot.release().await;
    }
}

/// Idle destination sessions, per destination shard.
#[derive(Debug)]
pub struct DestPool {
    idle: Mutex<Vec<Vec<Connection>>>,
}

impl DestPool {
    pub fn new(shards: usize) -> DestPool {
        DestPool {
            idle: Mutex::new((0..shards).map(|_| Vec::new()).collect()),
        }
    }

    /// A session on each of `dests`, in that order.
    pub async fn take(&self, ctx: &Ctx, dests: &[usize]) -> Result<Vec<(usize, Connection)>> {
        let mut out = Vec::with_capacity(dests.len());
        for &d in dests {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(d)
                .and_then(Vec::pop);
            let conn = match idle {
                Some(c) => c,
                None => ctx.endpoints.connect_dest(d).await?,
            };
            out.push((d, conn));
        }
        Ok(out)
    }

    pub fn give_back(&self, conns: Vec<(usize, Connection)>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for (d, c) in conns {
            if !c.is_broken()
                && c.transaction_status() == pgdog_protocol::backend::TransactionStatus::Idle
            {
                if let Some(v) = idle.get_mut(d) {
                    v.push(c);
                }
            }
        }
    }

    pub async fn close(&self) {
        let all = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for c in all.into_iter().flatten() {
            c.close().await;
        }
    }
}
