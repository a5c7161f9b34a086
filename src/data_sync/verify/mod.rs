//! `pgdog verify`: is the destination the source, resharded? Answered at
//! one consistent point while the move keeps streaming and the source
//! keeps taking writes.
//!
//! 1. A temporary slot on every source shard exports a snapshot that sees
//!    exactly the transactions committed before its consistent point L.
//! 2. The move's apply is held at L on every source shard ([`barrier`]):
//!    the running `data-sync` does it when there is one (in this process or
//!    another), else verify streams from the slot itself up to L.
//! 3. Every destination shard exports a snapshot while the apply is held,
//!    then apply goes on.
//! 4. Every published table is read with COPY on every source shard that
//!    holds its rows and on every destination shard, in parallel, and its
//!    rows hashed in pgdog ([`hash`]): per destination shard, the count and
//!    sum of the source rows the sharding function puts there against the
//!    shard's own, and the rows the shard holds that belong elsewhere.
//! 5. `--detail` narrows each differing table down to keys ([`detail`]).
//!
//! [`barrier`]: super::barrier

mod detail;
mod hash;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pgdog_protocol::Lsn;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::net::replication::SnapshotAction;

use super::barrier::Hold;
use super::catalog::TableName;
use super::copy::pool::ServerCopy;
use super::ctx::{default_parallel, Ctx};
use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::on_move::{self, OnMove};
use super::options::Options;
use super::plan::{Plan, TablePlan};
use super::preflight;
use super::progress::{Phase, Task, VerifyItem};
use super::snapshot::{self, SharedSnapshot};

pub use detail::KeyDiffs;
use hash::{Side, Sums};

/// What to verify, beyond the move.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only these tables (`name` or `schema.name`); empty: all of them.
    pub tables: Vec<String>,
    /// Narrow differing tables down to keys.
    pub detail: bool,
}

/// One table on one destination shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardResult {
    pub dest_shard: usize,
    /// Source rows the sharding function puts on this shard.
    pub source_rows: u64,
    pub dest_rows: u64,
    /// Rows here that belong on another shard.
    pub misplaced: u64,
    pub checksum_equal: bool,
}

impl ShardResult {
    pub fn equal(&self) -> bool {
        self.checksum_equal && self.source_rows == self.dest_rows && self.misplaced == 0
    }

    /// What differs, for people.
    pub fn describe(&self) -> String {
        if self.equal() {
            return "equal".into();
        }
        let mut what = Vec::new();
        if self.source_rows != self.dest_rows {
            what.push(format!(
                "{} rows on the source, {} here",
                self.source_rows, self.dest_rows
            ));
        }
        if self.misplaced > 0 {
            what.push(format!("{} rows belong on another shard", self.misplaced));
        }
        if !self.checksum_equal && self.source_rows == self.dest_rows {
            what.push("same count, different rows".into());
        }
        format!("DIFFERS: {}", what.join("; "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableResult {
    pub table: TableName,
    pub shards: Vec<ShardResult>,
    pub detail: Option<KeyDiffs>,
}

impl TableResult {
    pub fn equal(&self) -> bool {
        self.shards.iter().all(ShardResult::equal)
    }
}

/// Everything verify found.
#[derive(Debug, Clone)]
pub struct Report {
    pub tables: Vec<TableResult>,
    /// The source LSN compared at, per source shard.
    pub lsns: Vec<Lsn>,
    /// How long the apply was held.
    pub held: Duration,
    /// Whether verify streamed from the slot itself (no data-sync ran).
    pub applied_itself: bool,
}

impl Report {
    pub fn equal(&self) -> bool {
        self.tables.iter().all(TableResult::equal)
    }
}

/// How long the sessions have to stop at a transaction boundary.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long they have to apply up to the verify LSN.
const HOLD_TIMEOUT: Duration = Duration::from_secs(600);

/// Verify the move `opts` names; `task` ends done (whatever was found)
/// or failed.
pub async fn run(
    config: Arc<Config>,
    opts: &Options,
    request: &Request,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Report> {
    on_move::whole(task, async {
        run_in(&OnMove::open(&config, opts, task, shutdown)?, request).await
    })
    .await
}

/// [`run`] as one step of a longer task (a cutover): `on.task` does not end.
pub async fn run_in(on: &OnMove<'_>, request: &Request) -> Result<Report> {
    let (endpoints, slot) = (&on.endpoints, &on.slot);
    let (task, shutdown) = (on.task, on.shutdown);
    let (config, opts) = (on.config, on.opts);
    let findings = tokio::select! {
        f = preflight::run(endpoints, &opts.publication, slot, preflight::Intent::Inspect {
            command: "pgdog verify",
            temporary_slot: true,
        }) => f?,
        _ = shutdown.cancelled() => return Err(DataSyncError::Stopped),
    };
    let mut plan = findings.plan.clone();
    let tables = select_tables(&plan, &request.tables)?;
    // Every table must be copied everywhere: a copy still running is not
    // a difference worth reporting.
    for &ti in &tables {
        let t = &plan.tables[ti];
        for (d, done) in findings.finished.iter().enumerate() {
            for s in 0..plan.source_shards() {
                if t.from_source(s) && !done.contains_key(&(s, t.table.name.clone())) {
                    return Err(DataSyncError::preflight(
                        format!(
                            "table {} from source shard {s} is not copied to destination shard {d} yet (slot \"{slot}\")",
                            t.table.name
                        ),
                        "let the move's copy finish (SHOW TABLE_COPIES), then verify",
                    ));
                }
            }
        }
    }
    preflight::refresh_dest_tables(endpoints, &mut plan).await?;

    task.set_phase(Phase::Verifying);
    let point = consistent_point(endpoints, &findings, &plan, slot, task, shutdown).await?;
    let Point {
        sources,
        dests,
        lsns,
        held,
        applied_itself,
    } = point;
    let result = compare(
        config, &plan, &tables, &sources, &dests, request, task, shutdown,
    )
    .await;
    for s in sources.into_iter().chain(dests) {
        s.finish().await;
    }
    let tables = result?;
    Ok(Report {
        tables,
        lsns,
        held,
        applied_itself,
    })
}

/// Plan indexes of the tables asked for.
fn select_tables(plan: &Plan, names: &[String]) -> Result<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..plan.tables.len()).collect());
    }
    let mut out = Vec::new();
    for n in names {
        let found: Vec<usize> = plan
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                let name = &t.table.name;
                *n == name.name || *n == format!("{}.{}", name.schema, name.name)
            })
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(DataSyncError::preflight(
                format!(
                    "--table {n}: no such table in publication \"{}\"",
                    plan.publication
                ),
                "name a published table, as name or schema.name",
            ));
        }
        out.extend(found);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The snapshots verify reads: per source shard and per destination shard.
