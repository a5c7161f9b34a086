//! The chunk book: for each table copied in key-range chunks, what every
//! destination shard holds (chunks done, each with the snapshot it was
//! read in) and what is being read now. Chunk workers write it; the
//! stream of the same source shard reads it to decide each change:
//!
//! - key in a chunk done on that shard: apply, unless the transaction is
//!   visible to the chunk's snapshot (its effect is in the copied rows);
//! - key in a chunk being read: hold until it is written, then decide;
//! - key not copied yet: skip (a later chunk reads the row as it is then).
//!
//! A transaction is visible to a snapshot `xmin:xmax:xip` when its
//! top-level xid is below `xmin`, or below `xmax` and not in `xip`
//! (`pg_current_snapshot()`, taken as the chunk transaction's first
//! statement, is that transaction's snapshot). A transaction that commits
//! at or after the chunk's `lsn` (the WAL insert position read right after
//! the snapshot) cannot be visible to it, so the snapshot only matters for
//! commits before `lsn`.
//!
//! A skip is right only if the chunk that later reads the row sees the
//! skipped transaction. The stream decodes a commit once it is flushed,
//! possibly before the transaction leaves the server's list of running
//! ones (a synchronous standby's acknowledgement, or a moment's
//! scheduling). So a chunk's snapshot is refused, and taken again, while
//! its running transactions include one the stream skipped (kept here) or
//! one the server already marks committed (for skips made before a
//! restart).

use std::collections::BTreeSet;
use std::sync::Mutex;

use pgdog_protocol::Lsn;

use super::key::{Bound, ChunkKey, Key};

/// A snapshot as `pg_current_snapshot()` prints it: `xmin:xmax:xip,...`
/// with 64-bit transaction ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    /// Sorted.
    pub xip: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let mut xip = parts
            .next()?
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        xip.sort_unstable();
        (xmin <= xmax).then_some(Snapshot { xmin, xmax, xip })
    }

    pub fn to_text(&self) -> String {
        let xip: Vec<String> = self.xip.iter().map(u64::to_string).collect();
        format!("{}:{}:{}", self.xmin, self.xmax, xip.join(","))
    }

    /// The 64-bit id of a 32-bit xid (as pgoutput sends it): the one
    /// nearest `xmax`, before or after it (a transaction that started
    /// after the snapshot has an xid at or above `xmax`). Ids in use are
    /// always within 2^31 of each other.
    pub fn full_xid(&self, xid: u32) -> u64 {
        let diff = xid.wrapping_sub(self.xmax as u32) as i32;
        self.xmax.wrapping_add_signed(i64::from(diff))
    }

    /// Whether the (committed, top-level) transaction `xid` is visible.
    pub fn sees(&self, xid: u32) -> bool {
        let x = self.full_xid(xid);
        x < self.xmin || (x < self.xmax && self.xip.binary_search(&x).is_err())
    }
}

/// Keys in `(lo, hi]`; `None` is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub lo: Option<Bound>,
    pub hi: Option<Bound>,
}

impl Range {
    pub fn contains(&self, k: &Key) -> bool {
        self.lo.as_ref().is_none_or(|lo| *k > lo.key)
            && self.hi.as_ref().is_none_or(|hi| *k <= hi.key)
    }

    /// Whether `self` ends before `k` (every key in it is below `k`).
    fn below(&self, k: &Key) -> bool {
        self.hi.as_ref().is_some_and(|hi| hi.key < *k)
    }
}

/// A chunk written to a destination shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub range: Range,
    pub snapshot: Snapshot,
    /// WAL position right after the snapshot: commits from here on are
    /// not in the chunk.
    pub lsn: Lsn,
}

/// What a change of a chunked table needs on one destination shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Apply,
    Skip,
    /// Wait for chunk `id` to be written there, then decide again.
    Hold(u64),
}

#[derive(Debug, Default)]
struct Dest {
    /// Sorted by range, not overlapping.
    done: Vec<Chunk>,
    /// Chunks being read and written: (id, range).
    in_flight: Vec<(u64, Range)>,
    /// Every key is copied and nothing is being written: the latest WAL
    /// position of its chunks (a change committed from there on applies,
    /// whatever its key).
    settled: Option<Lsn>,
}

