//! `--detail`: the keys behind a difference, found by bisecting key ranges
//! on the servers themselves. Each side sums `md5(row)` over a range of
//! the replica identity; equal ranges are dropped, differing ones are split
//! at a median key until few rows are left, and only those rows' keys and
//! hashes are fetched. A whole table is never shipped.
//!
//! A sharded table is compared as the source against the union of its
//! destination shards (so a row finds its counterpart wherever it went),
//! and each shard is asked for the rows that do not belong there; a table
//! every shard holds in full is compared shard by shard.

use std::collections::HashMap;

use super::super::catalog::{quote_ident, Column};
use super::super::copy::pool::ServerCopy;
use super::super::error::{DataSyncError, Result};
use super::super::plan::{shard_predicate, TablePlan};
use crate::sharding::Format;

/// Keys listed of each kind at most.
pub const LIMIT: usize = 20;
/// A range with at most this many rows (both sides) is fetched.
const LEAF_ROWS: u64 = 256;
/// Narrowing stops after finding this many differing keys in all, listed
/// or not: a table that differs everywhere is not walked end to end.
const FOUND_AT_MOST: u64 = 3 * LIMIT as u64;

/// What differs, by key: `(destination shard, key)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDiffs {
    /// On the source, not on the destination shard it belongs on.
    pub missing: Vec<(usize, String)>,
    /// On a destination shard, not on the source.
    pub extra: Vec<(usize, String)>,
    /// On both, with other values.
    pub changed: Vec<(usize, String)>,
    /// On a destination shard the sharding function does not pick.
    pub misplaced: Vec<(usize, String)>,
    /// Why narrowing stopped short, if it did.
    pub note: Option<String>,
    /// Differing keys found, listed or not.
    found: u64,
}

impl KeyDiffs {
    fn done(&self) -> bool {
        self.found >= FOUND_AT_MOST
            || (self.missing.len() >= LIMIT
                && self.extra.len() >= LIMIT
                && self.changed.len() >= LIMIT)
    }

    /// Count one differing key, and list it under `kind` if there is room.
    fn push(kind: &mut Vec<(usize, String)>, found: &mut u64, shard: usize, key: String) {
        *found += 1;
        if kind.len() < LIMIT {
            kind.push((shard, key));
        }
    }
}

/// A half-open range of the key, as text values; `None`: unbounded.
#[derive(Debug, Clone)]
struct Range {
    lo: Option<Vec<String>>,
    hi: Option<Vec<String>>,
}

/// The servers one comparison reads.
#[derive(Debug)]
pub struct Sides<'a> {
    /// Source servers holding rows of the table.
    pub sources: Vec<&'a ServerCopy>,
    /// Destination shards compared, with their numbers.
    pub dests: Vec<(usize, &'a ServerCopy)>,
}

struct Sql<'a> {
    plan: &'a TablePlan,
    keys: Vec<&'a Column>,
}

impl Sql<'_> {
    /// The key columns as compared and ordered: text-like ones in the "C"
    /// collation, so that a range means the same rows on servers whose
    /// collations differ.
    fn key_columns(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|c| {
                let t = c.type_name.as_str();
                let collatable = t == "text"
                    || t == "name"
                    || t.starts_with("character")
                    || t.starts_with("varchar")
                    || t == "citext";
                if collatable {
                    format!("{} COLLATE \"C\"", quote_ident(&c.name))
                } else {
                    quote_ident(&c.name)
                }
            })
            .collect()
    }

    fn key_row(&self) -> String {
        format!("ROW({})", self.key_columns().join(", "))
    }

    fn key_text(&self) -> String {
        let cols: Vec<String> = self
            .keys
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect();
        cols.join(", ")
    }

    fn row_md5(&self) -> String {
        format!("md5(ROW({})::text)", self.plan.table.column_list())
    }

    /// FROM and WHERE for `range`, on a source or a destination; the
    /// parameters it takes, in order.
    fn scan(&self, source: bool, range: &Range) -> (String, Vec<String>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        let bound = |op: &str, values: &Vec<String>, params: &mut Vec<String>| {
            let placeholders: Vec<String> = self
                .keys
                .iter()
                .zip(values)
                .map(|(c, v)| {
                    params.push(v.clone());
                    format!("${}::{}", params.len(), c.type_name)
                })
                .collect();
            format!("{} {op} ROW({})", self.key_row(), placeholders.join(", "))
        };
        if let Some(lo) = &range.lo {
            conds.push(bound(">=", lo, &mut params));
        }
        if let Some(hi) = &range.hi {
            conds.push(bound("<", hi, &mut params));
        }
        (self.plan.from_clause(source, conds), params)
    }
}

