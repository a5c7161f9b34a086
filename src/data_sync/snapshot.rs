//! One snapshot per source server for every table copy that reads it.
//!
//! Creating a logical slot waits until every transaction already running
//! on the server has ended, so a slot per table would make each table wait
//! for the longest running transaction. Instead each server gets one
//! exported snapshot, and every copy from it imports that snapshot
//! (`SET TRANSACTION SNAPSHOT`) into its own REPEATABLE READ transaction:
//!
//! - On a primary in a fresh move, the snapshot is the one the permanent
//!   slot exports when it is created: the copy sees exactly the
//!   transactions committed before the slot's consistent point, and the
//!   stream delivers exactly the ones after it. Every table's copy is
//!   recorded at that one LSN.
//! - When the permanent slot already exists (a resumed move) or the copy
//!   reads a standby, a temporary slot exports the snapshot; its consistent
//!   point is at or after the permanent slot's position, and the streaming
//!   phase skips, for each table copied in it, the transactions committed
//!   before that point (the per-table watermark in `pgdog.copy_progress`).
//!
//! The exported snapshot lives as long as the replication connection that
//! exported it stays open and idle: [`SharedSnapshot`] owns that connection
//! and lets it go when the copy is done. While held it keeps the server's
//! xmin horizon back, which the task shows (`SHOW TASKS`, snapshot age).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog_protocol::frontend::Format;
use pgdog_protocol::Lsn;
use tracing::{info, warn};

use crate::net::replication::{CreatedSlot, SnapshotAction};
use crate::net::{ConnectOptions, Connection};

use super::catalog::quote_literal;
use super::error::{DataSyncError, Result};
use super::progress::{SnapshotHold, Task};

/// How often a waiting slot creation looks at what it waits for.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// An exported snapshot and the connection that keeps it alive.
#[derive(Debug)]
pub struct SharedSnapshot {
    /// The name `SET TRANSACTION SNAPSHOT` takes.
    pub name: String,
    /// The LSN the snapshot is consistent with: what the copy contains.
    pub lsn: Lsn,
    /// The exporting replication connection: it must run nothing else, or
    /// the snapshot is gone.
    holder: Option<Connection>,
    hold: Arc<SnapshotHold>,
}

impl SharedSnapshot {
    /// Keep the snapshot `created` exported on `holder`.
    pub fn new(
        holder: Connection,
        created: &CreatedSlot,
        task: &Task,
        source_shard: usize,
    ) -> Result<SharedSnapshot> {
        let name = created.snapshot_name.clone().ok_or_else(|| {
            DataSyncError::State(format!(
                "CREATE_REPLICATION_SLOT {} on {} exported no snapshot",
                created.name,
                holder.addr()
            ))
        })?;
        let hold = Arc::new(SnapshotHold {
            source_shard,
            server: format!("{}:{}", holder.addr().host, holder.addr().port),
            lsn: created.consistent_point,
            since: Instant::now(),
            released: Default::default(),
        });
        task.add_snapshot(hold.clone());
        Ok(SharedSnapshot {
            name,
            lsn: created.consistent_point,
            holder: Some(holder),
            hold,
        })
    }

    /// A snapshot a plain session exported with `pg_export_snapshot()`:
    /// it lives while `holder` stays in that transaction. Not listed among
    /// the task's source snapshots.
    pub fn exported(holder: Connection, name: String, lsn: Lsn) -> SharedSnapshot {
        let hold = Arc::new(SnapshotHold {
            source_shard: 0,
            server: format!("{}:{}", holder.addr().host, holder.addr().port),
            lsn,
            since: Instant::now(),
            released: Default::default(),
        });
        SharedSnapshot {
            name,
            lsn,
            holder: Some(holder),
            hold,
        }
    }

    /// A new session on `server` inside a REPEATABLE READ transaction that
    /// sees exactly this snapshot.
    pub async fn reader(&self, server: &ConnectOptions) -> Result<Connection> {
        let mut c = Connection::connect(server).await?;
        c.execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&self.name)
        ))
        .await?;
        Ok(c)
    }

    /// Let the snapshot go (and the temporary slot that exported it).
    pub async fn release(mut self) {
        if let Some(c) = self.holder.take() {
            c.close().await;
        }
        self.hold.release();
    }
}

