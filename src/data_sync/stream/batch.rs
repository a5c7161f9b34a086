//! Changes wait briefly in a destination's queue and go out in batches: a
//! run of inserts, upserts, key-preserving updates with the same columns,
//! or deletes, of one table, with distinct keys, becomes one multi-row
//! statement. Order within a table is always kept. Each table has its own
//! queue, which makes the runs long: apply sessions run with
//! `session_replication_role = replica` (no foreign-key checks), and a
//! group commits atomically, so nobody sees tables reordered.
//!
//! This module only decides what goes into which statement; the applier
//! ([`super::apply`]) owns the queues and sends the statements.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pgdog_protocol::frontend::Format;
use pgdog_protocol::pgoutput::{Column, OldTuple, Tuple};

use super::relation::RelationInfo;
use super::sql::{params_per_row, Kind, ShapeKey};
use pgdog_protocol::Lsn;

/// A value for a `u` column of a moved row: its format and bytes.
pub type FillValue = (Format, Option<Vec<u8>>);

/// Where a queued statement came from, to say so if it fails.
#[derive(Debug, Clone)]
pub struct Origin {
    pub table: std::sync::Arc<str>,
    pub commit_lsn: Lsn,
    pub what: &'static str,
    /// Rows an UPDATE or DELETE statement must touch (a batch: several).
    pub rows: u32,
}

/// One change waiting to be applied.
#[derive(Debug, Clone)]
pub enum Change {
    /// `fill` has the values of `u` columns (a row moved between shards).
    Insert {
        new: Tuple,
        fill: Option<Vec<FillValue>>,
    },
    /// Insert, or update the row with the same identity (every column is
    /// known: no `u` values).
    Upsert {
        new: Tuple,
    },
    Update {
        new: Tuple,
        old: Option<OldTuple>,
    },
    Delete {
        old: OldTuple,
    },
}

#[derive(Debug, Clone)]
pub struct Queued {
    pub rel: Arc<RelationInfo>,
    pub change: Change,
    pub origin: Origin,
}

impl Queued {
    /// Bytes of row data it carries (what the statement's parameters
    /// will take).
    fn size(&self) -> usize {
        match &self.change {
            Change::Insert { new, fill } => {
                new.raw().len()
                    + fill.as_ref().map_or(0, |f| {
                        f.iter().map(|(_, v)| v.as_ref().map_or(0, Vec::len)).sum()
                    })
            }
            Change::Upsert { new } => new.raw().len(),
            Change::Update { new, old } => {
                new.raw().len() + old.as_ref().map_or(0, |o| o.tuple().raw().len())
            }
            Change::Delete { old } => old.tuple().raw().len(),
        }
    }
}

/// Flush the queues once they hold this many changes...
const QUEUE_LIMIT: usize = 4096;
/// ...or this many bytes of row data: memory is bounded in bytes, however
/// wide the rows.
const QUEUE_BYTES: usize = 1 << 20;
/// Batch sizes tried, largest first (a few shapes, each prepared once).
const BATCHES: [usize; 3] = [256, 32, 4];
/// Bind parameters per statement at most (the protocol's count is 16 bits).
const MAX_PARAMS: usize = 65_535;
/// Parameter bytes per multi-row statement at most: far below the 1 GB
/// the server accepts in one message, and small enough that a batch of
/// wide rows does not hold much memory.
const BATCH_BYTES: usize = 512 << 10;

/// The changes waiting on one destination, one queue per table.
#[derive(Debug, Default)]
pub(super) struct Queues {
    /// Queued changes per relation OID, each in source order.
    by_table: HashMap<u32, Vec<Queued>>,
    /// Relations in first-use order, for a stable flush order.
    order: Vec<u32>,
    /// Changes queued in all, and their bytes: the flush thresholds.
    pending: usize,
    bytes: usize,
}

impl Queues {
    /// Queue a change; true when the queues are full and must be flushed.
    pub(super) fn push(&mut self, q: Queued) -> bool {
        self.bytes += q.size();
        self.pending += 1;
        let queue = self.by_table.entry(q.rel.oid).or_default();
        if queue.is_empty() {
            self.order.push(q.rel.oid);
        }
        queue.push(q);
        self.pending >= QUEUE_LIMIT || self.bytes >= QUEUE_BYTES
    }

    /// Everything queued, per table, in first-use order; the queues are
    /// empty afterwards.
    pub(super) fn take(&mut self) -> Vec<Vec<Queued>> {
        self.pending = 0;
        self.bytes = 0;
        let order = std::mem::take(&mut self.order);
        order
            .into_iter()
            .filter_map(|oid| self.by_table.remove(&oid))
            .collect()
    }
}