async fn query(
    server: &ServerCopy,
    sql: &str,
    params: &[String],
) -> Result<Vec<pgdog_protocol::backend::DataRow>> {
    let mut reader = server.reader().await?;
    let refs: Vec<&str> = params.iter().map(String::as_str).collect();
    let rows = reader.conn.query_text(sql, &refs).await;
    server.give_back(reader).await;
    Ok(rows?)
}

/// Count and md5 sum of `range` on one server.
async fn range_sum(
    q: &Sql<'_>,
    server: &ServerCopy,
    source: bool,
    range: &Range,
) -> Result<(u64, i128)> {
    let (from, params) = q.scan(source, range);
    let sql = format!(
        "SELECT count(*), coalesce(sum(('x' || substr({}, 1, 16))::bit(64)::bigint), 0) {from}",
        q.row_md5()
    );
    let rows = query(server, &sql, &params).await?;
    let bad = || DataSyncError::State(format!("verify --detail: an unreadable sum from {sql}"));
    let r = rows.first().ok_or_else(bad)?;
    let n = r.text(0).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let s = r.text(1).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    Ok((n, s))
}

/// The key at `offset` in `range` on one server.
async fn key_at(
    q: &Sql<'_>,
    server: &ServerCopy,
    source: bool,
    range: &Range,
    offset: u64,
) -> Result<Option<Vec<String>>> {
    let (from, params) = q.scan(source, range);
    let sql = format!(
        "SELECT {} {from} ORDER BY {} OFFSET {offset} LIMIT 1",
        q.key_text(),
        q.key_columns().join(", ")
    );
    let rows = query(server, &sql, &params).await?;
    Ok(rows.first().map(|r| {
        (0..q.keys.len())
            .map(|i| r.text(i).unwrap_or("").to_string())
            .collect()
    }))
}

