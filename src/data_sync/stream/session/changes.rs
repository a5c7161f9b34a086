//! Applying one change: which destination shard(s) its row goes to, and
//! the statement(s) that apply it there. A row whose sharding key changed
//! moves: deleted on the old shard, inserted on the new one. Where the old
//! tuple cannot say which shard that was (the key is outside the replica
//! identity), the new shard gets an upsert and every other shard a delete
//! by identity, all in the same destination group.

use std::sync::Arc;
use std::time::Instant;

use pgdog_protocol::frontend::Format as WireFormat;
use pgdog_protocol::pgoutput::{Column, Message, OldTuple, Tuple};
use pgdog_protocol::Lsn;
use tracing::warn;

use super::super::super::catalog::quote_ident;
use super::super::super::error::Result;
use super::super::batch::{param, Change, FillValue, Origin, Queued};
use super::super::relation::RelationInfo;
use super::Session;
use crate::sharding::Format;

/// How long a change waits for a chunk being written before the stream
/// lets go of its destination transaction and starts again.
const HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The columns that identify a row (the key, or every column for FULL)
/// with their values from `tuple`, as `col IS NOT DISTINCT FROM $n`.
struct Identity<'t> {
    conds: Vec<String>,
    formats: Vec<WireFormat>,
    params: Vec<Option<&'t [u8]>>,
}

fn identity<'t>(rel: &RelationInfo, tuple: &'t Tuple) -> Identity<'t> {
    let mut id = Identity {
        conds: Vec::new(),
        formats: Vec::new(),
        params: Vec::new(),
    };
    for (i, col) in tuple.columns().enumerate() {
        let Some(c) = rel.columns.get(i) else {
            continue;
        };
        if !(c.key || rel.full) || matches!(col, Column::Unchanged) {
            continue;
        }
        let (f, v) = param(col);
        id.formats.push(f);
        id.params.push(v);
        id.conds.push(format!(
            "{} IS NOT DISTINCT FROM ${}",
            quote_ident(&c.name),
            id.params.len()
        ));
    }
    id
}

