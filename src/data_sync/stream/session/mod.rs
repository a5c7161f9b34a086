//! One replication session of one source shard: START_REPLICATION, decode,
//! route, apply in group transactions, confirm what every destination has
//! committed.

mod changes;
mod ddl;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgdog_protocol::pgoutput::{self, Message};
use pgdog_protocol::replication::ServerMessage;
use pgdog_protocol::Lsn;
use tracing::{debug, info};

use super::super::barrier::{self, Ask, Request};
use super::super::ctx::Ctx;
use super::super::error::{DataSyncError, Result};
use super::super::progress;
use super::super::state;
use super::apply::DestApplier;
use super::relation::RelationInfo;
use super::spool::Spool;

/// Send a status update at least this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Close a group transaction after this many source transactions...
const GROUP_TRANSACTIONS: usize = 5_000;
/// ...or when it has been open this long.
const GROUP_TIME: Duration = Duration::from_millis(200);
/// One message from the reader, or the end of the stream.
type ReadItem = Result<Option<ServerMessage>, crate::net::ConnectionError>;

/// When the source has nothing more right now, a group younger than this
/// waits for more before committing: commit delay stays small, and a
/// stream that just keeps pace still commits in batches.
const COMMIT_LINGER: Duration = Duration::from_millis(5);

