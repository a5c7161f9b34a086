//! The copy in key-range chunks, while the stream runs. Each chunk is
//! read in a short REPEATABLE READ transaction of its own (its snapshot
//! recorded as that transaction's first statement), written to every
//! destination shard that needs it in one transaction per shard together
//! with its record in `pgdog.copy_chunks`, and entered in the chunk book
//! ([`super::super::chunks::book`]) that the stream decides by. A large table is split
//! into key ranges worked by several workers at once; the rows of a chunk
//! follow a target time per chunk, not a fixed count.
//!
//! Resuming takes what the destinations recorded: the gaps between their
//! chunks are what is left, so a run killed at 90% reads at most one chunk
//! per worker again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog_protocol::Lsn;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::super::catalog::TableName;
use super::super::chunks::book::{Chunk, Range, Snapshot, TableBook};
use super::super::chunks::key::{Bound, ChunkKey, KeyKind, KeyValue};
use super::super::ctx::Ctx;
use super::super::error::{DataSyncError, Result};
use super::super::plan::TablePlan;
use super::super::progress::{CopyState, TableCopy};
use super::super::retry::{Retrier, RetryPolicy, Wait};
use super::super::state::{self, StoredChunk};
use super::chunk::copy_stream;
use super::pool::DestPool;
use crate::net::Connection;

/// Rows in a table's first chunk, before the rate is known.
const FIRST_CHUNK_ROWS: u64 = 5_000;
/// Sampled keys per range when a table is split.
const SAMPLES_PER_RANGE: u64 = 100;

/// The tables copied in chunks and their books; the tables that are not,
/// with why.
#[derive(Debug, Default)]
pub struct Prepared {
    pub books: Vec<Arc<TableBook>>,
    /// Tables copied whole in one snapshot, with why.
    pub whole: Vec<(usize, String)>,
}

/// Decide which tables go in chunks, and load what every destination
/// shard recorded of them. A finished table keeps a book only while the
/// stream may still meet a transaction one of its chunks saw. Without
/// `copying` (a stream alone: `--replicate-only`, verify or cutover
/// streaming a move), a table no chunk of which was ever written has no
/// book: its changes are applied, as for any table not copied.
pub async fn prepare(
    ctx: &Ctx,
    finished: &[HashMap<(usize, TableName), Lsn>],
    copying: bool,
) -> Result<Prepared> {
    let plan = &ctx.plan;
    let (n, m) = (plan.source_shards(), plan.dest_shards());
    let binary = plan.tables.iter().all(|t| t.table.binary_safe());
    let mut stored: Vec<Vec<StoredChunk>> = Vec::with_capacity(m);
    let mut applied: Vec<HashMap<usize, Lsn>> = Vec::with_capacity(m);
    for d in 0..m {
        let mut conn = ctx.endpoints.connect_dest(d).await?;
        stored.push(state::chunks(&mut conn, &plan.slot).await?);
        applied.push(state::applied_positions(&mut conn, &plan.slot).await?);
        conn.close().await;
    }
    let mut out = Prepared::default();
    for (ti, t) in plan.tables.iter().enumerate() {
        let key = match ChunkKey::of(&t.table, binary) {
            Ok(k) => k,
            Err(why) => {
                out.whole.push((ti, why));
                continue;
            }
        };
        for s in (0..n).filter(|&s| t.from_source(s)) {
            let name = &t.table.name;
            let unfinished = (0..m).any(|d| !finished[d].contains_key(&(s, name.clone())));
            let mut needed = unfinished && copying;
            let book = TableBook::new(ti, s, key.clone(), m);
            for d in 0..m {
                let seen = applied[d].get(&s).copied().unwrap_or(Lsn::ZERO);
                for c in stored[d]
                    .iter()
                    .filter(|c| c.source_shard == s && &c.table == name)
                {
                    let chunk = stored_chunk(&key, c)?;
                    // A copy in chunks left unfinished: its uncovered keys
                    // have no rows to change.
                    needed |= chunk.lsn > seen || unfinished;
                    book.load(d, chunk);
                }
            }
            if needed {
                out.books.push(Arc::new(book));
            }
        }
    }
    Ok(out)
}

