//! The copy phase: every table of the publication, from every source shard
//! that holds its rows, copied in parallel (largest first) with in-flight
//! resharding, all copies from one server in the one snapshot it shares
//! ([`super::snapshot`]). Tables an earlier run finished are skipped; an
//! interrupted table is cleaned and copied again as a whole (a table is the
//! unit of resumption).

mod chunk;
pub(crate) mod chunked;
mod job;
pub(crate) mod pool;
pub(crate) mod rows;
mod shape;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::ctx::Ctx;
use super::error::{DataSyncError, Result};
use super::progress::{CopyState, TableCopy};
use super::retry::{Retrier, RetryPolicy};
use super::snapshot::{self, SharedSnapshot};
use crate::net::replication::SnapshotAction;
use job::Job;
use pool::{DestPool, ServerCopy};

/// Finished copies recorded on one destination shard.
type Finished = HashMap<(usize, super::catalog::TableName), pgdog_protocol::Lsn>;

/// One job per table and source shard to copy whole (not in chunks), for
/// the destination shards that lack it; the others show as skipped.
fn whole_copies(ctx: &Ctx, finished: &[Finished], chunked: &HashSet<usize>) -> Vec<Job> {
    let (n, m) = (ctx.plan.source_shards(), ctx.plan.dest_shards());
    let mut jobs = Vec::new();
    for (ti, plan) in ctx.plan.tables.iter().enumerate() {
        // Copied in chunks, with the stream running ([`chunked`]).
        if chunked.contains(&ti) {
            continue;
        }
        for s in (0..n).filter(|&s| plan.from_source(s)) {
            let key = (s, plan.table.name.clone());
            let dests: Vec<usize> = (0..m)
                .filter(|&d| !finished[d].contains_key(&key))
                .collect();
            let primary = &ctx.plan.source.shards[s].primary;
            let progress = ctx.task.add_copy(TableCopy::new(
                &plan.table.name,
                s,
                format!("{}:{}", primary.host, primary.port),
                plan.table.estimated_rows,
                plan.table.bytes,
            ));
            progress.set_method("one snapshot");
            if dests.is_empty() {
                progress.set_state(CopyState::Skipped);
                continue;
            }
            jobs.push(Job {
                table: ti,
                source_shard: s,
                dests,
                permits: 1,
                server: primary.clone(),
                on_replica: false,
                progress,
            });
        }
    }
    jobs
}

/// Where each copy reads: the replicas of its shard, evenly by bytes, or
/// the primary.
fn place_on_replicas(ctx: &Ctx, jobs: &mut [Job]) {
    for s in 0..ctx.plan.source_shards() {
        let Some(sources) = ctx.copy_sources.get(s) else {
            continue;
        };
        let mine: Vec<usize> = (0..jobs.len())
            .filter(|&j| jobs[j].source_shard == s)
            .collect();
        let sizes: Vec<u64> = mine
            .iter()
            .map(|&j| ctx.plan.tables[jobs[j].table].table.bytes)
            .collect();
        for (k, server) in mine
            .iter()
            .zip(super::replicas::assign(&sizes, sources.servers.len()))
        {
            let job = &mut jobs[*k];
            job.server = sources.servers[server].clone();
            job.on_replica = sources.replicas;
            job.progress
                .source_hosts
                .set(format!("{}:{}", job.server.host, job.server.port));
        }
    }
}

/// One snapshot per server read, taken on all of them at once: the
/// permanent slot's where this run created it, else a temporary slot's.
/// Exports nobody reads (every copy of that shard reads replicas) are let
/// go.
async fn snapshots(
    ctx: &Ctx,
    jobs: &[Job],
    mut exported: Vec<Option<SharedSnapshot>>,
) -> Result<HashMap<(String, u16), Arc<ServerCopy>>> {
    let mut wanted: Vec<(usize, crate::config::Database, bool)> = Vec::new();
    for j in jobs {
        if !wanted
            .iter()
            .any(|(_, d, _)| d.host == j.server.host && d.port == j.server.port)
        {
            wanted.push((j.source_shard, j.server.clone(), j.on_replica));
        }
    }
    let mut taken = Vec::with_capacity(wanted.len());
    let mut pending = Vec::new();
    for (s, server, on_replica) in wanted {
        let primary = &ctx.plan.source.shards[s].primary;
        let is_primary = server.host == primary.host && server.port == primary.port;
        match exported.get_mut(s).and_then(Option::take) {
            Some(snap) if is_primary => taken.push((server, snap)),
            other => {
                if let Some(unused) = other {
                    unused.release().await;
                }
                pending.push((s, server, on_replica));
            }
        }
    }
    for e in exported.into_iter().flatten() {
        e.release().await;
    }
    let fresh = futures::future::try_join_all(
        pending
            .iter()
            .map(|(s, server, on_replica)| server_snapshot(ctx, *s, server, *on_replica)),
    )
    .await?;
    taken.extend(pending.into_iter().map(|(_, server, _)| server).zip(fresh));
    Ok(taken
        .into_iter()
        .map(|(server, snap)| {
            let options = ctx.endpoints.source_server(&server);
            (
                (server.host.clone(), server.port),
                Arc::new(ServerCopy::new(snap, options)),
            )
        })
        .collect())
}