/// The source transaction being received.
#[derive(Debug)]
struct Txn {
    /// The top-level transaction id: whether a chunk's snapshot saw it.
    xid: u32,
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
    relations: HashMap<u32, std::sync::Arc<RelationInfo>>,
    /// Per destination: table index -> snapshot LSN of its copy from this
    /// source shard. Transactions committed before it are in the copy.
    copied_at: Vec<HashMap<usize, Lsn>>,
    /// Per destination: last source commit applied before this session.
    applied_before: Vec<Lsn>,
    /// Tables of this source shard copied in chunks, by plan index.
    books: HashMap<usize, std::sync::Arc<crate::data_sync::chunks::book::TableBook>>,
    /// Per relation of a chunked table: where each chunk key column sits
    /// in its tuples.
    key_positions: HashMap<u32, Vec<usize>>,
    /// For the change being applied to a chunked table: which destination
    /// shards need it (decided by the chunk book, row by row).
    decided: Option<Vec<bool>>,
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
    /// Commit LSN of the last source transaction processed in this
    /// session: what a verify hold reports it stopped after.
    last_commit: Lsn,
    /// Highest WAL position received.
    received: Lsn,
    /// Streamed (in-progress) transactions by top-level xid.
    spools: HashMap<u32, Spool>,
    /// Top-level xid of the open stream block.
    streaming_xid: Option<u32>,
    /// A plain session on the source, opened when a replayed row move
    /// needs values the destination no longer has.
    source_conn: Option<crate::net::Connection>,
    version: u32,
    last_status: Instant,
    /// Batches the reader task read ahead, and the rest of the current one.
    items: tokio::sync::mpsc::Receiver<super::reader::Item>,
    read: std::collections::VecDeque<ServerMessage>,
    /// Positions for the reader task to report.
    status_tx: tokio::sync::watch::Sender<super::reader::Status>,
    /// Where `pgdog verify` asks this session to hold, and what it asks.
    verify: super::Verify,
    asked: Option<Request>,
    /// Plan tables that captured DDL changed in the open source
    /// transaction: their Relation messages are read with the source's
    /// types (the plan knows the old ones).
    ddl_tables: std::collections::HashSet<usize>,
    /// Captured DDL was applied in the open source transaction: once it
    /// commits, the move plans again.
    ddl_replan: Option<String>,
    /// Tables whose copy starts again (a rewrite the stream cannot carry):
    /// their changes are left to the new copy.
    restarting: std::collections::HashSet<usize>,
    /// pgdog captures DDL on this source shard: a column the plan does
    /// not know arrives after the statement that made it.
    captured: bool,
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

/// Whether a cutover ended this move's stream for good (the task is
/// marked cut over then).
async fn cut_over_already(ctx: &Ctx, s: usize) -> Result<bool> {
    let plan = &ctx.plan;
    let mut conn = ctx.endpoints.connect_dest(0).await?;
    state::ensure_schema(&mut conn).await?;
    let stopped = state::stream_stopped(&mut conn, &plan.slot).await?;
    conn.close().await;
    if let Some(why) = stopped {
        info!(source_shard = s, slot = %plan.slot, "the move was cut over, the stream does not start again: {why}");
        ctx.task.mark_cut_over();
        return Ok(true);
    }
    Ok(false)
}

/// Each destination shard's applier, and what it holds already: the
/// snapshot LSN of each table's copy from this source shard, and the last
/// commit of it applied.
struct Opened {
    dests: Vec<DestApplier>,
    copied_at: Vec<HashMap<usize, Lsn>>,
    applied_before: Vec<Lsn>,
}

async fn open_dests(ctx: &Ctx, s: usize) -> Result<Opened> {
    let plan = &ctx.plan;
    let m = plan.dest_shards();
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

    Ok(Opened {
        dests,
        copied_at,
        applied_before,
    })
}

/// pgoutput's options for this move at protocol `version`.
fn stream_options(
    plan: &crate::data_sync::plan::Plan,
    version: u32,
) -> Vec<(&'static str, String)> {
    let mut options: Vec<(&'static str, String)> = vec![
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
        // Logical messages: what `pgdog verify` writes after its
        // snapshot shows an idle source's stream is past it.
        options.push(("messages", "true".into()));
    }
    options
}

impl<'a> Session<'a> {
    /// Run until shutdown (Ok) or an error.
    pub async fn run(
        ctx: &'a Ctx,
        s: usize,
        status: &'a progress::Stream,
        verify: super::Verify,
    ) -> Result<()> {
        let plan = &ctx.plan;
        // A move that was cut over never streams again (its destination
        // takes the writes, and streams back). Preflight refuses a new run
        // of it; a session that reconnects after the cutover ended the
        // stream (everything up to the freeze is applied by then) ends as
        // the stop the cutover asked for would have.
        if !ctx.drain_ended && cut_over_already(ctx, s).await? {
            return Err(DataSyncError::Stopped);
        }
        // Destinations first: what they already hold decides what to skip.
        let Opened {
            dests,
            copied_at,
            applied_before,
        } = open_dests(ctx, s).await?;

        let captured = {
            let mut conn = ctx.endpoints.connect_source(s, false).await?;
            let installed = crate::data_sync::ddl::capture::installed(&mut conn).await;
            conn.close().await;
            ctx.endpoints.config.general.resharding_capture_ddl && installed?
        };
        let repl = ctx.endpoints.connect_source(s, true).await?;
        let version = proto_version(repl.server_version_num());
        let options = stream_options(plan, version);
        // The source is read in its own task, ahead of what is applied.
        let (items_tx, items) = tokio::sync::mpsc::channel(super::reader::QUEUE);
        let (status_tx, status_rx) = tokio::sync::watch::channel(super::reader::Status::default());
        let reader = super::reader::spawn(repl, plan.slot.clone(), options, items_tx, status_rx);
        info!(source_shard = s, slot = %plan.slot, proto_version = version, "streaming changes");

        let mut session = Session {
            ctx,
            s,
            status,
            dests,
            relations: HashMap::new(),
            copied_at,
            applied_before,
            books: ctx
                .chunks
                .iter()
                .filter(|b| b.source_shard == s)
                .map(|b| (b.table, b.clone()))
                .collect(),
            key_positions: HashMap::new(),
            decided: None,
            txn: None,
            group_txns: 0,
            group_opened: None,
            processed: Lsn::ZERO,
            confirmed: Lsn::ZERO,
            last_commit: Lsn::ZERO,
            received: Lsn::ZERO,
            spools: HashMap::new(),
            streaming_xid: None,
            source_conn: None,
            version,
            last_status: Instant::now(),
            items,
            read: std::collections::VecDeque::new(),
            status_tx,
            verify,
            asked: None,
            ddl_tables: Default::default(),
            ddl_replan: None,
            restarting: Default::default(),
            captured,
        };
        session.refresh_ask();
        let result = session.run_loop().await;
        if result.is_ok() || matches!(result, Err(DataSyncError::Stopped)) {
            // Clean stop: commit what is complete, confirm it, end the stream.
            if session.txn.is_none() {
                session.commit_group().await?;
            }
            session.publish_status(true);
            info!(
                source_shard = s,
                transactions = status.transactions.load(Ordering::Relaxed),
                changes = status.changes.load(Ordering::Relaxed),
                groups = status.groups.load(Ordering::Relaxed),
                "replication stopped"
            );
            drop(session);
            let _ = reader.await;
        } else {
            reader.abort();
        }
        result
    }

