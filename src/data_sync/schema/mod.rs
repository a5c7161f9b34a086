//! Schema sync: the source's schema, read with the real `pg_dump
//! --schema-only`, created on every destination shard. Pre-data before
//! the copy; post-data (secondary indexes, constraints, foreign keys,
//! triggers) after it, built in parallel across tables and shards, so a
//! copy into tables pgdog created fills them without secondary indexes.
//!
//! Idempotent: an object that exists on a shard is left alone; a table,
//! type, domain, function or sequence that exists but differs from the
//! source is an error naming it, found before anything is created. Tables
//! a run creates are recorded on the shard (`pgdog.schema_tables`), with
//! the phases it finished (`pgdog.schema_phases`), so a rerun knows where
//! it stands and a move only builds indexes on tables it made itself.
//!
//! - [`pg_dump`]: finding and running pg_dump.
//! - [`dump`]: splitting its output into entries.
//! - [`catalog`]: what each entry belongs to, what exists, what matches.
//! - [`plan`]: which entries a move takes, and when.
//! - [`apply`]: running them.
//! - [`settings`]: how schema sync runs, from `[general]`.
//! - [`source`]: the source's schema, read once.
//! - [`check`]: what was created, against what pg_dump listed.

pub mod apply;
pub mod catalog;
pub mod check;
pub mod dump;
pub mod grants;
pub mod pg_dump;
pub mod plan;
pub mod settings;
pub mod source;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::data_sync::catalog::{quote_ident, TableName};
use crate::data_sync::endpoints::Endpoints;
use crate::data_sync::error::{DataSyncError, Problem, Result};
use crate::data_sync::progress::{SchemaItem, SchemaState, Task};
use crate::data_sync::state;

use apply::{Statement, Work};
use catalog::{Key, Objects};
use plan::Step;
pub use settings::{default_parallel, Settings};
pub use source::{read_source, Source};

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phases {
    Pre,
    Post,
    All,
}

/// Put what the move leaves out in `SHOW SCHEMA_SYNC`, each entry by
/// name with its reason; the many objects of tables outside the
/// publication as one line per reason.
pub fn report_left_out(task: &Task, source: &Source) {
    let mut outside: HashMap<&str, usize> = HashMap::new();
    for o in &source.plan.omitted {
        let bulk = o.table.is_none()
            && matches!(
                o.reason.as_str(),
                "not in the publication" | "belongs to a table outside the publication"
            );
        if bulk {
            *outside.entry(o.reason.as_str()).or_default() += 1;
        } else {
            task.add_schema_item(SchemaItem::left_out(o.what.clone(), o.reason.clone()));
        }
    }
    let mut outside: Vec<_> = outside.into_iter().collect();
    outside.sort();
    for (reason, n) in outside {
        let what = if reason == "not in the publication" {
            format!("{n} relations")
        } else {
            format!("{n} objects")
        };
        task.add_schema_item(SchemaItem::left_out(what, reason.to_string()));
    }
}

/// What a run on one destination shard does.
#[derive(Debug, Default)]
struct ShardPlan {
    statements: Vec<Statement>,
    /// SQL run in the same transaction as statement `i`.
    extra: HashMap<usize, String>,
    existed: usize,
    created_tables: Vec<TableName>,
}

/// The kinds whose existence the catalog query reports.
fn looked_up(kind: &str) -> bool {
    matches!(
        kind,
        "TABLE"
            | "TABLE ATTACH"
            | "DEFAULT"
            | "CONSTRAINT"
            | "CHECK CONSTRAINT"
            | "FK CONSTRAINT"
            | "INDEX"
            | "INDEX ATTACH"
            | "TRIGGER"
            | "RULE"
            | "POLICY"
            | "ROW SECURITY"
            | "STATISTICS"
            | "SEQUENCE"
            | "SEQUENCE OWNED BY"
            | "TYPE"
            | "DOMAIN"
            | "FUNCTION"
            | "PROCEDURE"
            | "AGGREGATE"
            | "SCHEMA"
            | "EXTENSION"
            | "COLLATION"
    )
}

