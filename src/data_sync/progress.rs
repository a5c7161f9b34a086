//! Live status of a data-sync task: what the terminal display, the admin
//! console (SHOW TASKS, SHOW TABLE_COPIES, SHOW REPLICATION_SLOTS) and the
//! metrics endpoint read. Writers are the copy and stream tasks; counters
//! are atomics so the hot path never takes a lock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use pgdog_protocol::Lsn;
use tokio_util::sync::CancellationToken;

/// A value read by the console and the reporter while the task writes it.
/// A holder that panics cannot poison it for them: the value is read as
/// the panic left it.
#[derive(Debug, Default)]
pub struct Shared<T>(Mutex<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Shared<T> {
        Shared(Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, value: T) {
        *self.lock() = value;
    }
}

impl<T: Clone> Shared<T> {
    pub fn get(&self) -> T {
        self.lock().clone()
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Preflight,
    /// Creating the schema on the destinations before the copy.
    Schema,
    Copying,
    /// Building indexes and constraints after the copy.
    Indexing,
    Streaming,
    /// `pgdog verify`: holding the move at one LSN, then comparing.
    Verifying,
    /// `pgdog cutover`: freezing, draining, switching (the step is shown).
    CuttingOver,

    Stopped,
    Failed,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Schema => "schema sync",
            Phase::Copying => "copying",
            Phase::Indexing => "building indexes",
            Phase::Streaming => "streaming",
            Phase::Verifying => "verifying",
            Phase::CuttingOver => "cutting over",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Done => "done",
        }
    }
}

/// State of one table copy (one table from one source shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    Pending,
    Copying,
    Done,
    /// Finished by an earlier run.
    Skipped,
    Failed,
}

impl CopyState {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyState::Pending => "pending",
            CopyState::Copying => "copying",
            CopyState::Done => "done",
            CopyState::Skipped => "done earlier",
            CopyState::Failed => "failed",
        }
    }
}

/// One table copy's counters.
#[derive(Debug)]
pub struct TableCopy {
    pub schema: String,
    pub table: String,
    pub source_shard: usize,
    /// Servers the copy reads from (primary or replicas), for display.
    pub source_hosts: Shared<String>,
    /// `pg_class` estimates taken at planning time (-1: unknown).
    pub estimated_rows: i64,
    pub estimated_bytes: u64,
    /// Rows and bytes read from the source so far.
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub state: Shared<CopyState>,
    /// Set when the copy starts and when it ends.
    pub started: Shared<Option<Instant>>,
    pub finished: Shared<Option<Instant>>,
    /// How it is copied: `chunks by (id)`, or `one snapshot: <why>`.
    pub method: Shared<String>,
    /// Chunks written to every destination shard, in this run.
    pub chunks: AtomicU64,
    /// The key the copy has reached (the end of the last chunk written),
    /// per key range being worked on, as its columns' text.
    pub cursor: Shared<Option<String>>,
}

impl TableCopy {
    /// A copy of `schema.table` from source shard `source_shard`, read
    /// from `hosts`, with the planner's estimates.
    pub fn new(
        name: &super::catalog::TableName,
        source_shard: usize,
        hosts: String,
        estimated_rows: i64,
        estimated_bytes: u64,
    ) -> TableCopy {
        TableCopy {
            schema: name.schema.clone(),
            table: name.name.clone(),
            source_shard,
            source_hosts: Shared::new(hosts),
            estimated_rows,
            estimated_bytes,
            rows: Default::default(),
            bytes: Default::default(),
            state: Shared::new(CopyState::Pending),
            started: Default::default(),
            finished: Default::default(),
            method: Shared::new(String::new()),
            chunks: Default::default(),
            cursor: Shared::new(None),
        }
    }

    pub fn method(&self) -> String {
        self.method.lock().clone()
    }

    pub fn set_method(&self, method: impl Into<String>) {
        *self.method.lock() = method.into();
    }

    pub fn cursor(&self) -> Option<String> {
        self.cursor.lock().clone()
    }

    pub fn set_cursor(&self, cursor: String) {
        *self.cursor.lock() = Some(cursor);
    }

    pub fn state(&self) -> CopyState {
        *self.state.lock()
    }

    pub fn set_state(&self, state: CopyState) {
        *self.state.lock() = state;
        let now = Some(Instant::now());
        match state {
            CopyState::Copying => *self.started.lock() = now,
            CopyState::Done | CopyState::Failed => *self.finished.lock() = now,
            _ => {}
        }
    }