impl Dest {
    fn chunk_of(&self, k: &Key) -> Option<&Chunk> {
        let i = self.done.partition_point(|c| c.range.below(k));
        self.done.get(i).filter(|c| c.range.contains(k))
    }

    fn settle(&mut self) {
        let covered = self.done.first().is_some_and(|c| c.range.lo.is_none())
            && self.done.last().is_some_and(|c| c.range.hi.is_none())
            && self
                .done
                .windows(2)
                .all(|w| match (&w[0].range.hi, &w[1].range.lo) {
                    (Some(hi), Some(lo)) => hi.key == lo.key,
                    _ => false,
                });
        self.settled = (covered && self.in_flight.is_empty())
            .then(|| self.done.iter().map(|c| c.lsn).max().unwrap_or_default());
    }

    fn insert(&mut self, chunk: Chunk) {
        let i = self
            .done
            .partition_point(|c| match (&c.range.hi, &chunk.range.lo) {
                (Some(hi), Some(lo)) => hi.key <= lo.key,
                (Some(_), None) => false,
                (None, _) => false,
            });
        self.done.insert(i, chunk);
        self.settle();
    }
}

#[derive(Debug, Default)]
struct State {
    dests: Vec<Dest>,
    /// Xids of transactions whose changes were skipped as not copied yet.
    skipped: BTreeSet<u32>,
    next_id: u64,
    /// The table's copy ended badly: a held change must not wait for it.
    failed: bool,
    /// No chunk starts any more (the stream is about to copy the table
    /// again from scratch).
    halted: bool,
}

/// One table from one source shard.
#[derive(Debug)]
pub struct TableBook {
    pub table: usize,
    pub source_shard: usize,
    pub key: ChunkKey,
    state: Mutex<State>,
    /// Bumped at every change of the state, for whoever waits on it.
    version: tokio::sync::watch::Sender<u64>,
}

