//! The engine of a move: [`run`] plans it, copies what is not copied yet
//! and streams, planning again when the source's schema or publication
//! changes; [`cleanup`] abandons it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::net::replication::{valid_slot_name, SnapshotAction};

use super::copy::{self, chunked};
use super::ctx::{default_parallel, Ctx};
use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::options::{Mode, Options, Outcome};
use super::plan::Plan;
use super::progress::{Phase, Task};
use super::{analyze, catalog, ddl, preflight, retry, schema, snapshot, state, stream, watch};

/// Run a move to its end (copy, `--sync-only`, cleanup) or until
/// `shutdown` (streaming).
pub async fn run(
    config: Arc<Config>,
    opts: Options,
    task: Arc<Task>,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    task.set_options(opts.clone());
    let result = run_inner(config, &opts, &task, shutdown).await;
    task.end(result.as_ref().map(|o| *o == Outcome::Stopped));
    let cut_over = task.is_cut_over();
    match result {
        Ok(Outcome::Stopped) | Err(DataSyncError::Stopped) if cut_over => Ok(Outcome::CutOver),
        Err(DataSyncError::Stopped) => Ok(Outcome::Stopped),
        other => other,
    }
}

async fn run_inner(
    config: Arc<Config>,
    opts: &Options,
    task: &Arc<Task>,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    let slot = opts.slot_name();
    if !valid_slot_name(&slot) {
        return Err(DataSyncError::preflight(
            format!("\"{slot}\" is not a valid replication slot name"),
            "use lower-case letters, digits and underscores, at most 63 characters",
        ));
    }
    task.set_slot(slot.clone());
    let endpoints = Endpoints::of_move(config.clone(), opts)?;
    if opts.mode == Mode::Cleanup {
        cleanup(&endpoints, &slot).await?;
        return Ok(Outcome::CleanedUp);
    }
    // A pass plans the move, creates and copies what is missing, and
    // streams; a table that joins the publication while it streams ends
    // the pass, and the next one takes it in (a resume of the same move).
    let mut replanned = false;
    let mut after_ddl = false;
    // The names the last plan knew its tables by (source shard 0's OIDs).
    let known = std::sync::Mutex::new(std::collections::HashMap::new());
    loop {
        // The move's slot exists and its source captures DDL: the slot may
        // hold schema changes the shards have not seen yet, so the
        // source's catalog can be ahead of them.
        let catalog_may_lead = resumes_with_capture(&config, &endpoints, &slot).await?;
        let pass = Pass {
            config: &config,
            opts,
            task,
            shutdown: &shutdown,
            endpoints: &endpoints,
            slot: &slot,
            replanned,
            after_ddl,
            catalog_may_lead,
            known: &known,
        };
        match pass.run().await? {
            PassEnd::Done(outcome) => return Ok(outcome),
            PassEnd::Replan(why) => {
                info!("{why}: planning the move again");
                replanned = true;
                after_ddl = false;
            }
            PassEnd::SchemaChanged(why) => {
                info!("{why}: planning the move again");
                replanned = true;
                after_ddl = true;
            }
        }
    }
}

