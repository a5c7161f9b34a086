//! One replication session of one source shard: START_REPLICATION, decode,
//! route, apply in group transactions, confirm what every destination has
//! committed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgdog_protocol::frontend::Format as WireFormat;
use pgdog_protocol::pgoutput::{self, Column, Message, OldTuple, Tuple};
use pgdog_protocol::replication::ServerMessage;
use pgdog_protocol::Lsn;
use tracing::{debug, info};

use crate::net::replication::ReplicationStream;
use crate::sharding::Format;

use super::super::catalog::quote_ident;
use super::super::error::{DataSyncError, Result};
use super::super::progress;
use super::super::state;
use super::super::Ctx;
use super::apply::{param, DestApplier, Kind, Origin, ShapeKey};
use super::relation::RelationInfo;
use super::spool::Spool;

/// Send a status update at least this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Close a group transaction after this many source transactions...
const GROUP_TRANSACTIONS: usize = 5_000;
/// ...or when it has been open this long.
const GROUP_TIME: Duration = Duration::from_millis(200);

/// The source transaction being received.
#[derive(Debug)]
struct Txn {
    commit_lsn: Lsn,
    commit_time: i64,
    /// Destination shards it changed.
    touched: Vec<bool>,
    changes: u64,
}

pub struct Session<'a> {
    ctx: &'a Ctx,
    s: usize,
    status: &'a progress::Stream,
    dests: Vec<DestApplier>,
    relations: HashMap<u32, RelationInfo>,
    /// Per destination: table index -> snapshot LSN of its copy from this
    /// source shard. Transactions committed before it are in the copy.
    copied_at: Vec<HashMap<usize, Lsn>>,
    /// Per destination: last source commit applied before this session.
    applied_before: Vec<Lsn>,
    txn: Option<Txn>,
    /// Source transactions in the open group, and when it opened.
    group_txns: usize,
    group_opened: Option<Instant>,
    /// End of the last source transaction processed (or of WAL known to be
    /// fully processed, from keepalives): what may be confirmed once the
    /// group commits.
    processed: Lsn,
    /// What the slot has been told is flushed.
    confirmed: Lsn,
    /// Highest WAL position received.
    received: Lsn,
    /// Streamed (in-progress) transactions by top-level xid.
    spools: HashMap<u32, Spool>,
    /// Top-level xid of the open stream block.
    streaming_xid: Option<u32>,
    version: u32,
    last_status: Instant,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("source_shard", &self.s)
            .finish_non_exhaustive()
    }
}

/// pgoutput protocol version for a server version: 4 on 16+ (parallel
/// streaming fields), 3 on 15 (two-phase), 2 on 14 (streaming).
fn proto_version(server_version: u32) -> u32 {
    match server_version {
        v if v >= 160000 => 4,
        v if v >= 150000 => 3,
        _ => 2,
    }
}