    /// Seconds spent copying (so far, or in all).
    pub fn elapsed(&self) -> f64 {
        let started = *self.started.lock();
        let finished = *self.finished.lock();
        match (started, finished) {
            (Some(s), Some(f)) => f.duration_since(s).as_secs_f64(),
            (Some(s), None) => s.elapsed().as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Progress in percent by bytes, where the size is known.
    pub fn percent(&self) -> Option<f64> {
        match self.state() {
            CopyState::Done | CopyState::Skipped => Some(100.0),
            _ if self.estimated_bytes > 0 => Some(
                (self.bytes.load(Ordering::Relaxed) as f64 / self.estimated_bytes as f64 * 100.0)
                    .min(99.9),
            ),
            _ => None,
        }
    }

    /// Seconds left at the current rate.
    pub fn eta(&self) -> Option<f64> {
        if self.state() != CopyState::Copying {
            return None;
        }
        let done = self.bytes.load(Ordering::Relaxed) as f64;
        let elapsed = self.elapsed();
        if done <= 0.0 || elapsed <= 0.0 || self.estimated_bytes == 0 {
            return None;
        }
        let rate = done / elapsed;
        Some(((self.estimated_bytes as f64 - done).max(0.0)) / rate)
    }
}

/// State of one schema object (or group of objects) on one destination shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    Pending,
    Running,
    Done,
    /// It was there already, and matches.
    Existed,
    /// A foreign key that could not be validated: it stays NOT VALID.
    NotValid,
    Failed,
    /// An entry of the source's dump the move does not take (the message
    /// says why).
    LeftOut,
}

impl SchemaState {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaState::Pending => "pending",
            SchemaState::Running => "running",
            SchemaState::Done => "done",
            SchemaState::Existed => "existed",
            SchemaState::NotValid => "not valid",
            SchemaState::Failed => "failed",
            SchemaState::LeftOut => "left out",
        }
    }
}

/// One object of schema sync on one destination shard: an index build, a
/// foreign key validation, or the pre-data of a shard as a whole.
#[derive(Debug)]
pub struct SchemaItem {
    /// `None`: about every shard (an entry left out).
    pub dest_shard: Option<usize>,
    /// `pre-data`, `index`, `attach`, `foreign key`, `post-data`, `left
    /// out`.
    pub step: &'static str,
    /// `INDEX public.orders_customer_id_idx`.
    pub object: String,
    /// Size of the table it reads (for the ETA), bytes.
    pub table_bytes: u64,
    pub state: Shared<SchemaState>,
    /// Why it failed or is not valid.
    pub message: Shared<Option<String>>,
    /// Percent done, from pg_stat_progress_create_index (× 10).
    pub permille: AtomicU64,
    pub started: Shared<Option<Instant>>,
    pub finished: Shared<Option<Instant>>,
}

impl SchemaItem {
    pub fn new(dest_shard: usize, step: &'static str, object: String, table_bytes: u64) -> Self {
        SchemaItem {
            dest_shard: Some(dest_shard),
            step,
            object,
            table_bytes,
            state: Shared::new(SchemaState::Pending),
            message: Shared::new(None),
            permille: AtomicU64::new(0),
            started: Shared::new(None),
            finished: Shared::new(None),
        }
    }

    /// An entry the move does not take, on no shard, and why.
    pub fn left_out(object: String, reason: String) -> Self {
        let item = SchemaItem {
            dest_shard: None,
            step: "left out",
            ..SchemaItem::new(0, "left out", object, 0)
        };
        *item.state.lock() = SchemaState::LeftOut;
        item.set_message(reason);
        item
    }

    pub fn state(&self) -> SchemaState {
        *self.state.lock()
    }

    pub fn set_state(&self, state: SchemaState) {
        *self.state.lock() = state;
        let now = Some(Instant::now());
        match state {
            SchemaState::Running => *self.started.lock() = now,
            SchemaState::Pending => {}
            _ => *self.finished.lock() = now,
        }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        *self.message.lock() = Some(message.into());
    }

    pub fn message(&self) -> Option<String> {
        self.message.lock().clone()
    }

    /// Seconds spent (so far, or in all); `None` before it starts.
    pub fn elapsed(&self) -> Option<f64> {
        let started = (*self.started.lock())?;
        let finished = *self.finished.lock();
        Some(match finished {
            Some(f) => f.duration_since(started).as_secs_f64(),
            None => started.elapsed().as_secs_f64(),
        })
    }

