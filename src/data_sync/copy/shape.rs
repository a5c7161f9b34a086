//! A chunk's guard against schema changes: the columns its snapshot shows
//! must be the plan's. A chunk that sees a table changed (a column added,
//! dropped or of another type) before the stream has carried the change
//! to the destination shards is not written; its worker waits until the
//! shards have the source's columns (the stream replays captured DDL, or
//! the operator runs it), and the move plans again.

use std::time::Duration;

use tracing::warn;

use super::super::catalog::{quote_ident, quote_literal, text_array};
use super::super::ctx::Ctx;
use super::super::error::{DataSyncError, Result};
use super::super::plan::TablePlan;
use super::super::retry::Wait;
use crate::net::Connection;

/// The published, non-generated columns of `t` as the open transaction's
/// snapshot sees them, when they differ from the plan's (name and type,
/// in any order): the source's columns that are new or of another type,
/// or, when only some went away, the empty list.
pub async fn changed(
    conn: &mut Connection,
    publication: &str,
    t: &TablePlan,
) -> Result<Option<Vec<(String, String)>>> {
    let name = &t.table.name;
    // Columns outside a publication's column list (PG15+) do not count;
    // pg_publication_tables reads the current catalog, which is what the
    // stream's Relation messages will say.
    let published = if conn.server_version_num() >= 150000 {
        format!(
            "a.attname = ANY (coalesce((SELECT pt.attnames FROM pg_publication_tables pt
                WHERE pt.pubname = {} AND pt.schemaname = {} AND pt.tablename = {}), ARRAY[a.attname]))",
            quote_literal(publication),
            quote_literal(&name.schema),
            quote_literal(&name.name)
        )
    } else {
        "true".to_string()
    };
    let sql = format!(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod)
         FROM pg_attribute a
         WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attgenerated = '' AND {published}
         ORDER BY a.attnum",
        quote_literal(&name.quoted())
    );
    let rows = conn.query(&sql).await?;
    let source: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.text(0).unwrap_or("").to_string(),
                r.text(1).unwrap_or("").to_string(),
            )
        })
        .collect();
    // Against the plan, and against the destination shards (behind the
    // source while the stream replays captured DDL).
    let differs: Vec<(String, String)> = source
        .iter()
        .filter(|(n, ty)| {
            !t.table
                .columns
                .iter()
                .any(|c| &c.name == n && &c.type_name == ty)
                || !t
                    .dest_table
                    .columns
                    .iter()
                    .any(|c| &c.name == n && (&c.type_name == ty || c.generated.is_some()))
        })
        .cloned()
        .collect();
    let gone = t
        .table
        .columns
        .iter()
        .any(|c| !source.iter().any(|(n, _)| n == &c.name));
    Ok((!differs.is_empty() || gone).then_some(differs))
}

/// Wait until every destination shard has `columns` of `table` (by
/// name), saying so in the task; then the move plans again
/// ([`DataSyncError::SchemaChanged`]). Stopped: [`DataSyncError::Stopped`].
pub async fn wait_for_destinations(
    ctx: &Ctx,
    t: &TablePlan,
    source_shard: usize,
    columns: &[(String, String)],
) -> Result<()> {
    let table = t.table.name.quoted();
    let statement = if columns.is_empty() {
        String::new()
    } else {
        format!(
            "; unless pgdog replays the change itself (it does when it captures DDL), run on every destination shard: ALTER TABLE {table} {};",
            columns
                .iter()
                .map(|(c, ty)| format!("ADD COLUMN IF NOT EXISTS {} {ty}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let message = format!(
        "the copy of {table} waits: its columns changed on source shard {source_shard} after the move was planned{statement}"
    );
    warn!("{message}");
    let _waiting = ctx.task.wait_on(message);
    let names = text_array(columns.iter().map(|(c, _)| c.clone()));
    let types = text_array(columns.iter().map(|(_, ty)| ty.clone()));
    let mut wait = Wait::new(
        format!("every destination shard to have the columns of {table}"),
        None,
        Duration::from_secs(1),
    );
    let result = loop {
        let mut all = true;
        for d in 0..ctx.plan.dest_shards() {
            let mut conn = ctx.endpoints.connect_dest(d).await?;
            let rows = conn
                .query_text(
                    "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
                       AND (attname, format_type(atttypid, atttypmod)) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
                    &[&table, &names, &types],
                )
                .await;
            conn.close().await;
            let have: usize = rows?
                .first()
                .and_then(|r| r.text(0))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            all &= have == columns.len();
        }
        if all {
            break Err(DataSyncError::SchemaChanged {
                source_shard,
                what: format!("the destination shards have the columns of {table}"),
            });
        }
        if let Err(stopped) = wait.tick("a shard lacks them", Some(&ctx.shutdown)).await {
            break Err(stopped);
        }
    };
    result
}
