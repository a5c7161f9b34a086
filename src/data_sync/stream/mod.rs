//! The streaming phase: one task per source shard reads its slot with
//! pgoutput and applies each change on the destination shard(s) its row
//! belongs to, exactly once.
//!
//! Exactly once rests on two positions per destination shard, both
//! committed with the changes themselves: the snapshot LSN of each table's
//! copy (a transaction committed before it is already in the copy) and the
//! last source commit applied (a transaction at or before it is already
//! applied). Everything else is crash-only: on any error the session is
//! torn down and started again from the slot, which re-sends whatever was
//! not confirmed.

mod apply;
mod batch;
mod reader;
pub(crate) mod relation;
mod session;
mod spool;
mod sql;

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::barrier;
use super::ctx::Ctx;
use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::plan::Plan;
use super::progress;
use super::progress::Task;
use super::retry::{Retrier, RetryPolicy};
use tokio_util::sync::CancellationToken;

/// The engine's context for a stream alone.
impl Ctx {
    /// What a stream of an existing move needs (no copy): for a command
    /// that streams the move itself while no `data-sync` does. Tables
    /// copied in chunks are decided by their chunks, as a data-sync would.
    pub async fn for_stream(
        endpoints: Endpoints,
        plan: Plan,
        task: Arc<Task>,
        shutdown: CancellationToken,
        findings: &super::preflight::Findings,
    ) -> Result<Ctx> {
        let mut ctx = Ctx {
            endpoints,
            plan,
            task,
            shutdown,
            parallel: 1,
            chunk_bytes: 0,
            chunk_seconds: 2.0,
            resume: true,
            copy_sources: findings.copy_sources.clone(),
            stream_start: Vec::new(),
            drain_ended: false,
            chunks: Default::default(),
        };
        let prepared = super::copy::chunked::prepare(&ctx, &findings.finished, false).await?;
        ctx.chunks = Arc::new(prepared.books);
        Ok(ctx)
    }
}

/// Stream every source shard until shutdown or a permanent error.
pub async fn run(ctx: Arc<Ctx>) -> Result<()> {
    let n = ctx.plan.source_shards();
    // `pgdog verify` may ask the sessions to hold at an LSN.
    let agent_stop = ctx.shutdown.child_token();
    let (requests, answers) = barrier::spawn_agent(
        ctx.endpoints.clone(),
        ctx.plan.slot.clone(),
        n,
        agent_stop.clone(),
    );
    let _agent = agent_stop.drop_guard();
    // A new streaming phase (a move that planned again) shows its own.
    ctx.task.clear_streams();
    let mut set = JoinSet::new();
    for s in 0..n {
        let status = Arc::new(progress::Stream {
            source_shard: s,
            host: format!(
                "{}:{}",
                ctx.plan.source.shards[s].primary.host, ctx.plan.source.shards[s].primary.port
            ),
            slot: ctx.plan.slot.clone(),
            ..Default::default()
        });
        ctx.task.add_stream(status.clone());
        let ctx = ctx.clone();
        let verify = Verify {
            requests: requests.clone(),
            answers: answers.clone(),
        };
        set.spawn(async move { run_source(ctx, s, status, verify).await });
    }
    // Captured DDL that runs outside a transaction, built beside the
    // stream while it runs.
    let pending_stop = ctx.shutdown.child_token();
    let pending = tokio::spawn(super::ddl::pending::run(ctx.clone(), pending_stop.clone()));
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let result = joined
            .unwrap_or_else(|e| Err(DataSyncError::State(format!("stream task panicked: {e}"))));
        if let Err(e) = result {
            if first_error.is_none() {
                ctx.shutdown.cancel();
                first_error = Some(e);
            }
        }
    }
    pending_stop.cancel();
    let _ = pending.await;
    match first_error {
        None | Some(DataSyncError::Stopped) => Ok(()),
        Some(e) => Err(e),
    }
}

/// The session's end of the verify barrier ([`barrier`]).
#[derive(Debug, Clone)]
pub struct Verify {
    pub requests: barrier::Requests,
    pub answers: tokio::sync::mpsc::UnboundedSender<barrier::Answer>,
}

/// One source shard, with retries of failures worth one
/// ([`super::retry`]).
async fn run_source(
    ctx: Arc<Ctx>,
    s: usize,
    status: Arc<progress::Stream>,
    verify: Verify,
) -> Result<()> {
    let mut retrier = Retrier::new(RetryPolicy::STREAM);
    loop {
        let result = session::Session::run(&ctx, s, &status, verify.clone()).await;
        match result {
            Ok(()) | Err(DataSyncError::Stopped) => return Ok(()),
            // A schema change the session replayed and committed needs a
            // new plan even when the stream was told to stop at the same
            // moment (the copy ending, say): the caller decides.
            Err(e @ DataSyncError::SchemaChanged { .. }) => return Err(e),
            Err(_) if ctx.shutdown.is_cancelled() => return Ok(()),
            Err(e) => {
                let Some(wait) = retrier.after(&e) else {
                    return Err(e);
                };
                ctx.task.count_error(e.kind());
                warn!(
                    source_shard = s,
                    "replication interrupted, reconnecting in {:.1}s: {e}",
                    wait.as_secs_f64()
                );
                if retrier.wait(wait, &ctx.shutdown).await.is_err() {
                    return Ok(());
                }
                info!(
                    source_shard = s,
                    attempt = retrier.failures(),
                    "resuming replication from the slot"
                );
            }
        }
    }
}