    pub fn percent(&self) -> Option<f64> {
        match self.state() {
            SchemaState::Done | SchemaState::Existed | SchemaState::NotValid => Some(100.0),
            SchemaState::Running => {
                let p = self.permille.load(Ordering::Relaxed);
                (p > 0).then(|| p as f64 / 10.0)
            }
            _ => None,
        }
    }

    /// Seconds left, from the server's progress report of the build.
    pub fn eta(&self) -> Option<f64> {
        if self.state() != SchemaState::Running {
            return None;
        }
        let p = self.permille.load(Ordering::Relaxed) as f64 / 1000.0;
        let elapsed = self.elapsed()?;
        (p > 0.01).then(|| elapsed * (1.0 - p) / p)
    }
}

/// One source shard's replication stream.
#[derive(Debug, Default)]
pub struct Stream {
    pub source_shard: usize,
    pub host: String,
    pub slot: String,
    /// What the slot has confirmed (committed on every destination).
    pub confirmed_flush: AtomicU64,
    /// The source's WAL end, from keepalives and XLogData.
    pub current_wal: AtomicU64,
    /// Commit time (Postgres microseconds) of the last applied transaction.
    pub last_commit_time: AtomicI64,
    /// When (Unix microseconds) that transaction was applied.
    pub last_apply_at: AtomicI64,
    pub transactions: AtomicU64,
    pub changes: AtomicU64,
    /// Transactions skipped because the copy or an earlier run had them.
    pub skipped: AtomicU64,
    /// Updates and deletes that found no row on the destination (should
    /// stay 0: anything else means the destination diverged).
    pub missing_rows: AtomicU64,
    /// Destination transactions that applied them (group commits).
    pub groups: AtomicU64,
}

impl Stream {
    /// Bytes of WAL not yet confirmed.
    pub fn lag_bytes(&self) -> u64 {
        self.current_wal
            .load(Ordering::Relaxed)
            .saturating_sub(self.confirmed_flush.load(Ordering::Relaxed))
    }

    /// Seconds between the last applied commit and when it was applied.
    pub fn lag_seconds(&self) -> Option<f64> {
        let commit = self.last_commit_time.load(Ordering::Relaxed);
        let applied = self.last_apply_at.load(Ordering::Relaxed);
        if commit == 0 || applied == 0 {
            return None;
        }
        let commit_unix = commit + pgdog_protocol::replication::PG_EPOCH_OFFSET_MICROS;
        Some(((applied - commit_unix) as f64 / 1e6).max(0.0))
    }

    pub fn confirmed(&self) -> Lsn {
        Lsn(self.confirmed_flush.load(Ordering::Relaxed))
    }
}

/// A snapshot that table copies of one source server share, held open
/// (and holding back that server's xmin horizon, so vacuum) until the copy
/// from it is done.
#[derive(Debug)]
pub struct SnapshotHold {
    pub source_shard: usize,
    /// `host:port` of the server it was taken on.
    pub server: String,
    pub lsn: Lsn,
    pub since: Instant,
    /// Set when the snapshot is let go.
    pub released: Shared<Option<Instant>>,
}

impl SnapshotHold {
    pub fn is_held(&self) -> bool {
        self.released.lock().is_none()
    }

    pub fn release(&self) {
        let mut r = self.released.lock();
        if r.is_none() {
            *r = Some(Instant::now());
        }
    }
}

/// One table read for `pgdog verify` on one server (a source shard or a
/// destination shard), and for a destination shard, what it compared to.
#[derive(Debug)]
pub struct VerifyItem {
    pub schema: String,
    pub table: String,
    /// `source` or `destination`.
    pub side: &'static str,
    pub shard: usize,
    pub estimated_bytes: u64,
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    /// `waiting`, `reading`, `read`, `failed`.
    pub state: Shared<&'static str>,
    /// Destination shards: `equal` or what differs, once compared.
    pub result: Shared<Option<String>>,
    pub started: Shared<Option<Instant>>,
    pub finished: Shared<Option<Instant>>,
}

impl VerifyItem {
    pub fn new(
        table: &super::catalog::TableName,
        side: &'static str,
        shard: usize,
        estimated_bytes: u64,
    ) -> VerifyItem {
        VerifyItem {
            schema: table.schema.clone(),
            table: table.name.clone(),
            side,
            shard,
            estimated_bytes,
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            state: Shared::new("waiting"),
            result: Shared::new(None),
            started: Shared::new(None),
            finished: Shared::new(None),
        }
    }