/// Whether the move's slot exists and the DDL capture is installed on
/// every source shard.
async fn resumes_with_capture(config: &Config, endpoints: &Endpoints, slot: &str) -> Result<bool> {
    if !config.general.resharding_capture_ddl {
        return Ok(false);
    }
    for s in 0..endpoints.source.shards.len() {
        // A source that cannot be reached is preflight's to report.
        let Ok(mut conn) = endpoints.connect_source(s, false).await else {
            return Ok(false);
        };
        let found = async {
            let slot_there = preflight::slot_info(&mut conn, slot).await?.is_some();
            Ok::<_, DataSyncError>(slot_there && ddl::capture::installed(&mut conn).await?)
        }
        .await;
        conn.close().await;
        if !found.unwrap_or(false) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How a pass of a move ended.
#[derive(Debug)]
enum PassEnd {
    Done(Outcome),
    /// The publication changed while streaming: plan again.
    Replan(String),
    /// Captured DDL reached the destination shards: plan again, without
    /// schema sync (the source's catalog can be ahead of the stream).
    SchemaChanged(String),
}

impl PassEnd {
    /// The new plan a failure of the copy or the stream leads to, if any.
    fn after(e: &DataSyncError) -> Option<PassEnd> {
        if let DataSyncError::SchemaChanged { .. } = e {
            return Some(PassEnd::SchemaChanged(e.to_string()));
        }
        retry::wants_new_plan(e).map(PassEnd::Replan)
    }
}

/// One pass of a move: preflight, schema, slots, copy, indexes, stream.
struct Pass<'a> {
    config: &'a Arc<Config>,
    opts: &'a Options,
    task: &'a Arc<Task>,
    shutdown: &'a CancellationToken,
    endpoints: &'a Endpoints,
    slot: &'a str,
    /// An earlier pass ended because the source changed: schema sync
    /// runs again (it creates only what is missing).
    replanned: bool,
    /// That change was captured DDL the stream applied.
    after_ddl: bool,
    /// The source captures DDL and the slot exists: its catalog can be
    /// ahead of the shards, which the stream brings along.
    catalog_may_lead: bool,
    /// The names the last plan knew its tables by, by OID: a table renamed
    /// on the source is still known by its old name to the shards until
    /// the stream replays the rename.
    known: &'a std::sync::Mutex<std::collections::HashMap<u32, catalog::TableName>>,
}

impl std::fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass").field("slot", &self.slot).finish()
    }
}

/// Return `Ok(PassEnd::Done(Outcome::Stopped))` from a pass when
/// `shutdown` fires first.
macro_rules! or_stopped {
    ($shutdown:expr, $fut:expr) => {
        tokio::select! {
            r = $fut => r?,
            _ = $shutdown.cancelled() => return Ok(PassEnd::Done(Outcome::Stopped)),
        }
    };
}