fn stored_chunk(key: &ChunkKey, c: &StoredChunk) -> Result<Chunk> {
    let bad = || {
        DataSyncError::State(format!(
            "pgdog.copy_chunks of {} has a bound or snapshot pgdog cannot read: start the move over (--cleanup)",
            c.table
        ))
    };
    let bound = |b: &Option<(Vec<String>, Vec<String>)>| -> Result<Option<Bound>> {
        let Some((literals, canonical)) = b else {
            return Ok(None);
        };
        if canonical.len() != key.columns.len() || literals.len() != key.columns.len() {
            return Err(bad());
        }
        let k = key
            .columns
            .iter()
            .zip(canonical)
            .map(|(col, v)| col.kind.parse(v))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(Some(Bound {
            literals: literals.clone(),
            key: k,
        }))
    };
    Ok(Chunk {
        range: Range {
            lo: bound(&c.lo)?,
            hi: bound(&c.hi)?,
        },
        snapshot: Snapshot::parse(&c.snapshot).ok_or_else(bad)?,
        lsn: c.lsn,
    })
}

/// A piece of work: keys of `range` for destination shards `dests`.
#[derive(Debug, Clone)]
struct Item {
    range: Range,
    dests: Vec<usize>,
}

/// What `dests` still lack of `within`, as items: the same pieces for
/// every shard in the usual case; after a run stopped between two shards'
/// commits, a piece for the shards that lack it, then the rest.
fn items(book: &TableBook, within: &Range, dests: &[usize]) -> Vec<Item> {
    let gaps: Vec<(usize, Vec<Range>)> = dests.iter().map(|&d| (d, book.gaps(d))).collect();
    // Every bound where some shard's coverage changes, inside `within`.
    let mut points: Vec<Bound> = Vec::new();
    let inside = |b: &Bound| within.contains(&b.key) && within.hi.as_ref() != Some(b);
    for (_, ranges) in &gaps {
        for r in ranges {
            for b in [&r.lo, &r.hi].into_iter().flatten() {
                if inside(b) && !points.iter().any(|p| p.key == b.key) {
                    points.push(b.clone());
                }
            }
        }
    }
    points.sort_by(|a, b| a.key.cmp(&b.key));
    let mut bounds: Vec<Option<Bound>> = vec![within.lo.clone()];
    bounds.extend(points.into_iter().map(Some));
    bounds.push(within.hi.clone());
    let mut out: Vec<Item> = Vec::new();
    for w in bounds.windows(2) {
        let piece = Range {
            lo: w[0].clone(),
            hi: w[1].clone(),
        };
        let who: Vec<usize> = gaps
            .iter()
            .filter(|(_, ranges)| ranges.iter().any(|g| covers(g, &piece)))
            .map(|(d, _)| *d)
            .collect();
        if who.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.dests == who && last.range.hi == piece.lo => {
                last.range.hi = piece.hi;
            }
            _ => out.push(Item {
                range: piece,
                dests: who,
            }),
        }
    }
    out
}

/// Whether gap `g` holds all of `piece` (pieces never straddle a bound).
fn covers(g: &Range, piece: &Range) -> bool {
    let lo_ok = match (&g.lo, &piece.lo) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a.key <= b.key,
    };
    let hi_ok = match (&g.hi, &piece.hi) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.key <= a.key,
    };
    lo_ok && hi_ok
}

/// One chunked copy: a table from one source shard.
struct Job {
    book: Arc<TableBook>,
    dests: Vec<usize>,
    server: crate::config::Database,
    on_replica: bool,
    progress: Arc<TableCopy>,
}