    pub fn state(&self) -> &'static str {
        *self.state.lock()
    }

    pub fn set_state(&self, state: &'static str) {
        *self.state.lock() = state;
        let now = Some(Instant::now());
        match state {
            "reading" => *self.started.lock() = now,
            "read" | "failed" => *self.finished.lock() = now,
            _ => {}
        }
    }

    pub fn result(&self) -> Option<String> {
        self.result.lock().clone()
    }

    pub fn set_result(&self, result: String) {
        *self.result.lock() = Some(result);
    }

    /// Seconds spent reading so far (or in all).
    pub fn elapsed(&self) -> Option<f64> {
        let started = (*self.started.lock())?;
        let end = (*self.finished.lock()).unwrap_or_else(Instant::now);
        Some(end.duration_since(started).as_secs_f64())
    }

    /// Percent read, by bytes against the estimate.
    pub fn percent(&self) -> Option<f64> {
        if self.state() == "read" {
            return Some(100.0);
        }
        (self.estimated_bytes > 0).then(|| {
            (self.bytes.load(Ordering::Relaxed) as f64 * 100.0 / self.estimated_bytes as f64)
                .min(99.0)
        })
    }
}

/// Everything about one data-sync task.
#[derive(Debug)]
pub struct Task {
    pub id: u64,
    pub source: String,
    pub dest: String,
    pub publication: String,
    slot: Shared<String>,
    phase: Shared<Phase>,
    pub started: SystemTime,
    pub started_at: Instant,
    error: Shared<Option<String>>,
    copies: Shared<Vec<Arc<TableCopy>>>,
    streams: Shared<Vec<Arc<Stream>>>,
    /// Errors by kind, for metrics.
    errors: Shared<Vec<(&'static str, u64)>>,
    /// Stops this task alone (the admin console's STOP_TASK cancels it):
    /// whoever runs the task passes it, or a token it cancels, to
    /// `data_sync::run`.
    pub stop: CancellationToken,
    /// When the task reached stopped, failed or done, so its elapsed time
    /// stops growing.
    ended: Shared<Option<Instant>>,
    /// What the task is waiting for, when something outside pgdog holds it
    /// up: one entry per wait under way (several chunk workers can wait at
    /// once), each removed when its [`Waiting`] guard is dropped.
    waits: Shared<Vec<(u64, String)>>,
    next_wait: AtomicU64,
    /// Snapshots taken for the copy, held or let go.
    snapshots: Shared<Vec<Arc<SnapshotHold>>>,
    /// Schema sync: pre-data per shard, then each index, constraint and
    /// foreign key built after the copy.
    schema: Shared<Vec<Arc<SchemaItem>>>,
    /// `pgdog verify`: each table read on each server.
    verify: Shared<Vec<Arc<VerifyItem>>>,
    /// The move's command line, for a VERIFY of it from the console.
    options: Shared<Option<super::options::Options>>,
    /// A cutover ended this move's stream (it does not resume).
    cut_over: std::sync::atomic::AtomicBool,
    /// `pgdog cutover`: the step it is at, for SHOW TASKS.
    step: Shared<Option<String>>,
    /// How each table is routed, once preflight planned the move.
    routing: Shared<Vec<super::plan::TableRouting>>,
    /// What the operator should know while the task runs (a table that
    /// left the publication), for SHOW TASKS.
    notes: Shared<Vec<String>>,
}

impl Task {
    pub fn new(id: u64, source: &str, dest: &str, publication: &str) -> Task {
        Task {
            id,
            source: source.to_string(),
            dest: dest.to_string(),
            publication: publication.to_string(),
            slot: Shared::new(String::new()),
            phase: Shared::new(Phase::Preflight),
            started: SystemTime::now(),
            started_at: Instant::now(),
            error: Shared::new(None),
            copies: Shared::new(Vec::new()),
            streams: Shared::new(Vec::new()),
            errors: Shared::new(Vec::new()),
            stop: CancellationToken::new(),
            ended: Shared::new(None),
            waits: Shared::new(Vec::new()),
            next_wait: AtomicU64::new(0),
            snapshots: Shared::new(Vec::new()),
            schema: Shared::new(Vec::new()),
            verify: Shared::new(Vec::new()),
            options: Shared::new(None),
            cut_over: Default::default(),
            step: Shared::new(None),
            routing: Shared::new(Vec::new()),
            notes: Shared::new(Vec::new()),
        }
    }

