//! Captured DDL met in the stream ([`crate::data_sync::ddl`]): replayed on
//! every destination shard inside the group transaction, at its place
//! among the changes, then the move plans again.

use pgdog_protocol::Lsn;
use tracing::{debug, info, warn};

use super::super::super::catalog::{quote_literal, text_array, TableName};
use super::super::super::ddl::{
    self, abbreviate, pending, Decision, Event, REWRITE_ATTACHED, REWRITE_DEFAULT,
};
use super::super::super::error::{DataSyncError, Result};
use super::super::super::state;
use super::Session;

/// Server errors that say the destination already is as the statement
/// leaves it: a column, relation or constraint that exists, or one
/// already dropped. Someone ran it there by hand, or a rerun after the
/// operator fixed a failure.
fn already_in_place(code: Option<&str>, statement: &str) -> bool {
    match code {
        Some("42701" | "42P07" | "42710" | "42P06" | "42723") => true,
        // Something the statement drops or renames is not there: it was
        // dropped or renamed already. Any other statement on a missing
        // object is a real difference.
        Some("42703" | "42704" | "42P01") => {
            let upper = statement.to_uppercase();
            upper.contains("DROP ") || upper.contains("RENAME ")
        }
        _ => false,
    }
}

impl Session<'_> {
    /// The plan's table for a source relation, by OID or name.
    fn moved_table(&self, oid: u32, name: &TableName) -> Option<usize> {
        let plan = &self.ctx.plan;
        if let Some(t) = self.relations.get(&oid).and_then(|r| r.table) {
            return Some(t);
        }
        if oid != 0 && plan.source_shards() == 1 {
            if let Some(t) = plan.tables.iter().position(|t| t.table.oid == oid) {
                return Some(t);
            }
        }
        plan.table(name)
    }

    /// A logical message with captured DDL, inside a source transaction.
    pub(super) async fn ddl(&mut self, lsn: Lsn, content: &[u8]) -> Result<()> {
        let event = match Event::parse(content) {
            Ok(e) => e,
            Err(why) => {
                let note = format!(
                    "a schema change captured on source shard {} at {lsn} could not be read ({why}): it is not applied on the destination shards",
                    self.s
                );
                warn!("{note}");
                self.ctx.task.add_note(note);
                return Ok(());
            }
        };
        self.copy_attached_again(&event).await?;
        match ddl::decide(&event, |oid, name| self.moved_table(oid, name)) {
            Decision::Skip(why) => {
                debug!(source_shard = self.s, tag = %event.tag, "schema change not replayed: {why}");
                Ok(())
            }
            Decision::Refuse(why) => {
                let note = format!(
                    "a schema change on source shard {} was not applied on the destination shards: {why}; run it on every destination shard yourself",
                    self.s
                );
                warn!("{note}");
                self.ctx.task.add_note(note);
                Ok(())
            }
            Decision::Apply {
                statement,
                tables,
                concurrently,
                index,
                only_if_exists,
            } => {
                // A transaction the destination shards already have (the
                // stream started again from the slot): nothing to do.
                let commit_lsn = self.txn.as_ref().map(|t| t.commit_lsn).unwrap_or_default();
                if self.applied_before.iter().all(|a| commit_lsn <= *a) {
                    return Ok(());
                }
                let rewritten = self.rewritten(&event, REWRITE_DEFAULT);
                let replay = Replay {
                    event: &event,
                    statement: &statement,
                    concurrently,
                    index: index.as_deref(),
                    only_if_exists: &only_if_exists,
                    rewritten: &rewritten,
                    why: "rewrote the table on the source with values no change carries",
                };
                self.replay(&replay).await?;
                // Later changes of these tables in this transaction have
                // the new shape: their Relation messages are read with the
                // source's types, and prepared statements are made anew.
                let oids: Vec<u32> = self
                    .relations
                    .iter()
                    .filter(|(_, r)| r.table.is_some_and(|t| tables.contains(&t)))
                    .map(|(oid, _)| *oid)
                    .collect();
                for oid in oids {
                    self.relations.remove(&oid);
                    self.key_positions.remove(&oid);
                    for d in self.dests.iter_mut() {
                        d.invalidate(oid);
                    }
                }
                self.ddl_tables.extend(tables.iter().copied());
                self.restarting.extend(rewritten.iter().copied());
                info!(
                    source_shard = self.s,
                    lsn = %lsn,
                    "schema change applied on every destination shard: {}",
                    abbreviate(&statement)
                );
                self.ddl_replan = Some(format!("`{}` was applied", abbreviate(&statement)));
                Ok(())
            }
        }
    }

    /// The moved tables `event` lists as rewritten for `reason`.
    fn rewritten(&self, event: &Event, reason: u32) -> Vec<usize> {
        let unnamed = TableName {
            schema: String::new(),
            name: String::new(),
        };
        let mut out: Vec<usize> = event
            .rewrites
            .iter()
            .filter(|(_, why)| why & reason != 0)
            .filter_map(|(oid, _)| {
                let name = event
                    .tables
                    .iter()
                    .find(|(o, _)| o == oid)
                    .map_or(&unnamed, |(_, n)| n);
                self.moved_table(*oid, name)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A table attached with rows under a table this move publishes
    /// through its root: those rows are in no change, so the partitioned
    /// table is emptied on the destination shards and copied again (in
    /// chunks, while the stream goes on), as for a volatile default.
    async fn copy_attached_again(&mut self, event: &Event) -> Result<()> {
        let tables: Vec<usize> = self
            .rewritten(event, REWRITE_ATTACHED)
            .into_iter()
            .filter(|t| self.ctx.plan.tables[*t].dest_table.relkind == 'p')
            .collect();
        let commit_lsn = self.txn.as_ref().map(|t| t.commit_lsn).unwrap_or_default();
        if tables.is_empty() || self.applied_before.iter().all(|a| commit_lsn <= *a) {
            return Ok(());
        }
        let statement = event.statement().unwrap_or_else(|_| event.query.clone());
        let r = Replay {
            event,
            statement: &statement,
            concurrently: false,
            index: None,
            only_if_exists: &[],
            rewritten: &tables,
            why:
                "attached a partition with rows, which a publication through the root never streams",
        };
        let slot = self.ctx.plan.slot.clone();
        for d in 0..self.dests.len() {
            if commit_lsn <= self.applied_before[d] {
                continue;
            }
            self.copy_rewritten_again(d, &slot, &r).await?;
            if let Some(txn) = &mut self.txn {
                txn.touched[d] = true;
            }
        }
        self.restarting.extend(tables.iter().copied());
        self.ddl_replan = Some(format!(
            "`{}` attached a partition with rows",
            abbreviate(&statement)
        ));
        Ok(())
    }

    async fn replay(&mut self, r: &Replay<'_>) -> Result<()> {
        let slot = self.ctx.plan.slot.clone();
        let s = self.s;
        let commit_lsn = self.txn.as_ref().map(|t| t.commit_lsn).unwrap_or_default();
        let several_sources = self.ctx.plan.source_shards() > 1;
        for d in 0..self.dests.len() {
            if commit_lsn <= self.applied_before[d] {
                continue;
            }
            if !r.only_if_exists.is_empty() {
                let rows = self.dests[d]
                    .query_in_group(
                        "SELECT count(*) FROM unnest($1::text[]) x WHERE to_regclass(x) IS NOT NULL",
                        &[&text_array(r.only_if_exists.iter().cloned())],
                    )
                    .await?;
                if rows.first().and_then(|row| row.text(0)) == Some("0") {
                    continue;
                }
            }
            // Several source shards run the same migration: each
            // destination shard runs it once.
            if several_sources {
                let rows = self.dests[d]
                    .query_in_group(
                        "SELECT coalesce((SELECT max(n) FROM (SELECT count(*) n FROM pgdog.ddl_applied
                                 WHERE slot_name = $1 AND source_shard <> $2::int AND statement = $3 AND search_path = $4
                                 GROUP BY source_shard) o), 0)
                              > (SELECT count(*) FROM pgdog.ddl_applied
                                 WHERE slot_name = $1 AND source_shard = $2::int AND statement = $3 AND search_path = $4)",
                        &[&slot, &s.to_string(), r.statement, &r.event.search_path],
                    )
                    .await?;
                if rows.first().and_then(|row| row.text(0)) == Some("t") {
                    self.record_applied(d, &slot, r).await?;
                    // Each source shard copies its own rows again.
                    self.copy_rewritten_again(d, &slot, r).await?;
                    continue;
                }
            }
            let mut ran = false;
            if r.concurrently {
                let sql = pending::queue_sql(&slot, s, &r.event.search_path, r.statement, r.index);
                self.dests[d].query_in_group(&sql, &[]).await?;
            } else {
                match self.dests[d]
                    .run_ddl(&r.event.search_path, r.statement)
                    .await?
                {
                    Ok(()) => ran = true,
                    Err(e) if already_in_place(e.code(), r.statement) => {
                        info!(
                            source_shard = s,
                            dest_shard = d,
                            "a schema change was already in place on the destination shard: {} ({e})",
                            abbreviate(r.statement)
                        );
                    }
                    Err(e) => {
                        return Err(DataSyncError::Apply {
                            table: format!("schema change `{}`", abbreviate(r.statement)),
                            lsn: commit_lsn.to_string(),
                            source_shard: s,
                            dest_shard: d,
                            error: Box::new(DataSyncError::Connection(e)),
                        })
                    }
                }
            }
            self.record_applied(d, &slot, r).await?;
            if ran {
                self.follow_renames(d, &slot, r).await?;
            }
            self.copy_rewritten_again(d, &slot, r).await?;
            if let Some(txn) = &mut self.txn {
                txn.touched[d] = true;
            }
        }
        Ok(())
    }

    /// A moved table renamed: what pgdog recorded of it on shard `d`
    /// follows.
    async fn follow_renames(&mut self, d: usize, slot: &str, r: &Replay<'_>) -> Result<()> {
        // A moved table renamed: what pgdog recorded of it follows.
        for (oid, now) in &r.event.tables {
            let Some(t) = self.moved_table(*oid, now) else {
                continue;
            };
            let was = self.ctx.plan.tables[t].table.name.clone();
            if &was != now {
                for sql in state::rename_table_sql(slot, &was, now) {
                    self.dests[d].query_in_group(&sql, &[]).await?;
                }
            }
        }
        Ok(())
    }

    /// A rewrite gave existing rows values no change carries (a volatile
    /// default): on shard `d` the table's rows from this source shard are
    /// removed and copied again. With several source shards, each runs
    /// the migration and copies its own rows again; a table that is the
    /// same on every source shard is read from source shard 0 only.
    async fn copy_rewritten_again(&mut self, d: usize, slot: &str, r: &Replay<'_>) -> Result<()> {
        let n = self.ctx.plan.source_shards();
        for &t in r.rewritten {
            let rows = match self.ctx.plan.tables[t].source_rows_predicate(self.s, n) {
                Some(pred) if n > 1 => format!(" WHERE {pred}"),
                None if n > 1 && self.s != 0 => continue,
                _ => String::new(),
            };
            // A chunk read before the rewrite commits first, so its
            // rows go with the others.
            if let Some(book) = self.books.get(&t).cloned() {
                // No chunk may commit after the rows are removed.
                book.halt();
                let idle = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    self.unless_stopped(book.wait_idle(d)),
                );
                match idle.await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(DataSyncError::HeldByChunk {
                            table: self.ctx.plan.tables[t].table.name.to_string(),
                            source_shard: self.s,
                            seconds: 30,
                        })
                    }
                }
            }
            let table = &self.ctx.plan.tables[t];
            let only = if table.dest_table.relkind == 'p' {
                ""
            } else {
                "ONLY "
            };
            self.dests[d]
                .query_in_group(
                    &format!("DELETE FROM {only}{}{rows}", table.table.name.quoted()),
                    &[],
                )
                .await?;
            for sql in state::forget_copy_sql(slot, self.s, &table.table.name) {
                self.dests[d].query_in_group(&sql, &[]).await?;
            }
            warn!(
                table = %table.table.name,
                dest_shard = d,
                "`{}` {}: it is copied again",
                abbreviate(r.statement),
                r.why
            );
        }
        Ok(())
    }

    async fn record_applied(&mut self, d: usize, slot: &str, r: &Replay<'_>) -> Result<()> {
        let commit_lsn = self.txn.as_ref().map(|t| t.commit_lsn).unwrap_or_default();
        let sql = format!(
            "INSERT INTO pgdog.ddl_applied (slot_name, source_shard, lsn, search_path, statement) VALUES ({}, {}, {}, {}, {})",
            quote_literal(slot),
            self.s,
            quote_literal(&commit_lsn.to_string()),
            quote_literal(&r.event.search_path),
            quote_literal(r.statement)
        );
        self.dests[d].query_in_group(&sql, &[]).await?;
        if let Some(txn) = &mut self.txn {
            txn.touched[d] = true;
        }
        Ok(())
    }

    /// After a source transaction that carried DDL: commit it, and plan
    /// the move again.
    pub(super) async fn after_ddl_commit(&mut self) -> Result<()> {
        let Some(what) = self.ddl_replan.take() else {
            return Ok(());
        };
        self.ddl_tables.clear();
        // Crash tests: the statement ran on the shards, nothing committed.
        crate::data_sync::copy::chunked::fail_point("ddl");
        self.commit_group().await?;
        // The statement and its position committed, the plan not renewed.
        crate::data_sync::copy::chunked::fail_point("ddl-committed");
        Err(DataSyncError::SchemaChanged {
            source_shard: self.s,
            what,
        })
    }
}

struct Replay<'a> {
    event: &'a Event,
    statement: &'a str,
    concurrently: bool,
    index: Option<&'a str>,
    only_if_exists: &'a [String],
    rewritten: &'a [usize],
    /// Why the tables in `rewritten` are copied again, for the log.
    why: &'a str,
}