/// Copy every chunked table that some destination shard still lacks,
/// `parallel` workers per server read, and record each finished table on
/// its destination shards.
pub async fn run(
    ctx: Arc<Ctx>,
    prepared: &Prepared,
    finished: &[HashMap<(usize, TableName), Lsn>],
) -> Result<()> {
    let m = ctx.plan.dest_shards();
    let mut jobs = Vec::new();
    for book in &prepared.books {
        let t = &ctx.plan.tables[book.table];
        let s = book.source_shard;
        let dests: Vec<usize> = (0..m)
            .filter(|&d| !finished[d].contains_key(&(s, t.table.name.clone())))
            .collect();
        let (server, on_replica) = match ctx.copy_sources.get(s) {
            Some(c) if !c.servers.is_empty() => {
                let i = (book.table + s) % c.servers.len();
                (c.servers[i].clone(), c.replicas)
            }
            _ => (ctx.plan.source.shards[s].primary.clone(), false),
        };
        let progress = ctx.task.add_copy(TableCopy::new(
            &t.table.name,
            s,
            format!("{}:{}", server.host, server.port),
            t.table.estimated_rows,
            t.table.bytes,
        ));
        progress.set_method(format!("chunks by {}", book.key.row(None)));
        if dests.is_empty() {
            progress.set_state(CopyState::Skipped);
            continue;
        }
        jobs.push(Job {
            book: book.clone(),
            dests,
            server,
            on_replica,
            progress,
        });
    }
    if jobs.is_empty() {
        return Ok(());
    }
    // Largest first: a fair semaphore hands out permits in that order.
    jobs.sort_by_key(|j| std::cmp::Reverse(ctx.plan.tables[j.book.table].table.bytes));
    let parallel = ctx.parallel.max(1);
    info!(
        tables = jobs.len(),
        parallel, "copying in chunks while the stream runs"
    );
    let pool = Arc::new(DestPool::new(m));
    let mut permits: HashMap<(String, u16), Arc<Semaphore>> = HashMap::new();
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let sem = permits
            .entry((job.server.host.clone(), job.server.port))
            .or_insert_with(|| Arc::new(Semaphore::new(parallel)))
            .clone();
        let (ctx, pool) = (ctx.clone(), pool.clone());
        set.spawn(async move {
            let r = copy_table(&ctx, &job, &sem, &pool).await;
            if r.is_err() {
                job.progress.set_state(CopyState::Failed);
                job.book.fail();
            }
            r
        });
    }
    let mut first_error = None;
    loop {
        let joined = tokio::select! {
            j = set.join_next() => j,
            // Stopped, or the stream failed: the chunks being written roll
            // back with their sessions.
            _ = ctx.shutdown.cancelled() => {
                set.abort_all();
                first_error.get_or_insert(DataSyncError::Stopped);
                break;
            }
        };
        let Some(joined) = joined else { break };
        let r = joined
            .unwrap_or_else(|e| Err(DataSyncError::State(format!("copy task panicked: {e}"))));
        if let Err(e) = r {
            if first_error.is_none() {
                set.abort_all();
                first_error = Some(e);
            }
        }
    }
    pool.close().await;
    first_error.map_or(Ok(()), Err)
}

/// Every range of one table, then its record on each destination shard.
async fn copy_table(ctx: &Ctx, job: &Job, sem: &Arc<Semaphore>, pool: &DestPool) -> Result<()> {
    let t = &ctx.plan.tables[job.book.table];
    let s = job.book.source_shard;
    job.progress.set_state(CopyState::Copying);
    let ranges = ranges(ctx, job).await?;
    let workers = ranges.into_iter().map(|range| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await.map_err(|_| DataSyncError::Stopped)?;
            copy_range(ctx, job, &range, pool).await
        }
    });
    let rows: Vec<u64> = futures::future::try_join_all(workers).await?;
    let routing = t.routing_key();
    for &d in &job.dests {
        if !job.book.gaps(d).is_empty() {
            return Err(DataSyncError::State(format!(
                "{} from source shard {s}: the chunks do not cover every key on destination shard {d}",
                t.table.name
            )));
        }
        let mut conn = ctx.endpoints.connect_dest(d).await?;
        // LSN 0: every later change is decided by the chunks' snapshots.
        state::record_copy(
            &mut conn,
            &ctx.plan.slot,
            s,
            &t.table.name,
            Lsn::ZERO,
            0,
            &routing,
        )
        .await?;
        conn.close().await;
    }
    job.progress.set_state(CopyState::Done);
    info!(
        table = %t.table.name,
        source_shard = s,
        rows = rows.iter().sum::<u64>(),
        chunks = job.progress.chunks.load(Ordering::Relaxed),
        "table copied in chunks"
    );
    Ok(())
}