/// How two table signatures (`col type, ...`, sorted by name) differ.
fn column_difference(source: &str, dest: &str) -> String {
    let split = |s: &str| -> Vec<String> { s.split(", ").map(str::to_string).collect() };
    let (src, dst) = (split(source), split(dest));
    let only_src: Vec<&String> = src.iter().filter(|c| !dst.contains(c)).collect();
    let only_dst: Vec<&String> = dst.iter().filter(|c| !src.contains(c)).collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    match (only_src.is_empty(), only_dst.is_empty()) {
        (false, false) => format!(
            "the source has {}, the destination has {}",
            list(&only_src),
            list(&only_dst)
        ),
        (false, true) => format!("the destination lacks {}", list(&only_src)),
        _ => format!("the destination also has {}", list(&only_dst)),
    }
}

/// An object pg_dump lists that the shard may have already: `Some(true)`
/// when it is there (a difference is a problem), `Some(false)` when it is
/// left out (an extension the shard cannot install), `None` to create it.
fn left_as_is(
    e: &dump::Entry,
    src: Option<&catalog::Object>,
    dest: &Objects,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<bool> {
    let schema = e.schema.as_deref();
    let exists = dest.get(&e.kind, schema, &e.tag);
    // A primary key by another name counts.
    let pk_elsewhere = e.kind == "CONSTRAINT"
        && src.is_some_and(|o| o.has('p'))
        && src
            .and_then(|o| o.table.as_ref())
            .is_some_and(|t| dest.contains("PRIMARY KEY", Some(&t.schema), &t.name));
    if let Some(d) = exists {
        let kinds_compared = ["TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "SEQUENCE"];
        if kinds_compared.contains(&e.kind.as_str()) && differing(src, d).is_some() {
            problems.push(Problem {
                problem: format!(
                    "{} exists on {what} but differs from the source's",
                    e.describe()
                ),
                fix: "make it the same as on the source, or drop it on that shard so schema sync creates it".into(),
            });
        }
        return Some(true);
    }
    if pk_elsewhere {
        return Some(true);
    }
    if e.kind == "EXTENSION" && !dest.contains("AVAILABLE EXTENSION", None, &e.tag) {
        warn!(
            extension = %e.tag,
            "extension is not installed on {what}: left out; objects that need it will fail"
        );
        return Some(false);
    }
    None
}

/// A table that exists on a shard with other columns than on the source.
fn other_columns(
    name: &TableName,
    src: Option<&catalog::Object>,
    dest: &catalog::Object,
    what: &str,
) -> Option<Problem> {
    let (s, dsig) = differing(src, dest)?;
    Some(Problem {
        problem: format!(
            "table {name} exists on {what} with other columns than on the source: {}",
            column_difference(s, dsig)
        ),
        fix: "make its columns match the source's, or drop it on that shard so schema sync creates it (or pass --skip-schema-sync to keep a schema made by hand)".into(),
    })
}

/// Plan pre-data on one shard: what to create, and what exists but does
/// not match (into `problems`).
fn plan_pre(
    source: &Source,
    dest: &Objects,
    ours: &HashSet<TableName>,
    slot: &str,
    what: &str,
    defer_identity: bool,
    problems: &mut Vec<Problem>,
) -> ShardPlan {
    let mut out = ShardPlan::default();
    // Tables that were there before: left alone, with all that belongs
    // to them (their defaults, keys, partitions' attachment).
    let mut existing_tables: HashSet<TableName> = HashSet::new();
    let mut created: HashSet<Key> = HashSet::new();
    let mut roles_left_out = grants::LeftOut::new();
    for p in source.plan.entries.iter().filter(|p| p.step == Step::Pre) {
        let e = &p.entry;
        let schema = e.schema.as_deref();
        let src = source.objects.get(&e.kind, schema, &e.tag);
        if e.kind == "COMMENT" || e.kind == "SECURITY LABEL" {
            // Only with an object this run creates: a rerun changes nothing.
            if on_created(e, &created) {
                out.statements.push(statement(e, false));
            }
            continue;
        }
        if e.kind == "ACL" {
            // The same for grants, for the roles this shard has.
            if on_created(e, &created) {
                out.statements
                    .extend(grants::for_shard(e, dest, &mut roles_left_out));
            }
            continue;
        }
        if e.kind == "TABLE" {
            if let Some(d) = dest.get("TABLE", schema, &e.tag) {
                out.existed += 1;
                let name = TableName {
                    schema: schema.unwrap_or("").into(),
                    name: e.tag.clone(),
                };
                problems.extend(other_columns(&name, src, d, what));
                // One an earlier run of this move created gets what it
                // still lacks; one that was there before is left alone.
                if !ours.contains(&name) {
                    existing_tables.insert(name);
                }
                continue;
            }
        }
        if let Some(t) = src.and_then(|o| o.table.as_ref()) {
            if existing_tables.contains(t) && e.kind != "TABLE" {
                out.existed += 1;
                continue;
            }
        }
        // The copy needs no index: a move builds the primary key after it
        // with the others, before streaming needs it.
        if defer_identity && e.is_identity(src) {
            continue;
        }
        if looked_up(&e.kind) {
            if let Some(existed) = left_as_is(e, src, dest, what, problems) {
                out.existed += usize::from(existed);
                continue;
            }
        }
        let i = out.statements.len();
        let mut st = statement(e, !looked_up(&e.kind));
        // A partition attached in this same run to a parent that has its
        // primary key already gets its own from the attach.
        if let (true, Some(t)) = (
            e.kind == "CONSTRAINT" && src.is_some_and(|o| o.has('p')),
            src.and_then(|o| o.table.as_ref()),
        ) {
            st.sql = unless_primary_key(t, &st.sql);
        }
        out.statements.push(st);
        created.insert(Key::new(&e.kind, schema, &e.tag));
        if e.kind == "TABLE" {
            let name = TableName {
                schema: schema.unwrap_or("").into(),
                name: e.tag.clone(),
            };
            out.extra.insert(
                i,
                format!(
                    "INSERT INTO pgdog.schema_tables (slot_name, table_schema, table_name) VALUES ({}, {}, {}) ON CONFLICT DO NOTHING;",
                    crate::data_sync::catalog::quote_literal(slot),
                    crate::data_sync::catalog::quote_literal(&name.schema),
                    crate::data_sync::catalog::quote_literal(&name.name)
                ),
            );
            out.created_tables.push(name);
        }
    }
    let mut owners_left_out = grants::LeftOut::new();
    for st in &mut out.statements {
        grants::owners_for_shard(st, dest, &mut owners_left_out);
    }
    grants::warn_left_out(&roles_left_out, what, false);
    grants::warn_left_out(&owners_left_out, what, true);
    out
}

/// `sql` (a primary key's entry) run only when `table` has no primary
/// key when it runs.
fn unless_primary_key(table: &TableName, sql: &str) -> String {
    format!(
        "DO $pgdog_pk$ BEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = {}::regclass AND contype = 'p') THEN\n    EXECUTE {};\n  END IF;\nEND $pgdog_pk$;",
        crate::data_sync::catalog::quote_literal(&table.quoted()),
        crate::data_sync::catalog::quote_literal(sql)
    )
}

/// The two signatures, when the source's and the destination's object
/// both have one and they differ.
fn differing<'a>(
    src: Option<&'a catalog::Object>,
    dest: &'a catalog::Object,
) -> Option<(&'a str, &'a str)> {
    let (s, d) = (src?.signature.as_deref()?, dest.signature.as_deref()?);
    (s != d).then_some((s, d))
}

/// Does a comment's (or grant's) tag name an object this run creates?
fn on_created(e: &dump::Entry, created: &HashSet<Key>) -> bool {
    plan::comment_targets(&e.tag).iter().any(|(kind, tag)| {
        [e.schema.as_deref(), None]
            .iter()
            .any(|schema| created.contains(&Key::new(kind, *schema, tag)))
    })
}

fn statement(e: &dump::Entry, may_exist: bool) -> Statement {
    Statement {
        sql: e.sql.clone(),
        object: e.describe(),
        may_exist,
    }
}

/// Per-shard outcome, for the caller's summary.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub created: usize,
    pub existed: usize,
    /// Foreign keys left NOT VALID, with why.
    pub not_valid: Vec<String>,
}

