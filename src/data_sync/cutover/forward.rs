//! `pgdog cutover`: from wherever an earlier run stopped, through the
//! seven steps, to the switch. A failure before step 6 unfreezes the
//! source and lets the move stream on.

use std::time::Instant;

use tracing::{info, warn};

use crate::net::Connection;

use super::super::endpoints::Endpoints;
use super::super::error::{DataSyncError, Result};
use super::super::lifecycle::Action;
use super::super::lifecycle::{Rerun, Stage};
use super::super::options::default_slot_name;
use super::super::plan::Plan;
use super::super::progress::Phase;
use super::super::state::CutoverRecord;
use super::cut::{earlier, enter, forward_plan, Cut};
use super::request::{Done, Request};
use super::stream::{OwnStream, STOP_TIMEOUT};
use super::{drain, freeze, freezing, lag, precheck, set_sequences, switch, verifying};

pub(super) async fn cutover(cut: &Cut<'_>, request: &Request) -> Result<Done> {
    let findings = forward_plan(cut, "pgdog cutover").await?;
    let plan = &findings.plan;
    let mut dest0 = cut.endpoints.connect_dest(0).await?;
    let (earlier, rerun) = earlier(&mut dest0, Action::Cutover, &cut.slot).await?;
    let mut record = CutoverRecord {
        stage: Stage::Freezing,
        roles: request.freeze_roles.clone(),
        reverse_publication: request.reverse_publication.clone(),
        reverse_slot: default_slot_name(&request.reverse_publication, &cut.opts.from_database),
    };
    match (rerun, earlier) {
        (Rerun::FinishSwitch, Some(earlier)) => {
            info!(
                slot = cut.slot,
                stage = %earlier.stage,
                "an earlier cutover of this move got as far as the switch: finishing it"
            );
            dest0.close().await;
            return switch::switch(cut, plan, earlier).await;
        }
        (Rerun::FromStart, Some(earlier)) => {
            info!(slot = cut.slot, stage = %earlier.stage, "an earlier cutover of this move stopped before the switch: starting again from the first step");
            if record.roles.is_empty() {
                record.roles = earlier.roles;
            }
        }
        (Rerun::FromStart, None) => {}
        (other, earlier) => {
            return Err(DataSyncError::State(format!(
                "pgdog cutover cannot go on from {:?} ({other:?}): a defect in pgdog, report it",
                earlier.map(|e| e.stage)
            )))
        }
    }
    if record.roles.is_empty() {
        return Err(DataSyncError::preflight(
            "pgdog cutover needs the application's roles, whose writes it freezes on the source",
            "pass --freeze-role ROLE for every login role the application writes with",
        ));
    }
    precheck::check(&cut.endpoints, plan, &record.roles).await?;

    cut.task.set_phase(Phase::CuttingOver);
    let mut own = OwnStream::ensure(&cut.endpoints, &findings, plan, cut.task).await?;
    lag::wait(cut, request.max_lag, &mut own).await?;

    // From here on a failure unfreezes the source.
    enter(&mut dest0, &cut.slot, &mut record, Stage::Freezing, None).await?;
    let result = freeze_drain_verify(cut, request, plan, &mut record, &mut dest0, &mut own).await;
    if let Err(e) = result {
        return Err(abort(cut, &mut record, dest0, own.runs(), e).await);
    }

    // Step 6: no way back to a failure that unfreezes.
    enter(&mut dest0, &cut.slot, &mut record, Stage::Reversing, None).await?;
    dest0.close().await;
    cut.step(6, "ending the forward stream");
    cut.holder("cutover", &cut.endpoints, &cut.slot)
        .end_stream(
            &format!("cut over to {} by pgdog cutover", cut.opts.to_database),
            true,
            STOP_TIMEOUT,
            own,
        )
        .await?;
    switch::switch(cut, plan, record).await
}

/// Steps 2 to 5; any error leaves it to the caller to unfreeze.
async fn freeze_drain_verify(
    cut: &Cut<'_>,
    request: &Request,
    plan: &Plan,
    record: &mut CutoverRecord,
    dest0: &mut Connection,
    own: &mut OwnStream,
) -> Result<()> {
    let deadline = Instant::now() + request.timeout;
    let frozen = freezing::source(cut, plan, record, dest0, deadline).await?;
    drain::run(cut, &frozen, record, dest0, deadline, own).await?;
    set_sequences::run(cut, plan, request.margin, record, dest0).await?;
    verifying::run(cut, request.skip_verify, record, dest0).await
}

/// After `e` before the switch: the source writable again, the record at
/// [`Stage::Aborted`] with the error; the error to report.
async fn abort(
    cut: &Cut<'_>,
    record: &mut CutoverRecord,
    mut dest0: Connection,
    own_stream: bool,
    e: DataSyncError,
) -> DataSyncError {
    warn!("cutover failed, unfreezing the source: {e}");
    let undo = async {
        unfreeze_source(&cut.endpoints, &mut dest0, &cut.slot).await?;
        enter(
            &mut dest0,
            &cut.slot,
            record,
            Stage::Aborted,
            Some(&e.to_string()),
        )
        .await
    }
    .await;
    dest0.close().await;
    if let Err(u) = undo {
        return DataSyncError::State(format!(
            "{e}; and unfreezing the source failed too: {u} (rerun pgdog cutover, or drop the triggers named {} on the source by hand)",
            freeze::TRIGGER
        ));
    }
    let streaming = if own_stream {
        "the slot keeps every change; rerun pgdog data-sync to stream it"
    } else {
        "the move keeps streaming"
    };
    DataSyncError::State(format!(
        "cutover aborted, the source takes writes again and {streaming}: {e}"
    ))
}

/// Drop the freeze on every source shard and its record on `dest0`.
pub(super) async fn unfreeze_source(
    endpoints: &Endpoints,
    dest0: &mut Connection,
    slot: &str,
) -> Result<()> {
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
            &[slot],
        )
        .await?;
    Ok(())
}
