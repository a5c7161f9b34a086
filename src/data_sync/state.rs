//! pgdog's own state on each destination shard, in a `pgdog` schema:
//! which table copies finished (with the snapshot LSN that decides which
//! streamed changes they already hold), and the last source commit applied
//! per source shard, written in the same transaction as the changes.

use std::collections::HashMap;

use pgdog_protocol::Lsn;

use crate::net::Connection;

use super::catalog::{self, TableName};
use super::error::{DataSyncError, Result};
use super::lifecycle::Stage;

/// Tables and helpers pgdog creates on destinations. Idempotent.
pub const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS pgdog;
CREATE TABLE IF NOT EXISTS pgdog.copy_progress (
    slot_name text NOT NULL,
    source_shard int NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    snapshot_lsn pg_lsn NOT NULL,
    rows_copied bigint NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, source_shard, table_schema, table_name)
);
-- How the copy routed the table's rows (TablePlan::routing_key): a rerun
-- that would route them otherwise is refused.
ALTER TABLE pgdog.copy_progress ADD COLUMN IF NOT EXISTS routing text;
-- Chunks of tables copied in key ranges, each committed with its rows:
-- keys in (lo, hi] (NULL: open), each bound as its columns' text and as
-- the canonical text pgdog compares, read in `snapshot` before `lsn`.
CREATE TABLE IF NOT EXISTS pgdog.copy_chunks (
    -- A key, so a FOR ALL TABLES publication on this server (it is the
    -- source of the way back after a cutover) lets its rows be deleted.
    chunk_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name text NOT NULL,
    source_shard int NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    lo text[],
    lo_key text[],
    hi text[],
    hi_key text[],
    snapshot text NOT NULL,
    lsn pg_lsn NOT NULL,
    rows_copied bigint NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS copy_chunks_table ON pgdog.copy_chunks (slot_name, source_shard, table_schema, table_name);
-- Captured DDL that must run outside a transaction (CREATE INDEX
-- CONCURRENTLY), queued by the stream with the changes before it.
CREATE TABLE IF NOT EXISTS pgdog.ddl_pending (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name text NOT NULL,
    source_shard int NOT NULL,
    search_path text NOT NULL,
    statement text NOT NULL,
    index_name text,
    queued_at timestamptz NOT NULL DEFAULT now()
);
-- Captured DDL applied here, with the stream's changes: a move from
-- several source shards runs the same migration once per destination.
CREATE TABLE IF NOT EXISTS pgdog.ddl_applied (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name text NOT NULL,
    source_shard int NOT NULL,
    lsn pg_lsn NOT NULL,
    search_path text NOT NULL,
    statement text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgdog.replication_progress (
    slot_name text NOT NULL,
    source_shard int NOT NULL,
    commit_lsn pg_lsn NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, source_shard)
);
CREATE TABLE IF NOT EXISTS pgdog.schema_tables (
    slot_name text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, table_schema, table_name)
);
CREATE TABLE IF NOT EXISTS pgdog.schema_phases (
    slot_name text NOT NULL,
    phase text NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, phase)
);
CREATE TABLE IF NOT EXISTS pgdog.verify_barriers (
    slot_name text NOT NULL,
    source_shard int NOT NULL,
    verify_id text NOT NULL,
    state text NOT NULL,
    target_lsn pg_lsn,
    reached_lsn pg_lsn,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (slot_name, source_shard)
);
CREATE TABLE IF NOT EXISTS pgdog.stopped_streams (
    slot_name text PRIMARY KEY,
    reason text NOT NULL,
    stopped_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgdog.cutovers (
    slot_name text PRIMARY KEY,
    state text NOT NULL,
    freeze_roles text[] NOT NULL,
    frozen_lsns text[],
    reverse_publication text NOT NULL,
    reverse_slot text NOT NULL,
    error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgdog.cutover_freezes (
    slot_name text NOT NULL,
    cluster text NOT NULL,
    shard int NOT NULL,
    relation text NOT NULL,
    frozen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, cluster, shard, relation)
);
CREATE TABLE IF NOT EXISTS pgdog.hash_bigint (k bigint) PARTITION BY HASH (k);
CREATE TABLE IF NOT EXISTS pgdog.hash_text (k text) PARTITION BY HASH (k);
CREATE TABLE IF NOT EXISTS pgdog.hash_uuid (k uuid) PARTITION BY HASH (k);
COMMENT ON SCHEMA pgdog IS 'pgdog data-sync state: safe to drop with pgdog data-sync --cleanup once the move is finished';
";

/// Statement name of the progress upsert prepared on apply connections.
pub const RECORD_APPLIED: &str = "pgdog_record_applied";

/// SQL of [`RECORD_APPLIED`]: $1 slot, $2 source shard, $3 commit LSN.
pub const RECORD_APPLIED_SQL: &str = "INSERT INTO pgdog.replication_progress (slot_name, source_shard, commit_lsn)
     VALUES ($1, $2::int, $3::text::pg_lsn)
     ON CONFLICT (slot_name, source_shard) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, updated_at = now()";

pub async fn ensure_schema(conn: &mut Connection) -> Result<()> {
    // Concurrent CREATE ... IF NOT EXISTS can still collide on the catalog;
    // serialize through an advisory lock.
    conn.execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock(7205403100420); {SCHEMA_SQL} COMMIT;"
    ))
    .await?;
    Ok(())
}

