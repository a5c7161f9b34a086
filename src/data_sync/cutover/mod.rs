//! `pgdog cutover`: end a move by switching the application to the
//! destination without losing a write, and keep a way back.
//!
//! 1. Wait until the move's lag is at most `--max-lag` on every source
//!    shard (the move streams: a `data-sync` somewhere, else this command)
//!    ([`lag`]).
//! 2. Freeze the published tables on every source shard for the
//!    application's roles ([`freezing`], with the triggers of [`freeze`]);
//!    what is frozen is recorded on destination shard 0
//!    (`pgdog.cutover_freezes`).
//! 3. Drain: hold the move's apply at the LSN after the freeze on every
//!    source shard ([`drain`], through [`super::barrier`]): every write
//!    committed before it is on the destination.
//! 4. Set the destination's sequences ([`set_sequences`]).
//! 5. Verify at that point ([`verifying`]), unless skipped.
//! 6. End the forward stream for good, then create a publication and a
//!    permanent slot on every destination shard and stream the
//!    destination's changes back to the source with the same engine
//!    ([`switch`], [`reverse`]): the source stays frozen for the
//!    application and keeps up, so a rollback loses nothing.
//! 7. Write the configuration with the two clusters exchanged beside the
//!    old one.
//!
//! Each step records its [`Stage`] on destination shard 0
//! (`pgdog.cutovers`, through [`super::state`]) before it starts; the
//! stages and what a rerun does from each are in [`super::lifecycle`]. A
//! failure before step 6 unfreezes the source and lets the move stream on
//! ([`forward`]); a crash leaves the record, and rerunning the command
//! picks it up. `--rollback` ([`rollback`]) and `--complete` ([`complete`])
//! read the same record. [`runner`] runs a command and the stream back
//! for the CLI and the admin console alike.

mod complete;
mod drain;
mod forward;
pub mod freeze;
mod freezing;
mod lag;
mod precheck;
pub mod privileges;
pub mod reverse;
mod rollback;
pub mod runner;
mod set_sequences;
mod stream;
mod switch;
mod verifying;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::net::Connection;

use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::lifecycle::{rerun, Rerun, Stage};
use super::options::{Mode, Options};
use super::progress::Task;
use super::state::{self, CutoverRecord};
use super::{preflight, sequences};

pub use super::lifecycle::Action;
pub use runner::stream_back;

/// Default `--max-lag`: 1 MB.
pub const DEFAULT_MAX_LAG: u64 = 1 << 20;
/// Default `--timeout` for the freeze and the drain.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--reverse-publication`.
pub const DEFAULT_REVERSE_PUBLICATION: &str = "pgdog_reverse";
/// How long a stream has to let go of its slots once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

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

/// What every step of one command works with.
struct Cut<'a> {
    config: &'a Arc<Config>,
    opts: &'a Options,
    endpoints: &'a Endpoints,
    task: &'a Arc<Task>,
    shutdown: &'a CancellationToken,
    /// The forward move's slot.
    slot: String,
}

impl Cut<'_> {
    /// Who holds the move's barrier, in its record.
    fn holder(&self, what: &str) -> String {
        format!("{what} pid {} task {}", std::process::id(), self.task.id)
    }

    /// Step `n` of 7, in SHOW TASKS and the log.
    fn step(&self, n: u32, what: &str) {
        let s = format!("{n}/7 {what}");
        info!("cutover step {s}");
        self.task.set_step(s);
    }
}

/// Record `stage` for the cutover of `slot`, before the step it names.
/// Only a transition the lifecycle allows is written.
async fn enter(
    dest0: &mut Connection,
    slot: &str,
    record: &mut CutoverRecord,
    stage: Stage,
    error: Option<&str>,
) -> Result<()> {
    if !stage.may_follow(Some(record.stage)) && record.stage != stage {
        return Err(DataSyncError::State(format!(
            "the cutover of slot \"{slot}\" cannot go from \"{}\" to \"{}\" (a defect in pgdog: report it)",
            record.stage, stage
        )));
    }
    record.stage = stage;
    state::set_cutover(dest0, slot, record, error).await
}

/// The earlier run's record, and what this command does about it.
async fn earlier(
    dest0: &mut Connection,
    action: Action,
    slot: &str,
) -> Result<(Option<CutoverRecord>, Rerun)> {
    state::ensure_schema(dest0).await?;
    let record = state::cutover(dest0, slot).await?;
    let decision = rerun(action, record.as_ref().map(|r| r.stage), slot);
    if let Rerun::Refuse { problem, fix } = decision {
        return Err(DataSyncError::preflight(problem, fix));
    }
    Ok((record, decision))
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
    let result = async {
        task.set_phase(super::progress::Phase::Preflight);
        let endpoints = Endpoints::of_move(config.clone(), opts)?;
        let cut = Cut {
            config: &config,
            opts,
            endpoints: &endpoints,
            task,
            shutdown,
            slot: opts.slot_name(),
        };
        match request.action {
            Action::Cutover => forward::cutover(&cut, request).await,
            Action::Rollback => rollback::rollback(&cut, request).await,
            Action::Complete => complete::complete(&cut).await,
        }
    }
    .await;
    task.end(result.as_ref().map(|_| false));
    result
}

/// The forward move's plan (with the destination's tables).
async fn forward_plan(cut: &Cut<'_>, command: &'static str) -> Result<preflight::Findings> {
    let mut findings = preflight::run(
        cut.endpoints,
        &cut.opts.publication,
        &cut.slot,
        preflight::Intent::Inspect {
            command,
            temporary_slot: false,
        },
    )
    .await?;
    preflight::refresh_dest_tables(cut.endpoints, &mut findings.plan).await?;
    Ok(findings)
}

/// Crash tests: `PGDOG_CUTOVER_CRASH_AT=<step>` ends the process at once
/// (no cleanup runs, as with SIGKILL) right after `step`.
fn fail_point(at: &str) {
    if std::env::var("PGDOG_CUTOVER_CRASH_AT").is_ok_and(|v| v == at) {
        eprintln!("PGDOG_CUTOVER_CRASH_AT={at}: ending the process here");
        std::process::abort();
    }
}
