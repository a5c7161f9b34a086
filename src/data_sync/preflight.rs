//! Checks before anything is created on any server. Each failure says what
//! is wrong, where, and how to fix it.

use std::collections::{HashMap, HashSet};

use pgdog_protocol::backend::DataRow;
use pgdog_protocol::Lsn;
use tracing::{info, warn};

use crate::net::{ConnectOptions, Connection};
use crate::sharding::DataType;

use super::catalog::{self, DestTable, PublishedTable, TableName};
use super::endpoints::Endpoints;
use super::error::{DataSyncError, Problem, Result};
use super::plan::{routing, Plan, TablePlan};
use super::state;

/// What preflight found, beyond the plan.
#[derive(Debug, Clone)]
pub struct Findings {
    pub plan: Plan,
    /// Whether the permanent slot already exists, per source shard.
    pub slot_exists: Vec<bool>,
    /// Finished copies recorded on each destination shard.
    pub finished: Vec<HashMap<(usize, TableName), Lsn>>,
    /// Where table copies read, per source shard (replicas or the primary).
    pub copy_sources: Vec<super::replicas::CopySources>,
    /// What the operator should know but need not fix (tables whose
    /// changes are broadcast, tables `--replicate-only` never copied).
    pub notes: Vec<String>,
}

/// What the run is going to do, which decides what must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Copy (what is not copied yet) and maybe stream.
    Copy,
    /// The same, after schema sync, which creates tables a destination
    /// shard lacks: a missing table is not a problem.
    CopyCreatingSchema,
    /// Stream only, from an existing slot.
    ReplicateOnly,
    /// Look at an existing move without copying or streaming it
    /// (`command`: verify, sequence-sync); `temporary_slot`: the command
    /// creates a slot of its own.
    Inspect {
        command: &'static str,
        temporary_slot: bool,
    },
}

impl Intent {
    /// Whether the run copies tables.
    fn copies(self) -> bool {
        matches!(self, Intent::Copy | Intent::CopyCreatingSchema)
    }
}

async fn connect(opts: &ConnectOptions, what: &str) -> Result<Connection> {
    Connection::connect(opts).await.map_err(|e| {
        let fix = match e.code() {
            Some("28P01") | Some("28000") => format!(
                "check the password of user \"{}\" in users.toml and pg_hba.conf on {}",
                opts.user,
                e.server()
            ),
            Some("3D000") => format!(
                "create database \"{}\" or fix database_name in pgdog.toml",
                opts.database
            ),
            _ => format!("check that {} is up and reachable from here", e.server()),
        };
        DataSyncError::preflight(
            format!("cannot connect to {what} as \"{}\": {e}", opts.user),
            fix,
        )
    })
}

/// Everything preflight found wrong, collected so one run names them all.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem {
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Keep the problems of a check that returns a preflight error; any
    /// other error (a lost connection) ends preflight at once.
    fn take(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(DataSyncError::Preflight { problems }) => {
                self.0.extend(problems);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DataSyncError::Preflight { problems: self.0 })
        }
    }
}

/// The first row of a catalog query, or an error naming the query.
fn first_row<'r>(rows: &'r [DataRow], what: &str) -> Result<&'r DataRow> {
    rows.first()
        .ok_or_else(|| DataSyncError::State(format!("{what} returned no row")))
}

pub async fn run(
    endpoints: &Endpoints,
    publication: &str,
    slot: &str,
    intent: Intent,
) -> Result<Findings> {
    run_checking(endpoints, publication, slot, intent, Columns::Match).await
}

/// How preflight judges a destination table's columns against the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// Every published column must be there, of the same type.
    Match,
    /// The stream is behind schema changes pgdog captured on the source
    /// and replays: a column the shards lack yet, or of another type, is
    /// one the stream brings (the chunks and the stream check shapes).
    InFlight,
}

