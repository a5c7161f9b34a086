//! The forward (or reverse) stream as a cutover step sees it: run by a
//! `data-sync` somewhere or by the command itself ([`OwnStream`]), held at
//! an LSN through the barrier, and ended for good.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog_protocol::Lsn;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::super::barrier::Hold;
use super::super::ctx::Ctx;
use super::super::endpoints::Endpoints;
use super::super::error::{DataSyncError, Result};
use super::super::plan::Plan;
use super::super::progress::Task;
use super::super::retry::Wait;
use super::super::{preflight, state};

/// How long a stream has to let go of its slots once told to stop.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A stream of `slot` the command runs itself when no `data-sync` does,
/// and stops when dropped.
pub(super) struct OwnStream {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl OwnStream {
    /// None: some other process streams the slot, or nothing does and
    /// nothing needs to.
    pub(super) fn none() -> OwnStream {
        OwnStream {
            stop: CancellationToken::new(),
            handle: None,
        }
    }

    /// Whether this command runs the stream itself.
    pub(super) fn runs(&self) -> bool {
        self.handle.is_some()
    }

    /// Stream `plan` unless some process streams its slot already.
    pub(super) async fn ensure(
        endpoints: &Endpoints,
        findings: &preflight::Findings,
        plan: &Plan,
        task: &Arc<Task>,
    ) -> Result<OwnStream> {
        let active = active_pids(endpoints, &plan.slot).await?;
        if active.iter().any(Option::is_some) {
            info!(slot = %plan.slot, "a data-sync streams this move: the cutover holds it through the barrier");
            return Ok(OwnStream::none());
        }
        info!(slot = %plan.slot, "no data-sync streams this move: the cutover streams it itself");
        let stop = CancellationToken::new();
        let mut ctx = Ctx::for_stream(
            endpoints.clone(),
            plan.clone(),
            task.clone(),
            stop.clone(),
            findings,
        )
        .await?;
        // A rerun after a crash drains what an ended stream left.
        ctx.drain_ended = true;
        let ctx = Arc::new(ctx);
        Ok(OwnStream {
            stop,
            handle: Some(tokio::spawn(super::super::stream::run(ctx))),
        })
    }

    /// The stream's error, if it ended by itself with one.
    pub(super) fn failed(&mut self) -> Option<DataSyncError> {
        let h = self.handle.as_mut()?;
        if !h.is_finished() {
            return None;
        }
        let h = self.handle.take()?;
        match futures::FutureExt::now_or_never(h) {
            Some(Ok(Err(e))) => Some(e),
            Some(Err(e)) => Some(DataSyncError::State(format!(
                "the cutover's stream panicked: {e}"
            ))),
            _ => None,
        }
    }

