//! Applying changes on one destination shard: prepared statements per
//! relation and shape, pipelined (Bind/Execute queued, one Sync per round),
//! inside group transactions that also record the last applied source
//! commit, so a change and the record of it commit together.

use std::collections::HashMap;

use pgdog_protocol::frontend::Format;
use pgdog_protocol::pgoutput::Column;
use pgdog_protocol::Lsn;

use crate::net::extended::PipelineError;
use crate::net::Connection;

use super::super::catalog::quote_ident;
use super::super::error::{DataSyncError, Result};
use super::super::state::{RECORD_APPLIED, RECORD_APPLIED_SQL};
use super::relation::RelationInfo;

/// Statements queued since the last Sync before a round trip is forced:
/// keeps the server's replies well inside socket buffers.
const ROUND: usize = 2000;

/// The shape of a prepared statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShapeKey {
    pub relation: u32,
    pub kind: Kind,
    /// Which relation columns are SET (updates) or matched (full-identity
    /// deletes and updates); empty for the others.
    pub mask: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Insert,
    Update,
    Delete,
    /// Update matched on every column (REPLICA IDENTITY FULL).
    UpdateFull,
    DeleteFull,
}

/// Where a queued statement came from, to say so if it fails.
#[derive(Debug, Clone)]
pub struct Origin {
    pub table: std::sync::Arc<str>,
    pub commit_lsn: Lsn,
    pub what: &'static str,
}

/// One destination shard's apply connection.
#[derive(Debug)]
pub struct DestApplier {
    /// The source shard whose changes this connection applies.
    source_shard: usize,
    pub shard: usize,
    pub conn: Connection,
    /// Prepared statement name per shape.
    prepared: HashMap<ShapeKey, String>,
    /// Statements prepared so far: names are `pgdog_<n>`, never reused.
    statements: u64,
    /// A group transaction is open (BEGIN queued).
    pub open: bool,
    /// Statements queued since the last Sync, with their origins.
    origins: Vec<Origin>,
    /// Last source commit applied inside the open group.
    pub group_last: Option<Lsn>,
    /// Last source commit applied here and committed (the recorded one).
    pub applied: Lsn,
    /// Rows updates/deletes did not find (the destination diverged).
    pub missing_rows: u64,
    affected: Vec<u64>,
}

impl DestApplier {
    pub async fn new(
        source_shard: usize,
        shard: usize,
        mut conn: Connection,
        applied: Lsn,
    ) -> Result<DestApplier> {
        // A source commit is confirmed to the slot once its destination
        // commit returns, so that commit must be durable by then: whatever
        // the destination's default, apply sessions commit synchronously.
        // (Group commit keeps that to one flush per group.)
        conn.execute("SET synchronous_commit = on").await?;
        // Triggers and FK checks already ran on the source; replica mode
        // skips them here. It needs superuser: without, they just fire.
        if let Err(e) = conn.execute("SET session_replication_role = replica").await {
            if e.code() != Some("42501") {
                return Err(e.into());
            }
        }
        conn.prepare(RECORD_APPLIED, RECORD_APPLIED_SQL, &[])
            .await?;
        Ok(DestApplier {
            source_shard,
            shard,
            conn,
            prepared: HashMap::new(),
            statements: 0,
            open: false,
            origins: Vec::new(),
            group_last: None,
            applied,
            missing_rows: 0,
            affected: Vec::new(),
        })
    }

    /// Drop the statements of a relation whose shape changed (the Close
    /// travels in the pipeline; names are never reused).
    pub fn invalidate(&mut self, relation: u32) {
        let conn = &mut self.conn;
        self.prepared.retain(|k, name| {
            if k.relation == relation {
                pgdog_protocol::frontend::close(
                    pgdog_protocol::frontend::Target::Statement,
                    name,
                    conn.buffer(),
                );
                false
            } else {
                true
            }
        });
    }

    fn begin_if_needed(&mut self) {
        if !self.open {
            self.conn.queue_statement("BEGIN");
            self.origins.push(Origin {
                table: "".into(),
                commit_lsn: Lsn::ZERO,
                what: "BEGIN",
            });
            self.open = true;
        }
    }

