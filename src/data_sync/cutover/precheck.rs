//! Before anything changes: the roles exist on both sides and may do on
//! the destination what they do on the source, and the destination shards
//! can serve logical replication (the stream back).

use std::collections::BTreeSet;

use super::super::catalog::TableName;
use super::super::endpoints::Endpoints;
use super::super::error::{DataSyncError, Problem, Result};
use super::super::plan::Plan;
use super::{freeze, privileges};

/// Every problem found on every shard, or none.
pub(super) async fn check(endpoints: &Endpoints, plan: &Plan, roles: &[String]) -> Result<()> {
    let tables: Vec<TableName> = plan.tables.iter().map(|t| t.table.name.clone()).collect();
    let (mut problems, on_source) = source_roles(endpoints, roles, &tables).await?;
    for d in 0..plan.dest_shards() {
        let mut conn = endpoints.connect_dest(d).await?;
        let what = format!("destination shard {d} ({})", endpoints.dest(d).addr());
        let missing = freeze::missing_roles(&mut conn, roles).await?;
        if missing.is_empty() {
            let here = privileges::of(&mut conn, roles, &tables).await?;
            problems.extend(privileges::problem(&on_source, &here, &what));
        } else {
            problems.push(Problem {
                problem: format!(
                    "--freeze-role {}: no such role on {what}, where the application logs in after the switch",
                    missing.join(", ")
                ),
                fix: "create the application's roles on every destination shard (roles belong to a server, not to the schema a move creates; pg_dumpall --roles-only on the source lists them)".into(),
            });
        }
        let rows = conn
            .query(
                "SELECT current_setting('wal_level'),
                        current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)",
            )
            .await?;
        conn.close().await;
        let r = rows.first();
        if r.and_then(|r| r.text(0)) != Some("logical") {
            problems.push(Problem {
                problem: format!(
                    "destination shard {d} has wal_level = {}: the cutover streams its changes back to the source, which needs logical",
                    r.and_then(|r| r.text(0)).unwrap_or("?")
                ),
                fix: "set wal_level = logical on every destination shard and restart it".into(),
            });
        }
        let free: i64 = r
            .and_then(|r| r.text(1))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if free < 1 {
            problems.push(Problem {
                problem: format!(
                    "destination shard {d} has no free replication slot for the reverse stream"
                ),
                fix: "raise max_replication_slots there (restart needed), or drop an unused slot"
                    .into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DataSyncError::Preflight { problems })
    }
}

/// The roles missing on each source shard, and what the roles may do
/// there on `tables`.
async fn source_roles(
    endpoints: &Endpoints,
    roles: &[String],
    tables: &[TableName],
) -> Result<(Vec<Problem>, BTreeSet<privileges::Privilege>)> {
    let mut problems = Vec::new();
    let mut on_source = BTreeSet::new();
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        let missing = freeze::missing_roles(&mut conn, roles).await?;
        on_source.extend(privileges::of(&mut conn, roles, tables).await?);
        conn.close().await;
        if !missing.is_empty() {
            problems.push(Problem {
                problem: format!(
                    "--freeze-role {}: no such role on source shard {s}",
                    missing.join(", ")
                ),
                fix: "name the login roles the application uses on the source".into(),
            });
        }
    }
    Ok((problems, on_source))
}