    /// Wait for a stream told to stop (through the barrier) to end.
    async fn join(mut self) -> Result<()> {
        if let Some(h) = self.handle.take() {
            match h.await {
                Ok(r) => r?,
                Err(e) => {
                    return Err(DataSyncError::State(format!(
                        "the cutover's stream panicked: {e}"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl Drop for OwnStream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The WAL sender pid using `slot` on each source shard, if any.
pub(super) async fn active_pids(endpoints: &Endpoints, slot: &str) -> Result<Vec<Option<i32>>> {
    let mut out = Vec::new();
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        out.push(
            preflight::slot_info(&mut conn, slot)
                .await?
                .and_then(|i| i.active_pid),
        );
        conn.close().await;
    }
    Ok(out)
}

/// Wait until no process streams `slot` on any source shard.
async fn wait_released(endpoints: &Endpoints, slot: &str, timeout: Duration) -> Result<()> {
    let mut wait = Wait::new(
        format!("the stream of slot \"{slot}\" to end"),
        Some(timeout),
        Duration::from_millis(100),
    );
    loop {
        let busy: Vec<String> = active_pids(endpoints, slot)
            .await?
            .iter()
            .enumerate()
            .filter_map(|(s, p)| p.map(|p| format!("source shard {s} (pid {p})")))
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        let now = format!("it was told to end but still runs on {}", busy.join(", "));
        wait.tick_or_fail(&now, None).await?;
    }
}

/// On every source shard: a logical message, whose LSN is past every
/// transaction committed before it; a stream that reaches it has applied
/// them all.
pub(super) async fn mark_lsns(endpoints: &Endpoints, what: &str) -> Result<Vec<Lsn>> {
    let mut out = Vec::new();
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        let rows = conn
            .query_text(
                "SELECT pg_logical_emit_message(false, 'pgdog', $1)::text",
                &[what],
            )
            .await?;
        conn.close().await;
        let lsn = rows
            .first()
            .and_then(|r| r.text(0))
            .and_then(Lsn::parse)
            .ok_or_else(|| {
                DataSyncError::State(format!(
                    "pg_logical_emit_message returned no LSN on source shard {s}"
                ))
            })?;
        out.push(lsn);
    }
    Ok(out)
}

/// Who holds a move's stream, and how long it may take.
pub(super) struct Holder<'a> {
    pub endpoints: &'a Endpoints,
    pub slot: &'a str,
    /// The barrier holder's id.
    pub id: String,
    pub shutdown: &'a CancellationToken,
}

impl Holder<'_> {
    /// Hold the move with every transaction committed before `targets`
    /// applied, by `deadline`. The hold is withdrawn on error.
    pub(super) async fn hold_at(
        &self,
        targets: &[Lsn],
        deadline: Instant,
        own: &mut OwnStream,
    ) -> Result<Hold> {
        let slot = self.slot;
        let mut hold = Hold::begin(self.endpoints, slot, &self.id).await?;
        let result = async {
            let left = || deadline.saturating_duration_since(Instant::now());
            let what = format!("cutover: pausing the move of slot \"{slot}\"");
            self.wait_for(&mut hold, "paused", left(), &what, own)
                .await?;
            hold.hold_at(targets).await?;
            let what = format!(
                "cutover: draining the move of slot \"{slot}\" up to {}",
                lsn_list(targets)
            );
            self.wait_for(&mut hold, "held", left(), &what, own).await
        }
        .await;
        match result {
            Ok(_) => Ok(hold),
            Err(e) => {
                let _ = hold.release().await;
                Err(e)
            }
        }
    }

    /// [`Hold::wait`], ended early by the command's own stream failing.
    async fn wait_for(
        &self,
        hold: &mut Hold,
        state: &str,
        timeout: Duration,
        what: &str,
        own: &mut OwnStream,
    ) -> Result<Vec<Lsn>> {
        let step = Duration::from_millis(500);
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            match hold.wait(state, left.min(step), what, self.shutdown).await {
                Ok(v) => return Ok(v),
                Err(DataSyncError::State(m)) if left > step && m.starts_with(what) => {
                    if let Some(e) = own.failed() {
                        return Err(e);
                    }
                }
                Err(DataSyncError::State(m)) if m.starts_with(what) => {
                    return Err(DataSyncError::State(format!(
                        "{what}: not done within the --timeout of {} s ({m})",
                        timeout.as_secs()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// End the stream for good: mark it stopped on destination shard 0
    /// (`reason`), hold it where it is (after draining to the source's
    /// position now, when `drain`), and tell every session to end.
    pub(super) async fn end_stream(
        &self,
        reason: &str,
        drain: bool,
        timeout: Duration,
        mut own: OwnStream,
    ) -> Result<()> {
        let (endpoints, slot) = (self.endpoints, self.slot);
        let mut conn = endpoints.connect_dest(0).await?;
        state::ensure_schema(&mut conn).await?;
        state::set_stream_stopped(&mut conn, slot, Some(reason)).await?;
        conn.close().await;
        if !own.runs()
            && active_pids(endpoints, slot)
                .await?
                .iter()
                .all(Option::is_none)
        {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut hold = if drain {
            let targets = mark_lsns(endpoints, "pgdog cutover: end of stream").await?;
            self.hold_at(&targets, deadline, &mut own).await?
        } else {
            let mut hold = Hold::begin(endpoints, slot, &self.id).await?;
            let what = format!("pausing the stream of slot \"{slot}\" to end it");
            if let Err(e) = self
                .wait_for(&mut hold, "paused", timeout, &what, &mut own)
                .await
            {
                let _ = hold.release().await;
                return Err(e);
            }
            hold
        };
        let stopped = async {
            hold.stop().await?;
            wait_released(endpoints, slot, STOP_TIMEOUT).await
        }
        .await;
        let released = hold.release().await;
        stopped?;
        released?;
        own.join().await
    }
}

pub(super) fn lsn_list(lsns: &[Lsn]) -> String {
    lsns.iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
