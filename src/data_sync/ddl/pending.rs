//! Statements that cannot run inside the stream's transaction (`CREATE
//! INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`). The stream queues them
//! in `pgdog.ddl_pending` on each destination shard, in the transaction
//! that applies the changes before them; this runner builds them there
//! afterwards, one at a time, on its own connection, so the stream goes on
//! during the build. A build that was interrupted (a crash leaves an
//! invalid index) is dropped and run again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::catalog::quote_literal;
use super::super::ctx::Ctx;
use super::super::error::Result;

/// How often each destination shard is looked at for queued statements.
const POLL: Duration = Duration::from_secs(1);

/// SQL queueing `statement` for `slot`, run in the stream's transaction.
pub fn queue_sql(
    slot: &str,
    source_shard: usize,
    search_path: &str,
    statement: &str,
    index: Option<&str>,
) -> String {
    format!(
        "INSERT INTO pgdog.ddl_pending (slot_name, source_shard, search_path, statement, index_name) VALUES ({}, {source_shard}, {}, {}, {})",
        quote_literal(slot),
        quote_literal(search_path),
        quote_literal(statement),
        index.map_or("NULL".to_string(), quote_literal)
    )
}

/// Build what is queued on every destination shard until the stream
/// stops.
pub async fn run(ctx: std::sync::Arc<Ctx>, stop: CancellationToken) -> Result<()> {
    loop {
        for d in 0..ctx.plan.dest_shards() {
            // A build cut short leaves an invalid index, which the next
            // run drops and builds again.
            let built = tokio::select! {
                r = run_shard(&ctx, d) => r,
                _ = stop.cancelled() => return Ok(()),
            };
            if let Err(e) = built {
                warn!(
                    dest_shard = d,
                    "building a queued schema change: {e} (trying again)"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

async fn run_shard(ctx: &Ctx, d: usize) -> Result<()> {
    let mut conn = ctx.endpoints.connect_dest(d).await?;
    loop {
        let rows = conn
            .query_text(
                "SELECT id, search_path, statement, index_name FROM pgdog.ddl_pending WHERE slot_name = $1 ORDER BY id LIMIT 1",
                &[&ctx.plan.slot],
            )
            .await?;
        let Some(row) = rows.first() else {
            conn.close().await;
            return Ok(());
        };
        let id = row.text(0).unwrap_or("0").to_string();
        let search_path = row.text(1).unwrap_or("").to_string();
        let statement = row.text(2).unwrap_or("").to_string();
        let index = row.text(3).map(str::to_string);
        conn.query_text(
            "SELECT set_config('search_path', $1, false)",
            &[&search_path],
        )
        .await?;
        if let Some(index) = &index {
            // Built before a crash, or half built (invalid).
            let state = conn
                .query_text(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
                    &[index],
                )
                .await?;
            match state.first().and_then(|r| r.text(0)) {
                Some("t") => {
                    done(&mut conn, &id).await?;
                    continue;
                }
                Some(_) => {
                    conn.execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                        .await?;
                }
                None => {}
            }
        }
        let started = std::time::Instant::now();
        match conn.execute(&statement).await {
            Ok(()) => info!(
                dest_shard = d,
                seconds = started.elapsed().as_secs_f64(),
                "built a schema change captured on the source: {}",
                super::abbreviate(&statement)
            ),
            // Already as the statement leaves it (an index that exists, or
            // one already dropped).
            Err(e) if matches!(e.code(), Some("42P07" | "42704")) => info!(
                dest_shard = d,
                "a captured schema change was already in place: {} ({e})",
                super::abbreviate(&statement)
            ),
            Err(e) => {
                let _ = conn.execute("RESET search_path").await;
                return Err(e.into());
            }
        }
        conn.execute("RESET search_path").await?;
        done(&mut conn, &id).await?;
    }
}

async fn done(conn: &mut crate::net::Connection, id: &str) -> Result<()> {
    conn.query_text("DELETE FROM pgdog.ddl_pending WHERE id = $1::bigint", &[id])
        .await?;
    Ok(())
}
