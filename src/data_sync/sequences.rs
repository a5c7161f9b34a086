//! Sequences after a move: logical replication carries the rows a sequence
//! numbered, never the sequence itself, so every destination sequence is
//! still where the schema left it and the first insert after a switch would
//! reuse an id. This sets every sequence the published tables use (owned by
//! a column, serial or identity, or named in a column default) above the
//! highest value any source shard (or destination shard) has handed out,
//! plus a margin:
//!
//! - used by a table sharded on the destination: interleaved, `INCREMENT BY`
//!   the source's increment times the shard count and each shard at its own
//!   offset, so no two shards ever hand out the same value;
//! - used only by tables every shard holds whole: the same value on every
//!   shard (the rows are written to every shard alike).
//!
//! Run it once writes on the source have stopped (or with a margin that
//! covers what the source hands out until they do). A rerun never moves a
//! sequence backwards.

use std::collections::BTreeMap;

use tracing::info;

use crate::net::Connection;

use super::catalog::{quote_ident, TableName};
use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::plan::Plan;

/// The margin above the highest value handed out, by default.
pub const DEFAULT_MARGIN: i64 = 1000;

/// One sequence and what is to be done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencePlan {
    pub schema: String,
    pub name: String,
    /// The published tables that use it.
    pub tables: Vec<TableName>,
    /// Interleaved across the destination shards.
    pub interleaved: bool,
    /// The source's increment.
    pub increment: i64,
    /// The highest value handed out on any source or destination shard.
    pub highest: Option<i64>,
    /// The next value each destination shard hands out.
    pub next: Vec<i64>,
    /// The increment each destination shard gets.
    pub new_increment: i64,
}

impl SequencePlan {
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Sequences and the tables that use them: owned by one of their columns,
/// or named in a default; a partitioned table's sequence is also used by
/// each of its partitions (a publication without
/// `publish_via_partition_root` lists the partitions).
const SEQUENCES_SQL: &str = "
WITH used AS (
    SELECT d.objid AS seq, d.refobjid AS tab
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    UNION
    SELECT d.refobjid, ad.adrelid
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
), tabs AS (
    SELECT seq, tab FROM used
    UNION
    SELECT u.seq, p.relid FROM used u JOIN pg_class t ON t.oid = u.tab AND t.relkind = 'p',
         LATERAL pg_partition_tree(u.tab) p
)
SELECT sn.nspname, s.relname, tn.nspname, t.relname
FROM tabs
JOIN pg_class s ON s.oid = tabs.seq AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_class t ON t.oid = tabs.tab
JOIN pg_namespace tn ON tn.oid = t.relnamespace";

/// Whose increment a sequence keeps (times the shard count when it is
/// interleaved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrementFrom {
    /// The source's: after a move.
    Source,
    /// The destination's own: after a rollback, the destination is the
    /// cluster the sequence had before the move, and the source's is
    /// already interleaved.
    Dest,
}