impl Pass<'_> {
    async fn run(&self) -> Result<PassEnd> {
        let (opts, task, shutdown) = (self.opts, self.task, self.shutdown);
        task.set_phase(Phase::Preflight);
        let schema_sync = opts.schema_sync && opts.mode != Mode::ReplicateOnly;
        let (intent, columns) = self.checks(schema_sync);
        let mut findings = or_stopped!(
            shutdown,
            preflight::run_checking(
                self.endpoints,
                &opts.publication,
                self.slot,
                intent,
                columns
            )
        );
        announce_routing(
            task,
            &findings.plan,
            self.config.general.omnisharded_warning_size,
        );
        let schema = if schema_sync {
            match self.schema_pre(&mut findings).await? {
                Some(s) => s,
                None => return Ok(PassEnd::Done(Outcome::Stopped)),
            }
        } else {
            None
        };
        self.record_state(&findings).await?;
        if self.config.general.resharding_capture_ddl {
            self.capture_ddl().await?;
        }
        let Some(exported) = self.create_slots(&findings).await? else {
            return Ok(PassEnd::Done(Outcome::Stopped));
        };
        if let Some(source) = &schema {
            self.schema_unchanged(source, &findings).await?;
        }
        let mut ctx = self.ctx(&findings).await?;
        let prepared = self.chunks(&mut ctx, &findings).await?;
        if opts.mode != Mode::ReplicateOnly {
            task.set_phase(Phase::Copying);
            let chunked: std::collections::HashSet<usize> =
                prepared.books.iter().map(|b| b.table).collect();
            or_stopped!(
                shutdown,
                copy::run(
                    Arc::new(ctx.clone()),
                    &findings.finished,
                    exported,
                    &chunked
                )
            );
            if let Some(end) = self
                .stream_while_copying(&ctx, &prepared, &findings.finished)
                .await?
            {
                return Ok(end);
            }
            info!("copy complete");
        } else {
            for e in exported.into_iter().flatten() {
                e.release().await;
            }
        }
        if let Some(source) = &schema {
            task.set_phase(Phase::Indexing);
            self.schema_post(source, &mut ctx).await?;
        }
        if opts.mode == Mode::SyncOnly {
            analyze::run(ctx.endpoints.clone(), ctx.plan.clone(), shutdown.clone()).await;
            return Ok(PassEnd::Done(Outcome::Copied));
        }
        if shutdown.is_cancelled() {
            return Ok(PassEnd::Done(Outcome::Stopped));
        }
        self.stream(ctx).await
    }

    /// What preflight checks: what this pass does, and whether the
    /// source's catalog may be ahead of the shards.
    fn checks(&self, schema_sync: bool) -> (preflight::Intent, preflight::Columns) {
        let intent = if self.opts.mode == Mode::ReplicateOnly {
            preflight::Intent::ReplicateOnly
        } else if schema_sync {
            preflight::Intent::CopyCreatingSchema
        } else {
            preflight::Intent::Copy
        };
        let columns = if self.catalog_may_lead {
            preflight::Columns::InFlight
        } else {
            preflight::Columns::Match
        };
        (intent, columns)
    }

    /// pgdog's state schema on every destination shard, and the names the
    /// plan knows its tables by.
    async fn record_state(&self, findings: &preflight::Findings) -> Result<()> {
        for d in 0..self.endpoints.dest.shards.len() {
            let mut conn = self.endpoints.connect_dest(d).await?;
            state::ensure_schema(&mut conn).await?;
            conn.close().await;
        }
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = findings
            .plan
            .tables
            .iter()
            .map(|t| (t.table.oid, t.table.name.clone()))
            .collect();
        Ok(())
    }

    /// Tables with a usable unique key are copied in chunks while the
    /// stream runs; the others whole, in the slot's snapshot, first (a
    /// note says which and why).
    async fn chunks(
        &self,
        ctx: &mut Ctx,
        findings: &preflight::Findings,
    ) -> Result<chunked::Prepared> {
        let copies = self.opts.mode != Mode::ReplicateOnly;
        let prepared = chunked::prepare(ctx, &findings.finished, copies).await?;
        for (ti, why) in &prepared.whole {
            let note = format!(
                "table {} is copied whole in one snapshot, not in chunks: {why}; the source's xmin horizon is held for as long as its copy takes",
                ctx.plan.tables[*ti].table.name
            );
            info!("{note}");
            self.task.add_note(note);
        }
        ctx.chunks = Arc::new(prepared.books.clone());
        Ok(prepared)
    }

    /// The chunked copy with the stream running, so the slot's position
    /// moves on and no snapshot is held longer than a chunk. The stream
    /// ends once every table is copied (it starts again after the indexes
    /// are built, with the plan that knows them). `Some`: the pass ends
    /// here (stopped, or the publication changed).
    async fn stream_while_copying(
        &self,
        ctx: &Ctx,
        prepared: &chunked::Prepared,
        finished: &[std::collections::HashMap<(usize, catalog::TableName), pgdog_protocol::Lsn>],
    ) -> Result<Option<PassEnd>> {
        let left = prepared.books.iter().any(|b| {
            let name = &ctx.plan.tables[b.table].table.name;
            (0..ctx.plan.dest_shards())
                .any(|d| !finished[d].contains_key(&(b.source_shard, name.clone())))
        });
        if !left || self.shutdown.is_cancelled() {
            return Ok(None);
        }
        let phase = self.shutdown.child_token();
        let mut during = ctx.clone();
        during.shutdown = phase.clone();
        let during = Arc::new(during);
        let watcher = tokio::spawn(watch::publication(
            ctx.endpoints.clone(),
            ctx.plan.clone(),
            self.task.clone(),
            phase.clone(),
        ));
        let streaming = tokio::spawn(stream::run(during.clone()));
        let copied = chunked::run(during, prepared, finished).await;
        phase.cancel();
        let streamed = streaming
            .await
            .unwrap_or_else(|e| Err(DataSyncError::State(format!("stream task panicked: {e}"))));
        let why = watcher.await.ok().flatten();
        if self.shutdown.is_cancelled() {
            return Ok(Some(PassEnd::Done(Outcome::Stopped)));
        }
        if let Err(e) = streamed {
            return self.after_stream_error(e).await.map(Some);
        }
        if let Some(why) = why {
            return Ok(Some(PassEnd::Replan(why)));
        }
        match copied {
            Ok(()) => Ok(None),
            Err(DataSyncError::Stopped) => Ok(Some(PassEnd::Done(Outcome::Stopped))),
            Err(e) => PassEnd::after(&e).map(Some).ok_or(e),
        }
    }

    /// Schema sync before the copy: pre-data, once preflight found nothing
    /// wrong. A rerun knows which phases are done; a table the shards
    /// lack (one that joined the publication) runs it again. `None`:
    /// stopped. `Some(None)`: nothing left for post-data.
    async fn schema_pre(
        &self,
        findings: &mut preflight::Findings,
    ) -> Result<Option<Option<schema::Source>>> {
        let (endpoints, task, shutdown, slot) =
            (self.endpoints, self.task, self.shutdown, self.slot);
        let (pre_done, post_done) = schema::phases_done(endpoints, slot).await?;
        // A table no destination shard has yet: preflight leaves its
        // destination shape empty.
        // Right after captured DDL, a table the shards lack may be one the
        // stream is about to rename there: it keeps the name they know
        // until then. Another waits for the publication watcher, which
        // lets the stream catch up first.
        if self.after_ddl && self.renamed_in_flight(findings) {
            preflight::refresh_dest_tables(endpoints, &mut findings.plan).await?;
        }
        if self.after_ddl {
            findings.plan.tables.retain(|t| {
                let lacking = t.dest_table.columns.is_empty();
                if lacking {
                    info!(table = %t.table.name, "not on the destination shards yet: taken in once the stream has replayed the schema changes before it");
                }
                !lacking
            });
        }
        let missing = findings
            .plan
            .tables
            .iter()
            .any(|t| t.dest_table.columns.is_empty());
        if post_done && !missing && (!self.replanned || self.after_ddl) {
            return Ok(Some(None));
        }
        task.set_phase(Phase::Schema);
        let settings = schema::Settings::from_config(self.config);
        let source = tokio::select! {
            s = schema::read_source(endpoints, &self.opts.publication, &settings) => s?,
            _ = shutdown.cancelled() => return Ok(None),
        };
        // After captured DDL nothing is checked, and only missing tables
        // are created: the stream brings the shards to the source's shape
        // in its own order.
        if self.after_ddl && !missing {
            return Ok(Some(Some(source)));
        }
        let how = schema::PreData {
            columns_in_flight: self.catalog_may_lead,
            ..Default::default()
        };
        schema::report_left_out(task, &source);
        let through = schema::check::Through::PreData {
            deferred_identity: false,
        };
        // A rerun after pre-data: anything it lacks (primary keys an older
        // pgdog deferred to after the copy) is created now, before the
        // copy and the stream need it.
        let lacking = pre_done
            && schema::check::created(endpoints, &source, slot, through)
                .await
                .is_err();
        if !pre_done || missing || self.replanned || lacking {
            // Primary keys before the copy: the stream applies changes to
            // what the chunks copied while the copy goes on.
            let r = schema::pre_data(endpoints, &source, slot, task, shutdown, how).await?;
            info!(
                created = r.created,
                existed = r.existed,
                "schema sync: pre-data on every destination shard"
            );
            preflight::refresh_dest_tables(endpoints, &mut findings.plan).await?;
        }
        if !self.catalog_may_lead {
            schema::check::created(endpoints, &source, slot, through).await?;
        }
        // What follows (the slots) is still before the copy.
        task.set_phase(Phase::Preflight);
        Ok(Some(Some(source)))
    }

    /// Tables of the plan the shards lack under the source's name but hold
    /// under the name the last plan knew (the same OID): renamed on the
    /// source, not yet by the stream. They are planned under that name,
    /// which is also what the stream's messages say until the rename.
    /// Whether there was any.
    fn renamed_in_flight(&self, findings: &mut preflight::Findings) -> bool {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut any = false;
        for t in findings.plan.tables.iter_mut() {
            if !t.dest_table.columns.is_empty() {
                continue;
            }
            let Some(old) = known.get(&t.table.oid).filter(|o| **o != t.table.name) else {
                continue;
            };
            info!(table = %t.table.name, was = %old, "renamed on the source: planned under its old name until the stream replays the rename");
            t.table.name = old.clone();
            any = true;
        }
        any
    }

    /// Install the DDL capture on every source shard, before the slots
    /// exist, so every schema change the slots see is captured. A shard
    /// where it cannot be installed is said once, in the log and the task.
    async fn capture_ddl(&self) -> Result<()> {
        for s in 0..self.endpoints.source.shards.len() {
            let mut conn = self.endpoints.connect_source(s, false).await?;
            let what = format!("source shard {s}");
            let installed = ddl::capture::install(&mut conn, &what, self.slot).await;
            conn.close().await;
            match installed? {
                ddl::capture::Installed::Yes => {}
                ddl::capture::Installed::No(why) => {
                    if !self.replanned {
                        warn!("{why}");
                        self.task.add_note(why);
                    }
                }
            }
        }
        Ok(())
    }

    /// The permanent slots, where streaming starts: created where missing.
    /// A slot this pass creates exports its snapshot, which every copy
    /// from that primary shares (copies from replicas take their own).
    /// `None`: stopped.
    async fn create_slots(
        &self,
        findings: &preflight::Findings,
    ) -> Result<Option<Vec<Option<snapshot::SharedSnapshot>>>> {
        let (endpoints, task, slot) = (self.endpoints, self.task, self.slot);
        let copying = self.opts.mode != Mode::ReplicateOnly;
        let mut exported = Vec::new();
        for (s, exists) in findings.slot_exists.iter().enumerate() {
            exported.push(None);
            if *exists {
                info!(source_shard = s, slot = %slot, "reusing existing replication slot");
                continue;
            }
            let export = copying && findings.copy_sources.get(s).is_some_and(|c| !c.replicas);
            let action = if export {
                SnapshotAction::Export
            } else {
                SnapshotAction::NoExport
            };
            let mut repl = endpoints.connect_source(s, true).await?;
            let primary = endpoints.source(s);
            let what = format!("source shard {s} ({}:{})", primary.host, primary.port);
            let created = tokio::select! {
                c = snapshot::create_slot(&mut repl, &primary, slot, false, action, task, &what) => c?,
                _ = self.shutdown.cancelled() => return Ok(None),
            };
            info!(
                source_shard = s,
                slot = %slot,
                lsn = %created.consistent_point,
                "created replication slot (drop it with --cleanup if you abandon this move)"
            );
            if export {
                let snap = snapshot::SharedSnapshot::new(repl, &created, task, s)?;
                snapshot::log_taken(&snap, &what);
                exported[s] = Some(snap);
            } else {
                repl.close().await;
            }
        }
        Ok(Some(exported))
    }

    /// DDL between schema sync's read of a source shard and the creation
    /// of the slot there would reach neither the shards nor the stream:
    /// where this pass created the slot, the source's schema must still be
    /// the one schema sync read.
    async fn schema_unchanged(
        &self,
        source: &schema::Source,
        findings: &preflight::Findings,
    ) -> Result<()> {
        for (s, existed) in findings.slot_exists.iter().enumerate() {
            if *existed {
                continue;
            }
            let mut conn = self.endpoints.connect_source(s, false).await?;
            let publication = &self.opts.publication;
            let unchanged =
                schema::source::unchanged_since_read(&mut conn, publication, source, s, self.slot)
                    .await;
            conn.close().await;
            unchanged?;
        }
        Ok(())
    }

    /// What every task of the copy and the stream shares.
    async fn ctx(&self, findings: &preflight::Findings) -> Result<Ctx> {
        let endpoints = self.endpoints;
        let mut stream_start = Vec::with_capacity(endpoints.source.shards.len());
        for s in 0..endpoints.source.shards.len() {
            let mut conn = endpoints.connect_source(s, false).await?;
            let info = preflight::slot_info(&mut conn, self.slot).await?;
            stream_start.push(info.and_then(|i| i.confirmed_flush).unwrap_or_default());
            conn.close().await;
        }
        Ok(Ctx {
            endpoints: endpoints.clone(),
            plan: findings.plan.clone(),
            task: self.task.clone(),
            shutdown: self.shutdown.clone(),
            parallel: self
                .config
                .general
                .resharding_parallel_copies
                .unwrap_or_else(default_parallel),
            chunk_bytes: self.config.general.resharding_copy_chunk_size,
            chunk_seconds: self.config.general.resharding_chunk_seconds,
            resume: findings.slot_exists.iter().any(|e| *e),
            copy_sources: findings.copy_sources.clone(),
            stream_start,
            drain_ended: false,
            chunks: Default::default(),
        })
    }

    /// Schema sync after the copy: the keys, indexes and constraints of
    /// the tables this move created, then the check against pg_dump. The
    /// unique indexes just built decide how changes are batched.
    async fn schema_post(&self, source: &schema::Source, ctx: &mut Ctx) -> Result<()> {
        let settings = schema::Settings::from_config(self.config);
        let scope = schema::Scope {
            slot: self.slot.to_string(),
            only_created: true,
        };
        let r = schema::post_data(
            &ctx.endpoints,
            source,
            &scope,
            &settings,
            self.task,
            self.shutdown,
            false,
        )
        .await?;
        info!(
            created = r.created,
            "schema sync: post-data on every destination shard"
        );
        for n in &r.not_valid {
            warn!("foreign key left NOT VALID: {n}");
        }
        let checked = schema::check::created(
            &ctx.endpoints,
            source,
            self.slot,
            schema::check::Through::PostData,
        )
        .await;
        match checked {
            // Captured DDL the stream has not replayed yet can make the
            // shards differ from the source's catalog for a while.
            Err(e) if self.catalog_may_lead => warn!(
                "after post-data, the destination shards differ from the source's schema while the stream replays schema changes: {e}"
            ),
            other => other?,
        }
        preflight::refresh_dest_tables(&ctx.endpoints, &mut ctx.plan).await
    }

    /// What a failed stream leads to: a new plan (the destination lacks a
    /// partition; the source has new columns, once every destination shard
    /// has them too), else the error.
    async fn after_stream_error(&self, e: DataSyncError) -> Result<PassEnd> {
        if let DataSyncError::NewColumns {
            table,
            source_shard,
            columns,
        } = &e
        {
            return self.wait_for_columns(table, *source_shard, columns).await;
        }
        PassEnd::after(&e).ok_or(e)
    }

    /// Columns added on the source, without pgdog capturing the DDL: wait
    /// (the task says for what, and the statement to run) until every
    /// destination shard has them, then plan again. Nothing of the new
    /// shape was applied; the stream goes on from the slot.
    async fn wait_for_columns(
        &self,
        table: &str,
        source_shard: usize,
        columns: &[(String, String)],
    ) -> Result<PassEnd> {
        let adds: Vec<String> = columns
            .iter()
            .map(|(c, t)| format!("ADD COLUMN IF NOT EXISTS {} {t}", catalog::quote_ident(c)))
            .collect();
        let statement = format!("ALTER TABLE {table} {};", adds.join(", "));
        let names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        let message = format!(
            "{table} has new columns on source shard {source_shard} ({}); run on every destination shard that lacks them: {statement} (the same default as on the source); the move goes on by itself",
            columns
                .iter()
                .map(|(c, t)| format!("{c} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        warn!("{message}");
        let waiting = self.task.wait_on(message.clone());
        self.until_columns_exist(table, &names).await?;
        drop(waiting);
        if self.shutdown.is_cancelled() {
            return Ok(PassEnd::Done(Outcome::Stopped));
        }
        Ok(PassEnd::Replan(format!(
            "every destination shard has the new columns of {table}"
        )))
    }

    async fn until_columns_exist(&self, table: &str, names: &[String]) -> Result<()> {
        let mut wait = retry::Wait::new(
            format!("every destination shard to have the new columns of {table}"),
            None,
            std::time::Duration::from_secs(1),
        );
        loop {
            let mut all = true;
            for d in 0..self.endpoints.dest.shards.len() {
                let mut conn = self.endpoints.connect_dest(d).await?;
                let rows = conn
                    .query_params(
                        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attname = ANY ($2::text[])",
                        &[pgdog_protocol::frontend::Format::Text; 2],
                        [
                            Some(table.as_bytes()),
                            Some(catalog::text_array(names.iter().cloned()).as_bytes()),
                        ],
                        pgdog_protocol::frontend::Format::Text,
                    )
                    .await?;
                conn.close().await;
                let have: usize = rows
                    .first()
                    .and_then(|r| r.text(0))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                all &= have == names.len();
            }
            // A stop ends the wait; the caller sees the shutdown.
            if all
                || wait
                    .tick("a shard lacks them", Some(self.shutdown))
                    .await
                    .is_err()
            {
                return Ok(());
            }
        }
    }

    /// Stream until stopped, or until the publication changes (a new plan
    /// is needed: the stream stops cleanly first).
    async fn stream(&self, mut ctx: Ctx) -> Result<PassEnd> {
        let shutdown = self.shutdown;
        self.task.set_phase(Phase::Streaming);
        let analyzing = (self.opts.mode != Mode::ReplicateOnly).then(|| {
            tokio::spawn(analyze::run(
                ctx.endpoints.clone(),
                ctx.plan.clone(),
                shutdown.child_token(),
            ))
        });
        let replan = shutdown.child_token();
        ctx.shutdown = replan.clone();
        let watcher = tokio::spawn(watch::publication(
            ctx.endpoints.clone(),
            ctx.plan.clone(),
            self.task.clone(),
            replan.clone(),
        ));
        let watched = {
            let replan = replan.clone();
            async move {
                let why = watcher.await.ok().flatten();
                if why.is_some() {
                    replan.cancel();
                }
                why
            }
        };
        let (streamed, why) = tokio::join!(
            async {
                let r = stream::run(Arc::new(ctx)).await;
                replan.cancel();
                r
            },
            watched
        );
        if let Some(a) = analyzing {
            a.abort();
        }
        if let Err(e) = streamed {
            if shutdown.is_cancelled() {
                // Stopped as the stream ended for a new plan (a schema
                // change it just replayed and committed, say): a clean
                // stop, not a failure.
                return match PassEnd::after(&e) {
                    Some(_) => Ok(PassEnd::Done(Outcome::Stopped)),
                    None => Err(e),
                };
            }
            return self.after_stream_error(e).await;
        }
        Ok(match why {
            Some(why) if !shutdown.is_cancelled() => PassEnd::Replan(why),
            _ => PassEnd::Done(Outcome::Stopped),
        })
    }
}

/// Say how every table is routed before anything is copied (the log, and
/// `SHOW ROUTING`), with a warning for each large table copied whole to
/// every destination shard.
fn announce_routing(task: &Task, plan: &Plan, warn_bytes: u64) {
    let routing = plan.routing(warn_bytes);
    for r in &routing {
        if plan.source_shards() > 1 {
            info!(table = %r.table, source = %r.source, "routing: {}", r.dest);
        } else {
            info!(table = %r.table, "routing: {}", r.dest);
        }
        if let Some(w) = &r.warning {
            warn!("{w}");
        }
    }
    task.set_routing(routing);
}

/// Drop the slot on every source shard and pgdog's state for it on every
/// destination shard.
pub async fn cleanup(endpoints: &Endpoints, slot: &str) -> Result<()> {
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        // A pgdog that just stopped may still hold the slot for a moment
        // while its WAL sender exits: give it a few seconds.
        let info =
            preflight::slot_when_released(&mut conn, slot, std::time::Duration::from_secs(10))
                .await?;
        match info {
            None => info!(source_shard = s, slot, "no replication slot to drop"),
            Some(info) if info.active_pid.is_some() => {
                return Err(DataSyncError::preflight(
                    format!(
                        "replication slot \"{slot}\" on source shard {s} is in use by process {}",
                        info.active_pid.unwrap_or(0)
                    ),
                    "stop the pgdog data-sync that streams from it first, then run --cleanup again",
                ))
            }
            Some(_) => {
                conn.query_text("SELECT pg_drop_replication_slot($1)", &[slot])
                    .await?;
                info!(source_shard = s, slot, "dropped replication slot");
            }
        }
        match ddl::capture::remove(&mut conn, slot).await? {
            ddl::capture::Removal::NotInstalled => {}
            ddl::capture::Removal::Removed => {
                info!(source_shard = s, "removed the DDL capture's event triggers")
            }
            ddl::capture::Removal::KeptFor(slots) => info!(
                source_shard = s,
                "kept the DDL capture's event triggers: the moves of slots {} still use them",
                slots.join(", ")
            ),
        }
        conn.close().await;
    }
    for d in 0..endpoints.dest.shards.len() {
        let mut conn = endpoints.connect_dest(d).await?;
        state::forget(&mut conn, slot).await?;
        conn.close().await;
        info!(dest_shard = d, slot, "removed pgdog state");
    }
    Ok(())
}