    /// Show a table copy among the task's.
    pub fn add_copy(&self, copy: TableCopy) -> Arc<TableCopy> {
        let copy = Arc::new(copy);
        self.copies.lock().push(copy.clone());
        copy
    }

    /// What the operator should know, oldest first.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().clone()
    }

    pub fn add_note(&self, note: String) {
        self.notes.lock().push(note);
    }

    /// How each table of the move is routed (empty before preflight).
    pub fn routing(&self) -> Vec<super::plan::TableRouting> {
        self.routing.lock().clone()
    }

    pub fn set_routing(&self, routing: Vec<super::plan::TableRouting>) {
        *self.routing.lock() = routing;
    }

    pub fn verify_items(&self) -> Vec<Arc<VerifyItem>> {
        self.verify.lock().clone()
    }

    pub fn add_verify_item(&self, item: VerifyItem) -> Arc<VerifyItem> {
        let item = Arc::new(item);
        self.verify.lock().push(item.clone());
        item
    }

    pub fn schema_items(&self) -> Vec<Arc<SchemaItem>> {
        self.schema.lock().clone()
    }

    pub fn add_schema_item(&self, item: SchemaItem) -> Arc<SchemaItem> {
        let item = Arc::new(item);
        self.schema.lock().push(item.clone());
        item
    }

    /// What the task waits for right now, if anything.
    /// The cutover step, if this task is a cutover.
    pub fn step(&self) -> Option<String> {
        self.step.lock().clone()
    }

    pub fn set_step(&self, step: impl Into<String>) {
        *self.step.lock() = Some(step.into());
    }

    /// What the task waits on now: the latest wait under way, if any.
    pub fn waiting(&self) -> Option<String> {
        self.waits.lock().last().map(|(_, what)| what.clone())
    }

    /// Show that the task waits on `what` until the guard is dropped: when
    /// the wait ends, fails, or its future is dropped because the pass
    /// that ran it ended.
    pub fn wait_on(&self, what: String) -> Waiting<'_> {
        let id = self.next_wait.fetch_add(1, Ordering::Relaxed);
        self.waits.lock().push((id, what));
        Waiting { task: self, id }
    }

    /// The snapshots still held, oldest first.
    pub fn held_snapshots(&self) -> Vec<Arc<SnapshotHold>> {
        let mut held: Vec<Arc<SnapshotHold>> = self
            .snapshots
            .lock()
            .iter()
            .filter(|h| h.is_held())
            .cloned()
            .collect();
        held.sort_by_key(|h| h.since);
        held
    }

    pub fn phase(&self) -> Phase {
        *self.phase.lock()
    }

    pub fn set_phase(&self, phase: Phase) {
        *self.phase.lock() = phase;
        let ended = matches!(phase, Phase::Stopped | Phase::Failed | Phase::Done);
        *self.ended.lock() = ended.then(Instant::now);
    }

    /// Record how a run ended: `Ok(stopped)`, or the error it failed with
    /// (a stop is not a failure).
    pub fn end(&self, result: Result<bool, &super::error::DataSyncError>) {
        match result {
            Ok(true) | Err(super::error::DataSyncError::Stopped) => self.set_phase(Phase::Stopped),
            Ok(false) => self.set_phase(Phase::Done),
            Err(e) => {
                self.set_error(e);
                self.set_phase(Phase::Failed);
            }
        }
    }

    /// How long the task ran, or has been running.
    pub fn elapsed(&self) -> std::time::Duration {
        match *self.ended.lock() {
            Some(end) => end.duration_since(self.started_at),
            None => self.started_at.elapsed(),
        }
    }

    pub fn set_error(&self, error: &super::error::DataSyncError) {
        *self.error.lock() = Some(error.to_string());
        self.count_error(error.kind());
    }

    pub fn count_error(&self, kind: &'static str) {
        let mut errors = self.errors.lock();
        match errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => errors.push((kind, 1)),
        }
    }

    pub fn slot(&self) -> String {
        self.slot.lock().clone()
    }

    pub fn copies(&self) -> Vec<Arc<TableCopy>> {
        self.copies.lock().clone()
    }

    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.streams.lock().clone()
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// Name the slot the task's move uses, once known.
    pub fn set_slot(&self, slot: String) {
        self.slot.set(slot);
    }

    /// The move's command line, for a VERIFY or CUTOVER of it from the
    /// console.
    pub fn options(&self) -> Option<super::options::Options> {
        self.options.get()
    }

    pub fn set_options(&self, opts: super::options::Options) {
        self.options.set(Some(opts));
    }

    /// A new streaming phase: the streams of an earlier one are let go.
    pub fn clear_streams(&self) {
        self.streams.lock().clear();
    }

    /// Show a source shard's stream among the task's.
    pub fn add_stream(&self, stream: Arc<Stream>) {
        self.streams.lock().push(stream);
    }

    /// Show a snapshot taken for the copy.
    pub fn add_snapshot(&self, hold: Arc<SnapshotHold>) {
        self.snapshots.lock().push(hold);
    }

    /// Every snapshot taken, held or let go.
    pub fn snapshots(&self) -> Vec<Arc<SnapshotHold>> {
        self.snapshots.get()
    }

    /// A cutover ended this move's stream: it does not resume.
    pub fn mark_cut_over(&self) {
        self.cut_over.store(true, Ordering::Relaxed);
    }

    pub fn is_cut_over(&self) -> bool {
        self.cut_over.load(Ordering::Relaxed)
    }

    /// Errors by kind, in the order first met.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        self.errors.get()
    }

    /// What a reader shows of the task, read once.
    pub fn view(&self) -> TaskView {
        TaskView {
            id: self.id,
            source: self.source.clone(),
            dest: self.dest.clone(),
            publication: self.publication.clone(),
            slot: self.slot(),
            phase: self.phase(),
            started: self.started,
            elapsed: self.elapsed(),
            step: self.step(),
            waiting: self.waiting(),
            error: self.error(),
            notes: self.notes(),
        }
    }
}