/// [`run`], judging columns as `columns` says. The checks run in order,
/// each on every shard, and each adds every problem it finds; the error
/// lists them all. A check that cannot read what it needs (source shard 0
/// unreachable, say) stops there with what was found so far.
pub async fn run_checking(
    endpoints: &Endpoints,
    publication: &str,
    slot: &str,
    intent: Intent,
    columns: Columns,
) -> Result<Findings> {
    let mut check = Check {
        endpoints,
        publication,
        slot,
        intent,
        columns,
        problems: Problems::default(),
        notes: Vec::new(),
    };
    let (slot_exists, tables) = check.sources().await?;
    let mut plans = check.routing(tables)?;
    check.keys_outside_identity(&plans);
    if endpoints.source.shards.len() > 1 {
        let omni = check_omnisharded_sources(endpoints, &plans).await;
        check.problems.take(omni)?;
    }
    let finished = check.destinations(&mut plans, &slot_exists).await?;
    let Check {
        problems, notes, ..
    } = check;
    problems.into_result()?;
    let copy_sources = if intent.copies() {
        super::replicas::qualify(endpoints).await?
    } else {
        Vec::new()
    };
    info!(
        tables = plans.len(),
        source_shards = endpoints.source.shards.len(),
        dest_shards = endpoints.dest.shards.len(),
        "preflight passed"
    );
    Ok(Findings {
        plan: Plan {
            slot: slot.to_string(),
            publication: publication.to_string(),
            source: endpoints.source.clone(),
            dest: endpoints.dest.clone(),
            tables: plans,
        },
        slot_exists,
        finished,
        copy_sources,
        notes,
    })
}

/// One preflight: what it checks against, and what it found so far.
struct Check<'a> {
    endpoints: &'a Endpoints,
    publication: &'a str,
    slot: &'a str,
    intent: Intent,
    columns: Columns,
    problems: Problems,
    notes: Vec<String>,
}

/// What one source shard's checks read.
struct SourceShard {
    slot_exists: bool,
    tables: Option<Vec<PublishedTable>>,
}

