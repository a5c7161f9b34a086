//! Step 3: hold the move's apply at the LSN after the freeze on every
//! source shard, so every write committed before the freeze is on the
//! destination.

use std::time::Instant;

use pgdog_protocol::Lsn;
use tracing::info;

use crate::net::Connection;

use super::super::error::Result;
use super::super::lifecycle::Stage;
use super::super::state::CutoverRecord;
use super::cut::{enter, fail_point, Cut};
use super::stream::{lsn_list, OwnStream};

/// Leaves the record at [`Stage::Sequences`].
pub(super) async fn run(
    cut: &Cut<'_>,
    frozen: &[Lsn],
    record: &mut CutoverRecord,
    dest0: &mut Connection,
    deadline: Instant,
    own: &mut OwnStream,
) -> Result<()> {
    cut.step(3, &format!("draining up to {}", lsn_list(frozen)));
    let started = Instant::now();
    let holder = cut.holder("cutover", &cut.endpoints, &cut.slot);
    let hold = holder.hold_at(frozen, deadline, own).await?;
    hold.release().await?;
    info!(
        drain_ms = started.elapsed().as_millis() as u64,
        "drained: every write committed before the freeze is on the destination"
    );
    enter(dest0, &cut.slot, record, Stage::Sequences, None).await?;
    fail_point("drained");
    Ok(())
}