/// What a sequence stands at on one server: the last value handed out
/// (`None`: never used) and its increment and bounds.
async fn state(
    conn: &mut crate::net::Connection,
    schema: &str,
    name: &str,
) -> Result<Option<(Option<i64>, i64, i64, i64)>> {
    let rows = conn
        .query_text(
            "SELECT last_value, increment_by, min_value, max_value FROM pg_sequences WHERE schemaname = $1 AND sequencename = $2",
            &[schema, name],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let num = |i: usize| -> Result<i64> {
        r.text(i).and_then(|t| t.parse().ok()).ok_or_else(|| {
            DataSyncError::State(format!(
                "pg_sequences on {} has no readable column {i} for {schema}.{name}",
                conn.addr()
            ))
        })
    };
    Ok(Some((
        r.text(0).and_then(|t| t.parse().ok()),
        num(1)?,
        num(2)?,
        num(3)?,
    )))
}

/// The sequences the moved tables use, as source shard 0 knows them:
/// `(schema, name) -> (tables, interleaved)`, interleaved when a table
/// that uses it is sharded over more than one destination shard.
async fn used_sequences(
    endpoints: &Endpoints,
    plan: &Plan,
) -> Result<BTreeMap<(String, String), (Vec<TableName>, bool)>> {
    let m = plan.dest_shards();
    let mut conn = endpoints.connect_source(0, false).await?;
    let rows = conn.query(SEQUENCES_SQL).await?;
    conn.close().await;
    let mut found: BTreeMap<(String, String), (Vec<TableName>, bool)> = BTreeMap::new();
    for r in &rows {
        let table = TableName {
            schema: r.text(2).unwrap_or("").to_string(),
            name: r.text(3).unwrap_or("").to_string(),
        };
        let Some(ti) = plan.table(&table) else {
            continue;
        };
        let sharded = plan.tables[ti].dest.is_some() && m > 1;
        let key = (
            r.text(0).unwrap_or("").to_string(),
            r.text(1).unwrap_or("").to_string(),
        );
        let entry = found.entry(key).or_default();
        if !entry.0.contains(&table) {
            entry.0.push(table);
        }
        entry.1 |= sharded;
    }
    Ok(found)
}

/// Open connections to every source and destination shard.
struct Servers<'a> {
    sources: &'a mut [Connection],
    dests: &'a mut [Connection],
}

/// What the shards say of one sequence.
struct Seen {
    /// The highest value handed out anywhere.
    highest: Option<i64>,
    increment: i64,
    /// The lowest maximum.
    bound: i64,
}

impl Servers<'_> {
    async fn seen(self, schema: &str, name: &str, increment_from: IncrementFrom) -> Result<Seen> {
        let what = format!("sequence {schema}.{name}");
        let mut highest: Option<i64> = None;
        let mut increment = 1;
        let mut bound = i64::MAX;
        for (i, c) in self.sources.iter_mut().enumerate() {
            let Some((last, inc, _, max)) = state(c, schema, name).await? else {
                continue;
            };
            if i == 0 && increment_from == IncrementFrom::Source {
                increment = inc;
                bound = max;
            }
            highest = highest.max(last);
        }
        for (d, c) in self.dests.iter_mut().enumerate() {
            let Some((last, inc, _, max)) = state(c, schema, name).await? else {
                return Err(DataSyncError::preflight(
                    format!("{what} is missing on destination shard {d}"),
                    "create the schema there first (schema sync does)",
                ));
            };
            highest = highest.max(last);
            bound = bound.min(max);
            if d == 0 && increment_from == IncrementFrom::Dest {
                increment = inc;
            }
        }
        Ok(Seen {
            highest,
            increment,
            bound,
        })
    }
}

/// Work out what to set, reading every source and destination shard.
pub async fn plan(
    endpoints: &Endpoints,
    plan: &Plan,
    margin: i64,
    increment_from: IncrementFrom,
) -> Result<Vec<SequencePlan>> {
    let m = plan.dest_shards();
    let found = used_sequences(endpoints, plan).await?;
    let mut sources = Vec::new();
    for s in 0..endpoints.source.shards.len() {
        sources.push(endpoints.connect_source(s, false).await?);
    }
    let mut dests = Vec::new();
    for d in 0..m {
        dests.push(endpoints.connect_dest(d).await?);
    }
    let mut out = Vec::new();
    for ((schema, name), (tables, interleaved)) in found {
        let what = format!("sequence {schema}.{name}");
        let servers = Servers {
            sources: &mut sources,
            dests: &mut dests,
        };
        let Seen {
            highest,
            increment,
            bound,
        } = servers.seen(&schema, &name, increment_from).await?;
        if increment <= 0 {
            return Err(DataSyncError::preflight(
                format!("{what} counts down (INCREMENT BY {increment}); pgdog only sets ascending sequences"),
                format!("set {what} on every destination shard by hand"),
            ));
        }
        let shards = if interleaved { m as i64 } else { 1 };
        let base = highest
            .unwrap_or(0)
            .checked_add(margin)
            .filter(|b| *b < bound);
        let next: Option<Vec<i64>> = base.and_then(|b| {
            (0..m as i64)
                .map(|d| {
                    let v = if interleaved {
                        b.checked_add(d * increment)?
                    } else {
                        b
                    };
                    (v <= bound).then_some(v)
                })
                .collect()
        });
        let Some(next) = next else {
            return Err(DataSyncError::preflight(
                format!(
                    "{what}: {} plus a margin of {margin} passes its maximum {bound}",
                    highest.unwrap_or(0)
                ),
                "lower --margin, or widen the sequence (ALTER SEQUENCE ... AS bigint)",
            ));
        };
        out.push(SequencePlan {
            schema,
            name,
            tables,
            interleaved,
            increment,
            highest,
            next,
            new_increment: increment * shards,
        });
    }
    for c in sources.into_iter().chain(dests) {
        c.close().await;
    }
    Ok(out)
}