/// A wait the task shows (SHOW TASKS `waiting_on`) while this lives.
#[derive(Debug)]
pub struct Waiting<'a> {
    task: &'a Task,
    id: u64,
}

impl Waiting<'_> {
    /// Say what is waited on now (the same wait, a new reason).
    pub fn say(&self, what: String) {
        let mut waits = self.task.waits.lock();
        if let Some(entry) = waits.iter_mut().find(|(id, _)| *id == self.id) {
            entry.1 = what;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.task.waits.lock().retain(|(id, _)| *id != self.id);
    }
}

/// One reading of a task's state, for SHOW TASKS and the reporters.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub id: u64,
    pub source: String,
    pub dest: String,
    pub publication: String,
    pub slot: String,
    pub phase: Phase,
    pub started: SystemTime,
    pub elapsed: std::time::Duration,
    pub step: Option<String>,
    pub waiting: Option<String>,
    pub error: Option<String>,
    pub notes: Vec<String>,
}

/// All tasks of this process, for the admin console and metrics.
#[derive(Debug, Default)]
pub struct Registry {
    tasks: Shared<Vec<Arc<Task>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn new_task(&self, source: &str, dest: &str, publication: &str) -> Arc<Task> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let task = Arc::new(Task::new(id, source, dest, publication));
        self.tasks.lock().push(task.clone());
        task
    }

    pub fn tasks(&self) -> Vec<Arc<Task>> {
        self.tasks.lock().clone()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Task>> {
        self.tasks().into_iter().find(|t| t.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::Task;

    /// Two chunk workers wait at once; each wait shows until its guard is
    /// dropped, in either order, and a wait whose future is dropped (the
    /// pass that ran it ended) shows no more.
    #[tokio::test]
    async fn a_wait_shows_while_its_guard_lives() {
        let task = Task::new(1, "src", "dst", "pub");
        assert_eq!(task.waiting(), None);
        let first = task.wait_on("first".into());
        let second = task.wait_on("second".into());
        assert_eq!(task.waiting().as_deref(), Some("second"));
        second.say("second, again".into());
        assert_eq!(task.waiting().as_deref(), Some("second, again"));
        drop(second);
        assert_eq!(task.waiting().as_deref(), Some("first"));
        drop(first);
        assert_eq!(task.waiting(), None);

        let pending = async {
            let _w = task.wait_on("never ends".into());
            std::future::pending::<()>().await;
        };
        let cut_short = tokio::time::timeout(std::time::Duration::from_millis(10), pending).await;
        assert!(cut_short.is_err());
        assert_eq!(task.waiting(), None);
    }
}