/// How [`pre_data`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreData {
    /// Print the SQL instead of running it.
    pub dry_run: bool,
    /// Primary keys of the tables it creates wait for [`post_data`].
    pub defer_identity: bool,
    /// The stream replays captured DDL the shards have not seen yet: an
    /// existing table's columns may differ from the source's.
    pub columns_in_flight: bool,
}

/// Create pre-data on every destination shard. Every shard is checked
/// before anything is created anywhere. `dry_run` prints the SQL instead.
/// With `defer_identity`, primary keys of the tables it creates wait for
/// [`post_data`] (a move: the copy is faster into a table without index).
pub async fn pre_data(
    endpoints: &Endpoints,
    source: &Source,
    slot: &str,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
    how: PreData,
) -> Result<Report> {
    let PreData {
        dry_run,
        defer_identity,
        columns_in_flight,
    } = how;
    let shards = endpoints.dest.shards.len();
    let mut plans = Vec::with_capacity(shards);
    let mut problems = Vec::new();
    for d in 0..shards {
        let mut conn = endpoints.connect_dest(d).await?;
        let dest = catalog::objects(&mut conn, None).await?;
        let ours: HashSet<TableName> = state::schema_tables(&mut conn, slot)
            .await?
            .into_iter()
            .collect();
        conn.close().await;
        plans.push(plan_pre(
            source,
            &dest,
            &ours,
            slot,
            &endpoints.describe_dest(d),
            defer_identity,
            &mut problems,
        ));
    }
    // The stream replays captured DDL the shards have not seen yet: a
    // table whose columns differ is one it brings to the source's shape.
    if columns_in_flight {
        problems.retain(|p| !p.problem.contains("with other columns than on the source"));
    }
    if !problems.is_empty() {
        return Err(DataSyncError::Preflight { problems });
    }
    let mut report = Report::default();
    if dry_run {
        for (d, p) in plans.iter().enumerate() {
            println!(
                "-- {}: pre-data, {} statements ({} objects exist already)",
                endpoints.describe_dest(d),
                p.statements.len(),
                p.existed
            );
            for s in &p.statements {
                println!("-- {}\n{}\n", s.object, s.sql);
            }
        }
        return Ok(report);
    }
    let mut runs = tokio::task::JoinSet::new();
    for (d, p) in plans.into_iter().enumerate() {
        report.created += p.statements.len();
        report.existed += p.existed;
        let item = task.add_schema_item(SchemaItem::new(
            d,
            Step::Pre.as_str(),
            format!(
                "{} objects to create, {} exist",
                p.statements.len(),
                p.existed
            ),
            0,
        ));
        let (endpoints, slot, shutdown) = (endpoints.clone(), slot.to_string(), shutdown.clone());
        runs.spawn(async move {
            item.set_state(SchemaState::Running);
            let r = async {
                let mut conn = apply::session(&endpoints, d, "64MB").await?;
                state::ensure_schema(&mut conn).await?;
                apply::run_batches(&mut conn, d, &p.statements, &p.extra, &shutdown).await?;
                state::record_schema_phase(&mut conn, &slot, "pre").await?;
                conn.close().await;
                info!(
                    dest_shard = d,
                    created = p.statements.len(),
                    existed = p.existed,
                    tables = p.created_tables.len(),
                    "pre-data done"
                );
                Ok::<(), DataSyncError>(())
            }
            .await;
            match &r {
                Ok(()) => item.set_state(SchemaState::Done),
                Err(e) => {
                    item.set_message(e.to_string());
                    item.set_state(SchemaState::Failed);
                }
            }
            r
        });
    }
    join_all(runs).await?;
    Ok(report)
}