impl<'a> Session<'a> {
    /// Run until shutdown (Ok) or an error.
    pub async fn run(ctx: &'a Ctx, s: usize, status: &'a progress::Stream) -> Result<()> {
        let plan = &ctx.plan;
        let m = plan.dest_shards();
        // Destinations first: what they already hold decides what to skip.
        let mut dests = Vec::with_capacity(m);
        let mut copied_at = Vec::with_capacity(m);
        let mut applied_before = Vec::with_capacity(m);
        for d in 0..m {
            let mut conn = ctx.endpoints.connect_dest(d).await?;
            state::ensure_schema(&mut conn).await?;
            let copies = state::finished_copies(&mut conn, &plan.slot).await?;
            let applied = state::applied_positions(&mut conn, &plan.slot)
                .await?
                .get(&s)
                .copied()
                .unwrap_or(Lsn::ZERO);
            let mut per_table = HashMap::new();
            for (ti, t) in plan.tables.iter().enumerate() {
                if let Some(lsn) = copies.get(&(s, t.table.name.clone())) {
                    per_table.insert(ti, *lsn);
                }
            }
            copied_at.push(per_table);
            applied_before.push(applied);
            dests.push(DestApplier::new(s, d, conn, applied).await?);
        }

        let mut repl = ctx.endpoints.connect_source(s, true).await?;
        let version = proto_version(repl.server_version_num());
        let mut options: Vec<(&str, String)> = vec![
            ("proto_version", version.to_string()),
            (
                "publication_names",
                format!("\"{}\"", plan.publication.replace('"', "\"\"")),
            ),
            // Binary values unless some table has types whose binary form
            // names server-specific OIDs.
            (
                "binary",
                plan.tables
                    .iter()
                    .all(|t| t.table.binary_safe())
                    .to_string(),
            ),
        ];
        if version >= 2 {
            options.push(("streaming", "on".into()));
        }
        let mut stream = repl
            .start_replication(&plan.slot, Lsn::ZERO, &options)
            .await?;
        info!(source_shard = s, slot = %plan.slot, proto_version = version, "streaming changes");

        let mut session = Session {
            ctx,
            s,
            status,
            dests,
            relations: HashMap::new(),
            copied_at,
            applied_before,
            txn: None,
            group_txns: 0,
            group_opened: None,
            processed: Lsn::ZERO,
            confirmed: Lsn::ZERO,
            received: Lsn::ZERO,
            spools: HashMap::new(),
            streaming_xid: None,
            version,
            last_status: Instant::now(),
        };
        let result = session.run_loop(&mut stream).await;
        if result.is_ok() || matches!(result, Err(DataSyncError::Stopped)) {
            // Clean stop: commit what is complete, confirm it, end the stream.
            if session.txn.is_none() {
                session.commit_group(&mut stream).await?;
            }
            let _ = stream.stop().await;
        }
        result
    }

