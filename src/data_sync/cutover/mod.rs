//! `pgdog cutover`: end a move by switching the application to the
//! destination without losing a write, and keep a way back.
//!
//! 1. Wait until the move's lag is at most `--max-lag` on every source
//!    shard (the move streams: a `data-sync` somewhere, else this command).
//! 2. Freeze the published tables on every source shard for the
//!    application's roles ([`freeze`]); what is frozen is recorded on
//!    destination shard 0 (`pgdog.cutover_freezes`).
//! 3. Drain: hold the move's apply at the LSN after the freeze on every
//!    source shard ([`super::barrier`]): every write committed before it is
//!    on the destination.
//! 4. Set the destination's sequences ([`super::sequences`]).
//! 5. Verify at that point ([`super::verify`]), unless skipped.
//! 6. End the forward stream for good, then create a publication and a
//!    permanent slot on every destination shard and stream the
//!    destination's changes back to the source with the same engine
//!    ([`reverse`]): the source stays frozen for the application and keeps
//!    up, so a rollback loses nothing.
//! 7. Write the configuration with the two clusters exchanged beside the
//!    old one.
//!
//! Every step is recorded on destination shard 0 (`pgdog.cutovers`) before
//! it starts. A failure before step 6 unfreezes the source and lets the
//! move stream on; a crash leaves the record, and rerunning the command
//! picks it up (steps 1 to 5 again, each idempotent; from step 6 on, it
//! finishes the switch). `--rollback` and `--complete` read the same
//! record.

pub mod freeze;
pub mod privileges;
pub mod reverse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog_protocol::Lsn;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::net::Connection;

use super::barrier::Hold;
use super::catalog::TableName;
use super::error::{DataSyncError, Result};
use super::progress::{Phase, Task};
use super::{catalog, preflight, sequences, state, verify, Ctx, Endpoints, Mode, Options, Plan};

/// Default `--max-lag`: 1 MB.
pub const DEFAULT_MAX_LAG: u64 = 1 << 20;
/// Default `--timeout` for the freeze and the drain.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--reverse-publication`.
pub const DEFAULT_REVERSE_PUBLICATION: &str = "pgdog_reverse";
/// How long a stream has to let go of its slots once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cutover,
    /// Make the source the primary again.
    Rollback,
    /// Drop the reverse stream's slots and publications (and the forward
    /// slot): the operator is done with the source.
    Complete,
}

/// The cutover's settings beyond the move.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    /// The application's login roles: frozen on the source.
    pub freeze_roles: Vec<String>,
    pub max_lag: u64,
    /// For the freeze and the drain together.
    pub timeout: Duration,
    pub reverse_publication: String,
    pub skip_verify: bool,
    /// Above the highest sequence value handed out.
    pub margin: i64,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            action: Action::Cutover,
            freeze_roles: Vec::new(),
            max_lag: DEFAULT_MAX_LAG,
            timeout: DEFAULT_TIMEOUT,
            reverse_publication: DEFAULT_REVERSE_PUBLICATION.to_string(),
            skip_verify: false,
            margin: sequences::DEFAULT_MARGIN,
        }
    }
}

/// How a cutover command ended.
#[derive(Debug, Clone)]
pub enum Done {
    /// Switched: the reverse move is to be streamed (`reverse`).
    CutOver {
        reverse: Options,
        /// What the application needs to know, for people.
        summary: String,
    },
    RolledBack {
        summary: String,
    },
    Completed {
        summary: String,
    },
}

/// The record of a cutover on destination shard 0.
#[derive(Debug, Clone)]
struct Record {
    state: String,
    roles: Vec<String>,
    reverse_publication: String,
    reverse_slot: String,
}

