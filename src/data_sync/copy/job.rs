//! Copying one table from one source shard: take a snapshot whose LSN is
//! known exactly (a temporary logical slot), copy the table in one or more
//! ctid ranges inside that snapshot, then record on each destination shard
//! that the copy is complete as of that LSN.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tracing::{debug, info};

use crate::net::replication::SnapshotAction;
use crate::net::Connection;

use super::super::catalog::quote_literal;
use super::super::error::{DataSyncError, Result};
use super::super::state;
use super::super::Ctx;
use super::chunk::{copy_stream, ChunkResult};
use super::Job;

static TEMP_SLOTS: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary slot: unique in this process, and the pid keeps
/// two pgdog processes apart.
fn temp_slot_name() -> String {
    format!(
        "pgdog_copy_{}_{}",
        std::process::id(),
        TEMP_SLOTS.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `SELECT` of one range of the table, `None` for the whole table.
fn select_sql(ctx: &Ctx, job: &Job, range: Option<(u64, Option<u64>)>) -> String {
    let plan = &ctx.plan.tables[job.table];
    let t = &plan.table;
    // ONLY: a plain table's inheritance children are separate tables; a
    // partitioned root must not have it (its rows live in the partitions).
    let only = if t.relkind == 'p' { "" } else { "ONLY " };
    let mut conds = Vec::new();
    if let Some((start, end)) = range {
        conds.push(format!("ctid >= '({start},0)'::tid"));
        if let Some(end) = end {
            conds.push(format!("ctid < '({end},0)'::tid"));
        }
    }
    if let Some(filter) = &t.row_filter {
        conds.push(format!("({filter})"));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let format = if t.binary_safe() {
        " (FORMAT binary)"
    } else {
        ""
    };
    format!(
        "COPY (SELECT {} FROM {only}{}{filter}) TO STDOUT{format}",
        t.column_list(),
        t.name.quoted()
    )
}

/// How many ranges to split a table into.
fn ranges(ctx: &Ctx, job: &Job) -> Vec<Option<(u64, Option<u64>)>> {
    let t = &ctx.plan.tables[job.table].table;
    let pages = t.bytes / 8192;
    // About one range per `chunk_bytes`, and at least four per stream: the
    // job's streams take ranges from a queue, and small ranges keep them
    // busy until the end.
    let k = match t.bytes.checked_div(ctx.chunk_bytes) {
        Some(k) if t.relkind == 'r' && job.permits > 1 => {
            k.max(4 * job.permits as u64).clamp(1, 64)
        }
        _ => 1,
    };
    if k <= 1 || pages < k {
        return vec![None];
    }
    let step = pages.div_ceil(k);
    (0..k)
        .map(|i| {
            let start = i * step;
            // The last range is open: pages added since sizing are included.
            let end = if i + 1 == k {
                None
            } else {
                Some((i + 1) * step)
            };
            Some((start, end))
        })
        .collect()
}

/// Remove what an interrupted earlier copy of this table from this source
/// shard left on the destinations about to receive it again.
async fn remove_partial(ctx: &Ctx, job: &Job) -> Result<()> {
    let plan = &ctx.plan.tables[job.table];
    let n = ctx.plan.source_shards();
    for &d in &job.dests {
        let mut conn = ctx.endpoints.connect_dest(d).await?;
        let target = format!("{}{}", plan.only(), plan.table.name.quoted());
        match plan.source_rows_predicate(job.source_shard, n) {
            // TRUNCATE is refused for a table other tables reference by
            // foreign key, even in replica mode; a DELETE is not checked.
            None if plan.dest_table.referenced_by.is_empty() => {
                conn.execute(&format!("TRUNCATE {target}")).await?
            }
            None => conn.execute(&format!("DELETE FROM {target}")).await?,
            Some(pred) => {
                conn.execute(&format!("DELETE FROM {target} WHERE {pred}"))
                    .await?
            }
        }
        conn.close().await;
    }
    Ok(())
}

/// Copy one table from one source shard to `job.dests`.
pub async fn run(ctx: &Ctx, job: &Job) -> Result<()> {
    let plan = &ctx.plan.tables[job.table];
    let name = &plan.table.name;
    if ctx.resume {
        remove_partial(ctx, job).await?;
    }
    let ranges = ranges(ctx, job);
    let s = job.source_shard;
    let server = ctx.endpoints.source_server(&job.server);
    let connect =
        |replication: bool| Connection::connect_owned(server.clone().replication(replication));
    let mut repl = connect(true).await?;
    let temp = temp_slot_name();
    // On a standby: replayed far enough, and the primary nudged to log the
    // running transactions the standby's slot creation waits for.
    let _kicker = if job.on_replica {
        let mut check = connect(false).await?;
        let start = ctx.stream_start.get(s).copied().unwrap_or_default();
        super::super::replicas::wait_replayed(&mut check, start, s).await?;
        debug!(table = %name, replica = %check.addr(), replayed_past = %start, "replica ready");
        check.close().await;
        Some(AbortOnDrop(super::super::replicas::kick_standby_snapshots(
            &ctx.endpoints,
            s,
        )))
    } else {
        None
    };

    let (snapshot, results) = if ranges.len() == 1 {
        // One stream: the snapshot is used right on the slot's connection.
        repl.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let slot = repl
            .create_replication_slot(&temp, true, SnapshotAction::Use)
            .await?;
        debug!(table = %name, shard = s, lsn = %slot.consistent_point, "snapshot taken");
        let mut dests = connect_dests(ctx, &job.dests).await?;
        let sql = select_sql(ctx, job, None);
        let result = copy_stream(
            &mut repl,
            &sql,
            plan,
            &mut dests,
            ctx.plan.dest_shards(),
            &job.progress,
        )
        .await?;
        repl.execute("COMMIT").await?;
        close_all(dests).await;
        (slot.consistent_point, vec![result])
    } else {
        // Several streams share one exported snapshot: each reader imports
        // it before the exporting connection moves on.
        let slot = repl
            .create_replication_slot(&temp, true, SnapshotAction::Export)
            .await?;
        let snapshot_name = slot.snapshot_name.clone().ok_or_else(|| {
            DataSyncError::State(
                "CREATE_REPLICATION_SLOT ... EXPORT returned no snapshot name".into(),
            )
        })?;
        let streams = (job.permits as usize).clamp(1, ranges.len());
        let mut readers = Vec::with_capacity(streams);
        for _ in 0..streams {
            let mut c = connect(false).await?;
            c.execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&snapshot_name)
            ))
            .await?;
            readers.push(c);
        }
        // Every reader holds the snapshot now; the temporary slot can go.
        repl.close().await;
        debug!(table = %name, shard = s, lsn = %slot.consistent_point, streams, ranges = ranges.len(), "snapshot exported");
        // Each stream takes the next range until none is left, all inside
        // its one snapshot transaction.
        let next = AtomicUsize::new(0);
        let mut futures = Vec::with_capacity(streams);
        for reader in readers {
            let (next, ranges) = (&next, &ranges);
            futures.push(async move {
                let mut reader = reader;
                let mut dests = connect_dests(ctx, &job.dests).await?;
                let mut total = ChunkResult {
                    rows: 0,
                    per_dest: vec![0; job.dests.len()],
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(range) = ranges.get(i) else { break };
                    let sql = select_sql(ctx, job, *range);
                    let result = copy_stream(
                        &mut reader,
                        &sql,
                        plan,
                        &mut dests,
                        ctx.plan.dest_shards(),
                        &job.progress,
                    )
                    .await?;
                    total.rows += result.rows;
                    for (t, r) in total.per_dest.iter_mut().zip(&result.per_dest) {
                        *t += r;
                    }
                }
                reader.execute("COMMIT").await?;
                close_all(dests).await;
                reader.close().await;
                Ok::<_, DataSyncError>(total)
            });
        }
        let results = join_all(futures).await?;
        (slot.consistent_point, results)
    };

    // Every stream committed on every destination: record the copy there.
    let rows: u64 = results.iter().map(|r| r.rows).sum();
    for (i, &d) in job.dests.iter().enumerate() {
        let to_d: u64 = results
            .iter()
            .map(|r| r.per_dest.get(i).copied().unwrap_or(0))
            .sum();
        let mut conn = ctx.endpoints.connect_dest(d).await?;
        state::record_copy(&mut conn, &ctx.plan.slot, s, name, snapshot, to_d).await?;
        conn.close().await;
    }
    info!(
        table = %name,
        source_shard = s,
        rows,
        snapshot = %snapshot,
        streams = results.len(),
        "table copied"
    );
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect_dests(ctx: &Ctx, dests: &[usize]) -> Result<Vec<(usize, Connection)>> {
    let mut out = Vec::with_capacity(dests.len());
    for &d in dests {
        out.push((d, ctx.endpoints.connect_dest(d).await?));
    }
    Ok(out)
}

async fn close_all(conns: Vec<(usize, Connection)>) {
    for (_, c) in conns {
        c.close().await;
    }
}

/// Run futures concurrently; the first error wins and the rest are dropped
/// (their connections close, so their COPYs roll back).
async fn join_all<F, T>(futures: Vec<F>) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<T>> = (0..futures.len()).map(|_| None).collect();
    let mut left = futures.len();
    std::future::poll_fn(|cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_some() {
                continue;
            }
            if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                match r {
                    Ok(v) => {
                        out[i] = Some(v);
                        left -= 1;
                    }
                    Err(e) => return std::task::Poll::Ready(Err(e)),
                }
            }
        }
        if left == 0 {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await?;
    Ok(out.into_iter().flatten().collect())
}