    async fn run_loop(&mut self) -> Result<()> {
        let mut pgoutput = pgoutput::Decoder::new(self.version);
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = match self.next_read() {
                Some(item) => item,
                None => match self.linger().await {
                    Some(item) => item,
                    None => {
                        // Commit what is complete so it becomes visible now,
                        // not when more arrives.
                        if self.txn.is_none() {
                            self.commit_group().await?;
                        }
                        tokio::select! {
                            batch = self.items.recv() => self.take(batch),
                            _ = tick.tick() => {
                                self.publish_status(false);
                                continue;
                            }
                            _ = self.verify.requests.changed() => {
                                self.refresh_ask();
                                self.pause_if_asked().await?;
                                continue;
                            }
                            _ = self.ctx.shutdown.cancelled() => return Err(DataSyncError::Stopped),
                        }
                    }
                },
            };
            self.handle_item(item, &mut pgoutput).await?;
            if self.txn.is_none() && self.verify.requests.has_changed().unwrap_or(false) {
                self.refresh_ask();
                self.pause_if_asked().await?;
            }
            if self.txn.is_none() && self.group_due() {
                self.commit_group().await?;
            }
            if self.last_status.elapsed() >= STATUS_INTERVAL {
                self.publish_status(false);
            }
            if self.ctx.shutdown.is_cancelled() && self.txn.is_none() {
                return Err(DataSyncError::Stopped);
            }
        }
    }

    /// The next message already read, if any, without waiting.
    fn next_read(&mut self) -> Option<ReadItem> {
        if let Some(m) = self.read.pop_front() {
            return Some(Ok(Some(m)));
        }
        match self.items.try_recv() {
            Ok(batch) => Some(self.take(Some(batch))),
            Err(_) => None,
        }
    }