async fn join_all(mut runs: tokio::task::JoinSet<Result<()>>) -> Result<()> {
    let mut result = Ok(());
    while let Some(r) = runs.join_next().await {
        let r = r.unwrap_or_else(|e| Err(DataSyncError::Schema(format!("schema task: {e}"))));
        if let (Err(e), true) = (r, result.is_ok()) {
            result = Err(e);
        }
    }
    result
}

/// Add ` NOT VALID` to a foreign key's `ADD CONSTRAINT` statement.
fn not_valid(sql: &str) -> String {
    let trimmed = sql.trim_end();
    let body = trimmed.strip_suffix(';').unwrap_or(trimmed);
    if body.ends_with("NOT VALID") {
        return format!("{body};");
    }
    format!("{body} NOT VALID;")
}

/// Which tables post-data covers, and the slot its progress is recorded
/// under.
#[derive(Debug, Clone)]
pub struct Scope {
    pub slot: String,
    /// Only the tables pre-data created for `slot` (a data-sync, read from
    /// each shard's `pgdog.schema_tables`); otherwise every table of the
    /// publication (`pgdog schema-sync`).
    pub only_created: bool,
}

/// Create post-data on every destination shard, all shards at once:
/// indexes and unique constraints in parallel, then partition index
/// attaches, then foreign keys (added NOT VALID, validated in parallel),
/// then the rest.
pub async fn post_data(
    endpoints: &Endpoints,
    source: &Source,
    scope: &Scope,
    settings: &Settings,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
    dry_run: bool,
) -> Result<Report> {
    let shards = endpoints.dest.shards.len();
    let mut report = Report::default();
    let mut runs = tokio::task::JoinSet::new();
    let not_valid_all: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    for d in 0..shards {
        let mut conn = endpoints.connect_dest(d).await?;
        let dest = catalog::objects(&mut conn, None).await?;
        let only: Option<HashSet<TableName>> = if scope.only_created {
            let created = state::schema_tables(&mut conn, &scope.slot).await?;
            Some(created.into_iter().collect())
        } else {
            None
        };
        conn.close().await;
        let what = endpoints.describe_dest(d);
        let steps = plan_post(source, &dest, only.as_ref(), &what);
        report.existed += steps.existed;
        if dry_run {
            println!(
                "-- {what}: post-data ({} objects exist already)",
                steps.existed
            );
            for s in steps
                .index
                .iter()
                .chain(&steps.attach)
                .chain(&steps.fk_add)
                .map(|s| (&s.object, &s.sql))
                .chain(steps.fk_parallel.iter().map(|(o, s, _, _)| (o, s)))
                .chain(steps.other.iter().map(|s| (&s.object, &s.sql)))
            {
                println!("-- {}\n{}\n", s.0, s.1);
            }
            continue;
        }
        report.created += steps.count();
        let (endpoints, settings, task, shutdown, not_valid_all, slot) = (
            endpoints.clone(),
            settings.clone(),
            task.clone(),
            shutdown.clone(),
            not_valid_all.clone(),
            scope.slot.clone(),
        );
        runs.spawn(async move {
            run_post_shard(
                &endpoints,
                d,
                steps,
                &settings,
                &task,
                &shutdown,
                &not_valid_all,
            )
            .await?;
            let mut conn = endpoints.connect_dest(d).await?;
            state::ensure_schema(&mut conn).await?;
            state::record_schema_phase(&mut conn, &slot, "post").await?;
            conn.close().await;
            Ok(())
        });
    }
    join_all(runs).await?;
    report.not_valid = std::mem::take(&mut not_valid_all.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(report)
}

/// Post-data of one shard, by step.
#[derive(Debug, Default)]
struct PostSteps {
    index: Vec<Statement>,
    index_bytes: Vec<u64>,
    attach: Vec<Statement>,
    /// Foreign keys added NOT VALID (quick), validated after.
    fk_add: Vec<Statement>,
    /// (object, sql, table bytes, is a validation)
    fk_parallel: Vec<(String, String, u64, bool)>,
    other: Vec<Statement>,
    existed: usize,
}

impl PostSteps {
    fn count(&self) -> usize {
        self.index.len()
            + self.attach.len()
            + self.fk_add.len()
            + self.other.len()
            + self.fk_parallel.iter().filter(|f| !f.3).count()
    }
}

fn plan_post(
    source: &Source,
    dest: &Objects,
    only: Option<&HashSet<TableName>>,
    what: &str,
) -> PostSteps {
    let mut out = PostSteps::default();
    let mut created: HashSet<Key> = HashSet::new();
    for p in &source.plan.entries {
        let e = &p.entry;
        let schema = e.schema.as_deref();
        let src = source.objects.get(&e.kind, schema, &e.tag);
        // Primary keys a move deferred (existing ones are skipped below).
        let step = match p.step {
            Step::Pre if e.is_identity(src) && e.kind == "INDEX ATTACH" => Step::Attach,
            Step::Pre if e.is_identity(src) => Step::Index,
            Step::Pre => continue,
            s => s,
        };
        if e.kind == "COMMENT" || e.kind == "SECURITY LABEL" {
            if on_created(e, &created) {
                out.other.push(statement(e, false));
            }
            continue;
        }
        let table = src.and_then(|o| o.table.clone());
        if let (Some(only), Some(t)) = (only, &table) {
            if !only.contains(t) {
                continue;
            }
        }
        let bytes = src.map_or(0, |o| o.bytes);
        if looked_up(&e.kind) {
            if let Some(d) = dest.get(&e.kind, schema, &e.tag) {
                out.existed += 1;
                // A foreign key an earlier run added but did not validate.
                let validate =
                    e.kind == "FK CONSTRAINT" && src.is_some_and(|o| o.has('v')) && !d.has('v');
                if let (true, Some(t)) = (validate, &table) {
                    out.fk_parallel
                        .push((e.describe(), validate_sql(t, &e.tag), bytes, true));
                }
                continue;
            }
        }
        created.insert(Key::new(&e.kind, schema, &e.tag));
        match step {
            Step::Index => {
                out.index.push(statement(e, false));
                out.index_bytes.push(bytes);
            }
            Step::Attach => out.attach.push(statement(e, false)),
            Step::ForeignKey => {
                let o = src.cloned().unwrap_or_default();
                match &table {
                    // Partitioned tables take no NOT VALID foreign key:
                    // added (and so validated) in one go, in parallel.
                    Some(_) if o.has('P') => {
                        out.fk_parallel
                            .push((e.describe(), e.sql.clone(), bytes, false))
                    }
                    Some(t) if o.has('v') => {
                        out.fk_add.push(Statement {
                            sql: not_valid(&e.sql),
                            object: e.describe(),
                            may_exist: false,
                        });
                        out.fk_parallel
                            .push((e.describe(), validate_sql(t, &e.tag), bytes, true));
                    }
                    _ => out.fk_add.push(statement(e, false)),
                }
            }
            _ => out.other.push(statement(e, !looked_up(&e.kind))),
        }
    }
    // Extended statistics have owners too.
    let mut owners_left_out = grants::LeftOut::new();
    for st in &mut out.other {
        grants::owners_for_shard(st, dest, &mut owners_left_out);
    }
    grants::warn_left_out(&owners_left_out, what, true);
    out
}

/// `ALTER TABLE ONLY t VALIDATE CONSTRAINT c` for the FK tagged `t c`.
fn validate_sql(table: &TableName, tag: &str) -> String {
    let name = tag.strip_prefix(&format!("{} ", table.name)).unwrap_or(tag);
    format!(
        "ALTER TABLE {} VALIDATE CONSTRAINT {};",
        table.quoted(),
        quote_ident(name)
    )
}

async fn run_post_shard(
    endpoints: &Endpoints,
    d: usize,
    steps: PostSteps,
    settings: &Settings,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
    not_valid: &std::sync::Mutex<Vec<String>>,
) -> Result<()> {
    let mwm = settings.maintenance_work_mem.as_str();
    let works: Vec<Work> = steps
        .index
        .iter()
        .zip(&steps.index_bytes)
        .map(|(s, b)| Work {
            item: task.add_schema_item(SchemaItem::new(
                d,
                Step::Index.as_str(),
                s.object.clone(),
                *b,
            )),
            sql: s.sql.clone(),
            validation: false,
        })
        .collect();
    apply::run_parallel(endpoints, d, works, settings.parallel, mwm, shutdown).await?;
    let sequential = |step: Step, list: &[Statement]| -> Option<Arc<SchemaItem>> {
        (!list.is_empty()).then(|| {
            task.add_schema_item(SchemaItem::new(
                d,
                step.as_str(),
                format!("{} statements", list.len()),
                0,
            ))
        })
    };
    let mut conn = apply::session(endpoints, d, mwm).await?;
    for (step, list) in [
        (Step::Attach, &steps.attach),
        (Step::ForeignKey, &steps.fk_add),
    ] {
        if let Some(item) = sequential(step, list) {
            item.set_state(SchemaState::Running);
            let r = apply::run_batches(&mut conn, d, list, &HashMap::new(), shutdown).await;
            item.set_state(if r.is_ok() {
                SchemaState::Done
            } else {
                SchemaState::Failed
            });
            r?;
        }
    }
    let works: Vec<Work> = steps
        .fk_parallel
        .iter()
        .map(|(object, sql, bytes, _)| Work {
            item: task.add_schema_item(SchemaItem::new(
                d,
                Step::ForeignKey.as_str(),
                object.clone(),
                *bytes,
            )),
            sql: sql.clone(),
            validation: true,
        })
        .collect();
    let items: Vec<Arc<SchemaItem>> = works.iter().map(|w| w.item.clone()).collect();
    apply::run_parallel(endpoints, d, works, settings.parallel, mwm, shutdown).await?;
    for item in items.iter().filter(|i| i.state() == SchemaState::NotValid) {
        not_valid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!(
                "{} on {}: {}",
                item.object,
                endpoints.describe_dest(d),
                item.message().unwrap_or_default()
            ));
    }
    if let Some(item) = sequential(Step::Other, &steps.other) {
        item.set_state(SchemaState::Running);
        let r = apply::run_batches(&mut conn, d, &steps.other, &HashMap::new(), shutdown).await;
        item.set_state(if r.is_ok() {
            SchemaState::Done
        } else {
            SchemaState::Failed
        });
        r?;
    }
    conn.close().await;
    Ok(())
}