    /// The prepared statement for a shape, preparing it on first use.
    async fn statement(&mut self, rel: &RelationInfo, key: ShapeKey) -> Result<String> {
        if let Some(name) = self.prepared.get(&key) {
            return Ok(name.clone());
        }
        let sql = statement_sql(rel, &key);
        self.statements += 1;
        let name = format!("pgdog_{}", self.statements);
        // Parse goes into the pipeline: the server handles it in order,
        // and a failure shows up at the next Sync like any other.
        pgdog_protocol::frontend::parse(&name, &sql, &[], self.conn.buffer());
        self.prepared.insert(key, name.clone());
        Ok(name)
    }

    /// Queue one statement with its parameters.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue(
        &mut self,
        rel: &RelationInfo,
        key: ShapeKey,
        formats: &[Format],
        params: &[Option<&[u8]>],
        origin: Origin,
    ) -> Result<()> {
        self.begin_if_needed();
        let name = self.statement(rel, key).await?;
        self.conn
            .queue_execute(&name, formats, params.iter().copied());
        self.origins.push(origin);
        if self.origins.len() >= ROUND {
            self.round().await?;
        }
        Ok(())
    }

    /// Queue a statement without parameters (TRUNCATE, DELETE by predicate).
    pub async fn queue_sql(&mut self, sql: &str, origin: Origin) -> Result<()> {
        self.begin_if_needed();
        self.conn.queue_statement(sql);
        self.origins.push(origin);
        if self.origins.len() >= ROUND {
            self.round().await?;
        }
        Ok(())
    }

    /// Note that the source transaction committed at `lsn` is in this group.
    pub fn mark(&mut self, lsn: Lsn) {
        self.group_last = Some(lsn);
    }

    /// Send what is queued, Sync, and read the results.
    pub async fn round(&mut self) -> Result<()> {
        if self.origins.is_empty() {
            return Ok(());
        }
        self.affected.clear();
        let result = self
            .conn
            .sync_pipeline(self.origins.len(), &mut self.affected)
            .await;
        let origins = std::mem::take(&mut self.origins);
        match result {
            Ok(()) => {
                for (o, n) in origins.iter().zip(&self.affected) {
                    if *n == 0 && (o.what == "UPDATE" || o.what == "DELETE") {
                        self.missing_rows += 1;
                        tracing::warn!(
                            shard = self.shard,
                            table = %o.table,
                            lsn = %o.commit_lsn,
                            "{} found no row on the destination", o.what
                        );
                    }
                }
                Ok(())
            }
            Err(PipelineError { index, error }) => {
                self.open = false;
                self.group_last = None;
                // Statements parsed in a failed pipeline may or may not
                // exist now: forget them all (names are never reused).
                self.prepared.clear();
                // A statement the server rejected is told with its origin;
                // a lost connection is just that.
                if error.server_error().is_none() {
                    return Err(error.into());
                }
                let origin = origins.get(index).cloned().unwrap_or(Origin {
                    table: "?".into(),
                    commit_lsn: Lsn::ZERO,
                    what: "?",
                });
                Err(DataSyncError::Apply {
                    table: format!("{} ({})", origin.table, origin.what),
                    lsn: origin.commit_lsn.to_string(),
                    source_shard: self.source_shard,
                    dest_shard: self.shard,
                    error: Box::new(DataSyncError::Connection(error)),
                })
            }
        }
    }

    /// Commit the open group: record the last applied source commit for
    /// `slot`/`source_shard` in the same transaction.
    pub async fn commit(&mut self, slot: &str, source_shard: usize) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        if let Some(lsn) = self.group_last {
            let shard = source_shard.to_string();
            let lsn_text = lsn.to_string();
            self.conn.queue_execute(
                RECORD_APPLIED,
                &[Format::Text],
                [
                    Some(slot.as_bytes()),
                    Some(shard.as_bytes()),
                    Some(lsn_text.as_bytes()),
                ],
            );
            self.origins.push(Origin {
                table: "pgdog.replication_progress".into(),
                commit_lsn: lsn,
                what: "record",
            });
        }
        self.conn.queue_statement("COMMIT");
        self.origins.push(Origin {
            table: "".into(),
            commit_lsn: self.group_last.unwrap_or_default(),
            what: "COMMIT",
        });
        self.round().await?;
        self.open = false;
        if let Some(lsn) = self.group_last.take() {
            self.applied = lsn;
        }
        Ok(())
    }

    /// Read one row (binary results) inside the open group, after
    /// everything queued so far.
    pub async fn fetch(
        &mut self,
        sql: &str,
        formats: &[Format],
        params: &[Option<&[u8]>],
    ) -> Result<Option<pgdog_protocol::backend::DataRow>> {
        self.round().await?;
        let rows = self
            .conn
            .query_params(sql, formats, params.iter().copied(), Format::Binary)
            .await?;
        Ok(rows.into_iter().next())
    }
}