/// Where a statement on `rel` comes from, for its errors: `origin(what,
/// rows)`.
fn origin_of(rel: &RelationInfo, commit_lsn: Lsn) -> impl Fn(&'static str, u32) -> Origin + '_ {
    move |what, rows| Origin {
        table: rel.display.clone(),
        commit_lsn,
        what,
        rows,
    }
}

/// A table a TRUNCATE reaches: its plan index, the statement (or target)
/// for it, and its name for errors.
type TruncateTarget = (usize, String, std::sync::Arc<str>);

impl Session<'_> {
    /// Whether destination `d` needs this transaction's change of table
    /// `table`: not already applied there, and not already in its copy.
    pub(super) fn wanted(&self, d: usize, table: usize) -> bool {
        let Some(txn) = &self.txn else { return false };
        // Copied again from scratch: the new copy reads these rows.
        if self.restarting.contains(&table) {
            return false;
        }
        if txn.commit_lsn <= self.applied_before[d] {
            return false;
        }
        // A chunked table: decided for this row by its chunk's snapshot.
        if let Some(decided) = &self.decided {
            return decided.get(d).copied().unwrap_or(false);
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

    /// The shard an old tuple's row is on, when the old tuple says.
    fn old_shard(&self, rel: &RelationInfo, old: &OldTuple) -> Result<Option<usize>> {
        if rel.key_outside_identity {
            // A `K` tuple has NULL where the key is: it says nothing.
            return Ok(None);
        }
        self.shard_of(rel, old.tuple())
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
        self.decided = None;
        let chunked = self
            .books
            .get(&ti)
            .filter(|b| !b.settled(commit_lsn))
            .cloned();
        if let Some(book) = chunked {
            if self.decide_chunked(&book, &rel, relation_oid, &msg).await? {
                return Ok(());
            }
        }
        let origin = origin_of(&rel, commit_lsn);
        match msg {
            Message::Insert { new, .. } => {
                let shard = self.shard_of(&rel, &new)?;
                for d in self.targets(shard) {
                    if self.wanted(d, ti) {
                        self.insert(d, &rel, &new, None, origin("INSERT", 1))
                            .await?;
                    }
                }
            }
            Message::Update { old, new, .. } if rel.key_outside_identity => {
                self.update_anywhere(&rel, ti, old.as_ref(), &new, commit_lsn)
                    .await?;
            }
            Message::Update { old, new, .. } => {
                self.update_routed(&rel, ti, old, &new, commit_lsn).await?;
            }
            Message::Delete { old, .. } => {
                let shard = self.old_shard(&rel, &old)?;
                let rows = u32::from(shard.is_some() || rel.dest_key.is_none());
                for d in self.targets(shard) {
                    if self.wanted(d, ti) {
                        self.delete(d, &rel, &old, origin("DELETE", rows)).await?;
                    }
                }
            }
            _ => {}
        }
        self.decided = None;
        Ok(())
    }

    /// A change of a table copied in chunks: which chunk decides it, in
    /// `self.decided`. `true`: handled here already (an update that moves
    /// its row from one chunk to another).
    async fn decide_chunked(
        &mut self,
        book: &crate::data_sync::chunks::book::TableBook,
        rel: &Arc<RelationInfo>,
        relation_oid: u32,
        msg: &Message,
    ) -> Result<bool> {
        let positions = self
            .key_positions
            .get(&relation_oid)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let key_of = |t: &Tuple| book.key.key_of(positions, |i| t.get(i));
        let (key, old_key) = match &msg {
            Message::Insert { new, .. } => (key_of(new), None),
            Message::Update { old, new, .. } => {
                (key_of(new), old.as_ref().map(|o| key_of(o.tuple())))
            }
            Message::Delete { old, .. } => (key_of(old.tuple()), None),
            _ => (None, None),
        };
        let unreadable = format!(
            "a change of {} does not carry its chunk key {} readably",
            rel.name,
            book.key.row(None)
        );
        let key = key.ok_or_else(|| self.stream_error(&unreadable))?;
        let decided = self.decide_row(book, &key).await?;
        if let Some(old_key) = old_key.filter(|k| k.as_ref() != Some(&key)) {
            let old_key = old_key.ok_or_else(|| self.stream_error(&unreadable))?;
            let old_decided = self.decide_row(book, &old_key).await?;
            if old_decided != decided {
                if let Message::Update {
                    old: Some(old),
                    new,
                    ..
                } = msg
                {
                    self.update_across_chunks(rel, old, new, old_decided, decided)
                        .await?;
                }
                return Ok(true);
            }
        }
        self.decided = Some(decided);
        Ok(false)
    }

    /// An update routed by its old and new keys: in place, moved between
    /// shards, rewritten (an ALWAYS identity changed), or broadcast when
    /// its key cannot be read.
    async fn update_routed(
        &mut self,
        rel: &Arc<RelationInfo>,
        ti: usize,
        old: Option<OldTuple>,
        new: &Tuple,
        commit_lsn: Lsn,
    ) -> Result<()> {
        let origin = origin_of(rel, commit_lsn);
        let new_shard = self.shard_of(rel, new)?;
        let old_shard = match &old {
            Some(o) => self.shard_of(rel, o.tuple())?,
            None => new_shard,
        };
        let moved = rel.dest_key.is_some()
            && new_shard.is_some()
            && old_shard.is_some()
            && old_shard != new_shard;
        // An identity column the destination generates ALWAYS
        // cannot be SET: a change of it is a delete and an insert.
        let rewrite = rel.always_in_key()
            && old
                .as_ref()
                .is_some_and(|o| always_changed(rel, o.tuple(), new));
        if moved {
            let (from, to) = (old_shard.unwrap_or(0), new_shard.unwrap_or(0));
            let Some(old) = old else {
                return Err(self.stream_error("key change without the old key"));
            };
            if self.wanted(from, ti) || self.wanted(to, ti) {
                self.move_row(rel, from, to, &old, new, commit_lsn).await?;
            }
        } else if let (true, Some(old)) = (rewrite, &old) {
            for d in self.targets(new_shard.or(old_shard)) {
                if self.wanted(d, ti) {
                    self.move_row(rel, d, d, old, new, commit_lsn).await?;
                }
            }
        } else {
            // A key we cannot read (TOASTed, unchanged) may be on
            // any shard: broadcast, and expect no row on most.
            let shard = new_shard.or(old_shard);
            let rows = u32::from(shard.is_some() || rel.dest_key.is_none());
            for d in self.targets(shard) {
                if self.wanted(d, ti) {
                    self.update(d, rel, old.as_ref(), new, origin("UPDATE", rows))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Which destination shards need a change of the row with `key` of a
    /// chunked table, waiting for a chunk being written where one holds it.
    async fn decide_row(
        &mut self,
        book: &crate::data_sync::chunks::book::TableBook,
        key: &crate::data_sync::chunks::key::Key,
    ) -> Result<Vec<bool>> {
        use crate::data_sync::chunks::book::Decision;
        let Some(txn) = &self.txn else {
            return Err(self.stream_error("change outside a transaction"));
        };
        let (xid, lsn) = (txn.xid, txn.commit_lsn);
        let mut out = vec![false; self.dests.len()];
        for (d, want) in out.iter_mut().enumerate() {
            loop {
                match book.decide(d, key, xid, lsn) {
                    Decision::Apply => {
                        *want = true;
                        break;
                    }
                    Decision::Skip => break,
                    Decision::Hold(id) => {
                        crate::data_sync::copy::chunked::fail_point("hold");
                        let wait = self.unless_stopped(book.wait(d, id));
                        match tokio::time::timeout(HOLD_LIMIT, wait).await {
                            Ok(r) => r?,
                            Err(_) => {
                                return Err(
                                    super::super::super::error::DataSyncError::HeldByChunk {
                                        table: self.ctx.plan.tables[book.table]
                                            .table
                                            .name
                                            .to_string(),
                                        source_shard: self.s,
                                        seconds: HOLD_LIMIT.as_secs(),
                                    },
                                )
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// An UPDATE of a chunked table whose key moved between a part some
    /// shard holds and one it does not (yet): the old row is deleted where
    /// its chunk has it, the new one inserted where its chunk wants it
    /// (a later chunk reads it otherwise).
    async fn update_across_chunks(
        &mut self,
        rel: &Arc<RelationInfo>,
        old: &OldTuple,
        new: &Tuple,
        old_decided: Vec<bool>,
        new_decided: Vec<bool>,
    ) -> Result<()> {
        let ti = rel.table.unwrap_or(0);
        let commit_lsn = self.txn.as_ref().map(|t| t.commit_lsn).unwrap_or_default();
        let origin = origin_of(rel, commit_lsn);
        self.decided = Some(old_decided);
        let from = self.old_shard(rel, old)?;
        // Not knowing the shard, a delete on every shard finds the row on
        // one: none is expected of each.
        let rows = u32::from(from.is_some() || rel.dest_key.is_none());
        for d in self.targets(from) {
            if self.wanted(d, ti) {
                self.delete(d, rel, old, origin("DELETE", rows)).await?;
            }
        }
        self.decided = Some(new_decided);
        let to = self.shard_of(rel, new)?;
        let fill = if new.columns().any(|c| matches!(c, Column::Unchanged)) {
            match self.source_row(rel, new).await? {
                Some(row) => Some(row),
                // Not on the source either: a later change in the stream
                // deletes it (or moves it on), so there is nothing to
                // insert.
                None => {
                    self.decided = None;
                    return Ok(());
                }
            }
        } else {
            None
        };
        for d in self.targets(to) {
            if self.wanted(d, ti) {
                self.insert(d, rel, new, fill.clone(), origin("INSERT", 1))
                    .await?;
            }
        }
        self.decided = None;
        Ok(())
    }

    /// An UPDATE of a table sharded outside its replica identity: the row
    /// belongs on the new tuple's shard now, and may have been on any
    /// other. Every column known: an upsert there and a delete by identity
    /// elsewhere, batched like any change. Some value left unchanged
    /// (TOAST): the row is taken (`DELETE ... RETURNING`) from whichever
    /// shard has it and inserted, whole, on its shard.
    async fn update_anywhere(
        &mut self,
        rel: &Arc<RelationInfo>,
        ti: usize,
        old: Option<&OldTuple>,
        new: &Tuple,
        commit_lsn: Lsn,
    ) -> Result<()> {
        let origin = origin_of(rel, commit_lsn);
        let m = self.dests.len();
        let Some(to) = self.shard_of(rel, new)? else {
            // The key itself is an unchanged TOAST value: the row stayed
            // where it was, wherever that is.
            for d in 0..m {
                if self.wanted(d, ti) {
                    self.update(d, rel, old, new, origin("UPDATE", 0)).await?;
                }
            }
            return Ok(());
        };
        // The row as it was identified before this change.
        let before = old.cloned().unwrap_or_else(|| OldTuple::Key(new.clone()));
        let whole = !new.columns().any(|c| matches!(c, Column::Unchanged));
        if whole {
            for d in 0..m {
                if (d != to || old.is_some()) && self.wanted(d, ti) {
                    self.delete(d, rel, &before, origin("DELETE", 0)).await?;
                }
            }
            if self.wanted(to, ti) {
                let change = if old.is_some() {
                    // A new identity: the old one was deleted above.
                    Change::Insert {
                        new: new.clone(),
                        fill: None,
                    }
                } else {
                    Change::Upsert { new: new.clone() }
                };
                self.queue(to, rel, change, origin("UPSERT", 0)).await?;
            }
            return Ok(());
        }
        let mut fill = None;
        let mut every_shard = true;
        for d in 0..m {
            if !self.wanted(d, ti) {
                // Already applied there (a replay after a crash): if the
                // row was there, it is gone with its values.
                every_shard = false;
                continue;
            }
            if let Some(row) = self.take_row(d, rel, &before).await? {
                fill = Some(row);
            }
        }
        if !self.wanted(to, ti) {
            return Ok(());
        }
        let fill = match fill {
            Some(f) => Some(f),
            None if every_shard => {
                warn!(table = %rel.name, lsn = %commit_lsn, "UPDATE found its row on no destination shard");
                self.dests[to].missing_rows += 1;
                None
            }
            None => self.source_row(rel, new).await?,
        };
        if let Some(fill) = fill {
            self.insert(to, rel, new, Some(fill), origin("INSERT", 1))
                .await?;
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
        if !new.columns().enumerate().any(|(i, c)| rel.sets(i, &c)) {
            // Nothing to set: every column is an unchanged TOAST value or
            // a generated identity.
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

    /// An UPDATE that changed the sharding key (or an identity the
    /// destination generates): delete from the old shard, insert into the
    /// new one, in the same source transaction. Values the update left
    /// unchanged (TOAST) come from the old row: the full old tuple when the
    /// table has REPLICA IDENTITY FULL, else the row as the old shard has
    /// it, or, when the old shard already applied this change before a
    /// crash (its row is gone), the source's current row.
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
        let mut skip_insert = false;
        if new.columns().any(|c| matches!(c, Column::Unchanged)) {
            fill = match old {
                OldTuple::Old(t) if !t.columns().any(|c| matches!(c, Column::Unchanged)) => Some(
                    t.columns()
                        .map(|c| {
                            let (f, v) = param(c);
                            (f, v.map(<[u8]>::to_vec))
                        })
                        .collect(),
                ),
                _ if self.wanted(from, ti) => match self.fetch_row(from, rel, old).await? {
                    Some(row) => Some(row),
                    None => self.source_row(rel, new).await?,
                },
                _ => self.source_row(rel, new).await?,
            };
            // Not on the source either: a later change deleted it.
            skip_insert = fill.is_none();
        }
        if self.wanted(from, ti) {
            self.delete(from, rel, old, origin("DELETE")).await?;
        }
        if self.wanted(to, ti) && !skip_insert {
            self.insert(to, rel, new, fill, origin("INSERT")).await?;
        }
        Ok(())
    }

    /// The current row (binary values, in relation column order) on shard
    /// `d`, found by the old tuple's identity.
    pub(super) async fn fetch_row(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        old: &OldTuple,
    ) -> Result<Option<Vec<FillValue>>> {
        self.row_on(d, rel, old, false).await
    }

    /// Delete the row `old` identifies from shard `d`, returning its values
    /// (binary, in relation column order) if it was there. The delete
    /// commits with the group.
    async fn take_row(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        old: &OldTuple,
    ) -> Result<Option<Vec<FillValue>>> {
        let row = self.row_on(d, rel, old, true).await?;
        self.touch(d);
        Ok(row)
    }

    /// The row `old` identifies on shard `d`, read or (`take`) deleted
    /// inside the open group.
    async fn row_on(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        old: &OldTuple,
        take: bool,
    ) -> Result<Option<Vec<FillValue>>> {
        let id = identity(rel, old.tuple());
        let (table, cond, cols) = (
            format!("{}{}", rel.only(), rel.name.quoted()),
            id.conds.join(" AND "),
            column_list(rel),
        );
        let sql = if take {
            format!("DELETE FROM {table} WHERE {cond} RETURNING {cols}")
        } else {
            format!("SELECT {cols} FROM {table} WHERE {cond} LIMIT 1")
        };
        let row = self.dests[d].fetch(&sql, &id.formats, &id.params).await?;
        Ok(row.map(|row| binary_fill(rel, &row)))
    }

    /// The row `new` identifies as the source has it now (text values):
    /// what a replay takes unchanged TOAST values from when the shard that
    /// held them already applied the change. Any later change of those
    /// columns follows in the stream, so the row ends up right. `None`
    /// when the source no longer has the row.
    async fn source_row(
        &mut self,
        rel: &RelationInfo,
        new: &Tuple,
    ) -> Result<Option<Vec<FillValue>>> {
        let ti = rel.table.unwrap_or(0);
        let only = if self.ctx.plan.tables[ti].table.relkind == 'p' {
            ""
        } else {
            "ONLY "
        };
        let keyed = RelationInfo {
            full: false,
            ..rel.clone()
        };
        let id = identity(&keyed, new);
        let select = |cols: String| {
            format!(
                "SELECT {cols} FROM {only}{} WHERE {} LIMIT 1",
                rel.name.quoted(),
                id.conds.join(" AND ")
            )
        };
        let conn = match &mut self.source_conn {
            Some(c) => c,
            none => none.insert(self.ctx.endpoints.connect_source(self.s, false).await?),
        };
        let first = conn
            .query_params(
                &select(column_list(rel)),
                &id.formats,
                id.params.iter().copied(),
                WireFormat::Text,
            )
            .await;
        let rows = match first {
            // A column of the stream's shape has another name, or none, in
            // the source's catalog (a captured RENAME or DROP COLUMN the
            // stream has not reached): found by its place, else NULL (the
            // drop follows).
            Err(e) if e.code() == Some("42703") => {
                let now = conn
                    .query_text(
                        "SELECT attnum::text, attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                        &[&rel.name.quoted()],
                    )
                    .await?;
                let now: Vec<(i32, String)> = now
                    .iter()
                    .filter_map(|r| Some((r.text(0)?.parse().ok()?, r.text(1)?.to_string())))
                    .collect();
                let names: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
                let cols = current_columns(&names, &now)
                    .into_iter()
                    .map(|c| c.map_or_else(|| "NULL".to_string(), |n| quote_ident(&n)))
                    .collect::<Vec<_>>()
                    .join(", ");
                conn.query_params(
                    &select(cols),
                    &id.formats,
                    id.params.iter().copied(),
                    WireFormat::Text,
                )
                .await?
            }
            other => other?,
        };
        warn!(table = %rel.name, found = !rows.is_empty(), "took unchanged values of a moved row from the source (replay after a partial commit)");
        Ok(rows.first().map(|row| {
            (0..rel.columns.len())
                .map(|i| (WireFormat::Text, row.get(i).map(<[u8]>::to_vec)))
                .collect()
        }))
    }

    /// For each of `targets` copied in chunks, on shard `d`: a DELETE of
    /// its rows outside the chunks read after the transaction (`xid`,
    /// `commit_lsn`) that truncates it.
    async fn outside_later_chunks<'t>(
        &mut self,
        d: usize,
        targets: impl Iterator<Item = &'t TruncateTarget>,
        xid: u32,
        commit_lsn: Lsn,
    ) -> Result<Vec<TruncateTarget>> {
        let n = self.ctx.plan.source_shards();
        let mut by_range: Vec<TruncateTarget> = Vec::new();
        for (ti, _, name) in targets {
            let Some(book) = self.books.get(ti).cloned() else {
                continue;
            };
            self.unless_stopped(book.wait_idle(d)).await?;
            let Some(ranges) = book.unseen(d, xid, commit_lsn) else {
                continue;
            };
            let plan = &self.ctx.plan.tables[*ti];
            let target = format!("{}{}", plan.only(), plan.table.name.quoted());
            let pred = plan.source_rows_predicate(self.s, n);
            for r in ranges {
                let mut conds = book.key.range_conds(r.lo.as_ref(), r.hi.as_ref());
                conds.extend(pred.clone());
                if conds.is_empty() {
                    conds.push("true".into());
                }
                by_range.push((
                    *ti,
                    format!("DELETE FROM {target} WHERE {}", conds.join(" AND ")),
                    name.clone(),
                ));
            }
        }
        Ok(by_range)
    }

    /// TRUNCATE of tables in the move, as the source meant it: every
    /// destination shard drops the rows that came from this source shard;
    /// `RESTART IDENTITY` is kept; nothing cascades into tables outside
    /// the move, and a plain table's inheritance children are left alone
    /// (they come as their own relations when they were truncated too).
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
            let target = format!("{}{}", rel.only(), rel.name.quoted());
            match plan.source_rows_predicate(self.s, n) {
                None => whole.push((ti, target, rel.display.clone())),
                Some(pred) => partial.push((
                    ti,
                    format!("DELETE FROM {target} WHERE {pred}"),
                    rel.display.clone(),
                )),
            }
        }
        // A table referenced by a foreign key from a table not truncated
        // with it cannot be truncated: its rows are deleted instead (in
        // replica mode, without checking or cascading the references).
        let truncated: Vec<&crate::data_sync::catalog::TableName> = whole
            .iter()
            .map(|(ti, _, _)| self.ctx.plan.tables[*ti].name())
            .collect();
        let mut deletes_instead = Vec::new();
        whole.retain(|(ti, target, name)| {
            let blocked = self.ctx.plan.tables[*ti]
                .dest_table
                .referenced_by
                .iter()
                .any(|r| !truncated.contains(&r));
            if blocked {
                warn!(table = %name, "TRUNCATE of a table that other destination tables reference: deleting its rows instead");
                deletes_instead.push((*ti, format!("DELETE FROM {target}"), name.clone()));
            }
            !blocked
        });
        partial.extend(deletes_instead);
        let (xid, _) = self
            .txn
            .as_ref()
            .map(|t| (t.xid, t.commit_lsn))
            .unwrap_or_default();
        for d in 0..self.dests.len() {
            // A table copied in chunks: a chunk read after the TRUNCATE
            // holds rows it must not remove; only the others' are (its
            // TRUNCATE, or DELETE, is then replaced by those).
            let by_range = self
                .outside_later_chunks(d, whole.iter().chain(&partial), xid, commit_lsn)
                .await?;
            let replaced: Vec<usize> = by_range.iter().map(|(ti, _, _)| *ti).collect();
            let tables: Vec<&TruncateTarget> = whole
                .iter()
                .filter(|(ti, _, _)| self.wanted(d, *ti) && !replaced.contains(ti))
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
                .filter(|(ti, _, _)| !replaced.contains(ti))
                .chain(&by_range)
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

/// Whether an identity column the destination generates ALWAYS has a
/// different value in `new` than in `old`.
fn always_changed(rel: &RelationInfo, old: &Tuple, new: &Tuple) -> bool {
    rel.columns.iter().enumerate().any(|(i, c)| {
        c.always
            && match (old.get(i), new.get(i)) {
                (Some(a), Some(b)) => a.bytes() != b.bytes(),
                _ => false,
            }
    })
}

/// The source's current name of each of the stream's columns `names`
/// (in attribute order, as pgoutput lists them), given the current
/// columns `now` (attribute number, name): the same name; else, between
/// the neighbours found by name, the current column at the same place
/// when as many are there as are missing (renamed); else none (dropped,
/// or after the last column found by name, where a column added since
/// looks the same).
fn current_columns(names: &[&str], now: &[(i32, String)]) -> Vec<Option<String>> {
    let by_name: Vec<Option<i32>> = names
        .iter()
        .map(|n| now.iter().find(|(_, c)| c == n).map(|(a, _)| *a))
        .collect();
    let mut out: Vec<Option<String>> = names
        .iter()
        .zip(&by_name)
        .map(|(n, a)| a.map(|_| n.to_string()))
        .collect();
    let mut i = 0;
    while i < names.len() {
        if by_name[i].is_some() {
            i += 1;
            continue;
        }
        // A run of columns not found by name, and its neighbours.
        let start = i;
        while i < names.len() && by_name[i].is_none() {
            i += 1;
        }
        let lo = by_name[..start]
            .iter()
            .rev()
            .flatten()
            .next()
            .copied()
            .unwrap_or(0);
        let hi = by_name.get(i).copied().flatten().unwrap_or(i32::MAX);
        let gap: Vec<&(i32, String)> = now
            .iter()
            .filter(|(a, c)| *a > lo && *a < hi && !names.contains(&c.as_str()))
            .collect();
        // After the last column found by name, a column added since
        // cannot be told from a renamed one: none.
        if hi != i32::MAX && gap.len() == i - start {
            for (k, (_, c)) in gap.into_iter().enumerate() {
                out[start + k] = Some(c.clone());
            }
        }
    }
    out
}

fn column_list(rel: &RelationInfo) -> String {
    rel.columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn binary_fill(rel: &RelationInfo, row: &pgdog_protocol::backend::DataRow) -> Vec<FillValue> {
    (0..rel.columns.len())
        .map(|i| (WireFormat::Binary, row.get(i).map(<[u8]>::to_vec)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::current_columns;

    fn now(cols: &[(i32, &str)]) -> Vec<(i32, String)> {
        cols.iter().map(|(a, n)| (*a, n.to_string())).collect()
    }

    #[test]
    fn columns_renamed_or_dropped_ahead_of_the_stream_are_found_by_place() {
        // b renamed to b2, d dropped, e added since.
        let found = current_columns(
            &["a", "b", "c", "d"],
            &now(&[(1, "a"), (2, "b2"), (3, "c"), (5, "e")]),
        );
        assert_eq!(
            found,
            vec![Some("a".into()), Some("b2".into()), Some("c".into()), None]
        );
        // Two neighbours renamed at once keep their order.
        let found = current_columns(
            &["a", "x", "y", "z"],
            &now(&[(1, "a"), (2, "x1"), (3, "y1"), (4, "z")]),
        );
        assert_eq!(
            found,
            vec![
                Some("a".into()),
                Some("x1".into()),
                Some("y1".into()),
                Some("z".into())
            ]
        );
        // After the last known column, renamed and added look alike: none.
        let found = current_columns(&["a", "b"], &now(&[(1, "a"), (4, "z")]));
        assert_eq!(found, vec![Some("a".into()), None]);
    }
}
