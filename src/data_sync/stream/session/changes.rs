//! Applying one change: which destination shard(s) its row goes to, and
//! the statement(s) that apply it there (a row whose sharding key changed
//! moves: deleted on the old shard, inserted on the new one).

use std::sync::Arc;
use std::time::Instant;

use pgdog_protocol::frontend::Format as WireFormat;
use pgdog_protocol::pgoutput::{Column, OldTuple, Tuple};
use pgdog_protocol::Lsn;

use super::super::super::catalog::quote_ident;
use super::super::super::error::Result;
use super::super::apply::{param, Origin};
use super::super::batch::{Change, FillValue, Queued};
use super::super::relation::RelationInfo;
use super::Session;
use crate::sharding::Format;
use pgdog_protocol::pgoutput::Message;

impl Session<'_> {
    /// Whether destination `d` needs this transaction's change of table
    /// `table`: not already applied there, and not already in its copy.
    pub(super) fn wanted(&self, d: usize, table: usize) -> bool {
        let Some(txn) = &self.txn else { return false };
        if txn.commit_lsn <= self.applied_before[d] {
            return false;
        }
        match self.copied_at[d].get(&table) {
            Some(snapshot) => txn.commit_lsn >= *snapshot,
            // Not copied from this source shard (replicate-only, or the
            // table's rows on this shard come from elsewhere): apply.
            None => true,
        }
    }

    /// Which destination shard a tuple belongs to; `None` for all of them.
    pub(super) fn shard_of(&self, rel: &RelationInfo, tuple: &Tuple) -> Result<Option<usize>> {
        let (Some(ti), Some(key)) = (rel.table, rel.dest_key) else {
            return Ok(None);
        };
        let Some(routing) = &self.ctx.plan.tables[ti].dest else {
            return Ok(None);
        };
        let shard = match tuple.get(key) {
            Some(Column::Text(v)) => routing.sharder.shard(Some(v), Format::Text)?,
            Some(Column::Binary(v)) => routing.sharder.shard(Some(v), Format::Binary)?,
            Some(Column::Null) => routing.sharder.shard(None, Format::Binary)?,
            // An unchanged TOASTed key, or a short tuple: the shard is not
            // known from this tuple.
            Some(Column::Unchanged) | None => return Ok(None),
        };
        Ok(Some(shard))
    }

    pub(super) fn targets(&self, shard: Option<usize>) -> Vec<usize> {
        match shard {
            Some(d) => vec![d],
            None => (0..self.dests.len()).collect(),
        }
    }

    pub(super) async fn change(&mut self, msg: Message) -> Result<()> {
        let Some(txn) = &self.txn else {
            return Err(self.stream_error("change outside a transaction"));
        };
        let commit_lsn = txn.commit_lsn;
        let relation_oid = match &msg {
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => *relation,
            Message::Truncate {
                relations, options, ..
            } => {
                let (relations, options) = (relations.clone(), *options);
                return self.truncate(&relations, options, commit_lsn).await;
            }
            _ => return Ok(()),
        };
        let rel = self.relations.get(&relation_oid).cloned().ok_or_else(|| {
            self.stream_error(&format!(
                "change of relation {relation_oid} before its Relation message"
            ))
        })?;
        let Some(ti) = rel.table else { return Ok(()) };
        if !self.ctx.plan.tables[ti].from_source(self.s) {
            // Omnisharded on the source: source shard 0 speaks for it.
            return Ok(());
        }
        let origin = |what| Origin {
            table: rel.display.clone(),
            commit_lsn,
            what,
            rows: 1,
        };
        match msg {
            Message::Insert { new, .. } => {
                let shard = self.shard_of(&rel, &new)?;
                for d in self.targets(shard) {
                    if self.wanted(d, ti) {
                        self.insert(d, &rel, &new, None, origin("INSERT")).await?;
                    }
                }
            }
            Message::Update { old, new, .. } => {
                let new_shard = self.shard_of(&rel, &new)?;
                let old_shard = match &old {
                    Some(o) => self.shard_of(&rel, o.tuple())?,
                    None => new_shard,
                };
                if rel.dest_key.is_some()
                    && new_shard.is_some()
                    && old_shard.is_some()
                    && old_shard != new_shard
                {
                    // The sharding key changed: the row moves.
                    let (from, to) = (old_shard.unwrap_or(0), new_shard.unwrap_or(0));
                    let Some(old) = old else {
                        return Err(self.stream_error("key change without the old key"));
                    };
                    if self.wanted(from, ti) || self.wanted(to, ti) {
                        self.move_row(&rel, from, to, &old, &new, commit_lsn)
                            .await?;
                    }
                } else {
                    for d in self.targets(new_shard.or(old_shard)) {
                        if self.wanted(d, ti) {
                            self.update(d, &rel, old.as_ref(), &new, origin("UPDATE"))
                                .await?;
                        }
                    }
                }
            }
            Message::Delete { old, .. } => {
                let shard = self.shard_of(&rel, old.tuple())?;
                for d in self.targets(shard) {
                    if self.wanted(d, ti) {
                        self.delete(d, &rel, &old, origin("DELETE")).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn touch(&mut self, d: usize) {
        if let Some(txn) = &mut self.txn {
            txn.touched[d] = true;
            txn.changes += 1;
        }
        if self.group_opened.is_none() {
            self.group_opened = Some(Instant::now());
        }
    }

    /// INSERT the new tuple; `fill` supplies values for `u` columns.
    pub(super) async fn insert(
        &mut self,
        d: usize,
        rel: &Arc<RelationInfo>,
        new: &Tuple,
        fill: Option<Vec<FillValue>>,
        origin: Origin,
    ) -> Result<()> {
        if fill.is_none() && new.columns().any(|c| matches!(c, Column::Unchanged)) {
            return Err(self.stream_error(&format!(
                "INSERT into {} with an unchanged TOAST value",
                rel.name
            )));
        }
        let change = Change::Insert {
            new: new.clone(),
            fill,
        };
        self.queue(d, rel, change, origin).await
    }

    pub(super) async fn update(
        &mut self,
        d: usize,
        rel: &Arc<RelationInfo>,
        old: Option<&OldTuple>,
        new: &Tuple,
        origin: Origin,
    ) -> Result<()> {
        if !new.columns().any(|c| !matches!(c, Column::Unchanged)) {
            // Nothing to set: every column is an unchanged TOAST value.
            return Ok(());
        }
        if rel.full && old.is_none() {
            return Err(self.stream_error(&format!(
                "UPDATE of {} (REPLICA IDENTITY FULL) without the old row",
                rel.name
            )));
        }
        let change = Change::Update {
            new: new.clone(),
            old: old.cloned(),
        };
        self.queue(d, rel, change, origin).await
    }

    pub(super) async fn delete(
        &mut self,
        d: usize,
        rel: &Arc<RelationInfo>,
        old: &OldTuple,
        origin: Origin,
    ) -> Result<()> {
        let change = Change::Delete { old: old.clone() };
        self.queue(d, rel, change, origin).await
    }

    async fn queue(
        &mut self,
        d: usize,
        rel: &Arc<RelationInfo>,
        change: Change,
        origin: Origin,
    ) -> Result<()> {
        self.dests[d]
            .push(Queued {
                rel: rel.clone(),
                change,
                origin,
            })
            .await?;
        self.touch(d);
        Ok(())
    }

    /// An UPDATE that changed the sharding key: delete from the old shard,
    /// insert into the new one, in the same source transaction. Values the
    /// update left unchanged (TOAST) come from the old row: the full old
    /// tuple when the table has REPLICA IDENTITY FULL, else the row as the
    /// old shard has it.
    pub(super) async fn move_row(
        &mut self,
        rel: &Arc<RelationInfo>,
        from: usize,
        to: usize,
        old: &OldTuple,
        new: &Tuple,
        commit_lsn: Lsn,
    ) -> Result<()> {
        let ti = rel.table.unwrap_or(0);
        let origin = |what| Origin {
            table: rel.display.clone(),
            commit_lsn,
            what,
            rows: 1,
        };
        let mut fill: Option<Vec<FillValue>> = None;
        if new.columns().any(|c| matches!(c, Column::Unchanged)) {
            fill = Some(match old {
                OldTuple::Old(t) if !t.columns().any(|c| matches!(c, Column::Unchanged)) => t
                    .columns()
                    .map(|c| {
                        let (f, v) = param(c);
                        (f, v.map(<[u8]>::to_vec))
                    })
                    .collect(),
                _ => self.fetch_row(from, rel, old).await?,
            });
        }
        if self.wanted(from, ti) {
            self.delete(from, rel, old, origin("DELETE")).await?;
        }
        if self.wanted(to, ti) {
            self.insert(to, rel, new, fill, origin("INSERT")).await?;
        }
        Ok(())
    }

    /// The current row (text values, in relation column order) on shard
    /// `d`, found by the old tuple's identity.
    pub(super) async fn fetch_row(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        old: &OldTuple,
    ) -> Result<Vec<FillValue>> {
        let mut conds = Vec::new();
        let mut formats = Vec::new();
        let mut params: Vec<Option<&[u8]>> = Vec::new();
        for (i, col) in old.tuple().columns().enumerate() {
            let Some(c) = rel.columns.get(i) else {
                continue;
            };
            if !(c.key || rel.full) || matches!(col, Column::Unchanged) {
                continue;
            }
            let (f, v) = param(col);
            formats.push(f);
            params.push(v);
            conds.push(format!(
                "{} IS NOT DISTINCT FROM ${}",
                quote_ident(&c.name),
                params.len()
            ));
        }
        let cols: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} LIMIT 1",
            cols.join(", "),
            rel.name.quoted(),
            conds.join(" AND ")
        );
        let row = self.dests[d]
            .fetch(&sql, &formats, &params)
            .await?
            .ok_or_else(|| {
                self.stream_error(&format!(
                    "row of {} to move between shards not found on shard {d}",
                    rel.name
                ))
            })?;
        Ok((0..rel.columns.len())
            .map(|i| (WireFormat::Binary, row.get(i).map(<[u8]>::to_vec)))
            .collect())
    }

    /// TRUNCATE of tables in the move: every destination shard drops the
    /// rows that came from this source shard.
    pub(super) async fn truncate(
        &mut self,
        relations: &[u32],
        options: u8,
        commit_lsn: Lsn,
    ) -> Result<()> {
        let n = self.ctx.plan.source_shards();
        let mut whole = Vec::new();
        let mut partial = Vec::new();
        for oid in relations {
            let Some(rel) = self.relations.get(oid) else {
                return Err(self.stream_error(&format!(
                    "TRUNCATE of relation {oid} before its Relation message"
                )));
            };
            let Some(ti) = rel.table else { continue };
            let plan = &self.ctx.plan.tables[ti];
            if !plan.from_source(self.s) {
                continue;
            }
            match plan.source_rows_predicate(self.s, n) {
                None => whole.push((ti, rel.name.quoted(), rel.display.clone())),
                Some(pred) => partial.push((
                    ti,
                    format!("DELETE FROM {} WHERE {pred}", rel.name.quoted()),
                    rel.display.clone(),
                )),
            }
        }
        for d in 0..self.dests.len() {
            let tables: Vec<&(usize, String, std::sync::Arc<str>)> = whole
                .iter()
                .filter(|(ti, _, _)| self.wanted(d, *ti))
                .collect();
            if !tables.is_empty() {
                let mut sql = format!(
                    "TRUNCATE {}",
                    tables
                        .iter()
                        .map(|(_, q, _)| q.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if options & 2 != 0 {
                    sql.push_str(" RESTART IDENTITY");
                }
                if options & 1 != 0 {
                    sql.push_str(" CASCADE");
                }
                let origin = Origin {
                    table: tables[0].2.clone(),
                    commit_lsn,
                    what: "TRUNCATE",
                    rows: 0,
                };
                self.dests[d].queue_sql(&sql, origin).await?;
                self.touch(d);
            }
            let deletes: Vec<(String, std::sync::Arc<str>)> = partial
                .iter()
                .filter(|(ti, _, _)| self.wanted(d, *ti))
                .map(|(_, sql, name)| (sql.clone(), name.clone()))
                .collect();
            for (sql, name) in deletes {
                let origin = Origin {
                    table: name,
                    commit_lsn,
                    what: "TRUNCATE",
                    rows: 0,
                };
                self.dests[d].queue_sql(&sql, origin).await?;
                self.touch(d);
            }
        }
        Ok(())
    }
}