/// The key ranges of a table worked at once: what is left of it, split
/// at sampled keys when it is large and nothing of it is copied yet.
async fn ranges(ctx: &Ctx, job: &Job) -> Result<Vec<Range>> {
    let t = &ctx.plan.tables[job.book.table];
    let whole = Range { lo: None, hi: None };
    let untouched = job
        .dests
        .iter()
        .all(|&d| job.book.gaps(d) == std::slice::from_ref(&whole));
    let want = t
        .table
        .bytes
        .checked_div(ctx.chunk_bytes)
        .map_or(1, |k| k.clamp(1, ctx.parallel.max(1) as u64));
    if !untouched {
        // Resumed: what any shard lacks, as separate ranges.
        let gaps: Vec<Range> = job.dests.iter().flat_map(|&d| job.book.gaps(d)).collect();
        return Ok(union(gaps));
    }
    if want <= 1 {
        return Ok(vec![whole]);
    }
    let rows = t.table.estimated_rows.max(1) as f64;
    let percent = (100.0 * (SAMPLES_PER_RANGE * want) as f64 / rows).clamp(0.0001, 100.0);
    let key = &job.book.key;
    let mut conds = Vec::new();
    if let Some(f) = &t.table.row_filter {
        conds.push(format!("({f})"));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM (SELECT {} FROM {}{} TABLESAMPLE SYSTEM ({percent:.6}){filter}) k ORDER BY {}",
        key.bound_select(),
        key_columns(key),
        only(t),
        t.table.name.quoted(),
        key.row(Some("k")).trim_matches(|c| c == '(' || c == ')')
    );
    let mut conn = Connection::connect(&ctx.endpoints.source_server(&job.server)).await?;
    let rows = conn.query(&sql).await?;
    conn.close().await;
    let samples: Vec<Bound> = rows.iter().filter_map(|r| key.bound_from_row(r)).collect();
    let mut points: Vec<Bound> = Vec::new();
    for i in 1..want {
        let at = (samples.len() as u64 * i / want) as usize;
        if let Some(b) = samples.get(at) {
            if points.last().is_none_or(|p| p.key < b.key) {
                points.push(b.clone());
            }
        }
    }
    let mut out = Vec::with_capacity(points.len() + 1);
    let mut lo = None;
    for p in points {
        out.push(Range {
            lo: lo.take(),
            hi: Some(p.clone()),
        });
        lo = Some(p);
    }
    out.push(Range { lo, hi: None });
    Ok(out)
}

/// The union of `ranges`, as ranges that neither overlap nor touch.
fn union(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_by(|a, b| match (&a.lo, &b.lo) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.key.cmp(&y.key),
    });
    let mut out: Vec<Range> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            // Starts at or before the end of the last one: one range.
            Some(last)
                if match (&last.hi, &r.lo) {
                    (None, _) => true,
                    (Some(_), None) => true,
                    (Some(hi), Some(lo)) => lo.key <= hi.key,
                } =>
            {
                let extends = match (&last.hi, &r.hi) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(a), Some(b)) => b.key > a.key,
                };
                if extends {
                    last.hi = r.hi;
                }
            }
            _ => out.push(r),
        }
    }
    out
}

fn only(t: &super::super::plan::TablePlan) -> &'static str {
    if t.table.relkind == 'p' {
        ""
    } else {
        "ONLY "
    }
}

fn key_columns(key: &ChunkKey) -> String {
    key.row(None)
        .trim_start_matches('(')
        .trim_end_matches(')')
        .to_string()
}