/// Set every planned sequence on every destination shard.
pub async fn apply(endpoints: &Endpoints, plans: &[SequencePlan]) -> Result<()> {
    for d in 0..endpoints.dest.shards.len() {
        let mut conn = endpoints.connect_dest(d).await?;
        for p in plans {
            let seq = p.quoted();
            let next = p.next[d].to_string();
            conn.execute(&format!(
                "ALTER SEQUENCE {seq} INCREMENT BY {}",
                p.new_increment
            ))
            .await?;
            conn.query_text(
                "SELECT setval($1::regclass, $2::bigint, false)",
                &[&seq, &next],
            )
            .await?;
            info!(dest_shard = d, sequence = %seq, next = p.next[d], increment = p.new_increment, "sequence set");
        }
        conn.close().await;
    }
    Ok(())
}

/// The plan as a table, for people.
pub fn render(plans: &[SequencePlan]) -> String {
    let mut out = String::new();
    let width = plans
        .iter()
        .map(|p| p.schema.len() + p.name.len() + 1)
        .max()
        .unwrap_or(8)
        .max(8);
    out.push_str(&format!(
        "{:<width$} {:>14} {:>12}  next value per destination shard  (tables)\n",
        "sequence", "highest used", "increment"
    ));
    for p in plans {
        let next: Vec<String> = p.next.iter().map(|v| v.to_string()).collect();
        let tables: Vec<String> = p.tables.iter().map(|t| t.to_string()).collect();
        out.push_str(&format!(
            "{:<width$} {:>14} {:>12}  {}  ({}{})\n",
            format!("{}.{}", p.schema, p.name),
            p.highest
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
            p.new_increment,
            next.join(", "),
            tables.join(", "),
            if p.interleaved { "; interleaved" } else { "" }
        ));
    }
    out
}

/// `pgdog sequence-sync`: plan from the move's tables, print, and (unless
/// `dry_run`) set.
pub async fn command(
    config: std::sync::Arc<crate::config::Config>,
    opts: &super::options::Options,
    margin: i64,
    dry_run: bool,
) -> Result<Vec<SequencePlan>> {
    if margin < 0 {
        return Err(DataSyncError::preflight(
            format!("--margin {margin} is negative"),
            "give a margin of 0 or more",
        ));
    }
    let endpoints = Endpoints::of_move(config, opts)?;
    let findings = super::preflight::run(
        &endpoints,
        &opts.publication,
        &opts.slot_name(),
        super::preflight::Intent::Inspect {
            command: "pgdog sequence-sync",
            temporary_slot: false,
        },
    )
    .await?;
    let plans = plan(&endpoints, &findings.plan, margin, IncrementFrom::Source).await?;
    if !dry_run {
        apply(&endpoints, &plans).await?;
    }
    Ok(plans)
}
