//! `pgdog cutover --rollback`: make the source the primary again, with
//! everything written on the destination since the switch.

use std::time::{Duration, Instant};

use crate::net::Connection;

use super::super::endpoints::Endpoints;
use super::super::error::{DataSyncError, Result};
use super::super::lifecycle::{Action, Stage};
use super::super::progress::Phase;
use super::super::state::{self, CutoverRecord};
use super::super::{preflight, sequences};
use super::cut::{earlier, enter, fail_point, reverse_options, Cut};
use super::forward::unfreeze_source;
use super::freezing::Side;
use super::request::{Done, Request};
use super::reverse;
use super::stream::OwnStream;

/// What `--rollback` and `--complete` start from: the finished cutover's
/// record, now at `stage` (rolling back or completing) so that a rerun
/// after a crash takes the same way.
pub(super) struct Finishing {
    pub rev_endpoints: Endpoints,
    pub record: CutoverRecord,
    pub dest0: Connection,
}

impl Finishing {
    pub(super) async fn start(cut: &Cut<'_>, action: Action, stage: Stage) -> Result<Finishing> {
        let mut dest0 = cut.endpoints.connect_dest(0).await?;
        let (earlier, _) = earlier(&mut dest0, action, &cut.slot).await?;
        // `earlier` refused a missing record already.
        let Some(mut record) = earlier else {
            return Err(DataSyncError::State(format!(
                "no cutover of the move of slot \"{}\" is recorded",
                cut.slot
            )));
        };
        let rev = reverse_options(cut.opts, &record.reverse_publication, &record.reverse_slot);
        let rev_endpoints = Endpoints::of_move(cut.config.clone(), &rev)?;
        enter(&mut dest0, &cut.slot, &mut record, stage, None).await?;
        cut.task.set_phase(Phase::CuttingOver);
        Ok(Finishing {
            rev_endpoints,
            record,
            dest0,
        })
    }
}

pub(super) async fn rollback(cut: &Cut<'_>, request: &Request) -> Result<Done> {
    let Finishing {
        rev_endpoints,
        mut record,
        mut dest0,
    } = Finishing::start(cut, Action::Rollback, Stage::RollingBack).await?;
    let opts = cut.opts;
    if reverse::slots_exist(&rev_endpoints, &record.reverse_slot).await? {
        stream_back_the_rest(cut, request, &rev_endpoints, &record, &mut dest0).await?;
    }
    cut.step(5, "letting the forward move stream again");
    state::set_stream_stopped(&mut dest0, &cut.slot, None).await?;
    cut.step(6, "dropping the reverse stream's slots and publications");
    reverse::drop_reverse(
        &rev_endpoints,
        &record.reverse_publication,
        &record.reverse_slot,
    )
    .await?;
    cut.step(7, &format!("unfreezing {}", opts.from_database));
    unfreeze_source(&cut.endpoints, &mut dest0, &cut.slot).await?;
    enter(&mut dest0, &cut.slot, &mut record, Stage::RolledBack, None).await?;
    dest0.close().await;
    cut.task.set_step("rolled back");
    Ok(Done::RolledBack {
        summary: format!(
            "rolled back: {from} takes the application's writes again, with everything written on {to} since the cutover and its sequences set above it. \
             {to} stays frozen for {roles}. Resume the move with pgdog data-sync --replicate-only (slot \"{slot}\"): it streams from now on.",
            from = opts.from_database,
            to = opts.to_database,
            roles = record.roles.join(", "),
            slot = cut.slot,
        ),
    })
}

/// Steps 1 to 4 of a rollback, while the reverse slots exist: freeze the
/// destination, drain the reverse stream and end it, set the source's
/// sequences above the destination's, and move the forward slot past what
/// streamed back.
async fn stream_back_the_rest(
    cut: &Cut<'_>,
    request: &Request,
    rev_endpoints: &Endpoints,
    record: &CutoverRecord,
    dest0: &mut Connection,
) -> Result<()> {
    let opts = cut.opts;
    let findings = preflight::run(
        rev_endpoints,
        &record.reverse_publication,
        &record.reverse_slot,
        preflight::Intent::Inspect {
            command: "pgdog cutover --rollback",
            temporary_slot: false,
        },
    )
    .await?;
    let mut rev_plan = findings.plan.clone();
    preflight::refresh_dest_tables(rev_endpoints, &mut rev_plan).await?;
    let deadline = Instant::now() + request.timeout;

    cut.step(
        1,
        &format!(
            "freezing {} for {}",
            opts.to_database,
            record.roles.join(", ")
        ),
    );
    Side {
        endpoints: rev_endpoints,
        plan: &rev_plan,
        cluster: "destination",
    }
    .freeze(cut, dest0, &record.roles, deadline)
    .await?;
    fail_point("rollback-frozen");

    cut.step(2, "draining the reverse stream");
    let own = OwnStream::ensure(rev_endpoints, &findings, &rev_plan, cut.task).await?;
    cut.holder("cutover rollback", rev_endpoints, &record.reverse_slot)
        .end_stream(
            "rolled back by pgdog cutover --rollback",
            true,
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
            own,
        )
        .await?;
    fail_point("rollback-drained");

    cut.step(
        3,
        &format!("setting the sequences of {}", opts.from_database),
    );
    let plans = sequences::plan(
        rev_endpoints,
        &rev_plan,
        request.margin,
        sequences::IncrementFrom::Dest,
    )
    .await?;
    sequences::apply(rev_endpoints, &plans).await?;

    cut.step(4, "moving the forward slot past the changes streamed back");
    reverse::advance_forward(&cut.endpoints, &cut.slot).await?;
    fail_point("rollback-advanced");
    Ok(())
}
