//! Changes wait briefly in a destination's queue and go out in batches: a
//! run of inserts, key-preserving updates with the same columns, or
//! deletes, of one table, with distinct keys, becomes one multi-row
//! statement. Order within a table is always kept. Across tables it is kept
//! too, unless the destination session runs with
//! `session_replication_role = replica` (no foreign-key or trigger checks):
//! then each table has its own queue, which makes the runs long; a group
//! commits atomically, so nobody sees the reordering.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pgdog_protocol::frontend::Format;
use pgdog_protocol::pgoutput::{Column, OldTuple, Tuple};

use super::super::error::Result;
use super::apply::{param, DestApplier, Origin};
use super::relation::RelationInfo;
use super::sql::{params_per_row, Kind, ShapeKey};

/// A value for a `u` column of a moved row: its format and bytes.
pub type FillValue = (Format, Option<Vec<u8>>);

/// One change waiting to be applied.
#[derive(Debug, Clone)]
pub enum Change {
    /// `fill` has the values of `u` columns (a row moved between shards).
    Insert {
        new: Tuple,
        fill: Option<Vec<FillValue>>,
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

/// Flush a queue once it holds this many changes.
const QUEUE_LIMIT: usize = 4096;
/// Batch sizes tried, largest first (a few shapes, each prepared once).
const BATCHES: [usize; 3] = [256, 32, 4];
/// Bind parameters per statement at most.
const MAX_PARAMS: usize = 65_535;

/// The per-destination queues.
#[derive(Debug, Default)]
pub struct Queues {
    /// One queue per table when reordering across tables is allowed, else
    /// a single one (key 0).
    by_key: HashMap<u32, Vec<Queued>>,
    /// Keys in first-use order, for a stable flush order.
    order: Vec<u32>,
    pending: usize,
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
    match &q.change {
        Change::Insert { new, fill: None } => {
            if new.columns().any(|c| matches!(c, Column::Unchanged)) {
                return None;
            }
            Some(RunKey {
                relation: rel.oid,
                kind: Kind::Insert,
                mask: Vec::new(),
            })
        }
        Change::Update { new, old: None } => {
            let mask: Vec<bool> = new
                .columns()
                .map(|c| !matches!(c, Column::Unchanged))
                .collect();
            let typed = rel
                .columns
                .iter()
                .zip(&mask)
                .all(|(c, on)| !on || c.type_name.is_some());
            (typed && typed_keys && mask.iter().any(|m| *m)).then_some(RunKey {
                relation: rel.oid,
                kind: Kind::Update,
                mask,
            })
        }
        Change::Delete {
            old: OldTuple::Key(_),
        } if typed_keys => Some(RunKey {
            relation: rel.oid,
            kind: Kind::Delete,
            mask: Vec::new(),
        }),
        _ => None,
    }
}

/// The identity of the row a change touches, to keep a batch's keys
/// distinct (two changes of one row must stay in order, not in one batch).
fn row_key(q: &Queued) -> Vec<u8> {
    let tuple = match &q.change {
        Change::Insert { new, .. } | Change::Update { new, .. } => new,
        Change::Delete { old } => old.tuple(),
    };
    let mut out = Vec::new();
    for (i, c) in tuple.columns().enumerate() {
        if q.rel.columns.get(i).is_some_and(|rc| rc.key) {
            let v = c.bytes().unwrap_or(&[]);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
    out
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
    let mut add = |(f, v): (Format, Option<&'a [u8]>)| {
        formats.push(f);
        params.push(v);
    };
    match (&q.change, kind) {
        (Change::Insert { new, fill }, _) => {
            for (i, c) in new.columns().enumerate() {
                match (c, fill) {
                    (Column::Unchanged, Some(fill)) => {
                        let (f, v) = fill
                            .get(i)
                            .map(|(f, v)| (*f, v.as_deref()))
                            .unwrap_or((Format::Text, None));
                        add((f, v));
                    }
                    (c, _) => add(param(c)),
                }
            }
        }
        (Change::Update { new, old }, Kind::Update) => {
            mask.clear();
            for c in new.columns() {
                let set = !matches!(c, Column::Unchanged);
                mask.push(set);
                if set {
                    add(param(c));
                }
            }
            // Key values: from the old key when the key changed, else new.
            let source = old.as_ref().map(|o| o.tuple()).unwrap_or(new);
            for (i, c) in source.columns().enumerate() {
                if rel.columns.get(i).is_some_and(|c| c.key) {
                    add(param(c));
                }
            }
        }
        (Change::Update { new, old }, Kind::UpdateFull) => {
            mask.clear();
            for c in new.columns() {
                let set = !matches!(c, Column::Unchanged);
                mask.push(set);
                if set {
                    add(param(c));
                }
            }
            if let Some(old) = old {
                for c in old.tuple().columns() {
                    let on = !matches!(c, Column::Unchanged);
                    mask.push(on);
                    if on {
                        add(param(c));
                    }
                }
            }
        }
        (Change::Delete { old }, Kind::DeleteFull) => {
            mask.clear();
            mask.resize(rel.columns.len(), false);
            for c in old.tuple().columns() {
                let on = !matches!(c, Column::Unchanged);
                mask.push(on);
                if on {
                    add(param(c));
                }
            }
        }
        (Change::Delete { old }, _) => {
            for (i, c) in old.tuple().columns().enumerate() {
                if rel.columns.get(i).is_some_and(|c| c.key) {
                    add(param(c));
                }
            }
        }
        _ => {}
    }
}

impl DestApplier {
    /// Queue a change; a full queue is flushed.
    pub async fn push(&mut self, q: Queued) -> Result<()> {
        let key = if self.reorder { q.rel.oid } else { 0 };
        let queue = self.queues.by_key.entry(key).or_default();
        if queue.is_empty() {
            self.queues.order.push(key);
        }
        queue.push(q);
        self.queues.pending += 1;
        if self.queues.pending >= QUEUE_LIMIT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send every queued change, in order, batching runs.
    pub async fn flush(&mut self) -> Result<()> {
        let order = std::mem::take(&mut self.queues.order);
        for key in order {
            let items = self.queues.by_key.remove(&key).unwrap_or_default();
            self.queues.pending -= items.len();
            self.flush_items(&items).await?;
        }
        Ok(())
    }

    async fn flush_items(&mut self, items: &[Queued]) -> Result<()> {
        let mut i = 0;
        while i < items.len() {
            let Some(key) = run_key(&items[i]) else {
                self.emit(&items[i..i + 1], None).await?;
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
                    .find(|&b| b <= left && b * per <= MAX_PARAMS)
                    .unwrap_or(1);
                self.emit(&items[k..k + size], Some(&key)).await?;
                k += size;
            }
            i = j;
        }
        Ok(())
    }

    /// One statement for `items` (all of one shape when `key` is given).
    async fn emit(&mut self, items: &[Queued], key: Option<&RunKey>) -> Result<()> {
        let first = &items[0];
        let kind = match (&first.change, first.rel.full) {
            (Change::Insert { .. }, _) => Kind::Insert,
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
        let shape = ShapeKey {
            relation: first.rel.oid,
            kind,
            mask,
            rows: items.len() as u16,
        };
        let mut origin = first.origin.clone();
        origin.rows = items.len() as u32;
        origin.commit_lsn = items
            .iter()
            .map(|q| q.origin.commit_lsn)
            .max()
            .unwrap_or_default();
        self.queue(&first.rel, shape, &formats, &params, origin)
            .await
    }
}
