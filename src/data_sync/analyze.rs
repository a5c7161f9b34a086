//! Planner statistics for what the copy filled. A table loaded by COPY has
//! none until autovacuum gets to it, and autovacuum never analyzes a
//! partitioned table itself. An application switched over early would be
//! planned blind. So once the copy and its indexes are done, every copied
//! table and the partitioned tables above them are analyzed on every
//! destination shard. This runs in the background while the stream starts,
//! one session per shard, and a failure is a warning, not a failed move.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::catalog::text_array;
use super::endpoints::Endpoints;
use super::plan::Plan;

/// The tables `$1` (quoted names) and their partitioned ancestors, quoted,
/// partitions before the tables above them.
const TABLES_SQL: &str = "
WITH named AS (
    SELECT to_regclass(t.name) AS oid, t.ord FROM unnest($1::text[]) WITH ORDINALITY AS t(name, ord)
), tabs AS (
    SELECT oid, ord, 0 AS depth FROM named WHERE oid IS NOT NULL
    UNION ALL
    SELECT a.relid, n.ord, 1 FROM named n, LATERAL pg_partition_ancestors(n.oid) AS a WHERE a.relid <> n.oid
)
SELECT quote_ident(ns.nspname) || '.' || quote_ident(c.relname)
FROM (SELECT oid, min(depth) AS depth, min(ord) AS ord FROM tabs GROUP BY oid) t
JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace ns ON ns.oid = c.relnamespace
ORDER BY t.depth, t.ord";

/// Analyze on destination shard `d`; the number of tables.
async fn shard(endpoints: &Endpoints, plan: &Plan, d: usize) -> super::error::Result<usize> {
    let mut conn = endpoints.connect_dest(d).await?;
    let names = text_array(plan.tables.iter().map(|t| t.table.name.quoted()));
    let rows = conn.query_text(TABLES_SQL, &[&names]).await?;
    let tables: Vec<String> = rows
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect();
    for t in &tables {
        conn.execute(&format!("ANALYZE {t}")).await?;
    }
    conn.close().await;
    Ok(tables.len())
}

/// Analyze every shard at once, until done or `shutdown`.
pub async fn run(endpoints: Endpoints, plan: Plan, shutdown: CancellationToken) {
    let started = Instant::now();
    let work = async {
        let shards = (0..plan.dest_shards()).map(|d| {
            let (endpoints, plan) = (&endpoints, &plan);
            async move { (d, shard(endpoints, plan, d).await) }
        });
        let (mut tables, mut shards_done) = (0, 0);
        let results = futures::future::join_all(shards).await;
        let all = results.len();
        for (d, result) in results {
            match result {
                Ok(n) => {
                    tables = tables.max(n);
                    shards_done += 1;
                }
                Err(e) => warn!(
                    dest_shard = d,
                    "could not analyze the copied tables there (autovacuum will, in time): {e}"
                ),
            }
        }
        info!(
            tables,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "planner statistics gathered for the copied tables on {shards_done} of {all} destination shards"
        );
    };
    tokio::select! {
        _ = work => {}
        _ = shutdown.cancelled() => {}
    }
}