impl Drop for SharedSnapshot {
    fn drop(&mut self) {
        self.hold.release();
    }
}

/// CREATE_REPLICATION_SLOT on `repl`, telling `task` (and the log) what the
/// creation waits for while it waits: the transactions that were running
/// when it started must end first. `watch` reaches the same server.
pub async fn create_slot(
    repl: &mut Connection,
    watch: &ConnectOptions,
    name: &str,
    temporary: bool,
    action: SnapshotAction,
    task: &Task,
    what: &str,
) -> Result<CreatedSlot> {
    use futures::future::FusedFuture;
    let walsender = repl.backend_pid().unwrap_or(0);
    let result = {
        let create = repl.create_replication_slot(name, temporary, action);
        tokio::pin!(create);
        let watcher = watch_waits(watch, walsender, name, task, what);
        tokio::pin!(watcher);
        loop {
            tokio::select! {
                r = &mut create => break r,
                // The watcher only ends on an error of its own: carry on
                // without it.
                _ = &mut watcher, if !watcher.is_terminated() => {}
            }
        }
    };
    // The watcher is gone, and what it showed with it.
    Ok(result?)
}

/// Poll `pg_stat_activity` on a side connection while a slot is being
/// created, and report the oldest transaction holding it up.
fn watch_waits<'a>(
    watch: &'a ConnectOptions,
    walsender: i32,
    slot: &'a str,
    task: &'a Task,
    what: &'a str,
) -> futures::future::Fuse<impl std::future::Future<Output = ()> + 'a> {
    use futures::FutureExt;
    async move {
        tokio::time::sleep(WATCH_EVERY).await;
        let Ok(mut c) = Connection::connect(watch).await else {
            return;
        };
        // The creation began about a second ago (plus the connect).
        let began = Instant::now() - WATCH_EVERY;
        let mut logged: Option<Instant> = None;
        // Shown in the task while a transaction holds the creation up.
        let mut shown: Option<crate::data_sync::progress::Waiting<'_>> = None;
        let walsender = walsender.to_string();
        loop {
            let waited = format!("{:.3}", began.elapsed().as_secs_f64());
            // Transactions with an xid that began before the slot creation
            // did: the ones CREATE_REPLICATION_SLOT waits to see end.
            let rows = c
                .query_params(
                    "SELECT a.pid, extract(epoch FROM now() - a.xact_start)::bigint, a.state,
                            left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 60)
                     FROM pg_stat_activity a
                     WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid() AND a.pid <> $1::int
                       AND a.xact_start < now() - make_interval(secs => $2::float8)
                     ORDER BY a.xact_start LIMIT 1",
                    &[Format::Text],
                    [Some(walsender.as_bytes()), Some(waited.as_bytes())],
                    Format::Text,
                )
                .await;
            let Ok(rows) = rows else { return };
            let msg = rows.first().map(|r| {
                format!(
                    "{what}: creating replication slot {slot} waits for transaction of pid {} (open {} s, {}): {}",
                    r.text(0).unwrap_or("?"),
                    r.text(1).unwrap_or("?"),
                    r.text(2).unwrap_or("?"),
                    r.text(3).unwrap_or("")
                )
            });
            if let Some(m) = &msg {
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    warn!(waited_s = began.elapsed().as_secs(), "{m}");
                    logged = Some(Instant::now());
                }
            }
            match (msg, &shown) {
                (Some(m), Some(waiting)) => waiting.say(m),
                (Some(m), None) => shown = Some(task.wait_on(m)),
                (None, _) => shown = None,
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }
    .fuse()
}

/// Log that a snapshot is held, and where.
pub fn log_taken(snapshot: &SharedSnapshot, what: &str) {
    info!(lsn = %snapshot.lsn, "{what}: snapshot {} exported for every table copy", snapshot.name);
}