/// Keys, routing key and md5 of every row of `range` on one server.
async fn fetch(
    q: &Sql<'_>,
    server: &ServerCopy,
    source: bool,
    range: &Range,
) -> Result<Vec<(String, Option<String>, String)>> {
    let (from, params) = q.scan(source, range);
    let routing = q
        .plan
        .dest
        .as_ref()
        .map(|r| {
            format!(
                "{}::text",
                quote_ident(&q.plan.table.columns[r.column].name)
            )
        })
        .unwrap_or_else(|| "NULL::text".into());
    let sql = format!("SELECT {}, {routing}, {} {from}", q.key_text(), q.row_md5());
    let rows = query(server, &sql, &params).await?;
    let k = q.keys.len();
    Ok(rows
        .iter()
        .map(|r| {
            (
                key_string(r, k),
                r.text(k).map(str::to_string),
                r.text(k + 1).unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// The first `k` columns of `row` as a key people read: `42`, `(7, 42)`.
fn key_string(row: &pgdog_protocol::backend::DataRow, k: usize) -> String {
    let key: Vec<&str> = (0..k).map(|i| row.text(i).unwrap_or("NULL")).collect();
    if k == 1 {
        key[0].to_string()
    } else {
        format!("({})", key.join(", "))
    }
}

/// Narrow a difference of `plan`'s table between `sides` down to keys.
pub async fn narrow(plan: &TablePlan, sides: &Sides<'_>, dest_shards: usize) -> Result<KeyDiffs> {
    let mut diffs = KeyDiffs::default();
    let keys: Vec<&Column> = plan.table.columns.iter().filter(|c| c.identity).collect();
    if keys.is_empty() || keys.iter().any(|c| !c.not_null) {
        diffs.note =
            Some("cannot narrow down: the replica identity has no columns or nullable ones".into());
        return Ok(diffs);
    }
    let q = Sql { plan, keys };
    let sharded = plan.dest.is_some() && dest_shards > 1;
    if sharded {
        misplaced(&q, sides, dest_shards, &mut diffs).await?;
    }
    let mut stack = vec![(Range { lo: None, hi: None }, 0u32)];
    while let Some((range, depth)) = stack.pop() {
        if diffs.done() {
            if !stack.is_empty() {
                diffs.note = Some(format!(
                    "stopped after {} differing keys; there may be more",
                    diffs.found
                ));
            }
            break;
        }
        let mut src = (0u64, 0i128);
        let mut biggest: Option<(u64, &ServerCopy, bool)> = None;
        for s in &sides.sources {
            let (n, sum) = range_sum(&q, s, true, &range).await?;
            src = (src.0 + n, src.1 + sum);
            if biggest.is_none_or(|b| n > b.0) {
                biggest = Some((n, s, true));
            }
        }
        let mut dst = (0u64, 0i128);
        for (_, d) in &sides.dests {
            let (n, sum) = range_sum(&q, d, false, &range).await?;
            dst = (dst.0 + n, dst.1 + sum);
            if biggest.is_none_or(|b| n > b.0) {
                biggest = Some((n, d, false));
            }
        }
        if src == dst {
            continue;
        }
        if src.0 + dst.0 > LEAF_ROWS && depth < 64 {
            if let Some((n, server, source)) = biggest {
                let mid = key_at(&q, server, source, &range, n / 2).await?;
                if let Some(mid) = mid.filter(|m| range.lo.as_ref() != Some(m)) {
                    // Lower half on top: keys come out in order.
                    stack.push((
                        Range {
                            lo: Some(mid.clone()),
                            hi: range.hi.clone(),
                        },
                        depth + 1,
                    ));
                    stack.push((
                        Range {
                            lo: range.lo.clone(),
                            hi: Some(mid),
                        },
                        depth + 1,
                    ));
                    continue;
                }
            }
        }
        leaf(&q, sides, &range, &mut diffs).await?;
    }
    Ok(diffs)
}

/// Compare the rows of a small range one by one.
async fn leaf(q: &Sql<'_>, sides: &Sides<'_>, range: &Range, diffs: &mut KeyDiffs) -> Result<()> {
    let mut source: Vec<(String, Option<String>, String)> = Vec::new();
    for s in &sides.sources {
        source.extend(fetch(q, s, true, range).await?);
    }
    let mut dest: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (d, server) in &sides.dests {
        for (key, _, md5) in fetch(q, server, false, range).await? {
            dest.entry(key).or_default().push((*d, md5));
        }
    }
    let routing = q.plan.dest.as_ref().filter(|_| sides.dests.len() > 1);
    for (key, route, md5) in source {
        // The shard the row belongs on.
        let shard = match (routing, route) {
            (Some(r), Some(v)) => r.sharder.shard(Some(v.as_bytes()), Format::Text)?,
            _ => sides.dests.first().map(|(d, _)| *d).unwrap_or(0),
        };
        let found = dest.get_mut(&key);
        match found {
            Some(list) if !list.is_empty() => {
                // The copy on the right shard answers for it, else any.
                let i = list.iter().position(|(d, _)| *d == shard).unwrap_or(0);
                let (d, got) = list.remove(i);
                if got != md5 {
                    KeyDiffs::push(&mut diffs.changed, &mut diffs.found, d, key);
                }
            }
            _ => KeyDiffs::push(&mut diffs.missing, &mut diffs.found, shard, key),
        }
    }
    let mut extra: Vec<(usize, String)> = dest
        .into_iter()
        .flat_map(|(k, list)| list.into_iter().map(move |(d, _)| (d, k.clone())))
        .collect();
    extra.sort();
    for (d, key) in extra {
        KeyDiffs::push(&mut diffs.extra, &mut diffs.found, d, key);
    }
    Ok(())
}

/// Rows on each destination shard that the sharding function puts on
/// another one.
async fn misplaced(
    q: &Sql<'_>,
    sides: &Sides<'_>,
    dest_shards: usize,
    diffs: &mut KeyDiffs,
) -> Result<()> {
    let Some(r) = q.plan.dest.as_ref() else {
        return Ok(());
    };
    let column = &q.plan.table.columns[r.column].name;
    for (d, server) in &sides.dests {
        let pred = shard_predicate(&r.sharder, column, *d, dest_shards);
        let sql = format!(
            "SELECT {} FROM {}{} WHERE NOT ({pred}) ORDER BY {} LIMIT {LIMIT}",
            q.key_text(),
            q.plan.only(),
            q.plan.table.name.quoted(),
            q.key_columns().join(", ")
        );
        for row in query(server, &sql, &[]).await? {
            if diffs.misplaced.len() < LIMIT {
                diffs.misplaced.push((*d, key_string(&row, q.keys.len())));
            }
        }
    }
    Ok(())
}