    /// Unpack a batch from the reader: its first message now, the rest
    /// kept in order.
    fn take(&mut self, batch: Option<super::reader::Item>) -> ReadItem {
        match batch {
            None | Some(Ok(None)) => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(Some(messages))) => {
                self.read.extend(messages);
                Ok(self.read.pop_front())
            }
        }
    }

    /// Nothing read ahead: a young group waits a moment for more (one
    /// commit, one flush, for many transactions). The item, if one came.
    async fn linger(&mut self) -> Option<ReadItem> {
        if self.txn.is_some() {
            return None;
        }
        let age = self.group_opened?.elapsed();
        let wait = COMMIT_LINGER.checked_sub(age)?;
        match tokio::time::timeout(wait, self.items.recv()).await {
            Ok(batch) => Some(self.take(batch)),
            Err(_) => None,
        }
    }

    /// One item from the reader: a WAL message or keepalive, or the end.
    async fn handle_item(
        &mut self,
        item: ReadItem,
        pgoutput: &mut pgoutput::Decoder,
    ) -> Result<()> {
        let Some(msg) = item? else {
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
                self.handle(pgoutput, data).await?;
            }
            ServerMessage::PrimaryKeepalive { end, reply, .. } => {
                tracing::trace!(source_shard = self.s, %end, reply, in_txn = self.txn.is_some(), "keepalive");
                self.saw_wal(end);
                // Nothing in flight: everything up to the server's WAL
                // end has been received and handled.
                if self.txn.is_none() && self.spools.is_empty() {
                    self.processed = self.processed.max(end);
                }
                // Everything committed before `end` has been received.
                if self.txn.is_none() {
                    self.hold_before(end).await?;
                }
                if reply {
                    if self.txn.is_none() {
                        self.commit_group().await?;
                    }
                    self.publish_status(false);
                }
            }
        }
        Ok(())
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

    /// Hand the reader the positions to report: written as far as received,
    /// flushed as far as every destination committed.
    fn publish_status(&mut self, stop: bool) {
        let seq = self.status_tx.borrow().seq + 1;
        let _ = self.status_tx.send(super::reader::Status {
            write: self.received.max(self.confirmed),
            flush: self.confirmed,
            seq,
            stop,
        });
        self.last_status = Instant::now();
    }

    /// Commit the open group on every destination, then confirm.
    async fn commit_group(&mut self) -> Result<()> {
        let slot = &self.ctx.plan.slot;
        let s = self.s;
        // Every shard commits at once: the group waits for the slowest
        // flush, not for the sum of them.
        futures::future::try_join_all(self.dests.iter_mut().map(|d| d.commit(slot, s))).await?;
        if self.group_txns > 0 {
            self.status.groups.fetch_add(1, Ordering::Relaxed);
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
            self.publish_status(false);
        }
        Ok(())
    }

    /// A streamed transaction's commit: its spooled changes, minus its
    /// aborted subtransactions, applied as one transaction.
    async fn stream_commit(
        &mut self,
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    ) -> Result<()> {
        self.hold_before(commit_lsn).await?;
        let mut spool = self.spools.remove(&xid).ok_or_else(|| {
            self.stream_error(&format!("Stream Commit of unknown transaction {xid}"))
        })?;
        self.begin(xid, commit_lsn, commit_time)?;
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
                Message::Relation { relation, .. } => self.relation(&relation).await?,
                Message::Insert { .. }
                | Message::Update { .. }
                | Message::Delete { .. }
                | Message::Truncate { .. } => self.change(msg).await?,
                Message::Message {
                    transactional: true,
                    lsn,
                    prefix,
                    content,
                    ..
                } if prefix == crate::data_sync::ddl::PREFIX => self.ddl(lsn, &content).await?,
                _ => {}
            }
            // A long replay must not starve the status updates.
            if replayed % 1024 == 0 && self.last_status.elapsed() >= STATUS_INTERVAL {
                self.publish_status(false);
            }
        }
        debug!(
            source_shard = self.s,
            xid,
            messages = spool.messages,
            "applied a streamed transaction"
        );
        self.commit(commit_lsn, end_lsn)?;
        self.after_ddl_commit().await?;
        Ok(())
    }

    /// One pgoutput message.
    async fn handle(&mut self, decoder: &mut pgoutput::Decoder, data: Bytes) -> Result<()> {
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
                xid,
            } => {
                self.hold_before(final_lsn).await?;
                self.begin(xid, final_lsn, commit_time)?
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                self.commit(commit_lsn, end_lsn)?;
                self.after_ddl_commit().await?;
            }
            Message::Relation { relation, .. } => self.relation(&relation).await?,
            Message::Message {
                transactional: true,
                lsn,
                prefix,
                content,
                ..
            } if self.txn.is_some() && prefix == crate::data_sync::ddl::PREFIX => {
                self.ddl(lsn, &content).await?
            }
            Message::Insert { .. }
            | Message::Update { .. }
            | Message::Delete { .. }
            | Message::Truncate { .. } => self.change(msg).await?,
            Message::Message {
                transactional: false,
                lsn,
                ..
            } if self.txn.is_none() => self.hold_before(lsn).await?,
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
                self.stream_commit(xid, commit_lsn, end_lsn, commit_time)
                    .await?
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

    /// Read the verify request for this source shard again.
    fn refresh_ask(&mut self) {
        self.asked = self
            .verify
            .requests
            .borrow_and_update()
            .get(self.s)
            .cloned()
            .flatten();
    }

    /// At a transaction boundary: stop here if verify asked for a pause.
    async fn pause_if_asked(&mut self) -> Result<()> {
        match &self.asked {
            Some(r) if r.ask == Ask::Pause => self.hold(r.clone(), "paused").await,
            Some(r) if r.ask == Ask::Stop => self.stop_for_cutover(),
            _ => Ok(()),
        }
    }

    /// Before a transaction committed at `lsn` (or once WAL is known to be
    /// complete up to `lsn`): stop if verify holds the move below it.
    async fn hold_before(&mut self, lsn: Lsn) -> Result<()> {
        if self.verify.requests.has_changed().unwrap_or(false) {
            self.refresh_ask();
        }
        // Per transaction: look, and clone only to hold.
        let state = match &self.asked {
            Some(r) => match r.ask {
                Ask::HoldAt(target) if lsn >= target => "held",
                Ask::Pause => "paused",
                Ask::HoldAt(_) => return Ok(()),
                Ask::Stop => return self.stop_for_cutover(),
            },
            None => return Ok(()),
        };
        match self.asked.clone() {
            Some(r) => self.hold(r, state).await,
            None => Ok(()),
        }
    }

    /// Commit everything applied, answer `state`, and wait until the
    /// request is withdrawn or changes (still confirming to the slot, so
    /// the WAL sender does not time out).
    async fn hold(&mut self, request: Request, state: &'static str) -> Result<()> {
        self.commit_group().await?;
        let answer = barrier::Answer {
            source_shard: self.s,
            id: request.id.clone(),
            ask: request.ask.clone(),
            state,
            lsn: self.last_commit,
        };
        info!(source_shard = self.s, verify = %request.id, last_commit = %self.last_commit, "{state} for verify");
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        loop {
            // Sent again every tick: an answer lost with the agent's
            // connection is not lost for good.
            let _ = self.verify.answers.send(answer.clone());
            tokio::select! {
                changed = self.verify.requests.changed() => {
                    if changed.is_err() {
                        self.asked = None;
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    self.publish_status(false);
                    continue;
                }
                _ = self.ctx.shutdown.cancelled() => return Err(DataSyncError::Stopped),
            }
            self.refresh_ask();
            if self.asked.as_ref().is_some_and(|r| r.ask == Ask::Stop) {
                return self.stop_for_cutover();
            }
            if self.asked.as_ref() != Some(&request) {
                return Ok(());
            }
        }
    }

    /// A cutover ends the stream here, at a transaction boundary, for
    /// good: the clean stop commits and confirms what was applied.
    fn stop_for_cutover(&mut self) -> Result<()> {
        info!(source_shard = self.s, last_commit = %self.last_commit, "the move was cut over: the stream ends here");
        self.ctx.task.mark_cut_over();
        Err(DataSyncError::Stopped)
    }

    fn stream_error(&self, message: &str) -> DataSyncError {
        DataSyncError::Stream {
            source_shard: self.s,
            message: message.to_string(),
        }
    }

    /// The error that reports a Relation message's columns the plan lacks,
    /// with their types as the source names them.
    async fn new_columns(
        &mut self,
        relation: &pgoutput::Relation,
        info: &RelationInfo,
    ) -> DataSyncError {
        let mut columns = Vec::new();
        for (c, rc) in info.columns.iter().zip(&relation.columns) {
            if c.type_name.is_some() {
                continue;
            }
            let name = match self.format_type(rc.type_oid, rc.type_modifier).await {
                Ok(n) => n,
                Err(e) => return e,
            };
            columns.push((c.name.clone(), name));
        }
        DataSyncError::NewColumns {
            table: info.name.quoted(),
            source_shard: self.s,
            columns,
        }
    }

    /// `format_type(oid, typmod)` on the source.
    async fn format_type(&mut self, oid: u32, typmod: i32) -> Result<String> {
        let conn = match &mut self.source_conn {
            Some(c) => c,
            none => none.insert(self.ctx.endpoints.connect_source(self.s, false).await?),
        };
        let rows = conn
            .query_text(
                "SELECT format_type($1::oid, $2::int)",
                &[&oid.to_string(), &typmod.to_string()],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.text(0))
            .unwrap_or("unknown")
            .to_string())
    }

    /// Wait for `until`, unless the stream is stopped first.
    pub(super) async fn unless_stopped(
        &self,
        until: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::select! {
            _ = until => Ok(()),
            _ = self.ctx.shutdown.cancelled() => Err(DataSyncError::Stopped),
        }
    }

    fn begin(&mut self, xid: u32, commit_lsn: Lsn, commit_time: i64) -> Result<()> {
        if self.txn.is_some() {
            return Err(self.stream_error("Begin inside a transaction"));
        }
        self.txn = Some(Txn {
            xid,
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
        if txn.commit_lsn != commit_lsn {
            return Err(self.stream_error(&format!(
                "Commit at {commit_lsn} ends the transaction whose Begin announced {}",
                txn.commit_lsn
            )));
        }
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
        self.last_commit = commit_lsn;
        self.group_txns += 1;
        if self.group_opened.is_none() {
            self.group_opened = Some(Instant::now());
        }
        Ok(())
    }

    async fn relation(&mut self, relation: &pgoutput::Relation) -> Result<()> {
        let mut info = RelationInfo::new(relation, &self.ctx.plan);
        // The types the tuples carry: the plan's where it agrees with the
        // message, else the source's own name for the type (the plan can
        // be ahead of the stream, or behind it, around schema changes).
        if let Some(t) = info.table {
            let changed = self.ddl_tables.contains(&t);
            for (c, rc) in info.columns.iter_mut().zip(&relation.columns) {
                let planned = self.ctx.plan.tables[t]
                    .table
                    .columns
                    .iter()
                    .find(|k| k.name == c.name);
                let agrees = planned.is_some_and(|k| {
                    k.type_oid == rc.type_oid
                        && (rc.type_modifier < 0 || !k.type_name.contains('('))
                });
                if changed || (!agrees && (planned.is_some() || self.captured)) {
                    c.type_name = Some(self.format_type(rc.type_oid, rc.type_modifier).await?);
                }
            }
        }
        // Rows of a shape the plan does not know (a column added on the
        // source while the move runs): none of them is applied; the move
        // waits for the destination shards to have the columns, then
        // plans again.
        if info.table.is_some() && info.columns.iter().any(|c| c.type_name.is_none()) {
            return Err(self.new_columns(relation, &info).await);
        }
        // Where a chunked table's key sits in this relation's tuples.
        if let Some(book) = info.table.and_then(|t| self.books.get(&t)) {
            let positions: Option<Vec<usize>> = book
                .key
                .columns
                .iter()
                .map(|k| info.columns.iter().position(|c| c.name == k.name))
                .collect();
            match positions {
                Some(p) => {
                    self.key_positions.insert(relation.oid, p);
                }
                None => {
                    return Err(self.stream_error(&format!(
                        "the Relation message of {} lacks a column of its chunk key {}",
                        info.name,
                        book.key.row(None)
                    )))
                }
            }
        }
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
                // Queued changes were made with the old shape: out first.
                d.flush().await?;
                d.invalidate(relation.oid);
            }
        }
        self.relations
            .insert(relation.oid, std::sync::Arc::new(info));
        Ok(())
    }
}
