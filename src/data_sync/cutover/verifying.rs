//! Step 5: verify the destination against the frozen source, unless
//! `--skip-verify`.

use tracing::info;

use crate::net::Connection;

use super::super::error::{DataSyncError, Result};
use super::super::lifecycle::Stage;
use super::super::progress::Phase;
use super::super::state::CutoverRecord;
use super::super::verify;
use super::cut::{enter, fail_point, Cut};

/// Leaves the record at [`Stage::Verified`] (also when skipped).
pub(super) async fn run(
    cut: &Cut<'_>,
    skip: bool,
    record: &mut CutoverRecord,
    dest0: &mut Connection,
) -> Result<()> {
    if skip {
        cut.step(5, "verify skipped (--skip-verify)");
    } else {
        cut.step(5, "verifying");
        let report = verify::run_in(cut, &verify::Request::default()).await?;
        cut.task.set_phase(Phase::CuttingOver);
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
    }
    enter(dest0, &cut.slot, record, Stage::Verified, None).await?;
    fail_point("verified");
    Ok(())
}
