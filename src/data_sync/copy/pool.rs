//! Sessions the table copies share: per source server, readers inside its
//! shared snapshot; per destination shard, sessions for `COPY FROM` and the
//! progress records. A copy takes sessions, gives them back when it ends
//! well, and a failed one drops them; so a move of thousands of tables
//! opens about as many sessions as it runs copies at once, not several per
//! table.

use std::sync::Mutex;

use crate::net::{ConnectOptions, Connection};

use super::super::ctx::Ctx;
use super::super::error::Result;
use super::super::snapshot::SharedSnapshot;

/// Tables one reader copies before it ends its transaction: each COPY
/// leaves an AccessShareLock held until the transaction ends, and the
/// server's lock table is shared (`max_locks_per_transaction` times the
/// connections, 6,400 by default), so a reader that copied thousands of
/// tables would run it out.
const TABLES_PER_READER: usize = 200;

/// A reader session and the tables it has copied in its transaction.
#[derive(Debug)]
pub struct Reader {
    pub conn: Connection,
    tables: usize,
}

/// One source server the copy reads, with its shared snapshot.
#[derive(Debug)]
pub struct ServerCopy {
    pub snapshot: SharedSnapshot,
    /// How to reach the server.
    options: ConnectOptions,
    /// Idle readers, each in a REPEATABLE READ transaction of `snapshot`
    /// (many COPYs may run in one such transaction).
    readers: Mutex<Vec<Reader>>,
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
    pub async fn reader(&self) -> Result<Reader> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(r) => Ok(r),
            None => Ok(Reader {
                conn: self.snapshot.reader(&self.options).await?,
                tables: 0,
            }),
        }
    }

    /// Take back a reader that copied one more table; one that has copied
    /// its share ends its transaction (and its locks) instead.
    pub async fn give_back(&self, mut reader: Reader) {
        reader.tables += 1;
        if reader.conn.is_broken() || reader.tables >= TABLES_PER_READER {
            reader.conn.close().await;
            return;
        }
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reader);
    }

    /// Close the readers, then let the snapshot go.
    pub async fn finish(self) {
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        for r in readers {
            r.conn.close().await;
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