/// One statement to send: its shape and parameters, borrowed from the
/// queued changes.
#[derive(Debug)]
pub(super) struct Statement<'a> {
    pub rel: &'a Arc<RelationInfo>,
    pub shape: ShapeKey,
    pub formats: Vec<Format>,
    pub params: Vec<Option<&'a [u8]>>,
    pub origin: Origin,
}

/// What makes changes batchable together; `None`: apply alone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunKey {
    relation: u32,
    kind: Kind,
    mask: Vec<bool>,
}

fn run_key(q: &Queued) -> Option<RunKey> {
    let rel = &q.rel;
    if rel.full {
        return None;
    }
    let typed_keys = rel
        .columns
        .iter()
        .filter(|c| c.key)
        .all(|c| c.type_name.is_some());
    let key = |kind, mask| {
        Some(RunKey {
            relation: rel.oid,
            kind,
            mask,
        })
    };
    match &q.change {
        Change::Insert { new, fill: None } => {
            if new.columns().any(|c| matches!(c, Column::Unchanged)) {
                return None;
            }
            key(Kind::Insert, Vec::new())
        }
        // VALUES are inserted in order: a unique check sees the source's
        // order, as it does for inserts.
        Change::Upsert { .. } => key(Kind::Upsert, Vec::new()),
        // UPDATE ... FROM (VALUES ...) changes rows in whatever order its
        // join produces: only where no unique check can see that order.
        Change::Update { new, old: None } if !rel.ordered_updates => {
            let mask: Vec<bool> = new
                .columns()
                .enumerate()
                .map(|(i, c)| rel.sets(i, &c))
                .collect();
            let typed = rel
                .columns
                .iter()
                .zip(&mask)
                .all(|(c, on)| !on || c.type_name.is_some());
            if typed && typed_keys && mask.iter().any(|m| *m) {
                key(Kind::Update, mask)
            } else {
                None
            }
        }
        Change::Delete {
            old: OldTuple::Key(_),
        } if typed_keys => key(Kind::Delete, Vec::new()),
        _ => None,
    }
}

/// The identity of the row a change touches, to keep a batch's keys
/// distinct (two changes of one row must stay in order, not in one batch).
fn row_key(q: &Queued) -> Vec<u8> {
    let tuple = match &q.change {
        Change::Insert { new, .. } | Change::Upsert { new } | Change::Update { new, .. } => new,
        Change::Delete { old } => old.tuple(),
    };
    let mut out = Vec::new();
    for (i, c) in tuple.columns().enumerate() {
        if q.rel.columns.get(i).is_some_and(|rc| rc.key) {
            let v = c.bytes().unwrap_or(&[]);
            out.extend_from_slice(&(v.len() as u64).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
    out
}

/// The statements for one table's queue, in order.
pub(super) fn statements(items: &[Queued]) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let Some(key) = run_key(&items[i]) else {
            out.push(statement(&items[i..i + 1], None));
            i += 1;
            continue;
        };
        // The run: same shape, distinct rows.
        let mut seen = HashSet::new();
        seen.insert(row_key(&items[i]));
        let mut j = i + 1;
        while j < items.len()
            && run_key(&items[j]).as_ref() == Some(&key)
            && seen.insert(row_key(&items[j]))
        {
            j += 1;
        }
        let per = params_per_row(
            &items[i].rel,
            &ShapeKey {
                relation: key.relation,
                kind: key.kind,
                mask: key.mask.clone(),
                rows: 1,
            },
        )
        .max(1);
        let mut k = i;
        while k < j {
            let left = j - k;
            let size = BATCHES
                .iter()
                .copied()
                .find(|&b| {
                    b <= left
                        && b * per <= MAX_PARAMS
                        && items[k..k + b].iter().map(Queued::size).sum::<usize>() <= BATCH_BYTES
                })
                .unwrap_or(1);
            out.push(statement(&items[k..k + size], Some(&key)));
            k += size;
        }
        i = j;
    }
    out
}

/// One statement for `items` (all of one shape when `key` is given).
fn statement<'a>(items: &'a [Queued], key: Option<&RunKey>) -> Statement<'a> {
    let first = &items[0];
    let kind = match (&first.change, first.rel.full) {
        (Change::Insert { .. }, _) => Kind::Insert,
        (Change::Upsert { .. }, _) => Kind::Upsert,
        (Change::Update { .. }, false) => Kind::Update,
        (Change::Update { .. }, true) => Kind::UpdateFull,
        (Change::Delete { .. }, false) => Kind::Delete,
        (Change::Delete { .. }, true) => Kind::DeleteFull,
    };
    let mut formats = Vec::new();
    let mut params = Vec::new();
    let mut mask = key.map(|k| k.mask.clone()).unwrap_or_default();
    for q in items {
        push_params(q, kind, &mut mask, &mut formats, &mut params);
    }
    let mut origin = first.origin.clone();
    // Rows the statement must find: broadcast deletes expect none.
    origin.rows = items.iter().map(|q| q.origin.rows).sum();
    origin.commit_lsn = items
        .iter()
        .map(|q| q.origin.commit_lsn)
        .max()
        .unwrap_or_default();
    Statement {
        rel: &first.rel,
        shape: ShapeKey {
            relation: first.rel.oid,
            kind,
            mask,
            rows: items.len() as u16,
        },
        formats,
        params,
        origin,
    }
}