struct Point {
    sources: Vec<ServerCopy>,
    dests: Vec<ServerCopy>,
    lsns: Vec<Lsn>,
    held: Duration,
    applied_itself: bool,
}

async fn consistent_point(
    endpoints: &Endpoints,
    findings: &preflight::Findings,
    plan: &Plan,
    slot: &str,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Point> {
    let n = plan.source_shards();
    // Who streams this move now? A slot in use is a running data-sync.
    let mut active = Vec::with_capacity(n);
    for s in 0..n {
        let mut conn = endpoints.connect_source(s, false).await?;
        active.push(
            preflight::slot_info(&mut conn, slot)
                .await?
                .and_then(|i| i.active_pid),
        );
        conn.close().await;
    }
    let running = active.iter().any(Option::is_some);
    let own_stream = CancellationToken::new();
    let mut streamer = None;
    if running {
        let pids: Vec<String> = active.iter().flatten().map(|p| p.to_string()).collect();
        info!(
            slot,
            "a data-sync streams this move (WAL sender pid {} on the source): verify holds it at one LSN",
            pids.join(", ")
        );
    } else {
        info!(
            slot,
            "no data-sync streams this move: verify applies from the slot itself"
        );
        let ctx = Arc::new(
            Ctx::for_stream(
                endpoints.clone(),
                plan.clone(),
                task.clone(),
                own_stream.clone(),
                findings,
            )
            .await?,
        );
        streamer = Some(tokio::spawn(super::stream::run(ctx)));
    }
    let id = format!("pid {} task {}", std::process::id(), task.id);
    let hold = hold_and_snapshot(endpoints, plan, slot, &id, task, shutdown);
    let result = match streamer.take() {
        None => hold.await,
        // verify's own stream failing ends the wait at once, with its
        // error (its hold rows expire by themselves).
        Some(mut h) => tokio::select! {
            r = hold => {
                streamer = Some(h);
                r
            }
            joined = &mut h => {
                Err(match joined {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => DataSyncError::State(
                        "verify's own stream of the move ended before it reached the verify LSN".into(),
                    ),
                    Err(e) => DataSyncError::State(format!("verify's own stream panicked: {e}")),
                })
            }
        },
    };
    if let Some(h) = streamer {
        own_stream.cancel();
        if let Ok(Err(e)) = h.await {
            // A schema change replayed as the stream stopped is the next
            // data-sync's to plan for; the rows were compared before it.
            if result.is_ok() && !matches!(e, DataSyncError::SchemaChanged { .. }) {
                return Err(e);
            }
        }
    }
    let (sources, dests, lsns, held) = result?;
    Ok(Point {
        sources,
        dests,
        lsns,
        held,
        applied_itself: !running,
    })
}

type Snapshots = (Vec<ServerCopy>, Vec<ServerCopy>, Vec<Lsn>, Duration);

/// Pause the move, take the source snapshots, hold the move at them, take
/// the destination snapshots, let the move go. The hold is withdrawn on
/// every path.
async fn hold_and_snapshot(
    endpoints: &Endpoints,
    plan: &Plan,
    slot: &str,
    id: &str,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Snapshots> {
    let mut hold = Hold::begin(endpoints, slot, id).await?;
    let started = Instant::now();
    let result = async {
        hold.wait(
            "paused",
            PAUSE_TIMEOUT,
            &format!("verify: pausing the move of slot \"{slot}\" at a transaction boundary"),
            shutdown,
        )
        .await?;
        let mut sources: Vec<ServerCopy> = Vec::new();
        let mut lsns = Vec::new();
        for s in 0..plan.source_shards() {
            // The slot creation waits for the transactions running on the
            // server; the hold must not expire meanwhile.
            let snap = {
                let create = source_snapshot(endpoints, s, task);
                tokio::pin!(create);
                loop {
                    tokio::select! {
                        r = &mut create => break r?,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => hold.beat().await?,
                        _ = shutdown.cancelled() => return Err(DataSyncError::Stopped),
                    }
                }
            };
            lsns.push(snap.lsn);
            sources.push(ServerCopy::new(snap, endpoints.source(s)));
        }
        hold.hold_at(&lsns).await?;
        let reached = hold
            .wait(
                "held",
                HOLD_TIMEOUT,
                &format!("verify: applying the move of slot \"{slot}\" up to the verify LSN"),
                shutdown,
            )
            .await?;
        // A session that went past its LSN (a hold that expired while
        // verify was stalled) would make the destination newer than the
        // source snapshot: refuse rather than report false differences.
        // (Transactions that commit at or after the LSN are not in the
        // snapshot.)
        if let Some(s) = (0..lsns.len()).find(|&s| reached[s] >= lsns[s]) {
            return Err(DataSyncError::State(format!(
                "verify: source shard {s} of the move had applied a transaction committed at {}, not before the verify LSN {} (did the hold expire?); run verify again",
                reached[s], lsns[s]
            )));
        }
        info!(?lsns, ?reached, "the move is held at the verify LSN");
        let mut dests = Vec::new();
        for d in 0..plan.dest_shards() {
            let mut conn = endpoints.connect_dest(d).await?;
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            let rows = conn.query("SELECT pg_export_snapshot()").await?;
            let name = rows
                .first()
                .and_then(|r| r.text(0))
                .ok_or_else(|| {
                    DataSyncError::State(format!(
                        "pg_export_snapshot() returned nothing on destination shard {d}"
                    ))
                })?
                .to_string();
            let snap =
                SharedSnapshot::exported(conn, name, lsns.first().copied().unwrap_or_default());
            dests.push(ServerCopy::new(snap, endpoints.dest(d)));
        }
        Ok::<_, DataSyncError>((sources, dests, lsns))
    }
    .await;
    let held = started.elapsed();
    let released = hold.release().await;
    let (sources, dests, lsns) = result?;
    released?;
    info!(held_ms = held.as_millis() as u64, "the move goes on");
    Ok((sources, dests, lsns, held))
}

/// A temporary slot on source shard `s` exporting its snapshot, then a
/// logical message past it, so that a stream of an idle source still
/// shows it has passed the slot's consistent point.
async fn source_snapshot(
    endpoints: &Endpoints,
    s: usize,
    task: &Arc<Task>,
) -> Result<SharedSnapshot> {
    let mut repl = endpoints.connect_source(s, true).await?;
    let primary = endpoints.source(s);
    let what = format!("source shard {s} ({}:{})", primary.host, primary.port);
    let name = format!("pgdog_verify_{}_{}_{s}", std::process::id(), task.id);
    let created = snapshot::create_slot(
        &mut repl,
        &primary,
        &name,
        true,
        SnapshotAction::Export,
        task,
        &what,
    )
    .await?;
    let snap = SharedSnapshot::new(repl, &created, task, s)?;
    let mut conn = endpoints.connect_source(s, false).await?;
    conn.query_text(
        "SELECT pg_logical_emit_message(false, 'pgdog', $1)",
        &[&format!("verify at {}", snap.lsn)],
    )
    .await?;
    conn.close().await;
    Ok(snap)
}

/// One COPY read of one table on one server.
struct Job {
    table: usize,
    side: Side,
    item: Arc<VerifyItem>,
}

/// One read per table and source shard it is copied from, and one per
/// destination shard; each table's destination reads, by plan index, where
/// its result is shown.
fn reads(
    plan: &Plan,
    tables: &[usize],
    task: &Task,
) -> (Vec<Job>, HashMap<usize, Vec<Arc<VerifyItem>>>) {
    let (n, m) = (plan.source_shards(), plan.dest_shards());
    let mut jobs = Vec::new();
    // Each table's destination reads, by plan index: where its result goes.
    let mut dest_items: HashMap<usize, Vec<Arc<VerifyItem>>> = HashMap::new();
    for &ti in tables {
        let t = &plan.tables[ti];
        for s in (0..n).filter(|&s| t.from_source(s)) {
            let item =
                task.add_verify_item(VerifyItem::new(&t.table.name, "source", s, t.table.bytes));
            jobs.push(Job {
                table: ti,
                side: Side::Source(s),
                item,
            });
        }
        let per_shard = if t.dest.is_some() {
            t.table.bytes / m as u64
        } else {
            t.table.bytes
        };
        for d in 0..m {
            let item =
                task.add_verify_item(VerifyItem::new(&t.table.name, "destination", d, per_shard));
            dest_items.entry(ti).or_default().push(item.clone());
            jobs.push(Job {
                table: ti,
                side: Side::Dest(d),
                item,
            });
        }
    }
    (jobs, dest_items)
}

/// Per table (by plan index), per destination shard: what the source
/// holds for the shard, and what the shard holds with its misplaced rows.
struct Tally {
    expected: Vec<Vec<Sums>>,
    found: Vec<Vec<(Sums, u64)>>,
}

/// Per table: the source's sums per destination shard, and each shard's
/// own with its misplaced rows.
fn tally(
    results: Vec<Result<(usize, Side, hash::Read)>>,
    tables: usize,
    m: usize,
) -> Result<Tally> {
    // Per table: the source's sums per destination shard, each shard's own.
    let mut expected: Vec<Vec<Sums>> = vec![vec![Sums::default(); m]; tables];
    let mut found: Vec<Vec<(Sums, u64)>> = vec![vec![(Sums::default(), 0); m]; tables];
    for r in results {
        let (ti, side, read) = r?;
        match side {
            Side::Source(_) => {
                if read.sums.len() == m {
                    for (d, s) in read.sums.iter().enumerate() {
                        expected[ti][d].add(s);
                    }
                } else if let Some(all) = read.sums.first() {
                    // Every destination shard holds the whole table.
                    for e in expected[ti].iter_mut() {
                        e.add(all);
                    }
                }
            }
            Side::Dest(d) => {
                if let Some(s) = read.sums.first() {
                    found[ti][d].0.add(s);
                }
                found[ti][d].1 += read.misplaced;
            }
        }
    }
    Ok(Tally { expected, found })
}

/// With `--detail`: the keys that differ in a table whose sums differ.
async fn detail_of(
    t: &TablePlan,
    result: &TableResult,
    sources: &[ServerCopy],
    dests: &[ServerCopy],
    m: usize,
) -> Result<KeyDiffs> {
    let n = sources.len();
    let differing: HashSet<usize> = result
        .shards
        .iter()
        .filter(|s| !s.equal())
        .map(|s| s.dest_shard)
        .collect();
    let sharded = t.dest.is_some() && m > 1;
    let sides = detail::Sides {
        sources: (0..n)
            .filter(|&s| t.from_source(s))
            .map(|s| &sources[s])
            .collect(),
        // A sharded table is compared against all its shards at
        // once; a full copy on each shard against each differing one.
        dests: (0..m)
            .filter(|d| sharded || differing.contains(d))
            .map(|d| (d, &dests[d]))
            .collect(),
    };
    let mut diffs = KeyDiffs::default();
    if sharded {
        diffs = detail::narrow(t, &sides, m).await?;
    } else {
        for one in &sides.dests {
            let single = detail::Sides {
                sources: sides.sources.clone(),
                dests: vec![*one],
            };
            let d = detail::narrow(t, &single, m).await?;
            diffs.missing.extend(d.missing);
            diffs.extra.extend(d.extra);
            diffs.changed.extend(d.changed);
            diffs.note = diffs.note.or(d.note);
        }
    }
    Ok(diffs)
}

#[allow(clippy::too_many_arguments)]
async fn compare(
    config: &Config,
    plan: &Plan,
    tables: &[usize],
    sources: &[ServerCopy],
    dests: &[ServerCopy],
    request: &Request,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Vec<TableResult>> {
    let (n, m) = (plan.source_shards(), plan.dest_shards());
    let (mut jobs, dest_items) = reads(plan, tables, task);
    // Largest first, so the last reads are short.
    jobs.sort_by_key(|j| std::cmp::Reverse(plan.tables[j.table].table.bytes));
    let parallel = config
        .general
        .resharding_parallel_copies
        .unwrap_or_else(default_parallel);
    let limits: Vec<Semaphore> = (0..n + m).map(|_| Semaphore::new(parallel)).collect();
    let results: Vec<Result<(usize, Side, hash::Read)>> = futures::stream::iter(jobs)
        .map(|job| {
            let limits = &limits;
            async move {
                let (server, limit) = match job.side {
                    Side::Source(s) => (&sources[s], &limits[s]),
                    Side::Dest(d) => (&dests[d], &limits[n + d]),
                };
                let _permit = limit
                    .acquire()
                    .await
                    .map_err(|_| DataSyncError::Stopped)?;
                job.item.set_state("reading");
                let mut reader = server.reader().await?;
                let read = tokio::select! {
                    r = hash::read(&mut reader.conn, &plan.tables[job.table], job.side, m, &job.item) => r,
                    _ = shutdown.cancelled() => Err(DataSyncError::Stopped),
                };
                match read {
                    Ok(r) => {
                        server.give_back(reader).await;
                        job.item.set_state("read");
                        Ok((job.table, job.side, r))
                    }
                    Err(e) => {
                        reader.conn.close().await;
                        job.item.set_state("failed");
                        Err(e)
                    }
                }
            }
        })
        .buffer_unordered(parallel * (n + m))
        .collect()
        .await;

    let Tally { expected, found } = tally(results, plan.tables.len(), m)?;
    let mut out = Vec::new();
    for &ti in tables {
        let t = &plan.tables[ti];
        let shards: Vec<ShardResult> = (0..m)
            .map(|d| ShardResult {
                dest_shard: d,
                source_rows: expected[ti][d].rows,
                dest_rows: found[ti][d].0.rows,
                misplaced: found[ti][d].1,
                checksum_equal: expected[ti][d] == found[ti][d].0,
            })
            .collect();
        for (s, item) in shards.iter().zip(dest_items.get(&ti).into_iter().flatten()) {
            item.set_result(s.describe());
        }
        let mut result = TableResult {
            table: t.table.name.clone(),
            shards,
            detail: None,
        };
        if request.detail && !result.equal() {
            result.detail = Some(detail_of(t, &result, sources, dests, m).await?);
        }
        out.push(result);
    }
    Ok(out)
}

/// The report as a table, for people; with `--detail`, the keys.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .tables
        .iter()
        .map(|t| t.table.to_string().len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<width$} {:>5} {:>12} {:>12} {:>9}  {}\n",
        "table", "shard", "source rows", "dest rows", "misplaced", "result"
    ));
    for t in &report.tables {
        for s in &t.shards {
            out.push_str(&format!(
                "{:<width$} {:>5} {:>12} {:>12} {:>9}  {}\n",
                t.table.to_string(),
                s.dest_shard,
                s.source_rows,
                s.dest_rows,
                s.misplaced,
                s.describe()
            ));
        }
        if let Some(d) = &t.detail {
            for (kind, list) in [
                ("missing", &d.missing),
                ("extra", &d.extra),
                ("changed", &d.changed),
                ("misplaced", &d.misplaced),
            ] {
                for (shard, key) in list {
                    out.push_str(&format!(
                        "  {kind:<9} {} shard {shard} key {key}\n",
                        t.table
                    ));
                }
            }
            if let Some(n) = &d.note {
                out.push_str(&format!("  note: {} {n}\n", t.table));
            }
        }
    }
    let lsns: Vec<String> = report.lsns.iter().map(|l| l.to_string()).collect();
    out.push_str(&format!(
        "compared at source LSN {} (apply held {} ms{})\n",
        lsns.join(", "),
        report.held.as_millis(),
        if report.applied_itself {
            ", applied by verify: no data-sync was running"
        } else {
            ""
        }
    ));
    let differing = report.tables.iter().filter(|t| !t.equal()).count();
    if differing == 0 {
        out.push_str(&format!("all {} tables equal\n", report.tables.len()));
    } else {
        out.push_str(&format!(
            "{differing} of {} tables differ\n",
            report.tables.len()
        ));
    }
    out
}