impl Check<'_> {
    /// Sources: reachable, new enough, logical WAL, replication rights,
    /// room for the slot, the publication and its tables' identities, and
    /// the same tables on every shard. Whether each shard has the slot,
    /// and source shard 0's tables.
    async fn sources(&mut self) -> Result<(Vec<bool>, Vec<PublishedTable>)> {
        let mut slot_exists = Vec::new();
        let mut first: Option<Vec<PublishedTable>> = None;
        for s in 0..self.endpoints.source.shards.len() {
            let shard = self.source_shard(s).await?;
            slot_exists.push(shard.slot_exists);
            match (&first, shard.tables) {
                (None, tables) if s == 0 => first = tables,
                (Some(first), Some(tables)) => {
                    self.problems.take(compare_sources(first, &tables, s))?
                }
                _ => {}
            }
        }
        let Some(tables) = first else {
            // Source shard 0 could not be read: nothing to plan with.
            std::mem::take(&mut self.problems).into_result()?;
            return Err(DataSyncError::State(
                "source shard 0 returned no publication tables".into(),
            ));
        };
        Ok((slot_exists, tables))
    }

    async fn source_shard(&mut self, s: usize) -> Result<SourceShard> {
        let opts = self.endpoints.source(s);
        let what = format!("source shard {s} ({}:{})", opts.host, opts.port);
        let mut shard = SourceShard {
            slot_exists: false,
            tables: None,
        };
        let mut conn = match connect(&opts, &what).await {
            Ok(c) => c,
            Err(e) => {
                self.problems.take(Err(e))?;
                return Ok(shard);
            }
        };
        if !self.source_version(&conn, &what) {
            return Ok(shard);
        }
        let exists = slot_info(&mut conn, self.slot).await?;
        self.source_settings(&mut conn, &opts, &what, exists.is_some())
            .await?;
        self.existing_slot(exists.as_ref(), &opts, &what);
        shard.slot_exists = exists.is_some();
        shard.tables = self.published_tables(&mut conn, &what).await?;
        conn.close().await;
        Ok(shard)
    }

    /// PostgreSQL 14 or newer; false: nothing more is checked there.
    fn source_version(&mut self, conn: &Connection, what: &str) -> bool {
        if conn.server_version_num() >= 140000 {
            return true;
        }
        self.problems.push(
            format!("{what} runs PostgreSQL {}, older than 14", conn.param("server_version").unwrap_or("?")),
            "upgrade the source to PostgreSQL 14 or newer (binary pgoutput and TID range scans are needed)",
        );
        false
    }

    /// wal_level, the replication right, and free slots and WAL senders
    /// for what this run creates.
    async fn source_settings(
        &mut self,
        conn: &mut Connection,
        opts: &ConnectOptions,
        what: &str,
        slot_exists: bool,
    ) -> Result<()> {
        let settings_sql = "SELECT current_setting('wal_level'), (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                           current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
                           current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)";
        let rows = conn.query(settings_sql).await?;
        let row = first_row(&rows, "the source settings query")?;
        if row.text(0) != Some("logical") {
            self.problems.push(
                format!("{what} has wal_level = {}, logical replication needs logical", row.text(0).unwrap_or("?")),
                "set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart the server",
            );
        }
        if row.text(1) != Some("t") {
            self.problems.push(
                format!("user \"{}\" on {what} may not use replication", opts.user),
                format!(
                    "ALTER ROLE \"{}\" REPLICATION; (and allow it in pg_hba.conf)",
                    opts.user
                ),
            );
        }
        let free_slots: i64 = row.text(2).and_then(|t| t.parse().ok()).unwrap_or(0);
        let free_senders: i64 = row.text(3).and_then(|t| t.parse().ok()).unwrap_or(0);
        // The permanent slot, or (resuming) a temporary one whose snapshot
        // the copies share; one WAL sender at a time (the snapshot's holder
        // during the copy, the stream after it).
        let need_slots = match self.intent {
            Intent::Inspect { temporary_slot, .. } => i64::from(temporary_slot),
            Intent::ReplicateOnly => i64::from(!slot_exists),
            Intent::Copy | Intent::CopyCreatingSchema => 1,
        };
        let need_senders = 1;
        if free_slots < need_slots {
            self.problems.push(
                format!(
                    "{what} has {free_slots} free replication slots, this move needs {need_slots}"
                ),
                "raise max_replication_slots on the source (restart needed), or drop unused slots",
            );
        }
        if free_senders < need_senders {
            self.problems.push(
                format!(
                    "{what} has {free_senders} free WAL senders, this move needs {need_senders}"
                ),
                "raise max_wal_senders on the source (restart needed)",
            );
        }
        Ok(())
    }

    /// The move's slot: of pgoutput on this database if it exists, and
    /// there when the run streams or inspects an existing move.
    fn existing_slot(&mut self, exists: Option<&SlotInfo>, opts: &ConnectOptions, what: &str) {
        let slot = self.slot;
        if let Some(info) = exists {
            if info.plugin != "pgoutput" || info.database != opts.database {
                self.problems.push(
                    format!(
                        "{what} already has a replication slot \"{slot}\" for plugin {} on database {}, not pgoutput on {}",
                        info.plugin, info.database, opts.database
                    ),
                    "pick another name with --replication-slot, or drop that slot if it is unused",
                );
            }
            return;
        }
        match self.intent {
            Intent::ReplicateOnly => self.problems.push(
                format!("--replicate-only needs the replication slot \"{slot}\", which does not exist on {what}"),
                "run the copy first (without --replicate-only, or with --sync-only), or pass the slot's name with --replication-slot",
            ),
            Intent::Inspect { command, .. } => self.problems.push(
                format!("{command} looks at the move of replication slot \"{slot}\", which does not exist on {what}"),
                "run pgdog data-sync first, or pass the move's slot name with --replication-slot",
            ),
            Intent::Copy | Intent::CopyCreatingSchema => {}
        }
    }

    /// The publication, its tables, and a usable replica identity on each.
    async fn published_tables(
        &mut self,
        conn: &mut Connection,
        what: &str,
    ) -> Result<Option<Vec<PublishedTable>>> {
        let publication = self.publication;
        if catalog::publication(conn, publication).await?.is_none() {
            self.problems.push(
                format!("publication \"{publication}\" does not exist on {what}"),
                format!("on every source shard: CREATE PUBLICATION {} FOR TABLE ... (or FOR ALL TABLES)", catalog::quote_ident(publication)),
            );
            return Ok(None);
        }
        let tables = catalog::publication_tables(conn, publication).await?;
        if tables.is_empty() {
            self.problems.push(
                format!("publication \"{publication}\" on {what} has no tables"),
                format!(
                    "ALTER PUBLICATION {} ADD TABLE ...",
                    catalog::quote_ident(publication)
                ),
            );
        }
        for t in tables.iter().filter(|t| !t.has_usable_identity()) {
            let leaves = if t.leaves_without_identity.is_empty() {
                String::new()
            } else {
                format!(
                    " (partitions without one: {})",
                    t.leaves_without_identity.join(", ")
                )
            };
            self.problems.push(
                format!("table {} on {what} has no usable replica identity{leaves}, so its updates and deletes cannot be replicated", t.name),
                format!("add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL (or USING INDEX a unique index on NOT NULL columns)", t.name.quoted()),
            );
        }
        Ok(Some(tables))
    }

    /// Each table's routing on both sides, with its key of a type the
    /// rule's sharder takes.
    fn routing(&mut self, tables: Vec<PublishedTable>) -> Result<Vec<TablePlan>> {
        let (config, endpoints) = (&self.endpoints.config, self.endpoints);
        let (n, m) = (endpoints.source.shards.len(), endpoints.dest.shards.len());
        let mut plans = Vec::with_capacity(tables.len());
        for table in tables {
            let source = routing(config, &endpoints.source.name, n, &table);
            let dest = routing(config, &endpoints.dest.name, m, &table);
            let (source, dest) = match (source, dest) {
                (Ok(s), Ok(d)) => (s, d),
                (s, d) => {
                    self.problems.take(s.map(|_| ()))?;
                    self.problems.take(d.map(|_| ()))?;
                    continue;
                }
            };
            for (side, r) in [("destination", &dest), ("source", &source)] {
                if let Some(r) = r {
                    let col = &table.columns[r.column];
                    self.problems
                        .take(check_key_type(&table, col, r.sharder.data_type, side))?;
                }
            }
            plans.push(TablePlan {
                table,
                dest,
                source,
                dest_table: Default::default(),
            });
        }
        Ok(plans)
    }

    /// A note for each table sharded on a column its replica identity
    /// lacks: what its updates and deletes cost.
    fn keys_outside_identity(&mut self, plans: &[TablePlan]) {
        for plan in plans {
            if plan.key_outside_identity() && plan.table.replica_identity != 'f' {
                let key = &plan.table.columns[plan.dest.as_ref().map_or(0, |r| r.column)].name;
                let note = format!(
                    "table {} is sharded on \"{key}\", which its replica identity ({}) does not include: an UPDATE cannot tell which shard the row was on, so it is applied as an upsert on the row's shard and a delete by identity on every other shard (one extra statement per other shard); a DELETE runs on every shard",
                    plan.table.name,
                    plan.identity_columns().join(", ")
                );
                info!("{note}");
                self.notes.push(note);
            }
        }
    }

    /// Destinations: reachable, tables present and matching, empty unless
    /// resumed. A run whose slot already exists is a resume: partial
    /// copies it left are removed before they are copied again. The
    /// finished copies recorded on each shard.
    async fn destinations(
        &mut self,
        plans: &mut [TablePlan],
        slot_exists: &[bool],
    ) -> Result<Vec<HashMap<(usize, TableName), Lsn>>> {
        let mut finished = Vec::new();
        for d in 0..self.endpoints.dest.shards.len() {
            let opts = self.endpoints.dest(d);
            let what = format!("destination shard {d} ({}:{})", opts.host, opts.port);
            let mut conn = match connect(&opts, &what).await {
                Ok(c) => c,
                Err(e) => {
                    self.problems.take(Err(e))?;
                    finished.push(HashMap::new());
                    continue;
                }
            };
            self.replication_role(&mut conn, &opts, &what).await?;
            if d == 0 {
                self.not_cut_over(&mut conn).await?;
            }
            let done = state::finished_copies(&mut conn, self.slot).await?;
            self.copied_routing(&mut conn, plans, &what).await?;
            let fresh = slot_exists.iter().all(|e| !e);
            let dest = DestShard {
                d,
                what: &what,
                done: &done,
                fresh,
            };
            self.dest_tables(&mut conn, plans, &dest).await?;
            // Progress recorded for a slot that no longer exists: the
            // changes between that copy and now are gone from the WAL.
            if !done.is_empty() && slot_exists.iter().any(|e| !e) {
                self.problems.push(
                    format!("{what} has copy progress recorded for slot \"{}\", but that slot no longer exists on every source shard; changes made since that copy cannot be streamed", self.slot),
                    "start over: pgdog data-sync ... --cleanup, TRUNCATE the destination tables, then run the move again",
                );
            }
            finished.push(done);
            conn.close().await;
        }
        Ok(finished)
    }

    /// Like a subscription's apply worker: foreign keys and user triggers
    /// do not fire, so copy and apply order do not matter.
    async fn replication_role(
        &mut self,
        conn: &mut Connection,
        opts: &ConnectOptions,
        what: &str,
    ) -> Result<()> {
        match conn.execute("SET session_replication_role = replica").await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("42501") => {
                self.problems.push(
                    format!("user \"{}\" on {what} may not set session_replication_role, which pgdog sets to replica so foreign keys and triggers already checked on the source do not fire again", opts.user),
                    format!("use a superuser, or on PostgreSQL 15+: GRANT SET ON PARAMETER session_replication_role TO \"{}\"", opts.user),
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A move that a cutover ended must not copy or stream again: its
    /// destination now takes the application's writes.
    async fn not_cut_over(&mut self, conn: &mut Connection) -> Result<()> {
        if matches!(self.intent, Intent::Inspect { .. }) {
            return Ok(());
        }
        let slot = self.slot;
        if let Some(why) = state::stream_stopped(conn, slot).await? {
            self.problems.push(
                format!("the move of slot \"{slot}\" does not copy or stream any more: {why}"),
                "this is the state pgdog cutover left; pgdog cutover --rollback makes the source the primary again and lets this move stream",
            );
        }
        Ok(())
    }

    /// Rows already copied stay where their routing put them: the plan
    /// must route them the same way now.
    async fn copied_routing(
        &mut self,
        conn: &mut Connection,
        plans: &[TablePlan],
        what: &str,
    ) -> Result<()> {
        let (n, m) = (
            self.endpoints.source.shards.len(),
            self.endpoints.dest.shards.len(),
        );
        let copied_routing = state::copied_routing(conn, self.slot).await?;
        for plan in plans {
            let now = plan.routing_key();
            match copied_routing.get(&plan.table.name) {
                Some(then) if *then != now => self.problems.push(
                    format!(
                        "table {} was copied to {what} routed as \"{then}\", but the configuration now routes it as \"{now}\" ({}): its rows there would sit where the new routing does not put them",
                        plan.table.name,
                        plan.routing(n, m, u64::MAX).dest
                    ),
                    format!(
                        "route it as before: a partition detached from its parent needs a [[sharded_tables]] entry of its own naming \"{}\" with the parent's column; or start the move over (--cleanup, then empty the destination tables)",
                        plan.table.name.name
                    ),
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every table there, matching its source, empty unless its copy is
    /// recorded; each shard's tables merged into the plan.
    async fn dest_tables(
        &mut self,
        conn: &mut Connection,
        plans: &mut [TablePlan],
        shard: &DestShard<'_>,
    ) -> Result<()> {
        let (intent, slot, what) = (self.intent, self.slot, shard.what);
        let created: HashSet<TableName> = if intent == Intent::CopyCreatingSchema {
            state::schema_tables(conn, slot)
                .await?
                .into_iter()
                .collect()
        } else {
            Default::default()
        };
        let names: Vec<&TableName> = plans.iter().map(|p| &p.table.name).collect();
        let found = catalog::dest_tables(conn, &names).await?;
        let with_rows = if intent.copies() && shard.fresh {
            let present: Vec<&TableName> = names
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_some())
                .map(|(n, _)| *n)
                .collect();
            let flags = catalog::tables_with_rows(conn, &present).await?;
            // A set: thousands of tables are looked up in it.
            present
                .into_iter()
                .zip(flags)
                .filter(|(_, f)| *f)
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            HashSet::new()
        };
        for (plan, dest) in plans.iter_mut().zip(found) {
            let Some(dest) = dest else {
                if intent != Intent::CopyCreatingSchema {
                    self.problems.push(
                        format!("table {} does not exist on {what}", plan.table.name),
                        "run without --skip-schema-sync so pgdog creates it from the source (or pgdog schema-sync), or create it on every destination shard yourself, e.g. pg_dump --schema-only from the source, restored into each destination",
                    );
                }
                continue;
            };
            let pending = created.contains(&plan.table.name);
            check_dest_table(plan, &dest, what, pending, self.columns, &mut self.problems);
            self.dest_rows(plan, &with_rows, shard);
            if shard.d == 0 {
                plan.dest_table = dest;
            } else {
                plan.dest_table.merge(&dest);
            }
        }
        Ok(())
    }

    /// A copy goes into an empty table; `--replicate-only` into a table
    /// that holds a copy (a note when none is recorded).
    fn dest_rows(
        &mut self,
        plan: &TablePlan,
        with_rows: &HashSet<TableName>,
        shard: &DestShard<'_>,
    ) {
        let (t, slot, what) = (&plan.table, self.slot, shard.what);
        if with_rows.contains(&t.name) {
            self.problems.push(
                format!("table {} on {what} already has rows, and no copy of it by slot \"{slot}\" is recorded there", t.name),
                format!(
                    "pgdog copies into empty tables: TRUNCATE {} on that shard; or, to resume an earlier run, pass its --replication-slot",
                    t.name.quoted()
                ),
            );
        }
        let n = self.endpoints.source.shards.len();
        if !self.intent.copies()
            && (0..n).any(|s| plan.from_source(s) && !shard.done.contains_key(&(s, t.name.clone())))
        {
            let note = format!(
                "table {} has no copy recorded on {what} for slot \"{slot}\": --replicate-only applies its changes from now on, but rows it had before are not there unless they were loaded by other means",
                t.name
            );
            warn!("{note}");
            self.notes.push(note);
        }
    }
}

/// One destination shard as its table checks see it.
struct DestShard<'a> {
    d: usize,
    what: &'a str,
    /// Finished copies recorded there.
    done: &'a HashMap<(usize, TableName), Lsn>,
    /// No source shard has the slot yet: a first run.
    fresh: bool,
}

/// A destination table against the published one: every published column
/// there with the same type, generated columns computed alike, inserts
/// possible, and what streaming needs of its indexes.
/// `identity_pending`: schema sync created the table and builds its
/// primary key after the copy.
fn check_dest_table(
    plan: &TablePlan,
    dest: &DestTable,
    what: &str,
    identity_pending: bool,
    columns: Columns,
    problems: &mut Problems,
) {
    let t = &plan.table;
    for c in &t.columns {
        let found = dest.columns.iter().find(|dc| dc.name == c.name);
        if columns == Columns::InFlight
            && found.is_none_or(|dc| dc.type_name != c.type_name && dc.generated.is_none())
        {
            info!(
                "column {}.{} ({}) on {what} waits for the stream to replay the change that made it",
                t.name, c.name, c.type_name
            );
            continue;
        }
        match found {
            None => problems.push(
                format!("column {}.{} ({}) is missing on {what}", t.name, c.name, c.type_name),
                format!("ALTER TABLE {} ADD COLUMN {} {} on that shard", t.name.quoted(), catalog::quote_ident(&c.name), c.type_name),
            ),
            Some(dc) if dc.type_name != c.type_name => problems.push(
                format!(
                    "column {}.{} is {} on the source but {} on {what}; binary COPY needs the same types",
                    t.name, c.name, c.type_name, dc.type_name
                ),
                format!("ALTER TABLE {} ALTER COLUMN {} TYPE {} on that shard", t.name.quoted(), catalog::quote_ident(&c.name), c.type_name),
            ),
            Some(dc) if dc.generated.is_some() => problems.push(
                format!("column {}.{} is generated on {what} but a plain column on the source, so the copied values would be replaced", t.name, c.name),
                "make the destination column a plain column, as on the source",
            ),
            Some(_) => {}
        }
    }
    for (name, expr) in &t.generated {
        match dest.columns.iter().find(|dc| &dc.name == name) {
            // Not there: nothing to compute, nothing to differ.
            None => {}
            Some(dc) => match &dc.generated {
                Some(dexpr) if dexpr == expr => {}
                Some(dexpr) => problems.push(
                    format!("generated column {}.{name} is computed as ({expr}) on the source but as ({dexpr}) on {what}", t.name),
                    format!("make the destination compute it the same way: ALTER TABLE {} DROP COLUMN {}, then add it again as GENERATED ALWAYS AS ({expr}) STORED", t.name.quoted(), catalog::quote_ident(name)),
                ),
                None => problems.push(
                    format!("column {}.{name} is generated on the source ({expr}) but a plain column on {what}: generated values are not replicated, so it would stay empty", t.name),
                    format!("make it GENERATED ALWAYS AS ({expr}) STORED on the destination, as on the source"),
                ),
            },
        }
    }
    if let Some(extra) = dest
        .columns
        .iter()
        .find(|dc| !dc.optional && !t.columns.iter().any(|c| c.name == dc.name))
    {
        problems.push(
            format!(
                "column {}.{} on {what} is NOT NULL without a default and is not published by the source, so no row could be inserted",
                t.name, extra.name
            ),
            "give it a default, drop NOT NULL, or add it to the publication",
        );
    }
    let identity = plan.identity_columns();
    if plan.key_outside_identity()
        && t.replica_identity != 'f'
        && !identity_pending
        && !dest.has_arbiter(&identity)
    {
        problems.push(
            format!(
                "table {} is sharded outside its replica identity, so its updates are applied as INSERT ... ON CONFLICT ({}), but {what} has no unique index on exactly those columns",
                t.name,
                identity.join(", ")
            ),
            format!("create the source's primary key (or replica identity index) on {} there, as pg_dump --schema-only does", t.name.quoted()),
        );
    }
}

/// Tables without a sharding rule on a multi-shard source are read from
/// shard 0 only: every shard must hold the same rows. Row counts per shard
/// are compared (exactly, with `count(*)`).
async fn check_omnisharded_sources(endpoints: &Endpoints, plans: &[TablePlan]) -> Result<()> {
    let omni: Vec<&TablePlan> = plans.iter().filter(|p| p.source.is_none()).collect();
    if omni.is_empty() {
        return Ok(());
    }
    let mut counts: Vec<Vec<i64>> = vec![Vec::new(); omni.len()];
    for s in 0..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        // One query for all of them.
        let parts: Vec<String> = omni
            .iter()
            .map(|p| {
                let only = if p.table.relkind == 'p' { "" } else { "ONLY " };
                format!("(SELECT count(*) FROM {only}{})", p.table.name.quoted())
            })
            .collect();
        let rows = conn.query(&format!("SELECT {}", parts.join(", "))).await?;
        let row = first_row(&rows, "the row counts of unsharded source tables")?;
        for (i, c) in counts.iter_mut().enumerate() {
            c.push(row.text(i).and_then(|t| t.parse().ok()).ok_or_else(|| {
                DataSyncError::State(format!(
                    "row count of {} on source shard {s} is unreadable",
                    omni[i].table.name
                ))
            })?);
        }
        conn.close().await;
    }
    let mut problems = Problems::default();
    for (p, c) in omni.iter().zip(&counts) {
        if c.iter().any(|x| *x != c[0]) {
            let list: Vec<String> = c
                .iter()
                .enumerate()
                .map(|(s, x)| format!("shard {s}: {x}"))
                .collect();
            problems.push(
                format!(
                    "table {} has no sharding rule for the source cluster \"{}\", so it is taken to be identical on every source shard and copied from shard 0 only, but its row counts differ ({})",
                    p.table.name,
                    endpoints.source.name,
                    list.join(", ")
                ),
                format!(
                    "add a [[sharded_tables]] entry for {} with database = \"{}\" naming its sharding column, or make the table identical on every source shard",
                    p.table.name, endpoints.source.name
                ),
            );
        }
    }
    problems.into_result()
}

/// A sharding key whose column type cannot be parsed as the configured type
/// would fail on the first row: say so now.
fn check_key_type(
    table: &PublishedTable,
    col: &catalog::Column,
    configured: DataType,
    side: &str,
) -> Result<()> {
    let actual =
        DataType::from_type_oid(col.type_oid).or_else(|| DataType::from_type_name(&col.type_name));
    match actual {
        Some(a) if a.kind() == configured.kind() => Ok(()),
        _ => Err(DataSyncError::preflight(
            format!(
                "table {} is sharded on the {side} by column \"{}\" as {configured}, but the column is {}",
                table.name, col.name, col.type_name
            ),
            "set data_type in [[sharded_tables]] to match the column (bigint, integer, smallint, uuid, varchar or text)",
        )),
    }
}

/// Every source shard must publish the same tables with the same columns.
fn compare_sources(first: &[PublishedTable], other: &[PublishedTable], s: usize) -> Result<()> {
    let names = |ts: &[PublishedTable]| ts.iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
    if names(first) != names(other) {
        return Err(DataSyncError::preflight(
            format!(
                "source shard {s} publishes tables {:?}, source shard 0 publishes {:?}",
                names(other),
                names(first)
            ),
            "make the publication identical on every source shard",
        ));
    }
    for (a, b) in first.iter().zip(other) {
        let cols = |t: &PublishedTable| {
            t.columns
                .iter()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect::<Vec<_>>()
        };
        if cols(a) != cols(b) {
            return Err(DataSyncError::preflight(
                format!(
                    "table {} has different columns on source shard {s} than on source shard 0",
                    a.name
                ),
                "make the schema identical on every source shard",
            ));
        }
    }
    Ok(())
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: String,
    pub database: String,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
}

pub async fn slot_info(conn: &mut Connection, slot: &str) -> Result<Option<SlotInfo>> {
    let rows = conn
        .query_text(
            "SELECT coalesce(plugin, ''), coalesce(database, ''), active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    Ok(rows.first().map(|r| SlotInfo {
        plugin: r.text(0).unwrap_or("").into(),
        database: r.text(1).unwrap_or("").into(),
        active_pid: r.text(2).and_then(|t| t.parse().ok()),
        confirmed_flush: r.text(3).and_then(Lsn::parse),
    }))
}

/// `slot` on one server once no process streams it, waiting up to
/// `timeout` for a WAL sender that is ending to let go (a pgdog that just
/// stopped, a stream told to end). `None`: no such slot. A slot still in
/// use after the wait comes back with its `active_pid`.
pub async fn slot_when_released(
    conn: &mut Connection,
    slot: &str,
    timeout: std::time::Duration,
) -> Result<Option<SlotInfo>> {
    let mut wait = super::retry::Wait::new(
        format!("replication slot \"{slot}\" to be let go"),
        Some(timeout),
        std::time::Duration::from_millis(200),
    );
    loop {
        let info = slot_info(conn, slot).await?;
        let Some(pid) = info.as_ref().and_then(|i| i.active_pid) else {
            return Ok(info);
        };
        if !wait.tick(&format!("process {pid} uses it"), None).await? {
            return Ok(info);
        }
    }
}

/// Read every destination shard's tables again into `plan` (after schema
/// sync built indexes and constraints the streaming side looks at).
pub async fn refresh_dest_tables(
    endpoints: &Endpoints,
    plan: &mut super::plan::Plan,
) -> Result<()> {
    for d in 0..endpoints.dest.shards.len() {
        let mut conn = endpoints.connect_dest(d).await?;
        let names: Vec<&TableName> = plan.tables.iter().map(|p| &p.table.name).collect();
        let found = catalog::dest_tables(&mut conn, &names).await?;
        conn.close().await;
        for (table, dest) in plan.tables.iter_mut().zip(found) {
            let Some(dest) = dest else { continue };
            if d == 0 {
                table.dest_table = dest;
            } else {
                table.dest_table.merge(&dest);
            }
        }
    }
    Ok(())
}
