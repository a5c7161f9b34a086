//! Reading one table on one server for verify: `COPY ... TO STDOUT` in the
//! server's verify snapshot, each row hashed in flight (xxh3, 128 bits) and
//! summed, so equal multisets of rows give equal sums in any order. Source
//! rows are summed per destination shard the sharding function picks;
//! destination rows are checked against the shard they sit on. Memory is
//! the read buffer, as for the copy.

use std::sync::atomic::Ordering;

use xxhash_rust::xxh3::xxh3_128;

use crate::net::Connection;

use super::super::copy::rows::RowReader;
use super::super::error::Result;
use super::super::plan::TablePlan;
use super::super::progress::VerifyItem;

/// A count and an order-independent sum of row hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub rows: u64,
    pub sum: u128,
}

impl Sums {
    #[inline]
    fn add_row(&mut self, row: &[u8]) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(xxh3_128(row));
    }

    pub fn add(&mut self, other: &Sums) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// Which server a read is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source(usize),
    Dest(usize),
}

/// What one read found.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Source: per destination shard the rows belong on (one entry when
    /// every destination shard holds the whole table). Destination: one
    /// entry, every row of the shard.
    pub sums: Vec<Sums>,
    /// Destination: rows the sharding function puts on another shard.
    pub misplaced: u64,
}

/// Read `plan`'s table on `conn` (already in the snapshot) as `side` of a
/// move to `dest_shards` shards.
pub async fn read(
    conn: &mut Connection,
    plan: &TablePlan,
    side: Side,
    dest_shards: usize,
    item: &VerifyItem,
) -> Result<Read> {
    let sql = plan.copy_out_sql(matches!(side, Side::Source(_)), Vec::new());
    let binary = plan.table.binary_safe();
    let routing = plan.dest.as_ref().filter(|_| dest_shards > 1);
    let buckets = match (side, routing) {
        (Side::Source(_), Some(_)) => dest_shards,
        _ => 1,
    };
    let mut sums = vec![Sums::default(); buckets];
    let mut misplaced = 0u64;
    // Where a row goes: its bucket, and whether it sits on the wrong shard.
    let mut place = |shard: Option<usize>| -> usize {
        match (side, shard) {
            (Side::Source(_), Some(s)) => s,
            (Side::Dest(d), Some(s)) => {
                if s != d {
                    misplaced += 1;
                }
                0
            }
            (_, None) => 0,
        }
    };
    let mut out = conn.copy_out(&sql).await?;
    let mut reader = RowReader::new(binary);
    let mut pending_rows = 0u64;
    loop {
        let mut rows = 0u64;
        let got = reader
            .next_batch(&mut out, routing, |shard, row, _| {
                rows += 1;
                sums[place(shard)].add_row(row);
            })
            .await?;
        let Some(n) = got else { break };
        pending_rows += rows;
        item.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if pending_rows >= 1024 {
            item.rows.fetch_add(pending_rows, Ordering::Relaxed);
            pending_rows = 0;
        }
    }
    reader.finish()?;
    item.rows.fetch_add(pending_rows, Ordering::Relaxed);
    Ok(Read { sums, misplaced })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_ignore_order_and_see_every_change() {
        let rows: [&[u8]; 3] = [b"1\ta", b"2\tb", b"3\tc"];
        let mut forward = Sums::default();
        for r in rows {
            forward.add_row(r);
        }
        let mut backward = Sums::default();
        for r in rows.iter().rev() {
            backward.add_row(r);
        }
        assert_eq!(forward, backward);
        let mut changed = Sums::default();
        for r in [b"1\ta".as_slice(), b"2\tB", b"3\tc"] {
            changed.add_row(r);
        }
        assert_eq!(changed.rows, forward.rows);
        assert_ne!(changed.sum, forward.sum);
        // A duplicate is not a different row.
        let mut twice = forward;
        twice.add_row(b"1\ta");
        assert_ne!(twice, forward);
        let mut split = Sums::default();
        let mut a = Sums::default();
        a.add_row(rows[0]);
        let mut b = Sums::default();
        b.add_row(rows[1]);
        b.add_row(rows[2]);
        split.add(&a);
        split.add(&b);
        assert_eq!(split, forward);
    }
}
