//! Copying one table from one source shard: in the snapshot its server
//! shares with every other copy there (see [`super::super::snapshot`]),
//! in one or more ctid ranges, then record on each destination shard that
//! the copy is complete as of the snapshot's LSN.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::info;

use super::super::catalog::TableName;
use super::super::ctx::Ctx;
use super::super::error::{DataSyncError, Result};
use super::super::progress::TableCopy;
use super::super::state;
use super::chunk::{copy_stream, ChunkResult};
use super::pool::{DestPool, ServerCopy};

/// One table from one source shard.
#[derive(Debug)]
pub struct Job {
    /// Index into the plan's tables.
    pub table: usize,
    pub source_shard: usize,
    /// Destination shards that still need it.
    pub dests: Vec<usize>,
    /// Parallel streams it may use (permits it holds).
    pub permits: u32,
    /// The server it reads: the shard's primary or one of its replicas.
    pub server: crate::config::Database,
    pub on_replica: bool,
    pub progress: Arc<TableCopy>,
}

/// The `COPY` of one range of the table, `None` for the whole table.
fn select_sql(ctx: &Ctx, job: &Job, range: Option<(u64, Option<u64>)>) -> String {
    let mut conds = Vec::new();
    if let Some((start, end)) = range {
        conds.push(format!("ctid >= '({start},0)'::tid"));
        if let Some(end) = end {
            conds.push(format!("ctid < '({end},0)'::tid"));
        }
    }
    ctx.plan.tables[job.table].copy_out_sql(true, conds)
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

/// Copy one table from one source shard to `job.dests`, reading `server`
/// and writing through `pool`.
pub async fn run(ctx: &Ctx, job: &Job, server: &ServerCopy, pool: &DestPool) -> Result<()> {
    let plan = &ctx.plan.tables[job.table];
    let name = &plan.table.name;
    if ctx.resume {
        remove_partial(ctx, job).await?;
    }
    let ranges = ranges(ctx, job);
    let s = job.source_shard;
    let snapshot = server.snapshot.lsn;
    let streams = if ranges.len() == 1 {
        1
    } else {
        (job.permits as usize).clamp(1, ranges.len())
    };
    // Each stream takes the next range until none is left, in a session of
    // the server's shared snapshot, and gives its sessions back to the
    // pools when it ends well (a failed one drops them: their COPYs roll
    // back).
    let next = AtomicUsize::new(0);
    let mut futures = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (next, ranges) = (&next, &ranges);
        futures.push(async move {
            let mut reader = server.reader().await?;
            unrewritten(&mut reader.conn, name, s).await?;
            let mut dests = pool.take(ctx, &job.dests).await?;
            let mut total = ChunkResult {
                rows: 0,
                per_dest: vec![0; job.dests.len()],
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(range) = ranges.get(i) else { break };
                let sql = select_sql(ctx, job, *range);
                let result = copy_stream(
                    &mut reader.conn,
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
            server.give_back(reader).await;
            pool.give_back(dests);
            Ok::<_, DataSyncError>(total)
        });
    }
    let results = join_all(futures).await?;

    // Every stream committed on every destination: record the copy there.
    let rows: u64 = results.iter().map(|r| r.rows).sum();
    let mut conns = pool.take(ctx, &job.dests).await?;
    let routing = ctx.plan.tables[job.table].routing_key();
    for (i, (_, conn)) in conns.iter_mut().enumerate() {
        let to_d: u64 = results
            .iter()
            .map(|r| r.per_dest.get(i).copied().unwrap_or(0))
            .sum();
        state::record_copy(conn, &ctx.plan.slot, s, name, snapshot, to_d, &routing).await?;
    }
    pool.give_back(conns);
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

/// Lock `table` in the shared snapshot's session (held until it ends, so
/// no rewrite starts while the copy reads), then make sure no rewrite
/// committed after the snapshot was taken: a table rewrite (ALTER TABLE
/// ... TYPE, a volatile default, VACUUM FULL, CLUSTER) is not MVCC-safe,
/// and an older snapshot reads the new table empty.
async fn unrewritten(conn: &mut crate::net::Connection, table: &TableName, s: usize) -> Result<()> {
    let quoted = table.quoted();
    conn.execute(&format!("LOCK TABLE {quoted} IN ACCESS SHARE MODE"))
        .await?;
    let rows = conn
        .query_text(
            "SELECT coalesce(bool_and(c.relfilenode = pg_relation_filenode(c.oid)), true)
               FROM pg_partition_tree($1::regclass) t JOIN pg_class c ON c.oid = t.relid
              WHERE c.relkind IN ('r', 'm', 't')",
            &[&quoted],
        )
        .await?;
    if rows.first().and_then(|r| r.text(0)) == Some("f") {
        return Err(DataSyncError::State(format!(
            "table {table} was rewritten on source shard {s} (an ALTER TABLE that rewrites it, VACUUM FULL or CLUSTER) after the copy's snapshot was taken, which would read it empty; nothing of it was copied: run the same command again to copy it in a new snapshot"
        )));
    }
    Ok(())
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