/// Why the stream of `slot` must not run any more (a cutover ended it),
/// if it must not.
pub async fn stream_stopped(conn: &mut Connection, slot: &str) -> Result<Option<String>> {
    let table = conn
        .query_text(
            "SELECT to_regclass('pgdog.stopped_streams') IS NOT NULL",
            &[],
        )
        .await?;
    if table.first().and_then(|r| r.text(0)) != Some("t") {
        return Ok(None);
    }
    let rows = conn
        .query_text(
            "SELECT reason || ' (' || to_char(stopped_at, 'YYYY-MM-DD HH24:MI:SS TZ') || ')' FROM pgdog.stopped_streams WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    Ok(rows.first().and_then(|r| r.text(0)).map(str::to_string))
}

/// Mark the stream of `slot` as ended for good (`reason`), or (`None`)
/// let it run again.
pub async fn set_stream_stopped(
    conn: &mut Connection,
    slot: &str,
    reason: Option<&str>,
) -> Result<()> {
    match reason {
        Some(r) => {
            conn.query_text(
                "INSERT INTO pgdog.stopped_streams (slot_name, reason) VALUES ($1, $2)
                 ON CONFLICT (slot_name) DO UPDATE SET reason = EXCLUDED.reason",
                &[slot, r],
            )
            .await?
        }
        None => {
            conn.query_text(
                "DELETE FROM pgdog.stopped_streams WHERE slot_name = $1",
                &[slot],
            )
            .await?
        }
    };
    Ok(())
}

/// The record of a move's cutover on destination shard 0
/// (`pgdog.cutovers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoverRecord {
    pub stage: Stage,
    /// The application's roles, frozen on the source.
    pub roles: Vec<String>,
    pub reverse_publication: String,
    pub reverse_slot: String,
}

