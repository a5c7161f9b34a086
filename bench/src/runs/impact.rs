//! Source impact: what a move costs the source while it copies a large
//! table under a steady write load. pgbench's tables at a scale whose copy
//! lasts a minute or more, pgbench writing at a fixed rate, moved 1→2 by
//! pgdog and 1→1 by a native subscription, each on fresh destinations.
//! Every half second the source is sampled:
//!
//! - the age of its xmin horizon, in seconds: the oldest `backend_xmin` of
//!   its sessions and `xmin` of its slots is the horizon;
//!   its age is how long ago the next transaction id passed it (from the
//!   samples' history of `pg_snapshot_xmax(pg_current_snapshot())`);
//! - the WAL its logical slots retain (`pg_current_wal_lsn()` minus each
//!   slot's `restart_lsn`, the largest);
//!
//! and at the end, how much `pgbench_accounts` grew (updates whose old
//! versions vacuum could not remove while the horizon was held).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{Cluster, ClusterOptions, PgInstall};
use pgdog::net::Connection;
use tokio::process::Command;

use crate::peers;
use crate::report::Report;
use crate::{Args, Result};

/// What the samples of one move found.
#[derive(Debug, Default, Clone, Copy)]
struct Impact {
    /// Seconds until every table was copied.
    copy: f64,
    /// Seconds until the destination had caught up with the source.
    caught_up: f64,
    /// Largest age of the source's xmin horizon, seconds.
    horizon: f64,
    /// Largest WAL retained by a logical slot, bytes.
    wal: u64,
    /// Growth of pgbench_accounts' heap during the move, bytes.
    growth: i64,
}

/// Samples the source every half second until dropped.
struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<std::result::Result<(f64, u64), String>>,
}

const HORIZON_SQL: &str = "
SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
       least(
         (SELECT min(backend_xmin::text::bigint) FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()),
         (SELECT min(xmin::text::bigint) FROM pg_replication_slots WHERE xmin IS NOT NULL)),
       coalesce((SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn))::bigint
                   FROM pg_replication_slots WHERE slot_type = 'logical'), 0)";

impl Sampler {
    fn start(source: &Cluster) -> Sampler {
        let opts = source.options("postgres", DATABASE);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut c = Connection::connect(&opts)
                .await
                .map_err(|e| e.to_string())?;
            // (when, next xid) of every sample: when the counter passed a
            // horizon is when that horizon's transactions began.
            let mut history: Vec<(Instant, i64)> = Vec::new();
            let (mut horizon_age, mut wal) = (0f64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let rows = c.query(HORIZON_SQL).await.map_err(|e| e.to_string())?;
                let now = Instant::now();
                let next: i64 = rows[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0);
                history.push((now, next));
                if let Some(h) = rows[0].text(1).and_then(|t| t.parse::<i64>().ok()) {
                    // Uses 32-bit xids from the views: fine within an epoch.
                    let h = h & 0xffff_ffff;
                    let since = history
                        .iter()
                        .find(|(_, x)| (x & 0xffff_ffff) > h)
                        .map(|(t, _)| *t)
                        .unwrap_or(now);
                    horizon_age = horizon_age.max(now.duration_since(since).as_secs_f64());
                }
                wal = wal.max(rows[0].text(2).and_then(|t| t.parse().ok()).unwrap_or(0));
            }
            c.close().await;
            Ok((horizon_age, wal))
        });
        Sampler { stop, handle }
    }

    async fn finish(self) -> Result<(f64, u64)> {
        let _ = self.stop.send(true);
        Ok(self.handle.await??)
    }
}

async fn scalar(c: &Cluster, sql: &str) -> Result<String> {
    let mut conn = c.connect(DATABASE).await?;
    let rows = conn.query(sql).await?;
    conn.close().await;
    Ok(rows
        .first()
        .and_then(|r| r.text(0))
        .unwrap_or("")
        .to_string())
}

async fn accounts_bytes(c: &Cluster) -> Result<i64> {
    Ok(scalar(c, "SELECT pg_relation_size('pgbench_accounts')")
        .await?
        .parse()
        .unwrap_or(0))
}