async fn read_record(conn: &mut Connection, slot: &str) -> Result<Option<Record>> {
    let rows = conn
        .query_text(
            "SELECT state, '', reverse_publication, reverse_slot FROM pgdog.cutovers WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let roles = conn
        .query_text(
            "SELECT r FROM pgdog.cutovers, unnest(freeze_roles) r WHERE slot_name = $1",
            &[slot],
        )
        .await?
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect();
    Ok(Some(Record {
        state: r.text(0).unwrap_or("").to_string(),
        roles,
        reverse_publication: r.text(2).unwrap_or("").to_string(),
        reverse_slot: r.text(3).unwrap_or("").to_string(),
    }))
}

/// Record `state` (and the rest) before the step it names starts.
async fn write_record(
    conn: &mut Connection,
    slot: &str,
    record: &Record,
    error: Option<&str>,
) -> Result<()> {
    let roles = catalog::text_array(record.roles.iter().cloned());
    conn.query_text(
        "INSERT INTO pgdog.cutovers (slot_name, state, freeze_roles, reverse_publication, reverse_slot, error)
         VALUES ($1, $2, $3::text[], $4, $5, nullif($6, ''))
         ON CONFLICT (slot_name) DO UPDATE SET state = EXCLUDED.state, freeze_roles = EXCLUDED.freeze_roles,
             reverse_publication = EXCLUDED.reverse_publication, reverse_slot = EXCLUDED.reverse_slot,
             error = EXCLUDED.error, updated_at = now()",
        &[
            slot,
            &record.state,
            &roles,
            &record.reverse_publication,
            &record.reverse_slot,
            error.unwrap_or(""),
        ],
    )
    .await?;
    Ok(())
}

/// The reverse move: from the destination back to the source.
pub fn reverse_options(opts: &Options, publication: &str, slot: &str) -> Options {
    Options {
        from_database: opts.to_database.clone(),
        from_user: opts.to_user.clone(),
        to_database: opts.from_database.clone(),
        to_user: opts.from_user.clone(),
        publication: publication.to_string(),
        slot: Some(slot.to_string()),
        mode: Mode::ReplicateOnly,
        schema_sync: false,
    }
}

/// Run `request.action` on the move `opts` names. `task` shows each step
/// and ends done or failed.
pub async fn run(
    config: Arc<Config>,
    opts: &Options,
    request: &Request,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Done> {
    *task.slot.lock().unwrap_or_else(|e| e.into_inner()) = opts.slot_name();
    let result = match request.action {
        Action::Cutover => cutover(config, opts, request, task, shutdown).await,
        Action::Rollback => rollback(config, opts, request, task, shutdown).await,
        Action::Complete => complete(config, opts, task, shutdown).await,
    };
    task.end(result.as_ref().map(|_| false));
    result
}

/// Step `n` of 7, in SHOW TASKS and the log.
fn step(task: &Task, n: u32, what: &str) {
    let s = format!("{n}/7 {what}");
    info!("cutover step {s}");
    task.set_step(s);
}

/// A stream of `slot` the command runs itself when no `data-sync` does,
/// and stops when dropped.
struct OwnStream {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl OwnStream {
    /// Stream `plan` unless some process streams its slot already.
    async fn ensure(
        endpoints: &Endpoints,
        findings: &preflight::Findings,
        plan: &Plan,
        task: &Arc<Task>,
    ) -> Result<OwnStream> {
        let active = active_pids(endpoints, &plan.slot).await?;
        let stop = CancellationToken::new();
        if active.iter().any(Option::is_some) {
            info!(slot = %plan.slot, "a data-sync streams this move: the cutover holds it through the barrier");
            return Ok(OwnStream { stop, handle: None });
        }
        info!(slot = %plan.slot, "no data-sync streams this move: the cutover streams it itself");
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
            handle: Some(tokio::spawn(super::stream::run(ctx))),
        })
    }

    /// The stream's error, if it ended by itself with one.
    fn failed(&mut self) -> Option<DataSyncError> {
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
async fn active_pids(endpoints: &Endpoints, slot: &str) -> Result<Vec<Option<i32>>> {
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
    let started = Instant::now();
    loop {
        let active = active_pids(endpoints, slot).await?;
        if active.iter().all(Option::is_none) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let busy: Vec<String> = active
                .iter()
                .enumerate()
                .filter_map(|(s, p)| p.map(|p| format!("source shard {s} (pid {p})")))
                .collect();
            return Err(DataSyncError::State(format!(
                "the stream of slot \"{slot}\" was told to end but still runs on {} after {} s",
                busy.join(", "),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On every source shard: a logical message, whose LSN is past every
/// transaction committed before it; a stream that reaches it has applied
/// them all.
async fn mark_lsns(endpoints: &Endpoints, what: &str) -> Result<Vec<Lsn>> {
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

/// Hold the move of `slot` with every transaction committed before
/// `targets` applied, by `deadline`. The hold is withdrawn on error.
async fn hold_at(
    endpoints: &Endpoints,
    slot: &str,
    id: &str,
    targets: &[Lsn],
    deadline: Instant,
    own: &mut OwnStream,
    shutdown: &CancellationToken,
) -> Result<Hold> {
    let mut hold = Hold::begin(endpoints, slot, id).await?;
    let result = async {
        let left = || deadline.saturating_duration_since(Instant::now());
        let what = format!("cutover: pausing the move of slot \"{slot}\"");
        wait_or_stream_fails(&mut hold, "paused", left(), &what, own, shutdown).await?;
        hold.hold_at(targets).await?;
        let what = format!(
            "cutover: draining the move of slot \"{slot}\" up to {}",
            lsn_list(targets)
        );
        wait_or_stream_fails(&mut hold, "held", left(), &what, own, shutdown).await
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
async fn wait_or_stream_fails(
    hold: &mut Hold,
    state: &str,
    timeout: Duration,
    what: &str,
    own: &mut OwnStream,
    shutdown: &CancellationToken,
) -> Result<Vec<Lsn>> {
    let step = Duration::from_millis(500);
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match hold.wait(state, left.min(step), what, shutdown).await {
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

fn lsn_list(lsns: &[Lsn]) -> String {
    lsns.iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// End the stream of `endpoints`' slot for good: mark it stopped on
/// destination shard 0 (`reason`), hold it where it is (draining to
/// `targets` when given), and tell every session to end.
#[allow(clippy::too_many_arguments)]
async fn end_stream(
    endpoints: &Endpoints,
    slot: &str,
    id: &str,
    reason: &str,
    drain: bool,
    timeout: Duration,
    own: OwnStream,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut conn = endpoints.connect_dest(0).await?;
    state::ensure_schema(&mut conn).await?;
    state::set_stream_stopped(&mut conn, slot, Some(reason)).await?;
    conn.close().await;
    let mut own = own;
    if own.handle.is_none()
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
        hold_at(endpoints, slot, id, &targets, deadline, &mut own, shutdown).await?
    } else {
        let mut hold = Hold::begin(endpoints, slot, id).await?;
        let what = format!("pausing the stream of slot \"{slot}\" to end it");
        if let Err(e) =
            wait_or_stream_fails(&mut hold, "paused", timeout, &what, &mut own, shutdown).await
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

/// The forward move's endpoints and plan (with the destination's tables).
async fn forward_plan(
    config: &Arc<Config>,
    opts: &Options,
    command: &'static str,
) -> Result<(Endpoints, preflight::Findings)> {
    let endpoints = Endpoints::of_move(config.clone(), opts)?;
    let mut findings = preflight::run(
        &endpoints,
        &opts.publication,
        &opts.slot_name(),
        preflight::Intent::Inspect {
            command,
            temporary_slot: false,
        },
    )
    .await?;
    preflight::refresh_dest_tables(&endpoints, &mut findings.plan).await?;
    Ok((endpoints, findings))
}

async fn cutover(
    config: Arc<Config>,
    opts: &Options,
    request: &Request,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Done> {
    let slot = opts.slot_name();
    task.set_phase(Phase::Preflight);
    let (endpoints, findings) = forward_plan(&config, opts, "pgdog cutover").await?;
    let plan = &findings.plan;
    let mut dest0 = endpoints.connect_dest(0).await?;
    state::ensure_schema(&mut dest0).await?;
    let earlier = read_record(&mut dest0, &slot).await?;
    let reverse_slot = super::default_slot_name(&request.reverse_publication, &opts.from_database);
    let mut record = Record {
        state: String::new(),
        roles: request.freeze_roles.clone(),
        reverse_publication: request.reverse_publication.clone(),
        reverse_slot: reverse_slot.clone(),
    };
    match earlier.as_ref().map(|r| r.state.as_str()) {
        Some("switching") | Some("cut_over") => {
            let earlier = earlier.clone().unwrap_or(record.clone());
            info!(
                slot,
                "an earlier cutover of this move got as far as the switch: finishing it"
            );
            dest0.close().await;
            return switch(&config, opts, &endpoints, plan, &earlier, task, shutdown).await;
        }
        Some("rolling_back") => {
            return Err(DataSyncError::preflight(
                format!("a rollback of the cutover of slot \"{slot}\" did not finish"),
                "run pgdog cutover --rollback again to finish it",
            ))
        }
        Some("completing") => {
            return Err(DataSyncError::preflight(
                format!("the cutover of slot \"{slot}\" is being completed"),
                "run pgdog cutover --complete again to finish it",
            ))
        }
        Some(state) => {
            info!(slot, state, "an earlier cutover of this move stopped before the switch: starting again from the first step");
            if record.roles.is_empty() {
                record.roles = earlier
                    .as_ref()
                    .map(|r| r.roles.clone())
                    .unwrap_or_default();
            }
        }
        None => {}
    }
    if record.roles.is_empty() {
        return Err(DataSyncError::preflight(
            "pgdog cutover needs the application's roles, whose writes it freezes on the source",
            "pass --freeze-role ROLE for every login role the application writes with",
        ));
    }
    precheck(&endpoints, plan, &record).await?;

    task.set_phase(Phase::CuttingOver);
    let mut own = OwnStream::ensure(&endpoints, &findings, plan, task).await?;

    step(
        task,
        1,
        &format!(
            "waiting for the lag to be at most {} bytes",
            request.max_lag
        ),
    );
    wait_lag(&endpoints, &slot, request.max_lag, &mut own, task, shutdown).await?;

    // From here on a failure unfreezes the source.
    record.state = "freezing".into();
    write_record(&mut dest0, &slot, &record, None).await?;
    let id = format!("cutover pid {} task {}", std::process::id(), task.id);
    let result = freeze_drain_verify(
        &config, opts, request, &endpoints, plan, &record, &id, &mut dest0, &mut own, task,
        shutdown,
    )
    .await;
    if let Err(e) = result {
        warn!("cutover failed, unfreezing the source: {e}");
        let undo = async {
            for s in 0..endpoints.source.shards.len() {
                let mut conn = endpoints.connect_source(s, false).await?;
                let thawed = freeze::unfreeze(&mut conn).await?;
                conn.close().await;
                info!(
                    source_shard = s,
                    relations = thawed.len(),
                    "source shard writable again"
                );
            }
            dest0
                .query_text(
                    "DELETE FROM pgdog.cutover_freezes WHERE slot_name = $1 AND cluster = 'source'",
                    &[&slot],
                )
                .await?;
            record.state = "aborted".into();
            write_record(&mut dest0, &slot, &record, Some(&e.to_string())).await
        }
        .await;
        dest0.close().await;
        if let Err(u) = undo {
            return Err(DataSyncError::State(format!(
                "{e}; and unfreezing the source failed too: {u} (rerun pgdog cutover, or drop the triggers named {} on the source by hand)",
                freeze::TRIGGER
            )));
        }
        let streaming = if own.handle.is_some() {
            "the slot keeps every change; rerun pgdog data-sync to stream it"
        } else {
            "the move keeps streaming"
        };
        return Err(DataSyncError::State(format!(
            "cutover aborted, the source takes writes again and {streaming}: {e}"
        )));
    }

    // Step 6: no way back to a failure that unfreezes.
    record.state = "switching".into();
    write_record(&mut dest0, &slot, &record, None).await?;
    dest0.close().await;
    step(task, 6, "ending the forward stream");
    end_stream(
        &endpoints,
        &slot,
        &id,
        &format!("cut over to {} by pgdog cutover", opts.to_database),
        true,
        STOP_TIMEOUT,
        own,
        shutdown,
    )
    .await?;
    switch(&config, opts, &endpoints, plan, &record, task, shutdown).await
}

/// Before anything changes: the roles exist on both sides and may do on
/// the destination what they do on the source, and the destination shards
/// can serve logical replication.
async fn precheck(endpoints: &Endpoints, plan: &Plan, record: &Record) -> Result<()> {
    let mut problems = Vec::new();
    let tables: Vec<TableName> = plan.tables.iter().map(|t| t.table.name.clone()).collect();
    let mut on_source = std::collections::BTreeSet::new();
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        let missing = freeze::missing_roles(&mut conn, &record.roles).await?;
        on_source.extend(privileges::of(&mut conn, &record.roles, &tables).await?);
        conn.close().await;
        if !missing.is_empty() {
            problems.push(super::error::Problem {
                problem: format!(
                    "--freeze-role {}: no such role on source shard {s}",
                    missing.join(", ")
                ),
                fix: "name the login roles the application uses on the source".into(),
            });
        }
    }
    for d in 0..plan.dest_shards() {
        let mut conn = endpoints.connect_dest(d).await?;
        let what = format!("destination shard {d} ({})", endpoints.dest(d).addr());
        let missing = freeze::missing_roles(&mut conn, &record.roles).await?;
        if missing.is_empty() {
            let here = privileges::of(&mut conn, &record.roles, &tables).await?;
            problems.extend(privileges::problem(&on_source, &here, &what));
        } else {
            problems.push(super::error::Problem {
                problem: format!(
                    "--freeze-role {}: no such role on {what}, where the application logs in after the switch",
                    missing.join(", ")
                ),
                fix: "create the application's roles on every destination shard (roles belong to a server, not to the schema a move creates; pg_dumpall --roles-only on the source lists them)".into(),
            });
        }
        let rows = conn
            .query(
                "SELECT current_setting('wal_level'),
                        current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)",
            )
            .await?;
        conn.close().await;
        let r = rows.first();
        if r.and_then(|r| r.text(0)) != Some("logical") {
            problems.push(super::error::Problem {
                problem: format!(
                    "destination shard {d} has wal_level = {}: the cutover streams its changes back to the source, which needs logical",
                    r.and_then(|r| r.text(0)).unwrap_or("?")
                ),
                fix: "set wal_level = logical on every destination shard and restart it".into(),
            });
        }
        let free: i64 = r
            .and_then(|r| r.text(1))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if free < 1 {
            problems.push(super::error::Problem {
                problem: format!(
                    "destination shard {d} has no free replication slot for the reverse stream"
                ),
                fix: "raise max_replication_slots there (restart needed), or drop an unused slot"
                    .into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DataSyncError::Preflight { problems })
    }
}

/// Step 1: until every source shard's slot is within `max_lag` bytes of
/// its WAL insert position.
async fn wait_lag(
    endpoints: &Endpoints,
    slot: &str,
    max_lag: u64,
    own: &mut OwnStream,
    task: &Task,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut conns = Vec::new();
    for s in 0..endpoints.source.shards.len() {
        conns.push(endpoints.connect_source(s, false).await?);
    }
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let mut worst = 0u64;
        for c in conns.iter_mut() {
            let rows = c
                .query_text(
                    "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                    &[slot],
                )
                .await?;
            let lag: u64 = rows
                .first()
                .and_then(|r| r.text(0))
                .and_then(|t| t.parse().ok())
                .unwrap_or(u64::MAX);
            worst = worst.max(lag);
        }
        if worst <= max_lag {
            info!(lag_bytes = worst, "the move is within --max-lag");
            break;
        }
        if let Some(e) = own.failed() {
            return Err(e);
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            info!(
                lag_bytes = worst,
                waited_s = started.elapsed().as_secs(),
                "waiting for the move to catch up before freezing"
            );
            last_log = Instant::now();
        }
        task.set_step(format!(
            "1/7 waiting for the lag ({worst} bytes) to be at most {max_lag}"
        ));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.cancelled() => return Err(DataSyncError::Stopped),
        }
    }
    for c in conns {
        c.close().await;
    }
    Ok(())
}

/// Freezes `roles` on every shard that `endpoints` reads from (`cluster`
/// names it in `pgdog.cutover_freezes` and in errors). What is frozen is
/// recorded on `dest0` before it is, so an unfreeze after a crash finds it.
#[allow(clippy::too_many_arguments)]
async fn freeze_shards(
    endpoints: &Endpoints,
    plan: &Plan,
    cluster: &str,
    dest0: &mut Connection,
    slot: &str,
    roles: &[String],
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<()> {
    let tables: Vec<_> = plan.tables.iter().map(|t| t.table.name.clone()).collect();
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        let relations = freeze::relations(&mut conn, &tables).await?;
        for r in &relations {
            dest0
                .query_text(
                    "INSERT INTO pgdog.cutover_freezes (slot_name, cluster, shard, relation) VALUES ($1, $2, $3::int, $4)
                     ON CONFLICT DO NOTHING",
                    &[slot, cluster, &s.to_string(), r],
                )
                .await?;
        }
        let what = format!("{cluster} shard {s} ({})", endpoints.source(s).addr());
        freeze::freeze(&mut conn, &relations, roles, deadline, &what, shutdown).await?;
        conn.close().await;
    }
    Ok(())
}

/// Steps 2 to 5; any error leaves it to the caller to unfreeze.
#[allow(clippy::too_many_arguments)]
async fn freeze_drain_verify(
    config: &Arc<Config>,
    opts: &Options,
    request: &Request,
    endpoints: &Endpoints,
    plan: &Plan,
    record: &Record,
    id: &str,
    dest0: &mut Connection,
    own: &mut OwnStream,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let slot = &plan.slot;
    let mut record = record.clone();
    let deadline = Instant::now() + request.timeout;
    step(
        task,
        2,
        &format!("freezing the source for {}", record.roles.join(", ")),
    );
    freeze_shards(
        endpoints,
        plan,
        "source",
        dest0,
        slot,
        &record.roles,
        deadline,
        shutdown,
    )
    .await?;
    let frozen = mark_lsns(endpoints, "pgdog cutover: frozen").await?;
    record.state = "frozen".into();
    write_record(dest0, slot, &record, None).await?;
    dest0
        .query_text(
            "UPDATE pgdog.cutovers SET frozen_lsns = $2::text[] WHERE slot_name = $1",
            &[
                slot,
                &catalog::text_array(frozen.iter().map(|l| l.to_string())),
            ],
        )
        .await?;
    fail_point("frozen");

    step(task, 3, &format!("draining up to {}", lsn_list(&frozen)));
    let started = Instant::now();
    let hold = hold_at(endpoints, slot, id, &frozen, deadline, own, shutdown).await?;
    hold.release().await?;
    info!(
        drain_ms = started.elapsed().as_millis() as u64,
        "drained: every write committed before the freeze is on the destination"
    );
    record.state = "drained".into();
    write_record(dest0, slot, &record, None).await?;
    fail_point("drained");

    step(task, 4, "setting the sequences");
    let plans = sequences::plan(
        endpoints,
        plan,
        request.margin,
        sequences::IncrementFrom::Source,
    )
    .await?;
    sequences::apply(endpoints, &plans).await?;
    info!(
        sequences = plans.len(),
        "sequences set on every destination shard"
    );
    record.state = "sequences".into();
    write_record(dest0, slot, &record, None).await?;
    fail_point("sequences");

    if request.skip_verify {
        step(task, 5, "verify skipped (--skip-verify)");
    } else {
        step(task, 5, "verifying");
        let report = verify::run_in(
            config.clone(),
            opts,
            &verify::Request::default(),
            task,
            shutdown,
        )
        .await?;
        task.set_phase(Phase::CuttingOver);
        for line in verify::render(&report).lines() {
            info!("verify: {line}");
        }
        if !report.equal() {
            let differ: Vec<String> = report
                .tables
                .iter()
                .filter(|t| !t.equal())
                .map(|t| t.table.to_string())
                .collect();
            return Err(DataSyncError::State(format!(
                "verify found differences in {} (pgdog verify --detail names the rows)",
                differ.join(", ")
            )));
        }
        record.state = "verified".into();
        write_record(dest0, slot, &record, None).await?;
    }
    fail_point("verified");
    Ok(())
}

/// Steps 6 (after the forward stream ended) and 7: the reverse stream's
/// publication and slots, the destination writable, the swapped config.
async fn switch(
    config: &Arc<Config>,
    opts: &Options,
    endpoints: &Endpoints,
    plan: &Plan,
    record: &Record,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Done> {
    task.set_phase(Phase::CuttingOver);
    let slot = opts.slot_name();
    // A rerun that finds the forward stream still running ends it first.
    if active_pids(endpoints, &slot)
        .await?
        .iter()
        .any(Option::is_some)
    {
        let id = format!("cutover pid {} task {}", std::process::id(), task.id);
        let own = OwnStream {
            stop: CancellationToken::new(),
            handle: None,
        };
        end_stream(
            endpoints,
            &slot,
            &id,
            &format!("cut over to {} by pgdog cutover", opts.to_database),
            true,
            STOP_TIMEOUT,
            own,
            shutdown,
        )
        .await?;
    }
    fail_point("switching");
    // Nothing streams the source any more and nothing streams back yet:
    // what the forward slot still holds was written by a role that was
    // not frozen, and is not on the destination.
    let late = match reverse::late_changes(endpoints, &slot, &opts.publication).await {
        Ok(late) => late,
        Err(e) => {
            warn!("could not check the source for writes after the forward stream ended: {e}");
            Default::default()
        }
    };
    let late_note = (!late.tables.is_empty()).then(|| {
        let tables: Vec<String> = late
            .tables
            .iter()
            .map(|(t, n)| format!("{t} ({n})"))
            .collect();
        format!(
            "{}{} changes were committed on {from} after the forward stream ended, by roles that were not frozen (a superuser, a job); {to} does not have them: {}. Look at them on {from} (SELECT * FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, 'proto_version', '1', 'publication_names', '{publication}') shows them, in pgoutput's format, until the slot moves on) and apply them by hand, or roll back.",
            if late.more { "at least " } else { "" },
            late.tables.values().sum::<u64>(),
            tables.join(", "),
            from = opts.from_database,
            to = opts.to_database,
            publication = catalog::quote_ident(&opts.publication),
        )
    });
    if let Some(note) = &late_note {
        warn!("{note}");
    }
    step(task, 6, "creating the reverse stream");
    let rev = reverse_options(opts, &record.reverse_publication, &record.reverse_slot);
    let rev_endpoints = Endpoints::of_move(config.clone(), &rev)?;
    reverse::prepare(
        endpoints,
        &rev_endpoints,
        plan,
        &record.reverse_publication,
        &record.reverse_slot,
        task,
    )
    .await?;
    fail_point("reversed");

    step(task, 7, "writing the swapped configuration");
    let written = reverse::write_swapped_config(config, &opts.from_database, &opts.to_database)?;
    let mut dest0 = endpoints.connect_dest(0).await?;
    let mut record = record.clone();
    record.state = "cut_over".into();
    write_record(&mut dest0, &slot, &record, None).await?;
    dest0.close().await;
    task.set_step("cut over; the stream back is a task of its own");
    let mut summary = format!(
        "cut over: every write committed on the source before the freeze is on {to}, its sequences are set, and the source is frozen for {roles}.\n\
         The application now writes to {to}: ",
        to = opts.to_database,
        roles = record.roles.join(", "),
    );
    let hosts: Vec<String> = (0..plan.dest_shards())
        .map(|d| format!("shard {d} at {}", endpoints.dest(d).addr()))
        .collect();
    summary.push_str(&hosts.join(", "));
    summary.push('\n');
    match written {
        Some((pgdog, users)) => summary.push_str(&format!(
            "{} and {} have the two clusters exchanged: start the proxy with them and the application's database name \"{}\" reaches the new cluster.\n",
            pgdog.display(),
            users.display(),
            opts.from_database
        )),
        None => summary.push_str("(no configuration file on disk to write a swapped copy of)\n"),
    }
    if let Some(note) = &late_note {
        summary.push_str(&format!("WARNING: {note}\n"));
    }
    summary.push_str(&format!(
        "Changes on {to} stream back to {from} (slot \"{rs}\" on every shard of {to}, publication \"{rp}\"), so pgdog cutover --rollback loses nothing; pgdog cutover --complete drops them when you are done.",
        to = opts.to_database,
        from = opts.from_database,
        rs = record.reverse_slot,
        rp = record.reverse_publication
    ));
    Ok(Done::CutOver {
        reverse: rev,
        summary,
    })
}

/// The record of a finished cutover, or an error saying what to run.
async fn cut_over_record(endpoints: &Endpoints, slot: &str, allowed: &[&str]) -> Result<Record> {
    let mut conn = endpoints.connect_dest(0).await?;
    state::ensure_schema(&mut conn).await?;
    let record = read_record(&mut conn, slot).await?;
    conn.close().await;
    match record {
        Some(r) if allowed.contains(&r.state.as_str()) => Ok(r),
        Some(r) => Err(DataSyncError::preflight(
            format!("the cutover of slot \"{slot}\" is at \"{}\", not cut over", r.state),
            "run pgdog cutover (the same command without --rollback or --complete) to finish it first",
        )),
        None => Err(DataSyncError::preflight(
            format!("no cutover of the move of slot \"{slot}\" is recorded on destination shard 0"),
            "run pgdog cutover first",
        )),
    }
}

/// What `--rollback` and `--complete` start from: the finished cutover's
/// record, now marked `state` (`rolling_back` or `completing`) so that a
/// rerun after a crash takes the same way.
struct Finishing {
    slot: String,
    endpoints: Endpoints,
    rev_endpoints: Endpoints,
    record: Record,
    dest0: Connection,
}

impl Finishing {
    async fn start(
        config: &Arc<Config>,
        opts: &Options,
        task: &Arc<Task>,
        state: &str,
    ) -> Result<Finishing> {
        let slot = opts.slot_name();
        task.set_phase(Phase::Preflight);
        let endpoints = Endpoints::of_move(config.clone(), opts)?;
        let mut record = cut_over_record(&endpoints, &slot, &["cut_over", state]).await?;
        let rev = reverse_options(opts, &record.reverse_publication, &record.reverse_slot);
        let rev_endpoints = Endpoints::of_move(config.clone(), &rev)?;
        let mut dest0 = endpoints.connect_dest(0).await?;
        record.state = state.into();
        write_record(&mut dest0, &slot, &record, None).await?;
        task.set_phase(Phase::CuttingOver);
        Ok(Finishing {
            slot,
            endpoints,
            rev_endpoints,
            record,
            dest0,
        })
    }
}

async fn rollback(
    config: Arc<Config>,
    opts: &Options,
    request: &Request,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Done> {
    let Finishing {
        slot,
        endpoints,
        rev_endpoints,
        mut record,
        mut dest0,
    } = Finishing::start(&config, opts, task, "rolling_back").await?;

    let slots_left = reverse::slots_exist(&rev_endpoints, &record.reverse_slot).await?;
    if slots_left {
        let findings = preflight::run(
            &rev_endpoints,
            &record.reverse_publication,
            &record.reverse_slot,
            preflight::Intent::Inspect {
                command: "pgdog cutover --rollback",
                temporary_slot: false,
            },
        )
        .await?;
        let mut rev_plan = findings.plan.clone();
        preflight::refresh_dest_tables(&rev_endpoints, &mut rev_plan).await?;
        let deadline = Instant::now() + request.timeout;

        step(
            task,
            1,
            &format!(
                "freezing {} for {}",
                opts.to_database,
                record.roles.join(", ")
            ),
        );
        freeze_shards(
            &rev_endpoints,
            &rev_plan,
            "destination",
            &mut dest0,
            &slot,
            &record.roles,
            deadline,
            shutdown,
        )
        .await?;
        fail_point("rollback-frozen");

        step(task, 2, "draining the reverse stream");
        let own = OwnStream::ensure(&rev_endpoints, &findings, &rev_plan, task).await?;
        let id = format!(
            "cutover rollback pid {} task {}",
            std::process::id(),
            task.id
        );
        end_stream(
            &rev_endpoints,
            &record.reverse_slot,
            &id,
            "rolled back by pgdog cutover --rollback",
            true,
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
            own,
            shutdown,
        )
        .await?;
        fail_point("rollback-drained");

        step(
            task,
            3,
            &format!("setting the sequences of {}", opts.from_database),
        );
        let plans = sequences::plan(
            &rev_endpoints,
            &rev_plan,
            request.margin,
            sequences::IncrementFrom::Dest,
        )
        .await?;
        sequences::apply(&rev_endpoints, &plans).await?;

        step(
            task,
            4,
            "moving the forward slot past the changes streamed back",
        );
        reverse::advance_forward(&endpoints, &slot).await?;
        fail_point("rollback-advanced");
    }

    step(task, 5, "letting the forward move stream again");
    state::set_stream_stopped(&mut dest0, &slot, None).await?;
    step(
        task,
        6,
        "dropping the reverse stream's slots and publications",
    );
    reverse::drop_reverse(
        &rev_endpoints,
        &record.reverse_publication,
        &record.reverse_slot,
    )
    .await?;
    step(task, 7, &format!("unfreezing {}", opts.from_database));
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        freeze::unfreeze(&mut conn).await?;
        conn.close().await;
    }
    dest0
        .query_text(
            "DELETE FROM pgdog.cutover_freezes WHERE slot_name = $1 AND cluster = 'source'",
            &[&slot],
        )
        .await?;
    record.state = "rolled_back".into();
    write_record(&mut dest0, &slot, &record, None).await?;
    dest0.close().await;
    task.set_step("rolled back");
    Ok(Done::RolledBack {
        summary: format!(
            "rolled back: {from} takes the application's writes again, with everything written on {to} since the cutover and its sequences set above it. \
             {to} stays frozen for {roles}. Resume the move with pgdog data-sync --replicate-only (slot \"{slot}\"): it streams from now on.",
            from = opts.from_database,
            to = opts.to_database,
            roles = record.roles.join(", ")
        ),
    })
}

async fn complete(
    config: Arc<Config>,
    opts: &Options,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Done> {
    let Finishing {
        slot,
        endpoints,
        rev_endpoints,
        record,
        dest0,
    } = Finishing::start(&config, opts, task, "completing").await?;
    dest0.close().await;
    task.set_step("ending the reverse stream");
    if reverse::slots_exist(&rev_endpoints, &record.reverse_slot).await? {
        let id = format!(
            "cutover complete pid {} task {}",
            std::process::id(),
            task.id
        );
        let own = OwnStream {
            stop: CancellationToken::new(),
            handle: None,
        };
        end_stream(
            &rev_endpoints,
            &record.reverse_slot,
            &id,
            "completed by pgdog cutover --complete",
            false,
            STOP_TIMEOUT,
            own,
            shutdown,
        )
        .await?;
    }
    task.set_step("dropping the reverse slots and publications");
    reverse::drop_reverse(
        &rev_endpoints,
        &record.reverse_publication,
        &record.reverse_slot,
    )
    .await?;
    task.set_step("dropping the forward slot");
    super::cleanup(&endpoints, &slot).await?;
    task.set_step("complete");
    Ok(Done::Completed {
        summary: format!(
            "complete: the reverse stream's slots and publication \"{}\" are gone from {to}, and the move's slot \"{slot}\" from {from}. \
             {from} stays frozen for {roles} (triggers named {trigger}); drop them or the cluster when you are done with it.",
            record.reverse_publication,
            to = opts.to_database,
            from = opts.from_database,
            roles = record.roles.join(", "),
            trigger = freeze::TRIGGER
        ),
    })
}

/// Crash tests: `PGDOG_CUTOVER_CRASH_AT=<step>` ends the process at once
/// (no cleanup runs, as with SIGKILL) right after `step`.
fn fail_point(at: &str) {
    if std::env::var("PGDOG_CUTOVER_CRASH_AT").is_ok_and(|v| v == at) {
        eprintln!("PGDOG_CUTOVER_CRASH_AT={at}: ending the process here");
        std::process::abort();
    }
}

/// Stream the destination's changes back after a cutover (`reverse`,
/// from [`Done::CutOver`]) until `shutdown` or until a rollback or
/// `--complete` ends the stream; meanwhile keep the forward slot from
/// holding WAL on the source for changes no stream will read.
pub async fn stream_back(
    config: Arc<Config>,
    forward: &Options,
    reverse: Options,
    task: Arc<Task>,
    shutdown: CancellationToken,
) -> Result<super::Outcome> {
    let endpoints = Endpoints::of_move(config.clone(), forward)?;
    let slot = forward.slot_name();
    let stop = shutdown.child_token();
    let advancer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                if let Err(e) = reverse::advance_forward(&endpoints, &slot).await {
                    warn!("moving the forward slot on: {e}");
                }
            }
        })
    };
    let result = super::run(config, reverse, task, shutdown).await;
    stop.cancel();
    let _ = advancer.await;
    result
}
