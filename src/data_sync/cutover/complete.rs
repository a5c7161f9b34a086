//! `pgdog cutover --complete`: the operator is done with the source. The
//! reverse stream ends, its slots and publications go, and so does the
//! forward slot with the move's state.

use super::super::error::Result;
use super::super::lifecycle::{Action, Stage};
use super::cut::Cut;
use super::request::Done;
use super::rollback::Finishing;
use super::stream::{OwnStream, STOP_TIMEOUT};
use super::{freeze, reverse};

pub(super) async fn complete(cut: &Cut<'_>) -> Result<Done> {
    let Finishing {
        rev_endpoints,
        record,
        dest0,
    } = Finishing::start(cut, Action::Complete, Stage::Completing).await?;
    dest0.close().await;
    let opts = cut.opts;
    cut.task.set_step("ending the reverse stream");
    if reverse::slots_exist(&rev_endpoints, &record.reverse_slot).await? {
        cut.holder("cutover complete", &rev_endpoints, &record.reverse_slot)
            .end_stream(
                "completed by pgdog cutover --complete",
                false,
                STOP_TIMEOUT,
                OwnStream::none(),
            )
            .await?;
    }
    cut.task
        .set_step("dropping the reverse slots and publications");
    reverse::drop_reverse(
        &rev_endpoints,
        &record.reverse_publication,
        &record.reverse_slot,
    )
    .await?;
    cut.task.set_step("dropping the forward slot");
    crate::data_sync::engine::cleanup(&cut.endpoints, &cut.slot).await?;
    cut.task.set_step("complete");
    Ok(Done::Completed {
        summary: format!(
            "complete: the reverse stream's slots and publication \"{}\" are gone from {to}, and the move's slot \"{slot}\" from {from}. \
             {from} stays frozen for {roles} (triggers named {trigger}); drop them or the cluster when you are done with it.",
            record.reverse_publication,
            to = opts.to_database,
            from = opts.from_database,
            roles = record.roles.join(", "),
            trigger = freeze::TRIGGER,
            slot = cut.slot,
        ),
    })
}
