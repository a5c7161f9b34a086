//! One COPY stream: rows read from a source with `COPY ... TO STDOUT
//! (FORMAT binary)`, each decoded in flight, its shard computed from the
//! sharding key, and written to that shard's `COPY ... FROM STDIN (FORMAT
//! binary)`. Memory is bounded by the read buffer and one write buffer per
//! destination: a slow destination stops the reading.

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use pgdog_protocol::copy_binary::{Encoder, TRAILER};

use crate::net::copy::CopyIn;
use crate::net::Connection;

use super::super::error::Result;
use super::super::plan::TablePlan;
use super::super::progress::TableCopy;
use super::rows::RowReader;

/// Result of one stream: rows read, and rows written per destination.
#[derive(Debug, Default)]
pub struct ChunkResult {
    pub rows: u64,
    pub per_dest: Vec<u64>,
}

/// Copy the rows `select` returns into `dests` (destination shard number,
/// connection), routing by `plan`. `dests` may be a subset of the shards
/// when an earlier run already filled the others; rows for those are
/// dropped here.
pub async fn copy_stream(
    source: &mut Connection,
    select: &str,
    plan: &TablePlan,
    dests: &mut [(usize, Connection)],
    dest_shards: usize,
    progress: &TableCopy,
) -> Result<ChunkResult> {
    let table = &plan.table;
    let binary = table.binary_safe();
    let copy_in_sql = format!(
        "COPY {} ({}) FROM STDIN{}",
        table.name.quoted(),
        table.column_list(),
        if binary { " (FORMAT binary)" } else { "" }
    );
    // Destination shard number -> index into `sinks`.
    let mut slot_of = vec![usize::MAX; dest_shards];
    for (i, (d, _)) in dests.iter().enumerate() {
        slot_of[*d] = i;
    }
    let mut sinks: Vec<CopyIn<'_>> = Vec::with_capacity(dests.len());
    let mut header = BytesMut::new();
    Encoder::header(&mut header);
    for (_, conn) in dests.iter_mut() {
        let mut sink = conn.copy_in(&copy_in_sql).await?;
        if binary {
            sink.write(&header);
        }
        sinks.push(sink);
    }

    let mut out = source.copy_out(select).await?;
    let mut reader = RowReader::new(binary);
    let routing = plan.dest.as_ref();
    let mut rows = 0u64;
    let mut pending_bytes = 0u64;
    let mut pending_rows = 0u64;
    loop {
        // Every row already read goes out before the next await.
        let got = reader
            .next_batch(&mut out, routing, |shard, row, end| {
                pending_rows += 1;
                route(&mut sinks, &slot_of, shard, row, end);
            })
            .await?;
        let Some(n) = got else { break };
        pending_bytes += n as u64;
        for sink in sinks.iter_mut() {
            sink.maybe_flush().await?;
        }
        // Publish progress in batches: atomics are cheap, not free.
        if pending_rows >= 1024 {
            progress.rows.fetch_add(pending_rows, Ordering::Relaxed);
            progress.bytes.fetch_add(pending_bytes, Ordering::Relaxed);
            rows += pending_rows;
            pending_rows = 0;
            pending_bytes = 0;
        }
    }
    reader.finish()?;
    progress.rows.fetch_add(pending_rows, Ordering::Relaxed);
    progress.bytes.fetch_add(pending_bytes, Ordering::Relaxed);
    rows += pending_rows;

    let mut per_dest = vec![0; dests_len(&slot_of)];
    for (i, mut sink) in sinks.into_iter().enumerate() {
        if binary {
            sink.write(TRAILER);
        }
        per_dest[i] = sink.finish().await?;
    }
    Ok(ChunkResult { rows, per_dest })
}

/// Send one row to its shard's sink (`None`: to every sink), followed by
/// `end` (the newline a text row was split on).
#[inline]
fn route(
    sinks: &mut [CopyIn<'_>],
    slot_of: &[usize],
    shard: Option<usize>,
    row: &[u8],
    end: &[u8],
) {
    match shard {
        Some(shard) => {
            // Shards that an earlier run already filled have no sink.
            if let Some(sink) = slot_of.get(shard).and_then(|&i| sinks.get_mut(i)) {
                sink.write(row);
                sink.write(end);
            }
        }
        None => {
            for sink in sinks.iter_mut() {
                sink.write(row);
                sink.write(end);
            }
        }
    }
}

fn dests_len(slot_of: &[usize]) -> usize {
    slot_of.iter().filter(|&&i| i != usize::MAX).count()
}
