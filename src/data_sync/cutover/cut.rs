//! What every step of one cutover command shares: the move and its
//! endpoints ([`Cut`]), the record of where the cutover stands (entered
//! only along the lifecycle's transitions), and the crash tests' fail
//! points.

use tracing::info;

use crate::net::Connection;

use super::super::endpoints::Endpoints;
use super::super::error::{DataSyncError, Result};
use super::super::lifecycle::{rerun, Action, Rerun, Stage};
use super::super::options::{Mode, Options};
use super::super::preflight;
use super::super::state::{self, CutoverRecord};
use super::stream::Holder;

/// What every step of one command works with: the move, its endpoints,
/// the command's task and stop token, and the forward move's slot.
pub(super) use super::super::on_move::OnMove as Cut;

impl Cut<'_> {
    /// `what` (this command, named in the barrier's record) holding the
    /// stream of the move of `slot` that reads `endpoints`.
    pub(super) fn holder<'b>(
        &'b self,
        what: &str,
        endpoints: &'b Endpoints,
        slot: &'b str,
    ) -> Holder<'b> {
        Holder {
            endpoints,
            slot,
            id: format!("{what} pid {} task {}", std::process::id(), self.task.id),
            shutdown: self.shutdown,
        }
    }

    /// Step `n` of 7, in SHOW TASKS and the log.
    pub(super) fn step(&self, n: u32, what: &str) {
        let s = format!("{n}/7 {what}");
        info!("cutover step {s}");
        self.task.set_step(s);
    }
}

/// Record `stage` for the cutover of `slot`, before the step it names.
/// Only a transition the lifecycle allows is written.
pub(super) async fn enter(
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
pub(super) async fn earlier(
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

/// The forward move's plan (with the destination's tables).
pub(super) async fn forward_plan(
    cut: &Cut<'_>,
    command: &'static str,
) -> Result<preflight::Findings> {
    let mut findings = preflight::run(
        &cut.endpoints,
        &cut.opts.publication,
        &cut.slot,
        preflight::Intent::Inspect {
            command,
            temporary_slot: false,
        },
    )
    .await?;
    preflight::refresh_dest_tables(&cut.endpoints, &mut findings.plan).await?;
    Ok(findings)
}

/// Crash tests: `PGDOG_CUTOVER_CRASH_AT=<step>` ends the process at once
/// (no cleanup runs, as with SIGKILL) right after `step`.
pub(super) fn fail_point(at: &str) {
    if std::env::var("PGDOG_CUTOVER_CRASH_AT").is_ok_and(|v| v == at) {
        eprintln!("PGDOG_CUTOVER_CRASH_AT={at}: ending the process here");
        std::process::abort();
    }
}