/// Append one change's parameters in shape order.
fn push_params<'a>(
    q: &'a Queued,
    kind: Kind,
    mask: &mut Vec<bool>,
    formats: &mut Vec<Format>,
    params: &mut Vec<Option<&'a [u8]>>,
) {
    let rel = &q.rel;
    let mut out = Params {
        mask,
        formats,
        params,
    };
    let key = |i: usize, _: &Column<'_>| rel.columns.get(i).is_some_and(|c| c.key);
    let present = |_: usize, c: &Column<'_>| !matches!(c, Column::Unchanged);
    match (&q.change, kind) {
        (Change::Insert { new, fill }, _) => {
            for (i, c) in new.columns().enumerate() {
                match (c, fill) {
                    (Column::Unchanged, Some(fill)) => {
                        let (f, v) = fill
                            .get(i)
                            .map(|(f, v)| (*f, v.as_deref()))
                            .unwrap_or((Format::Text, None));
                        out.add((f, v));
                    }
                    (c, _) => out.add(param(c)),
                }
            }
        }
        (Change::Upsert { new }, _) => out.pick(new, false, |_, _| true),
        (Change::Update { new, old }, Kind::Update) => {
            out.mask.clear();
            out.pick(new, true, |i, c| rel.sets(i, c));
            // Key values: from the old key when the key changed, else new.
            out.pick(old.as_ref().map(|o| o.tuple()).unwrap_or(new), false, key);
        }
        (Change::Update { new, old }, Kind::UpdateFull) => {
            out.mask.clear();
            out.pick(new, true, |i, c| rel.sets(i, c));
            if let Some(old) = old {
                out.pick(old.tuple(), true, present);
            }
        }
        (Change::Delete { old }, Kind::DeleteFull) => {
            out.mask.clear();
            out.mask.resize(rel.columns.len(), false);
            out.pick(old.tuple(), true, present);
        }
        (Change::Delete { old }, _) => out.pick(old.tuple(), false, key),
        _ => {}
    }
}

/// Where [`push_params`] appends: the statement's parameters and the
/// shape's column mask.
struct Params<'p, 'a> {
    mask: &'p mut Vec<bool>,
    formats: &'p mut Vec<Format>,
    params: &'p mut Vec<Option<&'a [u8]>>,
}

impl<'a> Params<'_, 'a> {
    fn add(&mut self, (f, v): (Format, Option<&'a [u8]>)) {
        self.formats.push(f);
        self.params.push(v);
    }

    /// The columns of `tuple` that `on` picks, in order; with `masked`,
    /// each column's pick goes to the mask too.
    fn pick(&mut self, tuple: &'a Tuple, masked: bool, on: impl Fn(usize, &Column<'a>) -> bool) {
        for (i, c) in tuple.columns().enumerate() {
            let picked = on(i, &c);
            if masked {
                self.mask.push(picked);
            }
            if picked {
                self.add(param(c));
            }
        }
    }
}