/// Phases recorded as done for `slot` on every destination shard.
pub async fn phases_done(endpoints: &Endpoints, slot: &str) -> Result<(bool, bool)> {
    let (mut pre, mut post) = (true, true);
    for d in 0..endpoints.dest.shards.len() {
        let mut conn = endpoints.connect_dest(d).await?;
        let done = state::schema_phases(&mut conn, slot).await?;
        conn.close().await;
        pre &= done.iter().any(|p| p == "pre");
        post &= done.iter().any(|p| p == "post");
    }
    Ok((pre, post))
}

/// `pgdog schema-sync`: the phases asked for, on every destination shard.
/// With `dry_run`, prints what would run on each shard, and what is left
/// out, without changing anything.
pub async fn command(
    config: Arc<Config>,
    opts: &crate::data_sync::options::Options,
    phases: Phases,
    dry_run: bool,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Report> {
    let endpoints = Endpoints::of_move(config.clone(), opts)?;
    let slot = opts.slot_name();
    let settings = Settings::from_config(&config);
    task.set_phase(crate::data_sync::progress::Phase::Schema);
    let source = read_source(&endpoints, &opts.publication, &settings).await?;
    report_left_out(task, &source);
    if dry_run {
        println!(
            "-- schema of source shard 0 read with {} ({}): {} objects taken, {} left out",
            source.pg_dump.path.display(),
            source.pg_dump.version,
            source.plan.entries.len(),
            source.plan.omitted.len()
        );
        for o in &source.plan.omitted {
            println!("--   left out: {} ({})", o.what, o.reason);
        }
    }
    let mut report = Report::default();
    if phases != Phases::Post {
        let how = PreData {
            dry_run,
            ..Default::default()
        };
        let r = pre_data(&endpoints, &source, &slot, task, shutdown, how).await?;
        report.created += r.created;
        report.existed += r.existed;
        if !dry_run {
            let through = check::Through::PreData {
                deferred_identity: false,
            };
            check::created(&endpoints, &source, &slot, through).await?;
        }
    }
    if phases != Phases::Pre {
        task.set_phase(crate::data_sync::progress::Phase::Indexing);
        let r = post_data(
            &endpoints,
            &source,
            &Scope {
                slot: slot.clone(),
                only_created: false,
            },
            &settings,
            task,
            shutdown,
            dry_run,
        )
        .await?;
        report.created += r.created;
        report.existed += r.existed;
        report.not_valid = r.not_valid;
        if !dry_run {
            check::created(&endpoints, &source, &slot, check::Through::PostData).await?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_are_added_not_valid() {
        assert_eq!(
            not_valid("ALTER TABLE ONLY public.a\n    ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES public.b(id);"),
            "ALTER TABLE ONLY public.a\n    ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES public.b(id) NOT VALID;"
        );
        assert_eq!(
            not_valid("ALTER TABLE a ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES b(id) NOT VALID;"),
            "ALTER TABLE a ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES b(id) NOT VALID;"
        );
        let t = TableName {
            schema: "public".into(),
            name: "order items".into(),
        };
        assert_eq!(
            validate_sql(&t, "order items order_items_fk"),
            "ALTER TABLE \"public\".\"order items\" VALIDATE CONSTRAINT \"order_items_fk\";"
        );
    }

    #[test]
    fn column_differences_name_the_columns() {
        assert_eq!(
            column_difference("a integer, b text", "a integer"),
            "the destination lacks b text"
        );
        assert_eq!(
            column_difference("a integer", "a bigint"),
            "the source has a integer, the destination has a bigint"
        );
    }

    #[test]
    fn comments_and_grants_follow_their_objects() {
        let named = |kind: &str, tag: &str, key: Key| {
            let e = dump::Entry {
                kind: kind.into(),
                schema: Some("public".into()),
                tag: tag.into(),
                sql: String::new(),
            };
            on_created(&e, &HashSet::from([key]))
        };
        let orders = || Key::new("TABLE", Some("public"), "orders");
        assert!(named("COMMENT", "TABLE orders", orders()));
        assert!(named("COMMENT", "COLUMN orders.note", orders()));
        assert!(!named("COMMENT", "COLUMN orders2.note", orders()));
        assert!(!named(
            "COMMENT",
            "TABLE orders",
            Key::new("TABLE", Some("other"), "orders")
        ));
        assert!(named(
            "COMMENT",
            "CONSTRAINT c ON orders",
            Key::new("FK CONSTRAINT", Some("public"), "orders c")
        ));
        assert!(named(
            "COMMENT",
            "FUNCTION f()",
            Key::new("FUNCTION", Some("public"), "f()")
        ));
        assert!(named("ACL", "TABLE orders", orders()));
        assert!(named("ACL", "COLUMN orders.note", orders()));
        assert!(named("ACL", "SCHEMA app", Key::new("SCHEMA", None, "app")));
    }
}