/// One range, chunk after chunk, with retries: a retry starts from what
/// the destinations hold. The rows copied.
async fn copy_range(ctx: &Ctx, job: &Job, range: &Range, pool: &DestPool) -> Result<u64> {
    let mut retrier = Retrier::new(RetryPolicy::COPY);
    let mut rows_per_chunk = FIRST_CHUNK_ROWS;
    let mut copied = 0u64;
    loop {
        let mut worker = match Worker::open(ctx, job).await {
            Ok(w) => w,
            Err(e) => {
                let wait = retrier.after(&e).ok_or(e)?;
                retrier.wait(wait, &ctx.shutdown).await?;
                continue;
            }
        };
        let mut result = Ok(());
        for item in items(&job.book, range, &job.dests) {
            result = worker
                .item(ctx, job, &item, pool, &mut rows_per_chunk, &mut copied)
                .await;
            if result.is_err() {
                break;
            }
        }
        worker.close().await;
        match result {
            Ok(()) => return Ok(copied),
            // The table changed on the source: wait for the change to
            // reach the destination shards, then the move plans again.
            Err(DataSyncError::ShapeChanged {
                source_shard,
                columns,
                ..
            }) => {
                let t = &ctx.plan.tables[job.book.table];
                return super::shape::wait_for_destinations(ctx, t, source_shard, &columns)
                    .await
                    .map(|()| copied);
            }
            Err(e) => {
                let Some(wait) = retrier.after(&e) else {
                    return Err(DataSyncError::Copy {
                        table: ctx.plan.tables[job.book.table].table.name.to_string(),
                        source_shard: job.book.source_shard,
                        error: Box::new(e),
                    });
                };
                ctx.task.count_error(e.kind());
                warn!(
                    table = %ctx.plan.tables[job.book.table].table.name,
                    "chunk failed, retrying in {:.1}s: {e}",
                    wait.as_secs_f64()
                );
                retrier.wait(wait, &ctx.shutdown).await?;
            }
        }
    }
}

/// The sessions of one worker: the server it reads, and (reading a
/// standby) the primary whose WAL position the standby must reach.
struct Worker {
    source: Connection,
    primary: Option<Connection>,
}

impl Worker {
    async fn open(ctx: &Ctx, job: &Job) -> Result<Worker> {
        let source = Connection::connect(&ctx.endpoints.source_server(&job.server)).await?;
        let primary = if job.on_replica {
            Some(
                ctx.endpoints
                    .connect_source(job.book.source_shard, false)
                    .await?,
            )
        } else {
            None
        };
        Ok(Worker { source, primary })
    }

    async fn close(self) {
        self.source.close().await;
        if let Some(p) = self.primary {
            p.close().await;
        }
    }

    /// Every chunk of one item.
    async fn item(
        &mut self,
        ctx: &Ctx,
        job: &Job,
        item: &Item,
        pool: &DestPool,
        rows_per_chunk: &mut u64,
        copied: &mut u64,
    ) -> Result<()> {
        let mut lo = item.range.lo.clone();
        loop {
            let started = Instant::now();
            let wanted = Range {
                lo: lo.clone(),
                hi: item.range.hi.clone(),
            };
            let Some(id) = job.book.start(&item.dests, &wanted) else {
                // The stream copies the table again from scratch and plans
                // the move again: nothing more of this copy is written.
                ctx.shutdown.cancelled().await;
                return Err(DataSyncError::Stopped);
            };
            let mut dests = pool.take(ctx, &item.dests).await?;
            let r = self
                .chunk(ctx, job, id, &wanted, &mut dests, *rows_per_chunk)
                .await;
            match r {
                Ok((hi, rows)) => {
                    pool.give_back(dests);
                    *copied += rows;
                    job.progress.chunks.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = &hi {
                        job.progress.set_cursor(h.literals.join(", "));
                    }
                    // The next chunk aims at the target time.
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    let target = ctx.chunk_seconds.max(0.05);
                    let ideal = (rows.max(1) as f64 * target / secs) as u64;
                    *rows_per_chunk = ideal
                        .clamp(*rows_per_chunk / 4, *rows_per_chunk * 4)
                        .clamp(500, 50_000_000);
                    if hi == item.range.hi {
                        return Ok(());
                    }
                    lo = hi;
                }
                Err(e) => {
                    job.book.abandon(id);
                    return Err(e);
                }
            }
        }
    }

