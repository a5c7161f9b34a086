//! The copy phase: every table of the publication, from every source shard
//! that holds its rows, copied in parallel (largest first) with in-flight
//! resharding. Tables an earlier run finished are skipped; an interrupted
//! table is cleaned and copied again as a whole (its ranges must share one
//! snapshot, so a table is the unit of resumption).

mod chunk;
mod job;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::error::{DataSyncError, Result};
use super::progress::{CopyState, TableCopy};
use super::Ctx;

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

/// Attempts per table before a transient error fails the move.
const ATTEMPTS: u32 = 5;

/// Copy everything not copied yet.
pub async fn run(
    ctx: Arc<Ctx>,
    finished: &[std::collections::HashMap<
        (usize, super::catalog::TableName),
        pgdog_protocol::Lsn,
    >],
) -> Result<()> {
    let n = ctx.plan.source_shards();
    let m = ctx.plan.dest_shards();
    let mut jobs = Vec::new();
    for (ti, plan) in ctx.plan.tables.iter().enumerate() {
        for s in (0..n).filter(|&s| plan.from_source(s)) {
            let key = (s, plan.table.name.clone());
            let dests: Vec<usize> = (0..m)
                .filter(|&d| !finished[d].contains_key(&key))
                .collect();
            let progress = Arc::new(TableCopy {
                schema: plan.table.name.schema.clone(),
                table: plan.table.name.name.clone(),
                source_shard: s,
                source_hosts: std::sync::Mutex::new(format!(
                    "{}:{}",
                    ctx.plan.source.shards[s].primary.host, ctx.plan.source.shards[s].primary.port
                )),
                estimated_rows: plan.table.estimated_rows,
                estimated_bytes: plan.table.bytes,
                rows: Default::default(),
                bytes: Default::default(),
                state: std::sync::Mutex::new(CopyState::Pending),
                started: Default::default(),
                finished: Default::default(),
            });
            ctx.task
                .copies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(progress.clone());
            if dests.is_empty() {
                progress.set_state(CopyState::Skipped);
                continue;
            }
            jobs.push(Job {
                table: ti,
                source_shard: s,
                dests,
                permits: 1,
                server: ctx.plan.source.shards[s].primary.clone(),
                on_replica: false,
                progress,
            });
        }
    }
    if jobs.is_empty() {
        info!("every table was copied by an earlier run");
        return Ok(());
    }
    // Where each copy reads: the replicas of its shard, evenly by bytes,
    // or the primary.
    for s in 0..n {
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
            *job.progress
                .source_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner()) =
                format!("{}:{}", job.server.host, job.server.port);
        }
    }
    // Largest first, so the long poles start early.
    jobs.sort_by_key(|j| std::cmp::Reverse(ctx.plan.tables[j.table].table.bytes));
    let parallel = ctx.parallel.max(1);
    // One pool of streams per server read.
    let mut pools: std::collections::HashMap<(String, u16), Arc<Semaphore>> =
        std::collections::HashMap::new();
    info!(tables = jobs.len(), parallel, "copying");

    let mut set = JoinSet::new();
    for mut job in jobs {
        let pool = pools
            .entry((job.server.host.clone(), job.server.port))
            .or_insert_with(|| Arc::new(Semaphore::new(parallel)))
            .clone();
        let bytes = ctx.plan.tables[job.table].table.bytes;
        let wanted = bytes
            .checked_div(ctx.chunk_bytes)
            .map_or(1, |k| k.clamp(1, parallel as u64) as u32);
        let ctx = ctx.clone();
        set.spawn(async move {
            let permit = pool
                .acquire_many_owned(wanted)
                .await
                .map_err(|_| DataSyncError::Stopped)?;
            job.permits = wanted;
            let result = run_with_retries(&ctx, &job).await;
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
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn run_with_retries(ctx: &Ctx, job: &Job) -> Result<()> {
    let name = ctx.plan.tables[job.table].table.name.clone();
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
        match job::run(ctx_ref, job).await {
            Ok(()) => {
                job.progress.set_state(CopyState::Done);
                return Ok(());
            }
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                ctx.task.count_error(e.kind());
                let wait = Duration::from_millis(500 * 2u64.pow(attempt - 1));
                warn!(table = %name, source_shard = job.source_shard, attempt, "copy failed, retrying in {:.1}s: {e}", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                job.progress.set_state(CopyState::Failed);
                return Err(DataSyncError::Copy {
                    table: name.to_string(),
                    source_shard: job.source_shard,
                    error: Box::new(e),
                });
            }
        }
    }
}