/// The cutover of `slot`, if one was recorded. Needs the schema
/// ([`ensure_schema`]).
pub async fn cutover(conn: &mut Connection, slot: &str) -> Result<Option<CutoverRecord>> {
    let rows = conn
        .query_text(
            "SELECT state, reverse_publication, reverse_slot FROM pgdog.cutovers WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let text = r.text(0).unwrap_or("");
    let stage = Stage::parse(text).ok_or_else(|| {
        DataSyncError::State(format!(
            "pgdog.cutovers on destination shard 0 says the cutover of slot \"{slot}\" is at \"{text}\", which this version of pgdog does not know: finish it with the version that wrote it"
        ))
    })?;
    let roles = conn
        .query_text(
            "SELECT r FROM pgdog.cutovers, unnest(freeze_roles) r WHERE slot_name = $1",
            &[slot],
        )
        .await?
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect();
    Ok(Some(CutoverRecord {
        stage,
        roles,
        reverse_publication: r.text(1).unwrap_or("").to_string(),
        reverse_slot: r.text(2).unwrap_or("").to_string(),
    }))
}

/// Record the cutover of `slot` at `record.stage` (and `error`, when a
/// failure ended it), before the step the stage names starts.
pub async fn set_cutover(
    conn: &mut Connection,
    slot: &str,
    record: &CutoverRecord,
    error: Option<&str>,
) -> Result<()> {
    let roles = catalog::text_array(record.roles.iter().cloned());
    conn.query_text(
        "INSERT INTO pgdog.cutovers (slot_name, state, freeze_roles, reverse_publication, reverse_slot, error)
         VALUES ($1, $2, $3::text[], $4, $5, nullif($6, ''))
         ON CONFLICT (slot_name) DO UPDATE SET state = EXCLUDED.state, freeze_roles = EXCLUDED.freeze_roles,
             reverse_publication = EXCLUDED.reverse_publication, reverse_slot = EXCLUDED.reverse_slot,
             error = EXCLUDED.error, updated_at = now()",
        &[
            slot,
            record.stage.as_str(),
            &roles,
            &record.reverse_publication,
            &record.reverse_slot,
            error.unwrap_or(""),
        ],
    )
    .await?;
    Ok(())
}

/// Whether the `pgdog` schema exists (without creating it).
pub async fn schema_exists(conn: &mut Connection) -> Result<bool> {
    let rows = conn
        .query("SELECT to_regclass('pgdog.copy_progress') IS NOT NULL")
        .await?;
    Ok(rows.first().and_then(|r| r.text(0)) == Some("t"))
}

/// Finished copies recorded for `slot`: `(source shard, table) -> snapshot LSN`.
pub async fn finished_copies(
    conn: &mut Connection,
    slot: &str,
) -> Result<HashMap<(usize, TableName), Lsn>> {
    if !schema_exists(conn).await? {
        return Ok(HashMap::new());
    }
    let rows = conn
        .query_text(
            "SELECT source_shard, table_schema, table_name, snapshot_lsn::text FROM pgdog.copy_progress WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    let mut out = HashMap::new();
    for r in &rows {
        let shard = r.text(0).and_then(|t| t.parse().ok()).ok_or_else(|| {
            DataSyncError::State("pgdog.copy_progress has an unreadable source_shard".into())
        })?;
        let lsn = r.text(3).and_then(Lsn::parse).ok_or_else(|| {
            DataSyncError::State("pgdog.copy_progress has an unreadable snapshot_lsn".into())
        })?;
        out.insert(
            (
                shard,
                TableName {
                    schema: r.text(1).unwrap_or("").into(),
                    name: r.text(2).unwrap_or("").into(),
                },
            ),
            lsn,
        );
    }
    Ok(out)
}

/// How finished copies of `slot` routed their tables' rows, where that
/// was recorded: `table -> routing key`.
pub async fn copied_routing(
    conn: &mut Connection,
    slot: &str,
) -> Result<HashMap<TableName, String>> {
    if !schema_exists(conn).await? {
        return Ok(HashMap::new());
    }
    let rows = conn
        .query_text(
            "SELECT DISTINCT table_schema, table_name, routing FROM pgdog.copy_progress WHERE slot_name = $1 AND routing IS NOT NULL",
            &[slot],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                TableName {
                    schema: r.text(0).unwrap_or("").into(),
                    name: r.text(1).unwrap_or("").into(),
                },
                r.text(2).unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Record that `table` from `source_shard` is fully copied to this shard,
/// its rows routed as `routing` says (`""`: not recorded).
pub async fn record_copy(
    conn: &mut Connection,
    slot: &str,
    source_shard: usize,
    table: &TableName,
    snapshot: Lsn,
    rows: u64,
    routing: &str,
) -> Result<()> {
    let (shard, lsn, rows) = (
        source_shard.to_string(),
        snapshot.to_string(),
        rows.to_string(),
    );
    conn.query_text(
        "INSERT INTO pgdog.copy_progress (slot_name, source_shard, table_schema, table_name, snapshot_lsn, rows_copied, routing)
         VALUES ($1, $2::int, $3, $4, $5::pg_lsn, $6::bigint, NULLIF($7, ''))
         ON CONFLICT (slot_name, source_shard, table_schema, table_name)
         DO UPDATE SET snapshot_lsn = EXCLUDED.snapshot_lsn, rows_copied = EXCLUDED.rows_copied, routing = EXCLUDED.routing, finished_at = now()",
        &[slot, &shard, &table.schema, &table.name, &lsn, &rows, routing],
    )
    .await?;
    Ok(())
}

/// A chunk as recorded on a destination shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub source_shard: usize,
    pub table: TableName,
    /// (literals, canonical) of each bound; `None`: open.
    pub lo: Option<(Vec<String>, Vec<String>)>,
    pub hi: Option<(Vec<String>, Vec<String>)>,
    pub snapshot: String,
    pub lsn: Lsn,
    pub rows: u64,
}

fn text_array_sql(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| super::catalog::quote_literal(i))
        .collect();
    format!("ARRAY[{}]::text[]", quoted.join(", "))
}

/// The statement that records `chunk` for `slot`, run in the transaction
/// that writes its rows.
pub fn record_chunk_sql(slot: &str, chunk: &StoredChunk) -> String {
    let q = super::catalog::quote_literal;
    let bound = |b: &Option<(Vec<String>, Vec<String>)>| match b {
        Some((lit, key)) => (text_array_sql(lit), text_array_sql(key)),
        None => ("NULL".to_string(), "NULL".to_string()),
    };
    let ((lo, lo_key), (hi, hi_key)) = (bound(&chunk.lo), bound(&chunk.hi));
    format!(
        "INSERT INTO pgdog.copy_chunks (slot_name, source_shard, table_schema, table_name, lo, lo_key, hi, hi_key, snapshot, lsn, rows_copied)
         VALUES ({}, {}, {}, {}, {lo}, {lo_key}, {hi}, {hi_key}, {}, {}::pg_lsn, {})",
        q(slot),
        chunk.source_shard,
        q(&chunk.table.schema),
        q(&chunk.table.name),
        q(&chunk.snapshot),
        q(&chunk.lsn.to_string()),
        chunk.rows
    )
}

/// Every chunk recorded for `slot` here.
pub async fn chunks(conn: &mut Connection, slot: &str) -> Result<Vec<StoredChunk>> {
    if !schema_exists(conn).await? {
        return Ok(Vec::new());
    }
    let rows = conn
        .query_text(
            "SELECT source_shard, table_schema, table_name, lo::text, lo_key::text, hi::text, hi_key::text, snapshot, lsn::text, rows_copied
               FROM pgdog.copy_chunks WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    let bad = || {
        DataSyncError::State(format!(
            "pgdog.copy_chunks for slot \"{slot}\" has an unreadable row: start the move over (--cleanup)"
        ))
    };
    let bound = |lit: Option<&str>, key: Option<&str>| match (lit, key) {
        (Some(l), Some(k)) => Some((
            super::catalog::parse_name_array(l),
            super::catalog::parse_name_array(k),
        )),
        _ => None,
    };
    rows.iter()
        .map(|r| {
            Ok(StoredChunk {
                source_shard: r.text(0).and_then(|t| t.parse().ok()).ok_or_else(bad)?,
                table: TableName {
                    schema: r.text(1).unwrap_or("").into(),
                    name: r.text(2).unwrap_or("").into(),
                },
                lo: bound(r.text(3), r.text(4)),
                hi: bound(r.text(5), r.text(6)),
                snapshot: r.text(7).ok_or_else(bad)?.to_string(),
                lsn: r.text(8).and_then(Lsn::parse).ok_or_else(bad)?,
                rows: r.text(9).and_then(|t| t.parse().ok()).ok_or_else(bad)?,
            })
        })
        .collect()
}

/// SQL forgetting the chunks of `table` from `source_shard` (its rows are
/// gone: a TRUNCATE applied in the same transaction).
pub fn forget_chunks_sql(slot: &str, source_shard: usize, table: &TableName) -> String {
    let q = super::catalog::quote_literal;
    format!(
        "DELETE FROM pgdog.copy_chunks WHERE slot_name = {} AND source_shard = {source_shard} AND table_schema = {} AND table_name = {}",
        q(slot),
        q(&table.schema),
        q(&table.name)
    )
}

/// SQL forgetting the copy of `table` from `source_shard`: its rows from
/// there are gone (removed in the same transaction), and the next plan
/// copies them again.
pub fn forget_copy_sql(slot: &str, source_shard: usize, table: &TableName) -> [String; 2] {
    let q = super::catalog::quote_literal;
    let whr = format!(
        "slot_name = {} AND source_shard = {source_shard} AND table_schema = {} AND table_name = {}",
        q(slot),
        q(&table.schema),
        q(&table.name)
    );
    [
        format!("DELETE FROM pgdog.copy_progress WHERE {whr}"),
        format!("DELETE FROM pgdog.copy_chunks WHERE {whr}"),
    ]
}

/// SQL moving what pgdog recorded of `old` to its new name `new` (a
/// captured `ALTER TABLE ... RENAME` applied in the same transaction).
pub fn rename_table_sql(slot: &str, old: &TableName, new: &TableName) -> Vec<String> {
    let q = super::catalog::quote_literal;
    ["copy_progress", "copy_chunks", "schema_tables"]
        .iter()
        .map(|t| {
            format!(
                "UPDATE pgdog.{t} SET table_schema = {}, table_name = {} WHERE slot_name = {} AND table_schema = {} AND table_name = {}",
                q(&new.schema),
                q(&new.name),
                q(slot),
                q(&old.schema),
                q(&old.name)
            )
        })
        .collect()
}

/// The last source commit applied here, per source shard.
pub async fn applied_positions(conn: &mut Connection, slot: &str) -> Result<HashMap<usize, Lsn>> {
    if !schema_exists(conn).await? {
        return Ok(HashMap::new());
    }
    let rows = conn
        .query_text(
            "SELECT source_shard, commit_lsn::text FROM pgdog.replication_progress WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    // A row that cannot be read must stop the move: streaming from LSN 0
    // instead would apply transactions a second time.
    rows.iter()
        .map(|r| {
            let shard = r.text(0).and_then(|t| t.parse().ok());
            let lsn = r.text(1).and_then(Lsn::parse);
            match (shard, lsn) {
                (Some(s), Some(l)) => Ok((s, l)),
                _ => Err(DataSyncError::State(format!(
                    "pgdog.replication_progress for slot \"{slot}\" has an unreadable row (source_shard {:?}, commit_lsn {:?}): fix or delete it on that destination shard",
                    r.text(0),
                    r.text(1)
                ))),
            }
        })
        .collect()
}

/// Forget everything recorded for `slot` here.
pub async fn forget(conn: &mut Connection, slot: &str) -> Result<()> {
    if !schema_exists(conn).await? {
        return Ok(());
    }
    // State written by an older pgdog may lack the newer tables.
    ensure_schema(conn).await?;
    conn.query_text(
        "DELETE FROM pgdog.copy_progress WHERE slot_name = $1",
        &[slot],
    )
    .await?;
    conn.query_text(
        "DELETE FROM pgdog.copy_chunks WHERE slot_name = $1",
        &[slot],
    )
    .await?;
    conn.query_text(
        "DELETE FROM pgdog.replication_progress WHERE slot_name = $1",
        &[slot],
    )
    .await?;
    for table in [
        "ddl_pending",
        "ddl_applied",
        "schema_tables",
        "schema_phases",
        "verify_barriers",
        "stopped_streams",
        "cutovers",
        "cutover_freezes",
    ] {
        conn.query_text(
            &format!("DELETE FROM pgdog.{table} WHERE slot_name = $1"),
            &[slot],
        )
        .await?;
    }
    // Drop the schema when no other move uses it, and no table is frozen
    // by a cutover (the freeze triggers call a function in it).
    conn.execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pgdog.copy_progress) AND NOT EXISTS (SELECT 1 FROM pgdog.replication_progress)
              AND NOT EXISTS (SELECT 1 FROM pgdog.schema_tables) AND NOT EXISTS (SELECT 1 FROM pgdog.schema_phases)
              AND NOT EXISTS (SELECT 1 FROM pgdog.cutovers)
              AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'pgdog_cutover_freeze') THEN
             DROP SCHEMA pgdog CASCADE;
           END IF;
         END $$",
    )
    .await?;
    Ok(())
}

/// Schema sync phases (`pre`, `post`) recorded as done for `slot`.
pub async fn schema_phases(conn: &mut Connection, slot: &str) -> Result<Vec<String>> {
    if !schema_exists(conn).await? {
        return Ok(Vec::new());
    }
    let rows = conn
        .query_text(
            "SELECT phase FROM pgdog.schema_phases WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect())
}

pub async fn record_schema_phase(conn: &mut Connection, slot: &str, phase: &str) -> Result<()> {
    conn.query_text(
        "INSERT INTO pgdog.schema_phases (slot_name, phase) VALUES ($1, $2)
         ON CONFLICT (slot_name, phase) DO UPDATE SET done_at = now()",
        &[slot, phase],
    )
    .await?;
    Ok(())
}

/// Tables schema sync created for `slot` on this shard.
pub async fn schema_tables(conn: &mut Connection, slot: &str) -> Result<Vec<TableName>> {
    if !schema_exists(conn).await? {
        return Ok(Vec::new());
    }
    let rows = conn
        .query_text(
            "SELECT table_schema, table_name FROM pgdog.schema_tables WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TableName {
            schema: r.text(0).unwrap_or("").into(),
            name: r.text(1).unwrap_or("").into(),
        })
        .collect())
}