    /// The chunk's end: the key `rows` keys past `range.lo`, or the
    /// range's end.
    async fn chunk_end(
        &mut self,
        t: &TablePlan,
        key: &ChunkKey,
        range: &Range,
        rows: u64,
    ) -> Result<Option<Bound>> {
        let mut conds = key.range_conds(range.lo.as_ref(), range.hi.as_ref());
        if let Some(f) = &t.table.row_filter {
            conds.push(format!("({f})"));
        }
        let bound_sql = format!(
            "SELECT {} FROM (SELECT {} FROM {}{} WHERE {} ORDER BY {} OFFSET {} LIMIT 1) k",
            key.bound_select(),
            key_columns(key),
            only(t),
            t.table.name.quoted(),
            if conds.is_empty() {
                "true".to_string()
            } else {
                conds.join(" AND ")
            },
            key_columns(key),
            rows.saturating_sub(1)
        );
        let found = self.source.query(&bound_sql).await?;
        Ok(match found.first() {
            Some(r) => Some(key.bound_from_row(r).ok_or_else(|| {
                DataSyncError::State(format!(
                    "the chunk bound of {} came back unreadable",
                    t.table.name
                ))
            })?),
            None => range.hi.clone(),
        })
    }

    /// One chunk from `range.lo`: its snapshot, its end, its rows, its
    /// commit on each shard. Its end and rows.
    async fn chunk(
        &mut self,
        ctx: &Ctx,
        job: &Job,
        id: u64,
        range: &Range,
        dests: &mut [(usize, Connection)],
        rows: u64,
    ) -> Result<(Option<Bound>, u64)> {
        let t = &ctx.plan.tables[job.book.table];
        let key = &job.book.key;
        let (snapshot, lsn) = self.snapshot(ctx, job).await?;
        if let Some(columns) =
            super::shape::changed(&mut self.source, &ctx.plan.publication, t).await?
        {
            self.source.execute("ROLLBACK").await?;
            return Err(DataSyncError::ShapeChanged {
                table: t.table.name.to_string(),
                source_shard: job.book.source_shard,
                columns,
            });
        }
        let hi = self.chunk_end(t, key, range, rows).await?;
        let chunk_range = Range {
            lo: range.lo.clone(),
            hi: hi.clone(),
        };
        job.book.narrow(id, &chunk_range);
        for (_, c) in dests.iter_mut() {
            c.execute("BEGIN").await?;
        }
        let copy_sql = t.copy_out_sql(true, key.range_conds(range.lo.as_ref(), hi.as_ref()));
        let result = copy_stream(
            &mut self.source,
            &copy_sql,
            t,
            dests,
            ctx.plan.dest_shards(),
            &job.progress,
        )
        .await?;
        fail_point("read");
        // The snapshot is no longer needed: let the source's horizon go.
        self.source.execute("COMMIT").await?;
        let bound_text = |b: &Option<Bound>| {
            b.as_ref().map(|b| {
                let canonical = b
                    .key
                    .iter()
                    .zip(&key.columns)
                    .map(|(v, c)| canonical_text(v, c.kind))
                    .collect();
                (b.literals.clone(), canonical)
            })
        };
        let dests_len = dests.len();
        for (i, (d, c)) in dests.iter_mut().enumerate() {
            let stored = StoredChunk {
                source_shard: job.book.source_shard,
                table: t.table.name.clone(),
                lo: bound_text(&chunk_range.lo),
                hi: bound_text(&chunk_range.hi),
                snapshot: snapshot.to_text(),
                lsn,
                rows: result.per_dest.get(i).copied().unwrap_or(0),
            };
            c.execute(&format!(
                "{}; COMMIT",
                state::record_chunk_sql(&ctx.plan.slot, &stored)
            ))
            .await?;
            if i == 0 && dests_len > 1 {
                fail_point("between-commits");
            }
            job.book.done(
                *d,
                id,
                Chunk {
                    range: chunk_range.clone(),
                    snapshot: snapshot.clone(),
                    lsn,
                },
            );
        }
        Ok((hi, result.rows))
    }