/// pgbench at a fixed rate on the source until killed.
fn load(pgbench: &Path, source: &Cluster, rate: u32, log: &Path) -> Result<tokio::process::Child> {
    let out = std::fs::File::create(log)?;
    Ok(Command::new(pgbench)
        .args(["-n", "-c", "2", "-j", "1", "-T", "3600", "-R"])
        .arg(rate.to_string())
        .args(["-U", "postgres", "-h", source.host(), "-p"])
        .arg(source.port().to_string())
        .arg(DATABASE)
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?)
}

/// Wait until `slot` (on the source) has confirmed everything written up
/// to now, within `slack` bytes (pgbench keeps writing).
async fn until_caught_up(source: &Cluster, slot: &str, slack: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let lag: String = scalar(
            source,
            &format!(
                "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), -1)::bigint FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
        )
        .await?;
        if let Ok(l) = lag.parse::<i64>() {
            if l >= 0 && (l as u64) <= slack {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("slot {slot} did not catch up within an hour").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The source-impact section: the same data, the same load, pgdog 1→2
/// then a native subscription 1→1, each sampled.
pub async fn run(
    args: &Args,
    install: &PgInstall,
    pgdog: &Path,
    report: &mut Report,
) -> Result<()> {
    let pgbench = super::pgbench()?;
    let options = ClusterOptions {
        install: Some(install.clone()),
        ..Default::default()
    }
    .setting("fsync", "on")
    .setting("synchronous_commit", "on")
    .setting("max_wal_size", "8GB")
    .setting("checkpoint_timeout", "30min")
    .setting("shared_buffers", "256MB")
    .setting("autovacuum_naptime", "5s")
    .setting("max_sync_workers_per_subscription", "2");
    let dir = std::env::temp_dir().join(format!("pgdog-bench-impact-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let setup = Setup {
        args,
        pgbench: &pgbench,
        pgdog,
        dir: &dir,
    };
    let mut figures = Vec::new();
    for (i, who) in ["pgdog 1→2", "native subscription 1→1"]
        .into_iter()
        .enumerate()
    {
        let (table_bytes, impact) = measure(&setup, &options, who, i).await?;
        figures.push((who, table_bytes, impact));
    }
    let _ = std::fs::remove_dir_all(&dir);
    report_impact(report, args, &figures);
    Ok(())
}

/// What every move of the section shares.
struct Setup<'a> {
    args: &'a Args,
    pgbench: &'a Path,
    pgdog: &'a Path,
    dir: &'a Path,
}

/// One move (`who`, the `index`th) on fresh servers under the load:
/// the bytes of pgbench_accounts before it, and what the samples found.
async fn measure(
    s: &Setup<'_>,
    options: &ClusterOptions,
    who: &str,
    index: usize,
) -> Result<(i64, Impact)> {
    // A fresh source each time: the same table, not the first run's
    // bloat.
    let fleet = pgdog::harness::Fleet::start(1, 2, options.clone()).await?;
    let source = &fleet.sources[0];
    init_source(s, source, who).await?;
    let before = accounts_bytes(source).await?;
    let pgbench_log = s.dir.join(format!("pgbench-{index}.log"));
    let mut app = load(s.pgbench, source, s.args.impact_rate, &pgbench_log)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sampler = Sampler::start(source);
    let started = Instant::now();
    let (copy, slot) = if who.starts_with("pgdog") {
        (
            pgdog_move(s.pgdog, &fleet, s.dir).await?,
            "pgdog_bench_dest".to_string(),
        )
    } else {
        (native_move(&fleet).await?, "impact_sub".to_string())
    };
    until_caught_up(source, &slot, 16 * 1024 * 1024).await?;
    let caught_up = started.elapsed().as_secs_f64();
    let (horizon, wal) = sampler.finish().await?;
    let _ = app.kill().await;
    let growth = accounts_bytes(source).await? - before;
    eprintln!(
        "impact ({who}): copy {copy:.1}s, caught up {caught_up:.1}s, horizon {horizon:.1}s, WAL {:.0} MB, accounts +{:.0} MB",
        wal as f64 / 1e6,
        growth as f64 / 1e6
    );
    let impact = Impact {
        copy,
        caught_up,
        horizon,
        wal,
        growth,
    };
    drop(fleet);
    Ok((before, impact))
}

/// pgbench's tables on the source, published, vacuumed and checkpointed.
async fn init_source(s: &Setup<'_>, source: &Cluster, who: &str) -> Result<()> {
    eprintln!(
        "impact ({who}): pgbench -i -s {} on the source...",
        s.args.impact_scale
    );
    let status = std::process::Command::new(s.pgbench)
        .args(["-i", "-q", "-s"])
        .arg(s.args.impact_scale.to_string())
        .args(["-U", "postgres", "-h", source.host(), "-p"])
        .arg(source.port().to_string())
        .arg(DATABASE)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err("pgbench -i failed".into());
    }
    for sql in [
        "ALTER TABLE pgbench_history REPLICA IDENTITY FULL",
        "VACUUM ANALYZE",
        "CHECKPOINT",
        "CREATE PUBLICATION bench FOR ALL TABLES",
    ] {
        source.exec(DATABASE, sql).await?;
    }
    Ok(())
}

/// One figure of the impact of a move: its name, its value, how it shows.
type Figure = (&'static str, fn(&Impact) -> f64, fn(f64) -> String);

/// The section's rows: each move's figures, against the native one.
fn report_impact(report: &mut Report, args: &Args, figures: &[(&str, i64, Impact)]) {
    let (_, bytes, _) = figures[0];
    report.note(format!(
        "source impact: pgbench scale {} ({:.0} MB of pgbench_accounts), pgbench at {} tx/s during the move, sampled every 0.5 s",
        args.impact_scale,
        bytes as f64 / 1e6,
        args.impact_rate
    ));
    let native = figures[1].2;
    for (who, _, f) in figures {
        let vs = |v: f64, base: f64| {
            if who.starts_with("native") {
                "baseline".to_string()
            } else {
                format!("{:.2}x native", v / base.max(1e-9))
            }
        };
        // What, the figure of a move as a number, and as shown; in order.
        let seconds: fn(f64) -> String = |v| format!("{v:.1} s");
        let megabytes: fn(f64) -> String = |v| format!("{:.0} MB", v / 1e6);
        let figures: [Figure; 5] = [
            ("largest xmin horizon age", |m| m.horizon, seconds),
            (
                "largest WAL retained by the slot",
                |m| m.wal as f64,
                megabytes,
            ),
            ("copy time", |m| m.copy, seconds),
            ("time to caught up", |m| m.caught_up, seconds),
            ("growth of pgbench_accounts", |m| m.growth as f64, megabytes),
        ];
        let rows =
            figures.map(|(what, figure, show)| (what, show(figure(f)), figure(f), figure(&native)));
        for (what, value, v, base) in rows {
            report.row(
                "source impact",
                &format!("{who}: {what}"),
                value,
                vs(v, base),
            );
        }
    }
}

/// pgdog data-sync 1→2 into empty shards (schema sync); the seconds
/// until its copy completed. It keeps streaming (killed when dropped).
async fn pgdog_move(pgdog: &Path, fleet: &pgdog::harness::Fleet, dir: &Path) -> Result<f64> {
    std::fs::write(
        dir.join("pgdog.toml"),
        fleet.pgdog_toml(
            "[[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"bid\"\ndata_type = \"integer\"\n",
        ),
    )?;
    std::fs::write(dir.join("users.toml"), fleet.users_toml())?;
    let log: PathBuf = dir.join("pgdog.log");
    let out = std::fs::File::create(&log)?;
    let started = Instant::now();
    let child = Command::from(peers::data_sync(pgdog, dir, "dest"))
        .env("PGDOG_LOG", "info")
        .stdout(Stdio::null())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?;
    // Leaked on purpose until the fleet goes: it streams meanwhile.
    let child = Box::leak(Box::new(child));
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("copy complete") {
            return Ok(started.elapsed().as_secs_f64());
        }
        if let Some(s) = child.try_wait()? {
            return Err(format!("pgdog ended ({s}):\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A native subscription 1→1 into a destination with the tables and their
/// primary keys; the seconds until every table is ready.
async fn native_move(fleet: &pgdog::harness::Fleet) -> Result<f64> {
    let dest = &fleet.dests[0];
    let source = &fleet.sources[0];
    dest.exec(
        DATABASE,
        "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84)) WITH (fillfactor = 100);
         CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
         CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
         CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));",
    )
    .await?;
    let started = Instant::now();
    peers::subscribe(source, dest, "impact_sub", "bench", false).await?;
    let poll = Duration::from_millis(200);
    // No time limit: it returns only once ready.
    let ready = peers::until_subscription_ready(dest, None, poll, started, None).await?;
    Ok(ready.ok_or("subscription never ready")?)
}