/// SQL of a shape. Parameters follow the relation's column order: every
/// column for INSERT; SET columns then key columns for UPDATE; key columns
/// for DELETE; for the `Full` kinds every masked column of the old row.
pub fn statement_sql(rel: &RelationInfo, key: &ShapeKey) -> String {
    let table = rel.name.quoted();
    let cols = &rel.columns;
    match key.kind {
        Kind::Insert => {
            let names: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            )
        }
        Kind::Update => {
            let mut n = 0;
            let mut set = Vec::new();
            for (c, on) in cols.iter().zip(&key.mask) {
                if *on {
                    n += 1;
                    set.push(format!("{} = ${n}", quote_ident(&c.name)));
                }
            }
            let mut cond = Vec::new();
            for c in cols.iter().filter(|c| c.key) {
                n += 1;
                cond.push(format!("{} = ${n}", quote_ident(&c.name)));
            }
            format!(
                "UPDATE {table} SET {} WHERE {}",
                set.join(", "),
                cond.join(" AND ")
            )
        }
        Kind::Delete => {
            let cond: Vec<String> = cols
                .iter()
                .filter(|c| c.key)
                .enumerate()
                .map(|(i, c)| format!("{} = ${}", quote_ident(&c.name), i + 1))
                .collect();
            format!("DELETE FROM {table} WHERE {}", cond.join(" AND "))
        }
        Kind::UpdateFull | Kind::DeleteFull => {
            // REPLICA IDENTITY FULL: touch exactly one row equal to the old one.
            let (set_mask, match_mask) = key.mask.split_at(cols.len().min(key.mask.len()));
            let mut n = 0;
            let mut set = Vec::new();
            if key.kind == Kind::UpdateFull {
                for (c, on) in cols.iter().zip(set_mask) {
                    if *on {
                        n += 1;
                        set.push(format!("{} = ${n}", quote_ident(&c.name)));
                    }
                }
            }
            let mut cond = Vec::new();
            for (c, on) in cols.iter().zip(match_mask) {
                if *on {
                    n += 1;
                    cond.push(format!(
                        "{} IS NOT DISTINCT FROM ${n}",
                        quote_ident(&c.name)
                    ));
                }
            }
            let pick = format!(
                "SELECT ctid FROM {table} WHERE {} LIMIT 1",
                cond.join(" AND ")
            );
            if key.kind == Kind::UpdateFull {
                format!(
                    "UPDATE {table} SET {} WHERE ctid = ({pick})",
                    set.join(", ")
                )
            } else {
                format!("DELETE FROM {table} WHERE ctid = ({pick})")
            }
        }
    }
}

/// Parameter format and bytes of a tuple column (`u` has none: callers
/// leave such columns out).
pub fn param(col: Column<'_>) -> (Format, Option<&[u8]>) {
    match col {
        Column::Null | Column::Unchanged => (Format::Text, None),
        Column::Text(v) => (Format::Text, Some(v)),
        Column::Binary(v) => (Format::Binary, Some(v)),
    }
}