impl TableBook {
    pub fn new(table: usize, source_shard: usize, key: ChunkKey, dest_shards: usize) -> TableBook {
        let state = State {
            dests: (0..dest_shards).map(|_| Dest::default()).collect(),
            ..Default::default()
        };
        TableBook {
            table,
            source_shard,
            key,
            state: Mutex::new(state),
            version: tokio::sync::watch::channel(0).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Whether every destination shard holds all of the table and a change
    /// committed at `commit_lsn` is past every chunk's snapshot: it applies
    /// wherever its row belongs, no key to look up.
    pub fn settled(&self, commit_lsn: Lsn) -> bool {
        self.state()
            .dests
            .iter()
            .all(|d| d.settled.is_some_and(|lsn| commit_lsn >= lsn))
    }

    /// What a change of the row with key `key`, by transaction `xid`
    /// committed at `commit_lsn`, needs on destination shard `d`.
    pub fn decide(&self, d: usize, key: &Key, xid: u32, commit_lsn: Lsn) -> Decision {
        let mut st = self.state();
        let Some(dest) = st.dests.get(d) else {
            return Decision::Apply;
        };
        if let Some(c) = dest.chunk_of(key) {
            return if commit_lsn >= c.lsn || !c.snapshot.sees(xid) {
                Decision::Apply
            } else {
                Decision::Skip
            };
        }
        if let Some((id, _)) = dest.in_flight.iter().find(|(_, r)| r.contains(key)) {
            return Decision::Hold(*id);
        }
        st.skipped.insert(xid);
        Decision::Skip
    }

    /// Wait until chunk `id` is no longer being written to shard `d`
    /// (written, or given up).
    pub async fn wait(&self, d: usize, id: u64) {
        let mut rx = self.version.subscribe();
        loop {
            {
                let st = self.state();
                let busy = st
                    .dests
                    .get(d)
                    .is_some_and(|dest| dest.in_flight.iter().any(|(i, _)| *i == id));
                if !busy || st.failed {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until nothing is being written to shard `d`.
    pub async fn wait_idle(&self, d: usize) {
        let mut rx = self.version.subscribe();
        loop {
            {
                let st = self.state();
                if st.failed || st.dests.get(d).is_none_or(|dest| dest.in_flight.is_empty()) {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// For a TRUNCATE by `xid` committed at `commit_lsn`: `None` when no
    /// chunk on shard `d` saw it (every copied row predates it: truncate
    /// them all); else the ranges of the chunks that did not see it, whose
    /// rows alone it removes (the others were read after it).
    pub fn unseen(&self, d: usize, xid: u32, commit_lsn: Lsn) -> Option<Vec<Range>> {
        let st = self.state();
        let dest = st.dests.get(d)?;
        let seen = |c: &Chunk| commit_lsn < c.lsn && c.snapshot.sees(xid);
        if !dest.done.iter().any(seen) {
            return None;
        }
        Some(
            dest.done
                .iter()
                .filter(|c| !seen(c))
                .map(|c| c.range.clone())
                .collect(),
        )
    }

    /// A chunk of `range` starts for destination shards `dests`: from now
    /// on changes of its keys wait for it there. Its id.
    pub fn start(&self, dests: &[usize], range: &Range) -> Option<u64> {
        let mut st = self.state();
        if st.halted {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        for &d in dests {
            if let Some(dest) = st.dests.get_mut(d) {
                dest.in_flight.push((id, range.clone()));
                dest.settled = None;
            }
        }
        drop(st);
        self.bump();
        Some(id)
    }

    /// Start no chunk from now on; the ones being written finish.
    pub fn halt(&self) {
        self.state().halted = true;
        self.bump();
    }

    /// Chunk `id` now covers only `range` (its end found): changes of the
    /// keys after it no longer wait for it.
    pub fn narrow(&self, id: u64, range: &Range) {
        let mut st = self.state();
        for dest in st.dests.iter_mut() {
            for (i, r) in dest.in_flight.iter_mut() {
                if *i == id {
                    *r = range.clone();
                }
            }
        }
        drop(st);
        self.bump();
    }

    /// Whether a chunk may read with `snapshot`: none of its running
    /// transactions is one the stream skipped. Skipped transactions below
    /// its `xmin` are finished for every later snapshot: forgotten.
    pub fn snapshot_ok(&self, snapshot: &Snapshot) -> bool {
        let mut st = self.state();
        st.skipped
            .retain(|x| snapshot.full_xid(*x) >= snapshot.xmin);
        !st.skipped
            .iter()
            .any(|x| snapshot.xip.binary_search(&snapshot.full_xid(*x)).is_ok())
    }

    /// Chunk `id` is committed on shard `d` as `chunk`.
    pub fn done(&self, d: usize, id: u64, chunk: Chunk) {
        let mut st = self.state();
        if let Some(dest) = st.dests.get_mut(d) {
            dest.in_flight.retain(|(i, _)| *i != id);
            dest.insert(chunk);
        }
        drop(st);
        self.bump();
    }

    /// Chunk `id` failed: nothing of it is on the shards that were still
    /// waiting for it.
    pub fn abandon(&self, id: u64) {
        let mut st = self.state();
        for dest in st.dests.iter_mut() {
            dest.in_flight.retain(|(i, _)| *i != id);
            dest.settle();
        }
        drop(st);
        self.bump();
    }

    /// The table's copy stopped for good (an error ends the pass): changes
    /// held for it go on (and fail or stop with the pass).
    pub fn fail(&self) {
        self.state().failed = true;
        self.bump();
    }

    /// A chunk an earlier run wrote to shard `d`.
    pub fn load(&self, d: usize, chunk: Chunk) {
        if let Some(dest) = self.state().dests.get_mut(d) {
            dest.insert(chunk);
        }
    }

    /// The parts of the key space shard `d` still lacks, in order.
    pub fn gaps(&self, d: usize) -> Vec<Range> {
        let st = self.state();
        let Some(dest) = st.dests.get(d) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut from: Option<Bound> = None;
        let mut at_start = true;
        for c in &dest.done {
            let starts_here = match (&c.range.lo, at_start, &from) {
                (None, true, _) => true,
                (Some(lo), false, Some(f)) => lo.key == f.key,
                _ => false,
            };
            if !starts_here {
                out.push(Range {
                    lo: if at_start { None } else { from.clone() },
                    hi: c.range.lo.clone(),
                });
            }
            match &c.range.hi {
                Some(hi) => {
                    from = Some(hi.clone());
                    at_start = false;
                }
                None => return out,
            }
        }
        out.push(Range {
            lo: if at_start { None } else { from },
            hi: None,
        });
        out
    }

    /// Chunks done on shard `d`, and the rows they hold are unknown here:
    /// how many.
    pub fn chunks_done(&self, d: usize) -> usize {
        self.state().dests.get(d).map_or(0, |dest| dest.done.len())
    }
}

/// A book of a table keyed by one bigint column, over two destination
/// shards.
#[cfg(test)]
pub(crate) fn test_book() -> TableBook {
    use super::key::{KeyColumn, KeyKind};
    let key = ChunkKey {
        columns: vec![KeyColumn {
            name: "id".into(),
            type_name: "bigint".into(),
            type_oid: 20,
            kind: KeyKind::Int,
        }],
    };
    TableBook::new(0, 0, key, 2)
}

#[cfg(test)]
mod tests {
    use super::super::key::KeyValue;
    use super::*;

    fn k(v: i64) -> Key {
        vec![KeyValue::Int(v)]
    }

    fn bound(v: i64) -> Bound {
        Bound {
            literals: vec![v.to_string()],
            key: k(v),
        }
    }

    fn book() -> TableBook {
        test_book()
    }

    fn snap(text: &str) -> Snapshot {
        Snapshot::parse(text).unwrap()
    }

    #[test]
    fn snapshots_parse_and_see() {
        let s = snap("100:105:101,103");
        assert_eq!(s.to_text(), "100:105:101,103");
        assert!(s.sees(99) && s.sees(100) && s.sees(102) && s.sees(104));
        assert!(!s.sees(101) && !s.sees(103) && !s.sees(105) && !s.sees(200));
        assert_eq!(Snapshot::parse("5:4:"), None);
        assert_eq!(Snapshot::parse("x"), None);
        // Across an epoch: 32-bit xids map next to xmax.
        let e = snap(&format!("{}:{}:", (1u64 << 32) + 5, (1u64 << 32) + 10));
        assert_eq!(e.full_xid(7), (1 << 32) + 7);
        assert_eq!(e.full_xid(12), (1 << 32) + 12);
        assert_eq!(e.full_xid(u32::MAX), u32::MAX as u64);
        assert!(e.sees(u32::MAX) && e.sees(8) && !e.sees(12));
        // Just after xmax, in the next epoch.
        let w = snap(&format!("{}:{}:", u32::MAX as u64 - 3, u32::MAX as u64 - 1));
        assert_eq!(w.full_xid(2), (1 << 32) + 2);
        assert!(!w.sees(2) && w.sees(u32::MAX - 5));
    }

    #[test]
    fn decisions_follow_the_chunks() {
        let b = book();
        let first = Range {
            lo: None,
            hi: Some(bound(100)),
        };
        // Nothing copied: skip, and remember the transaction.
        assert_eq!(b.decide(0, &k(5), 50, Lsn(10)), Decision::Skip);
        let id = b.start(&[0, 1], &first).unwrap();
        assert_eq!(b.decide(0, &k(5), 51, Lsn(11)), Decision::Hold(id));
        assert_eq!(b.decide(1, &k(100), 51, Lsn(11)), Decision::Hold(id));
        assert_eq!(b.decide(0, &k(101), 51, Lsn(11)), Decision::Skip);
        // A snapshot in which the skipped 50 still runs is refused.
        assert!(!b.snapshot_ok(&snap("40:60:50")));
        assert!(b.snapshot_ok(&snap("40:60:52")));
        let chunk = Chunk {
            range: first.clone(),
            snapshot: snap("40:60:52"),
            lsn: Lsn(20),
        };
        b.done(0, id, chunk.clone());
        // Visible to the chunk: skip; not visible, or committed after its
        // LSN: apply.
        assert_eq!(b.decide(0, &k(5), 45, Lsn(15)), Decision::Skip);
        assert_eq!(b.decide(0, &k(5), 52, Lsn(15)), Decision::Apply);
        assert_eq!(b.decide(0, &k(5), 61, Lsn(15)), Decision::Apply);
        assert_eq!(b.decide(0, &k(5), 45, Lsn(20)), Decision::Apply);
        // Still being written to shard 1.
        assert_eq!(b.decide(1, &k(5), 45, Lsn(15)), Decision::Hold(id));
        b.done(1, id, chunk);
        assert_eq!(b.decide(1, &k(5), 45, Lsn(15)), Decision::Skip);
        // Gaps: everything after 100 on both shards.
        assert_eq!(
            b.gaps(0),
            [Range {
                lo: Some(bound(100)),
                hi: None
            }]
        );
    }

    /// A TRUNCATE (xid 50, committed at LSN 30) removes the rows of the
    /// chunks read before it, and keeps those of a chunk whose snapshot
    /// saw it (read after it).
    #[test]
    fn a_truncate_removes_only_rows_read_before_it() {
        let b = book();
        let chunk = |lo: Option<i64>, hi: Option<i64>, snapshot: &str, lsn: u64| Chunk {
            range: Range {
                lo: lo.map(bound),
                hi: hi.map(bound),
            },
            snapshot: snap(snapshot),
            lsn: Lsn(lsn),
        };
        // Nothing copied, or every chunk read before it: truncate all.
        assert_eq!(b.unseen(0, 50, Lsn(30)), None);
        b.load(0, chunk(None, Some(10), "40:45:", 20));
        assert_eq!(b.unseen(0, 50, Lsn(30)), None);
        // One chunk read after it (its snapshot sees 50, its LSN is later).
        b.load(0, chunk(Some(10), Some(20), "51:51:", 35));
        // One read while it ran: 50 among its running transactions.
        b.load(0, chunk(Some(20), None, "45:52:50", 40));
        let left = b.unseen(0, 50, Lsn(30)).expect("some chunks saw it");
        assert_eq!(
            left,
            [
                Range {
                    lo: None,
                    hi: Some(bound(10))
                },
                Range {
                    lo: Some(bound(20)),
                    hi: None
                }
            ]
        );
        // Shard 1 holds nothing: nothing to spare.
        assert_eq!(b.unseen(1, 50, Lsn(30)), None);
    }

    #[test]
    fn gaps_between_chunks() {
        let b = book();
        let c = |lo: Option<i64>, hi: Option<i64>| Chunk {
            range: Range {
                lo: lo.map(bound),
                hi: hi.map(bound),
            },
            snapshot: snap("10:10:"),
            lsn: Lsn(1),
        };
        assert_eq!(b.gaps(0), [Range { lo: None, hi: None }]);
        b.load(0, c(Some(10), Some(20)));
        b.load(0, c(Some(30), None));
        b.load(0, c(Some(20), Some(25)));
        assert_eq!(
            b.gaps(0),
            [
                Range {
                    lo: None,
                    hi: Some(bound(10))
                },
                Range {
                    lo: Some(bound(25)),
                    hi: Some(bound(30))
                }
            ]
        );
        assert!(!b.settled(Lsn(100)));
        b.load(0, c(None, Some(10)));
        b.load(0, c(Some(25), Some(30)));
        assert!(b.gaps(0).is_empty());
        // Shard 1 holds nothing yet: not settled.
        assert!(!b.settled(Lsn(100)));
        b.load(1, c(None, None));
        assert!(b.settled(Lsn(1)) && !b.settled(Lsn(0)));
        let id = b.start(&[1], &Range { lo: None, hi: None }).unwrap();
        assert!(!b.settled(Lsn(100)));
        b.abandon(id);
        assert!(b.settled(Lsn(100)));
        assert_eq!(b.chunks_done(0), 5);
        assert_eq!(b.decide(0, &k(26), 9, Lsn(0)), Decision::Skip);
    }
}
