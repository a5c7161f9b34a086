//! Applying changes on one destination shard: changes wait in per-table
//! queues and go out as multi-row statements where they can (which ones,
//! [`super::batch`] decides), through prepared statements per relation and
//! shape ([`super::sql`]), pipelined (Bind/Execute queued, one Sync per
//! round), inside group transactions that also record the last applied
//! source commit, so a change and the record of it commit together.

use std::collections::HashMap;

use pgdog_protocol::frontend::Format;
use pgdog_protocol::Lsn;

use crate::net::extended::PipelineError;
use crate::net::Connection;

use super::super::error::{DataSyncError, Result};
use super::super::state::{RECORD_APPLIED, RECORD_APPLIED_SQL};
use super::batch::{statements, Origin, Queued, Queues, Statement};
use super::relation::RelationInfo;
use super::sql::{statement_sql, ShapeKey};

/// Statements queued since the last Sync before a round trip is forced:
/// keeps the server's replies well inside socket buffers...
const ROUND: usize = 2000;
/// ...and bytes waiting to be written: keeps the pipeline's memory flat
/// with wide rows.
const ROUND_BYTES: usize = 1 << 20;

/// One destination shard's apply connection.
#[derive(Debug)]
pub struct DestApplier {
    /// The source shard whose changes this connection applies.
    source_shard: usize,
    pub shard: usize,
    pub conn: Connection,
    /// Prepared statement name per shape: a shape is parsed once per
    /// session.
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
    /// Rows each statement of the last round affected, reused per round.
    affected: Vec<u64>,
    /// Changes waiting to go out in batches.
    queues: Queues,
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
        // Every statement is a key lookup or an insert: the generic plan is
        // the right one, and planning a 256-row batch per execution is not.
        conn.execute("SET plan_cache_mode = force_generic_plan")
            .await?;
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
            queues: Queues::default(),
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

    fn begin_if_needed(&mut self) -> Result<()> {
        if !self.open {
            self.conn.queue_statement("BEGIN")?;
            self.origins.push(Origin {
                table: "".into(),
                commit_lsn: Lsn::ZERO,
                what: "BEGIN",
                rows: 0,
            });
            self.open = true;
        }
        Ok(())
    }

    /// The prepared statement for a shape, preparing it on first use.
    fn statement(&mut self, rel: &RelationInfo, key: ShapeKey) -> Result<String> {
        if let Some(name) = self.prepared.get(&key) {
            return Ok(name.clone());
        }
        let sql = statement_sql(rel, &key);
        self.statements += 1;
        let name = format!("pgdog_{}", self.statements);
        // Parse goes into the pipeline: the server handles it in order,
        // and a failure shows up at the next Sync like any other.
        self.conn.queue_parse(&name, &sql)?;
        self.prepared.insert(key, name.clone());
        Ok(name)
    }

    /// Queue a change; full queues are flushed.
    pub async fn push(&mut self, q: Queued) -> Result<()> {
        if self.queues.push(q) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send every queued change, in order, batching runs.
    pub async fn flush(&mut self) -> Result<()> {
        for items in self.queues.take() {
            for st in statements(&items) {
                self.send(st).await?;
            }
        }
        Ok(())
    }

    /// Queue one statement with its parameters.
    async fn send(&mut self, st: Statement<'_>) -> Result<()> {
        self.begin_if_needed()?;
        let name = self.statement(st.rel, st.shape)?;
        self.conn
            .queue_execute(&name, &st.formats, st.params.iter().copied())?;
        self.origins.push(st.origin);
        if self.origins.len() >= ROUND || self.conn.pending_write() >= ROUND_BYTES {
            self.round().await?;
        }
        Ok(())
    }

    /// Queue a statement without parameters (TRUNCATE, DELETE by predicate),
    /// after every change queued before it.
    pub async fn queue_sql(&mut self, sql: &str, origin: Origin) -> Result<()> {
        self.flush().await?;
        self.begin_if_needed()?;
        self.conn.queue_statement(sql)?;
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
                    if *n < o.rows as u64 && (o.what == "UPDATE" || o.what == "DELETE") {
                        self.missing_rows += o.rows as u64 - n;
                        tracing::warn!(
                            shard = self.shard,
                            table = %o.table,
                            lsn = %o.commit_lsn,
                            "{} found {n} of {} rows on the destination", o.what, o.rows
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
                    rows: 0,
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
        self.flush().await?;
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
            )?;
            self.origins.push(Origin {
                table: "pgdog.replication_progress".into(),
                commit_lsn: lsn,
                what: "record",
                rows: 0,
            });
        }
        self.conn.queue_statement("COMMIT")?;
        self.origins.push(Origin {
            table: "".into(),
            commit_lsn: self.group_last.unwrap_or_default(),
            what: "COMMIT",
            rows: 0,
        });
        self.round().await?;
        self.open = false;
        if let Some(lsn) = self.group_last.take() {
            self.applied = lsn;
        }
        Ok(())
    }

    /// Run one statement that returns at most a row (binary results)
    /// inside the open group, after everything queued so far: a read, or a
    /// `DELETE ... RETURNING` that commits with the group.
    pub async fn fetch(
        &mut self,
        sql: &str,
        formats: &[Format],
        params: &[Option<&[u8]>],
    ) -> Result<Option<pgdog_protocol::backend::DataRow>> {
        self.flush().await?;
        self.begin_if_needed()?;
        self.round().await?;
        let rows = self
            .conn
            .query_params(sql, formats, params.iter().copied(), Format::Binary)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Everything queued so far sent and answered, inside an open group:
    /// the connection is free for a query of its own. Closes of
    /// statements queued without an execute go with a no-op, so their
    /// answers are read here.
    async fn settle(&mut self) -> Result<()> {
        self.flush().await?;
        self.begin_if_needed()?;
        if self.origins.is_empty() && self.conn.pending_write() > 0 {
            self.conn.queue_statement("SELECT")?;
            self.origins.push(Origin {
                table: "".into(),
                commit_lsn: Lsn::ZERO,
                what: "SELECT",
                rows: 0,
            });
        }
        self.round().await
    }

    /// A text query inside the open group, after everything queued so
    /// far (it sees what the group wrote).
    pub async fn query_in_group(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<pgdog_protocol::backend::DataRow>> {
        self.settle().await?;
        Ok(self.conn.query_text(sql, params).await?)
    }

    /// Run a captured DDL statement inside the open group, after
    /// everything queued so far, with the source's `search_path`, under a
    /// savepoint: a statement the server rejects leaves the group as it
    /// was, and its error is returned for the caller to judge.
    pub async fn run_ddl(
        &mut self,
        search_path: &str,
        statement: &str,
    ) -> Result<std::result::Result<(), crate::net::ConnectionError>> {
        self.settle().await?;
        self.conn.execute("SAVEPOINT pgdog_ddl").await?;
        self.conn
            .query_text("SELECT set_config('search_path', $1, true)", &[search_path])
            .await?;
        match self.conn.execute(statement).await {
            Ok(()) => {
                self.conn
                    .execute("RELEASE SAVEPOINT pgdog_ddl; SET LOCAL search_path TO DEFAULT")
                    .await?;
                Ok(Ok(()))
            }
            Err(e) if e.server_error().is_some() => {
                self.conn
                    .execute("ROLLBACK TO SAVEPOINT pgdog_ddl; RELEASE SAVEPOINT pgdog_ddl")
                    .await?;
                Ok(Err(e))
            }
            Err(e) => Err(e.into()),
        }
    }
}