    /// Begin the chunk's transaction and take its snapshot, as its first
    /// statement, with the WAL position after it. A snapshot in which a
    /// transaction the stream may have skipped still runs is let go and
    /// taken again.
    async fn snapshot(&mut self, ctx: &Ctx, job: &Job) -> Result<(Snapshot, Lsn)> {
        let mut wait = Wait::new(
            "the chunk's snapshot to see every committed transaction",
            None,
            Duration::from_millis(5),
        );
        let mut warned = false;
        loop {
            // A standby must first replay what the stream may have seen.
            if let Some(primary) = &mut self.primary {
                use super::super::replicas::{query_lsn, wait_replayed};
                let at = query_lsn(primary, "SELECT pg_current_wal_flush_lsn()::text").await?;
                wait_replayed(&mut self.source, at, job.book.source_shard).await?;
            }
            // The table is locked before the snapshot is taken (LOCK takes
            // none): a rewrite of it (ALTER TABLE ... TYPE, a volatile
            // default, VACUUM FULL, CLUSTER) is not MVCC-safe, and a
            // snapshot older than one would read it empty. One that runs
            // is waited for; none starts until the chunk commits.
            let lock = format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; LOCK TABLE {} IN ACCESS SHARE MODE;",
                ctx.plan.tables[job.book.table].table.name.quoted()
            );
            let sql = if self.primary.is_some() {
                format!(
                    "{lock} SELECT pg_current_snapshot()::text, 0, pg_last_wal_replay_lsn()::text"
                )
            } else {
                format!(
                    "{lock} SELECT pg_current_snapshot()::text,
                        (SELECT count(*) FROM pg_snapshot_xip(pg_current_snapshot()) x WHERE pg_xact_status(x) = 'committed'),
                        pg_current_wal_insert_lsn()::text"
                )
            };
            let rows = self.source.query(&sql).await?;
            let row = rows.first();
            let snapshot = row.and_then(|r| r.text(0)).and_then(Snapshot::parse);
            let committed: u64 = row
                .and_then(|r| r.text(1))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let lsn = row.and_then(|r| r.text(2)).and_then(Lsn::parse);
            let (Some(snapshot), Some(lsn)) = (snapshot, lsn) else {
                self.source.execute("ROLLBACK").await?;
                return Err(DataSyncError::State(
                    "the source returned an unreadable snapshot for a chunk".into(),
                ));
            };
            if committed == 0 && job.book.snapshot_ok(&snapshot) {
                return Ok((snapshot, lsn));
            }
            self.source.execute("ROLLBACK").await?;
            if !warned && wait.elapsed() > Duration::from_secs(10) {
                warned = true;
                warn!(
                    table = %ctx.plan.tables[job.book.table].table.name,
                    "a chunk has waited 10 s for committed transactions to become visible on the source (a synchronous standby that does not answer?)"
                );
            }
            wait.tick(
                "transactions committed but not visible yet",
                Some(&ctx.shutdown),
            )
            .await?;
        }
    }
}

