//! Step 1: wait until every source shard's slot is within `--max-lag`
//! bytes of its WAL insert position.

use std::time::Duration;

use super::super::error::Result;
use super::super::retry::Wait;
use super::cut::Cut;
use super::stream::OwnStream;

pub(super) async fn wait(cut: &Cut<'_>, max_lag: u64, own: &mut OwnStream) -> Result<()> {
    cut.step(
        1,
        &format!("waiting for the lag to be at most {max_lag} bytes"),
    );
    let mut conns = Vec::new();
    for s in 0..cut.endpoints.source.shards.len() {
        conns.push(cut.endpoints.connect_source(s, false).await?);
    }
    let mut wait = Wait::new(
        "the move to catch up before freezing",
        None,
        Duration::from_millis(200),
    )
    .log_every(Duration::from_secs(5));
    loop {
        let mut worst = 0u64;
        for c in conns.iter_mut() {
            let rows = c
                .query_text(
                    "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                    &[&cut.slot],
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
            tracing::info!(lag_bytes = worst, "the move is within --max-lag");
            break;
        }
        if let Some(e) = own.failed() {
            return Err(e);
        }
        cut.task.set_step(format!(
            "1/7 waiting for the lag ({worst} bytes) to be at most {max_lag}"
        ));
        wait.tick(&format!("{worst} bytes behind"), Some(cut.shutdown))
            .await?;
    }
    for c in conns {
        c.close().await;
    }
    Ok(())
}