    async fn run_loop(&mut self, stream: &mut ReplicationStream<'_>) -> Result<()> {
        let mut pgoutput = pgoutput::Decoder::new(self.version);
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = if stream.has_buffered_message() {
                stream.recv().await?
            } else {
                // About to wait for the network: commit what is complete so
                // it becomes visible now, not when more arrives.
                if self.txn.is_none() {
                    self.commit_group(stream).await?;
                }
                tokio::select! {
                    m = stream.recv() => m?,
                    _ = tick.tick() => {
                        self.send_status(stream, false).await?;
                        continue;
                    }
                    _ = self.ctx.shutdown.cancelled() => return Err(DataSyncError::Stopped),
                }
            };
            let Some(msg) = msg else {
                return Err(DataSyncError::Connection(
                    crate::net::ConnectionError::Closed {
                        server: self.ctx.endpoints.source(self.s).addr(),
                        during: Some("streaming replication"),
                    },
                ));
            };
            match msg {
                ServerMessage::XLogData { end, data, .. } => {
                    self.saw_wal(end);
                    self.handle(&mut pgoutput, data, stream).await?;
                }
                ServerMessage::PrimaryKeepalive { end, reply, .. } => {
                    tracing::trace!(source_shard = self.s, %end, reply, in_txn = self.txn.is_some(), "keepalive");
                    self.saw_wal(end);
                    // Nothing in flight: everything up to the server's WAL
                    // end has been received and handled.
                    if self.txn.is_none() && self.spools.is_empty() {
                        self.processed = self.processed.max(end);
                    }
                    if reply {
                        if self.txn.is_none() {
                            self.commit_group(stream).await?;
                        }
                        self.send_status(stream, false).await?;
                    }
                }
            }
            if self.txn.is_none() && self.group_due() {
                self.commit_group(stream).await?;
            }
            if self.last_status.elapsed() >= STATUS_INTERVAL {
                self.send_status(stream, false).await?;
            }
            if self.ctx.shutdown.is_cancelled() && self.txn.is_none() {
                return Err(DataSyncError::Stopped);
            }
        }
    }

    fn saw_wal(&mut self, end: Lsn) {
        if end > self.received {
            self.received = end;
            self.status.current_wal.fetch_max(end.0, Ordering::Relaxed);
        }
    }

    fn group_due(&self) -> bool {
        self.group_txns >= GROUP_TRANSACTIONS
            || self.group_opened.is_some_and(|t| t.elapsed() >= GROUP_TIME)
    }

    async fn send_status(&mut self, stream: &mut ReplicationStream<'_>, reply: bool) -> Result<()> {
        stream
            .send_status(
                self.received.max(self.confirmed),
                self.confirmed,
                self.confirmed,
                reply,
            )
            .await?;
        self.last_status = Instant::now();
        Ok(())
    }

    /// Commit the open group on every destination, then confirm.
    async fn commit_group(&mut self, stream: &mut ReplicationStream<'_>) -> Result<()> {
        let slot = &self.ctx.plan.slot;
        for d in self.dests.iter_mut() {
            d.commit(slot, self.s).await?;
        }
        if self.group_txns > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            self.status.last_apply_at.store(now, Ordering::Relaxed);
        }
        self.group_txns = 0;
        self.group_opened = None;
        let missing: u64 = self.dests.iter().map(|d| d.missing_rows).sum();
        self.status.missing_rows.store(missing, Ordering::Relaxed);
        if self.processed > self.confirmed {
            self.confirmed = self.processed;
            self.status
                .confirmed_flush
                .fetch_max(self.confirmed.0, Ordering::Relaxed);
            self.send_status(stream, false).await?;
        }
        Ok(())
    }

    /// One pgoutput message.
    async fn handle(
        &mut self,
        decoder: &mut pgoutput::Decoder,
        data: Bytes,
        stream: &mut ReplicationStream<'_>,
    ) -> Result<()> {
        // Inside a stream block, changes wait on disk for their commit.
        if decoder.in_stream() && data.first() != Some(&b'E') {
            let xid = self.streaming_xid.ok_or_else(|| {
                self.stream_error("change in a stream block without Stream Start")
            })?;
            return match self.spools.get_mut(&xid) {
                Some(spool) => spool.append(&data),
                None => Err(self.stream_error("stream block without a spool")),
            };
        }
        let msg = decoder.decode(data)?;
        match msg {
            Message::Begin {
                final_lsn,
                commit_time,
                ..
            } => self.begin(final_lsn, commit_time)?,
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => self.commit(commit_lsn, end_lsn)?,
            Message::Relation { relation, .. } => self.relation(&relation),
            Message::Insert { .. }
            | Message::Update { .. }
            | Message::Delete { .. }
            | Message::Truncate { .. } => self.change(msg).await?,
            Message::Type { .. } | Message::Origin { .. } | Message::Message { .. } => {}
            Message::StreamStart { xid, .. } => {
                self.streaming_xid = Some(xid);
                if let std::collections::hash_map::Entry::Vacant(e) = self.spools.entry(xid) {
                    e.insert(Spool::new(xid)?);
                }
            }
            Message::StreamStop => self.streaming_xid = None,
            Message::StreamAbort { xid, subxid, .. } => {
                if xid == subxid {
                    self.spools.remove(&xid);
                } else if let Some(spool) = self.spools.get_mut(&xid) {
                    spool.aborted.insert(subxid);
                }
            }
            Message::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => {
                let mut spool = self.spools.remove(&xid).ok_or_else(|| {
                    self.stream_error(&format!("Stream Commit of unknown transaction {xid}"))
                })?;
                self.begin(commit_lsn, commit_time)?;
                let mut reader = spool.reader()?;
                let mut replayed = 0u64;
                while let Some(raw) = reader.next_message()? {
                    let msg = Message::parse(raw, self.version, true)?;
                    if msg
                        .streamed_xid()
                        .is_some_and(|x| spool.aborted.contains(&x))
                    {
                        continue;
                    }
                    replayed += 1;
                    match msg {
                        Message::Relation { relation, .. } => self.relation(&relation),
                        Message::Insert { .. }
                        | Message::Update { .. }
                        | Message::Delete { .. }
                        | Message::Truncate { .. } => self.change(msg).await?,
                        _ => {}
                    }
                    // A long replay must not starve the status updates.
                    if replayed % 1024 == 0 && self.last_status.elapsed() >= STATUS_INTERVAL {
                        self.send_status(stream, false).await?;
                    }
                }
                debug!(
                    source_shard = self.s,
                    xid,
                    messages = spool.messages,
                    "applied a streamed transaction"
                );
                self.commit(commit_lsn, end_lsn)?;
            }
            Message::BeginPrepare(_)
            | Message::Prepare { .. }
            | Message::CommitPrepared { .. }
            | Message::RollbackPrepared { .. }
            | Message::StreamPrepare { .. } => {
                return Err(self.stream_error(
                    "two-phase messages arrived, but two-phase decoding was not requested",
                ));
            }
        }
        Ok(())
    }

    fn stream_error(&self, message: &str) -> DataSyncError {
        DataSyncError::Stream {
            source_shard: self.s,
            message: message.to_string(),
        }
    }

    fn begin(&mut self, commit_lsn: Lsn, commit_time: i64) -> Result<()> {
        if self.txn.is_some() {
            return Err(self.stream_error("Begin inside a transaction"));
        }
        self.txn = Some(Txn {
            commit_lsn,
            commit_time,
            touched: vec![false; self.dests.len()],
            changes: 0,
        });
        Ok(())
    }

    fn commit(&mut self, commit_lsn: Lsn, end_lsn: Lsn) -> Result<()> {
        let txn = self
            .txn
            .take()
            .ok_or_else(|| self.stream_error("Commit without Begin"))?;
        debug_assert_eq!(txn.commit_lsn, commit_lsn);
        let mut any = false;
        for (d, touched) in txn.touched.iter().enumerate() {
            if *touched {
                self.dests[d].mark(commit_lsn);
                any = true;
            }
        }
        if any {
            self.status.transactions.fetch_add(1, Ordering::Relaxed);
            self.status
                .changes
                .fetch_add(txn.changes, Ordering::Relaxed);
            self.status
                .last_commit_time
                .store(txn.commit_time, Ordering::Relaxed);
        } else if txn.changes == 0 {
            self.status.skipped.fetch_add(1, Ordering::Relaxed);
        }
        self.processed = self.processed.max(end_lsn);
        self.group_txns += 1;
        if self.group_opened.is_none() {
            self.group_opened = Some(Instant::now());
        }
        Ok(())
    }

    fn relation(&mut self, relation: &pgoutput::Relation) {
        let info = RelationInfo::new(relation, &self.ctx.plan);
        if info.table.is_none() {
            debug!(source_shard = self.s, table = %info.name, "changes of this table are not part of the move");
        }
        // pgoutput repeats Relation messages (first use in a session, after
        // cache invalidations); statements change only with the shape.
        let changed = self
            .relations
            .get(&relation.oid)
            .is_none_or(|old| !old.same_shape(&info));
        if changed {
            for d in self.dests.iter_mut() {
                d.invalidate(relation.oid);
            }
        }
        self.relations.insert(relation.oid, info);
    }

    /// Whether destination `d` needs this transaction's change of table
    /// `table`: not already applied there, and not already in its copy.
    fn wanted(&self, d: usize, table: usize) -> bool {
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
    fn shard_of(&self, rel: &RelationInfo, tuple: &Tuple) -> Result<Option<usize>> {
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

    fn targets(&self, shard: Option<usize>) -> Vec<usize> {
        match shard {
            Some(d) => vec![d],
            None => (0..self.dests.len()).collect(),
        }
    }

    async fn change(&mut self, msg: Message) -> Result<()> {
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

    fn touch(&mut self, d: usize) {
        if let Some(txn) = &mut self.txn {
            txn.touched[d] = true;
            txn.changes += 1;
        }
        if self.group_opened.is_none() {
            self.group_opened = Some(Instant::now());
        }
    }

    /// INSERT the new tuple; `fill` supplies values for `u` columns.
    async fn insert(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        new: &Tuple,
        fill: Option<&[FillValue]>,
        origin: Origin,
    ) -> Result<()> {
        let mut formats = Vec::with_capacity(rel.columns.len());
        let mut params: Vec<Option<&[u8]>> = Vec::with_capacity(rel.columns.len());
        for (i, col) in new.columns().enumerate() {
            match (col, fill) {
                (Column::Unchanged, Some(fill)) => {
                    let (f, v) = fill
                        .get(i)
                        .map(|(f, v)| (*f, v.as_deref()))
                        .unwrap_or((WireFormat::Text, None));
                    formats.push(f);
                    params.push(v);
                }
                (Column::Unchanged, None) => {
                    return Err(self.stream_error(&format!(
                        "INSERT into {} with an unchanged TOAST value",
                        rel.name
                    )))
                }
                (c, _) => {
                    let (f, v) = param(c);
                    formats.push(f);
                    params.push(v);
                }
            }
        }
        let key = ShapeKey {
            relation: rel.oid,
            kind: Kind::Insert,
            mask: Vec::new(),
        };
        self.dests[d]
            .queue(rel, key, &formats, &params, origin)
            .await?;
        self.touch(d);
        Ok(())
    }

    async fn update(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        old: Option<&OldTuple>,
        new: &Tuple,
        origin: Origin,
    ) -> Result<()> {
        let mut formats = Vec::new();
        let mut params: Vec<Option<&[u8]>> = Vec::new();
        let mut mask = Vec::with_capacity(rel.columns.len() * 2);
        for col in new.columns() {
            let set = !matches!(col, Column::Unchanged);
            mask.push(set);
            if set {
                let (f, v) = param(col);
                formats.push(f);
                params.push(v);
            }
        }
        if !mask.iter().any(|m| *m) {
            return Ok(());
        }
        let kind = if rel.full {
            // Match the old row on every column it carries.
            let Some(old) = old else {
                return Err(self.stream_error(&format!(
                    "UPDATE of {} (REPLICA IDENTITY FULL) without the old row",
                    rel.name
                )));
            };
            for col in old.tuple().columns() {
                let on = !matches!(col, Column::Unchanged);
                mask.push(on);
                if on {
                    let (f, v) = param(col);
                    formats.push(f);
                    params.push(v);
                }
            }
            Kind::UpdateFull
        } else {
            // Key values: from the old key when the key changed, else new.
            let source = old.map(|o| o.tuple()).unwrap_or(new);
            for (i, col) in source.columns().enumerate() {
                if rel.columns.get(i).is_some_and(|c| c.key) {
                    let (f, v) = param(col);
                    formats.push(f);
                    params.push(v);
                }
            }
            Kind::Update
        };
        let key = ShapeKey {
            relation: rel.oid,
            kind,
            mask,
        };
        self.dests[d]
            .queue(rel, key, &formats, &params, origin)
            .await?;
        self.touch(d);
        Ok(())
    }

    async fn delete(
        &mut self,
        d: usize,
        rel: &RelationInfo,
        old: &OldTuple,
        origin: Origin,
    ) -> Result<()> {
        let mut formats = Vec::new();
        let mut params: Vec<Option<&[u8]>> = Vec::new();
        let key = if rel.full {
            let mut mask = vec![false; rel.columns.len()];
            for col in old.tuple().columns() {
                let on = !matches!(col, Column::Unchanged);
                mask.push(on);
                if on {
                    let (f, v) = param(col);
                    formats.push(f);
                    params.push(v);
                }
            }
            ShapeKey {
                relation: rel.oid,
                kind: Kind::DeleteFull,
                mask,
            }
        } else {
            for (i, col) in old.tuple().columns().enumerate() {
                if rel.columns.get(i).is_some_and(|c| c.key) {
                    let (f, v) = param(col);
                    formats.push(f);
                    params.push(v);
                }
            }
            ShapeKey {
                relation: rel.oid,
                kind: Kind::Delete,
                mask: Vec::new(),
            }
        };
        self.dests[d]
            .queue(rel, key, &formats, &params, origin)
            .await?;
        self.touch(d);
        Ok(())
    }

    /// An UPDATE that changed the sharding key: delete from the old shard,
    /// insert into the new one, in the same source transaction. Values the
    /// update left unchanged (TOAST) come from the old row: the full old
    /// tuple when the table has REPLICA IDENTITY FULL, else the row as the
    /// old shard has it.
    async fn move_row(
        &mut self,
        rel: &RelationInfo,
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
        };
        let mut fill: Option<Fill> = None;
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
            self.insert(to, rel, new, fill.as_deref(), origin("INSERT"))
                .await?;
        }
        Ok(())
    }

    /// The current row (text values, in relation column order) on shard
    /// `d`, found by the old tuple's identity.
    async fn fetch_row(&mut self, d: usize, rel: &RelationInfo, old: &OldTuple) -> Result<Fill> {
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
    async fn truncate(&mut self, relations: &[u32], options: u8, commit_lsn: Lsn) -> Result<()> {
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
                };
                self.dests[d].queue_sql(&sql, origin).await?;
                self.touch(d);
            }
        }
        Ok(())
    }
}

/// A value for a `u` column: its format and bytes (`None`: NULL).
type FillValue = (WireFormat, Option<Vec<u8>>);
/// Values for a row's `u` columns, per column.
type Fill = Vec<FillValue>;