/// Parameter format and bytes of a tuple column (`u` has none: callers
/// leave such columns out).
pub fn param(col: Column<'_>) -> (Format, Option<&[u8]>) {
    match col {
        Column::Null | Column::Unchanged => (Format::Text, None),
        Column::Text(v) => (Format::Text, Some(v)),
        Column::Binary(v) => (Format::Binary, Some(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_sync::catalog::TableName;
    use crate::data_sync::stream::relation::RelColumn;

    fn rel(ordered_updates: bool) -> Arc<RelationInfo> {
        let col = |name: &str, key: bool| RelColumn {
            name: name.into(),
            key,
            type_name: Some(if key { "bigint" } else { "text" }.into()),
            always: false,
        };
        Arc::new(RelationInfo {
            oid: 7,
            name: TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            display: Arc::from("public.t"),
            columns: vec![col("id", true), col("v", false)],
            full: false,
            table: Some(0),
            dest_key: Some(0),
            key_outside_identity: false,
            partitioned: false,
            ordered_updates,
        })
    }

    fn row(id: u64, width: usize) -> Tuple {
        let id = id.to_string();
        let v = "x".repeat(width);
        Tuple::from_columns([Column::Text(id.as_bytes()), Column::Text(v.as_bytes())]).unwrap()
    }

    fn queued(rel: &Arc<RelationInfo>, change: Change) -> Queued {
        Queued {
            rel: rel.clone(),
            change,
            origin: Origin {
                table: rel.display.clone(),
                commit_lsn: Lsn::ZERO,
                what: "test",
                rows: 1,
            },
        }
    }

    #[test]
    fn queues_fill_by_bytes_not_only_by_count() {
        let r = rel(false);
        let mut q = Queues::default();
        let mut pushed = 0;
        // 4 kB rows: the byte bound trips long before the count bound.
        while !q.push(queued(
            &r,
            Change::Insert {
                new: row(pushed, 4096),
                fill: None,
            },
        )) {
            pushed += 1;
        }
        assert!(pushed < QUEUE_LIMIT as u64);
        assert!(pushed as usize * 4096 <= QUEUE_BYTES + 4096);
        let taken = q.take();
        assert_eq!(
            taken.iter().map(Vec::len).sum::<usize>(),
            pushed as usize + 1
        );
        assert!(!q.push(queued(
            &r,
            Change::Delete {
                old: OldTuple::Key(row(1, 0))
            }
        )));
    }

    #[test]
    fn wide_batches_stay_under_the_byte_bound() {
        let r = rel(false);
        let items: Vec<Queued> = (0..600)
            .map(|i| {
                queued(
                    &r,
                    Change::Insert {
                        new: row(i, 64 * 1024),
                        fill: None,
                    },
                )
            })
            .collect();
        let sts = statements(&items);
        assert_eq!(
            sts.iter().map(|s| s.shape.rows as usize).sum::<usize>(),
            600
        );
        for s in &sts {
            let bytes: usize = s.params.iter().map(|p| p.map_or(0, <[u8]>::len)).sum();
            assert!(bytes <= BATCH_BYTES, "a batch of {bytes} bytes");
            assert!(s.params.len() <= MAX_PARAMS);
        }
        // 64 kB rows: 4-row batches (256 kB), not 32-row ones (2 MB).
        assert_eq!(sts[0].shape.rows, 4);
    }

    #[test]
    fn updates_batch_only_where_no_unique_check_sees_their_order() {
        let updates = |r: &Arc<RelationInfo>| -> Vec<Queued> {
            (0..64)
                .map(|i| {
                    queued(
                        r,
                        Change::Update {
                            new: row(i, 8),
                            old: None,
                        },
                    )
                })
                .collect()
        };
        let free = updates(&rel(false));
        let sts = statements(&free);
        assert_eq!(sts.len(), 2, "32 + 32 rows");
        assert!(sts.iter().all(|s| s.shape.kind == Kind::Update));
        let ordered = updates(&rel(true));
        let sts = statements(&ordered);
        assert_eq!(sts.len(), 64, "one statement per row, in source order");
        assert!(sts.iter().all(|s| s.shape.rows == 1));
        // Upserts insert their VALUES in order: batched either way.
        let upserts: Vec<Queued> = (0..64)
            .map(|i| queued(&rel(true), Change::Upsert { new: row(i, 8) }))
            .collect();
        assert_eq!(statements(&upserts).len(), 2);
    }

    #[test]
    fn two_changes_of_one_row_never_share_a_batch() {
        let r = rel(false);
        let items: Vec<Queued> = [1, 2, 1, 3]
            .into_iter()
            .map(|id| {
                queued(
                    &r,
                    Change::Update {
                        new: row(id, 8),
                        old: None,
                    },
                )
            })
            .collect();
        let sts = statements(&items);
        assert_eq!(
            sts.iter().map(|s| s.shape.rows).collect::<Vec<_>>(),
            [1, 1, 1, 1]
        );
        // Broadcast deletes expect no row; the statement's count says so.
        let mut d = queued(
            &r,
            Change::Delete {
                old: OldTuple::Key(row(9, 0)),
            },
        );
        d.origin.rows = 0;
        assert_eq!(statements(&[d])[0].origin.rows, 0);
    }
}