/// Copy everything not copied yet. `exported[s]` is the snapshot the
/// permanent slot of source shard `s` exported when this run created it,
/// for the copies that read that shard's primary.
pub async fn run(
    ctx: Arc<Ctx>,
    finished: &[Finished],
    exported: Vec<Option<SharedSnapshot>>,
    chunked: &HashSet<usize>,
) -> Result<()> {
    let m = ctx.plan.dest_shards();
    let mut jobs = whole_copies(&ctx, finished, chunked);
    if jobs.is_empty() {
        for e in exported.into_iter().flatten() {
            e.release().await;
        }
        return Ok(());
    }
    place_on_replicas(&ctx, &mut jobs);
    let servers = snapshots(&ctx, &jobs, exported).await?;
    let dest_pool = Arc::new(DestPool::new(m));

    // Largest first, so the long poles start early.
    jobs.sort_by_key(|j| std::cmp::Reverse(ctx.plan.tables[j.table].table.bytes));
    let parallel = ctx.parallel.max(1);
    // One pool of streams per server read.
    let mut permits: HashMap<(String, u16), Arc<Semaphore>> = HashMap::new();
    info!(
        tables = jobs.len(),
        parallel,
        servers = servers.len(),
        "copying"
    );

    let mut set = JoinSet::new();
    for mut job in jobs {
        let key = (job.server.host.clone(), job.server.port);
        let pool = permits
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(parallel)))
            .clone();
        let server = servers
            .get(&key)
            .cloned()
            .ok_or_else(|| DataSyncError::State(format!("no snapshot for {}:{}", key.0, key.1)))?;
        let bytes = ctx.plan.tables[job.table].table.bytes;
        let wanted = bytes
            .checked_div(ctx.chunk_bytes)
            .map_or(1, |k| k.clamp(1, parallel as u64) as u32);
        let ctx = ctx.clone();
        let dest_pool = dest_pool.clone();
        set.spawn(async move {
            let permit = pool
                .acquire_many_owned(wanted)
                .await
                .map_err(|_| DataSyncError::Stopped)?;
            job.permits = wanted;
            let result = run_with_retries(&ctx, &job, &server, &dest_pool).await;
            drop(permit);
            result
        });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let result = joined
            .unwrap_or_else(|e| Err(DataSyncError::State(format!("copy task panicked: {e}"))));
        if let Err(e) = result {
            if first_error.is_none() {
                // Stop the others: their COPYs roll back when their
                // connections drop, and the next run redoes them.
                set.abort_all();
                first_error = Some(e);
            }
        }
    }
    // Every copy has ended: let the snapshots go (they hold back vacuum).
    dest_pool.close().await;
    for (_, server) in servers {
        if let Ok(server) = Arc::try_unwrap(server) {
            server.finish().await;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

static TEMP_SLOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A snapshot on `server` (source shard `s`) from a temporary slot that
/// exports it: on a standby once it has replayed past the permanent slot's
/// start, with the primary nudged to log the running transactions the
/// standby's slot creation waits for.
async fn server_snapshot(
    ctx: &Ctx,
    s: usize,
    server: &crate::config::Database,
    on_replica: bool,
) -> Result<SharedSnapshot> {
    let options = ctx.endpoints.source_server(server);
    let what = format!("source shard {s} ({}:{})", server.host, server.port);
    let _kicker = if on_replica {
        let mut check = crate::net::Connection::connect(&options).await?;
        let start = ctx.stream_start.get(s).copied().unwrap_or_default();
        super::replicas::wait_replayed(&mut check, start, s).await?;
        check.close().await;
        Some(AbortOnDrop(super::replicas::kick_standby_snapshots(
            &ctx.endpoints,
            s,
        )))
    } else {
        None
    };
    let mut repl = crate::net::Connection::connect(&options.clone().replication(true)).await?;
    // Unique in this process; the pid keeps two pgdog processes apart.
    let name = format!(
        "pgdog_copy_{}_{}",
        std::process::id(),
        TEMP_SLOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let created = snapshot::create_slot(
        &mut repl,
        &options,
        &name,
        true,
        SnapshotAction::Export,
        &ctx.task,
        &what,
    )
    .await?;
    let snap = SharedSnapshot::new(repl, &created, &ctx.task, s)?;
    snapshot::log_taken(&snap, &what);
    Ok(snap)
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_with_retries(
    ctx: &Ctx,
    job: &Job,
    server: &ServerCopy,
    pool: &DestPool,
) -> Result<()> {
    let name = ctx.plan.tables[job.table].table.name.clone();
    let mut retrier = Retrier::new(RetryPolicy::COPY);
    let mut attempt = 0;
    loop {
        attempt += 1;
        job.progress
            .rows
            .store(0, std::sync::atomic::Ordering::Relaxed);
        job.progress
            .bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
        job.progress.set_state(CopyState::Copying);
        // A retry must remove what the failed attempt committed.
        let retry_ctx;
        let ctx_ref = if attempt > 1 && !ctx.resume {
            retry_ctx = Ctx {
                resume: true,
                ..ctx.clone()
            };
            &retry_ctx
        } else {
            ctx
        };
        match job::run(ctx_ref, job, server, pool).await {
            Ok(()) => {
                job.progress.set_state(CopyState::Done);
                return Ok(());
            }
            Err(e) => match retrier.after(&e) {
                Some(wait) => {
                    ctx.task.count_error(e.kind());
                    warn!(table = %name, source_shard = job.source_shard, attempt, "copy failed, retrying in {:.1}s: {e}", wait.as_secs_f64());
                    retrier.wait(wait, &ctx.shutdown).await?;
                }
                None => {
                    job.progress.set_state(CopyState::Failed);
                    return Err(DataSyncError::Copy {
                        table: name.to_string(),
                        source_shard: job.source_shard,
                        error: Box::new(e),
                    });
                }
            },
        }
    }
}