/// Crash tests: `PGDOG_CHUNK_CRASH_AT=<point>:<n>` ends the process at
/// once (no cleanup runs, as with SIGKILL) the `n`th time it reaches
/// `point`: `read` (a chunk's rows are on the destinations, nothing is
/// committed), `between-commits` (one destination shard committed it,
/// the others not), `hold` (the stream waits for a chunk being written),
/// `ddl` (a captured schema change ran on the shards, uncommitted) and
/// `ddl-committed` (it committed, before the move plans again).
pub fn fail_point(point: &str) {
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Ok(spec) = std::env::var("PGDOG_CHUNK_CRASH_AT") else {
        return;
    };
    let (at, n) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
    if at != point {
        return;
    }
    let n: u64 = n.parse().unwrap_or(1);
    if HITS.fetch_add(1, Ordering::Relaxed) + 1 >= n {
        eprintln!("PGDOG_CHUNK_CRASH_AT={spec}: ending the process here");
        std::process::abort();
    }
}

/// The canonical text of a key value, as [`KeyKind::parse`](super::super::chunks::key::KeyKind::parse)
/// reads it back.
fn canonical_text(v: &KeyValue, kind: KeyKind) -> String {
    match (v, kind) {
        (KeyValue::Int(i), _) => i.to_string(),
        (KeyValue::Bytes(b), KeyKind::Uuid) => b.iter().map(|x| format!("{x:02x}")).collect(),
        (KeyValue::Bytes(b), _) => String::from_utf8_lossy(b).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::chunks::key::{KeyKind, KeyValue};
    use super::*;

    fn bound(v: i64) -> Bound {
        Bound {
            literals: vec![v.to_string()],
            key: vec![KeyValue::Int(v)],
        }
    }

    fn book() -> TableBook {
        super::super::super::chunks::book::test_book()
    }

    fn chunk(lo: Option<i64>, hi: Option<i64>) -> Chunk {
        Chunk {
            range: Range {
                lo: lo.map(bound),
                hi: hi.map(bound),
            },
            snapshot: Snapshot::parse("1:1:").unwrap(),
            lsn: Lsn(1),
        }
    }

    #[test]
    fn a_chunk_committed_on_one_shard_only_is_redone_there_alone() {
        let b = book();
        let whole = Range { lo: None, hi: None };
        assert_eq!(items(&b, &whole, &[0, 1]).len(), 1);
        b.load(0, chunk(None, Some(10)));
        b.load(1, chunk(None, Some(10)));
        b.load(0, chunk(Some(10), Some(20)));
        let got = items(&b, &whole, &[0, 1]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].dests, [1]);
        assert_eq!(got[0].range.lo, Some(bound(10)));
        assert_eq!(got[0].range.hi, Some(bound(20)));
        assert_eq!(got[1].dests, [0, 1]);
        assert_eq!(got[1].range.lo, Some(bound(20)));
        assert_eq!(got[1].range.hi, None);
        // Within one range of a split table.
        let part = Range {
            lo: Some(bound(5)),
            hi: Some(bound(15)),
        };
        let got = items(&b, &part, &[0, 1]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].dests, [1]);
        assert_eq!(got[0].range.lo, Some(bound(10)));
        assert_eq!(got[0].range.hi, Some(bound(15)));
    }

    #[test]
    fn gaps_of_several_shards_merge() {
        let r = |lo: Option<i64>, hi: Option<i64>| Range {
            lo: lo.map(bound),
            hi: hi.map(bound),
        };
        // Shard 0 lacks (-inf, 10] and (20, inf); shard 1, which missed
        // the commit of (10, 20], lacks (-inf, 20] and (20, inf).
        let merged = union(vec![
            r(None, Some(10)),
            r(Some(20), None),
            r(None, Some(20)),
            r(Some(20), None),
        ]);
        assert_eq!(merged, [r(None, None)]);
        let apart = union(vec![
            r(Some(30), Some(40)),
            r(None, Some(10)),
            r(Some(35), Some(50)),
        ]);
        assert_eq!(apart, [r(None, Some(10)), r(Some(30), Some(50))]);
    }

    #[test]
    fn canonical_texts_read_back() {
        let u = KeyKind::Uuid;
        let v = u.parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(u.parse(&canonical_text(&v, u)), Some(v));
        let t = KeyKind::Text;
        let v = t.parse("héllo").unwrap();
        assert_eq!(t.parse(&canonical_text(&v, t)), Some(v));
    }
}
