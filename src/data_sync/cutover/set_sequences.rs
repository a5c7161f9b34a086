//! Step 4: set the destination's sequences above what the source handed
//! out ([`crate::data_sync::sequences`]).

use tracing::info;

use crate::net::Connection;

use super::super::error::Result;
use super::super::lifecycle::Stage;
use super::super::plan::Plan;
use super::super::sequences;
use super::super::state::CutoverRecord;
use super::cut::{enter, fail_point, Cut};

/// Leaves the record at [`Stage::Verifying`].
pub(super) async fn run(
    cut: &Cut<'_>,
    plan: &Plan,
    margin: i64,
    record: &mut CutoverRecord,
    dest0: &mut Connection,
) -> Result<()> {
    cut.step(4, "setting the sequences");
    let plans = sequences::plan(
        &cut.endpoints,
        plan,
        margin,
        sequences::IncrementFrom::Source,
    )
    .await?;
    sequences::apply(&cut.endpoints, &plans).await?;
    info!(
        sequences = plans.len(),
        "sequences set on every destination shard"
    );
    enter(dest0, &cut.slot, record, Stage::Verifying, None).await?;
    fail_point("sequences");
    Ok(())
}
