//! The measured runs and the report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{Cluster, Fleet, PgInstall};
use pgdog::net::Connection;
use pgdog_protocol::Lsn;
use tokio::process::Command;

use crate::dataset::{self, TABLES};
use crate::{median, Args};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// Rows of the report: (section, what, value, baseline ratio note).
#[derive(Debug, Default)]
pub struct Report {
    header: Vec<String>,
    rows: Vec<[String; 4]>,
}

impl Report {
    pub fn note(&mut self, line: String) {
        eprintln!("{line}");
        self.header.push(line);
    }

    pub fn row(&mut self, section: &str, what: &str, value: String, ratio: String) {
        eprintln!("{section:<22} {what:<44} {value:>14} {ratio}");
        self.rows.push([section.into(), what.into(), value, ratio]);
    }

    pub fn render(&self) -> String {
        let mut out = String::from("# pgdog data-sync benchmark\n\n");
        for h in &self.header {
            out.push_str(&format!("- {h}\n"));
        }
        out.push_str("\n| section | what | median | vs baseline |\n|-|-|-:|-|\n");
        for r in &self.rows {
            out.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
        }
        out
    }
}

/// What `/usr/bin/time` says of a run.
#[derive(Debug, Clone, Copy)]
struct Usage {
    wall: f64,
    /// User plus system CPU seconds.
    cpu: f64,
    user: f64,
    max_rss_kb: u64,
}

pub struct Bench {
    fleet: Fleet,
    install: PgInstall,
    pgdog: PathBuf,
    dir: PathBuf,
    runs: usize,
    backlog: u64,
    accounts: u64,
    /// Rows of accounts, events, documents.
    split: (u64, u64, u64),
    /// Heap bytes of the published tables on the source.
    heap_bytes: u64,
    pgbench: PathBuf,
}

fn conninfo(c: &Cluster) -> String {
    format!(
        "host={} port={} user=postgres dbname={DATABASE}",
        c.host(),
        c.port()
    )
}

impl Bench {
    pub async fn new(fleet: Fleet, install: PgInstall, args: &Args) -> Result<Bench> {
        fleet.on_sources(dataset::SCHEMA).await?;
        fleet.on_dests(dataset::SCHEMA).await?;
        eprintln!("loading {} rows on the source...", args.rows);
        let started = Instant::now();
        fleet.sources[0]
            .exec(DATABASE, &dataset::load_sql(args.rows))
            .await?;
        fleet.sources[0].exec(DATABASE, "VACUUM ANALYZE").await?;
        eprintln!("loaded in {:.0}s", started.elapsed().as_secs_f64());
        let mut c = fleet.sources[0].connect(DATABASE).await?;
        let rows = c
            .query("SELECT sum(pg_relation_size(c.oid) + coalesce(pg_relation_size(c.reltoastrelid), 0))::bigint FROM pg_class c WHERE relname IN ('accounts', 'events', 'documents')")
            .await?;
        let heap_bytes = rows[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("pgdog-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let pgbench = PgInstall::all()
            .into_iter()
            .map(|i| i.tool("pgbench"))
            .find(|p| p.exists())
            .ok_or("pgbench not found (apt-get install postgresql)")?;
        let bench = Bench {
            pgdog: args.pgdog.canonicalize()?,
            fleet,
            install,
            dir,
            runs: args.runs.max(1),
            backlog: args.backlog,
            accounts: dataset::split(args.rows).0,
            split: dataset::split(args.rows),
            heap_bytes,
            pgbench,
        };
        bench.write_config()?;
        Ok(bench)
    }

    /// Config with clusters `source`, `dest1` (one shard) and `dest2` (two).
    fn write_config(&self) -> Result<()> {
        let f = &self.fleet;
        let mut toml = String::from("[general]\nport = 0\ntls_verify = \"disabled\"\n");
        if let Some(pg_dump) = pgdog::harness::install::pg_dump() {
            toml.push_str(&format!("pg_dump = \"{}\"\n", pg_dump.display()));
        }
        // To compare parallelism settings: PGDOG_BENCH_PARALLEL=3.
        if let Ok(n) = std::env::var("PGDOG_BENCH_PARALLEL") {
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| format!("PGDOG_BENCH_PARALLEL={n:?}: expected a number of copies"))?;
            toml.push_str(&format!("resharding_parallel_copies = {n}\n"));
        }
        toml.push('\n');
        let mut server = |name: &str, c: &Cluster, shard: usize| {
            toml.push_str(&format!(
                "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nshard = {shard}\ndatabase_name = \"{DATABASE}\"\n\n",
                c.host(),
                c.port()
            ));
        };
        server("source", &f.sources[0], 0);
        server("dest1", &f.dests[0], 0);
        server("dest2", &f.dests[1], 0);
        server("dest2", &f.dests[2], 1);
        let idx = dataset::INDEXED_DATABASE;
        for (name, c, shard) in [
            ("idxsrc", &f.sources[0], 0),
            ("idx1", &f.dests[0], 0),
            ("idx2", &f.dests[1], 0),
            ("idx2", &f.dests[2], 1),
        ] {
            toml.push_str(&format!(
                "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nshard = {shard}\ndatabase_name = \"{idx}\"\n\n",
                c.host(),
                c.port()
            ));
        }
        toml.push_str(dataset::SHARDING);
        toml.push_str(dataset::INDEXED_SHARDING);
        std::fs::write(self.dir.join("pgdog.toml"), toml)?;
        let users: String = ["source", "dest1", "dest2", "idxsrc", "idx1", "idx2"]
            .iter()
            .map(|db| format!("[[users]]\nname = \"pgdog\"\ndatabase = \"{db}\"\nserver_user = \"postgres\"\n\n"))
            .collect();
        std::fs::write(self.dir.join("users.toml"), users)?;
        Ok(())
    }

    fn dests(&self, to: &str) -> Vec<&Cluster> {
        match to {
            "dest1" => vec![&self.fleet.dests[0]],
            _ => vec![&self.fleet.dests[1], &self.fleet.dests[2]],
        }
    }

    pub async fn machine(&self, report: &mut Report) -> Result<()> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines().next().map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .unwrap_or("0")
                        .parse::<u64>()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0);
        report.note(format!(
            "machine: {cores} cores ({cpu}), {:.0} GiB; all servers and pgdog share it",
            mem as f64 / 1048576.0
        ));
        report.note(format!(
            "PostgreSQL {}, fsync on, synchronous_commit on; {} runs per figure, median shown",
            self.install.major, self.runs
        ));
        let (a, e, d) = self.split;
        report.note(format!(
            "dataset: {a} accounts, {e} events, {d} TOASTed documents of ~20 kB; {:.0} MB of heap and TOAST",
            self.heap_bytes as f64 / 1e6
        ));
        Ok(())
    }

    /// Empty every destination and drop pgdog's state, then checkpoint so
    /// every run starts alike.
    async fn reset_dests(&self) -> Result<()> {
        for c in &self.fleet.dests {
            c.exec(
                DATABASE,
                &format!(
                    "TRUNCATE {}; DROP SCHEMA IF EXISTS pgdog CASCADE; CHECKPOINT;",
                    TABLES.join(", ")
                ),
            )
            .await?;
        }
        self.fleet.sources[0].exec(DATABASE, "CHECKPOINT").await?;
        Ok(())
    }

    async fn drop_slots(&self) -> Result<()> {
        self.fleet.sources[0]
            .exec(
                DATABASE,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active",
            )
            .await?;
        Ok(())
    }

    /// `pgdog data-sync` under `/usr/bin/time`; returns at once with the
    /// child (the usage is read when it exits).
    fn pgdog(&self, to: &str, extra: &[&str], log: &str) -> Result<tokio::process::Child> {
        let mut args = vec!["--skip-schema-sync"];
        args.extend_from_slice(extra);
        self.pgdog_publication("source", "bench", to, &args, log)
    }

    /// [`Bench::pgdog`] for another publication.
    fn pgdog_publication(
        &self,
        from: &str,
        publication: &str,
        to: &str,
        extra: &[&str],
        log: &str,
    ) -> Result<tokio::process::Child> {
        let mut args = vec!["--admin-port", "0"];
        args.extend_from_slice(extra);
        self.pgdog_command("data-sync", from, publication, to, &args, log)
    }

    /// A pgdog subcommand of the move from `from` to `to`, under
    /// `/usr/bin/time`, its output in `log`.
    fn pgdog_command(
        &self,
        subcommand: &str,
        from: &str,
        publication: &str,
        to: &str,
        extra: &[&str],
        log: &str,
    ) -> Result<tokio::process::Child> {
        let log = std::fs::File::create(self.dir.join(log))?;
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "PGDOG_USAGE %e %U %S %M"]);
        // A profiler or tracer to run pgdog under, e.g.
        // PGDOG_BENCH_WRAP="strace -c -f -o /tmp/strace.txt".
        if let Ok(wrap) = std::env::var("PGDOG_BENCH_WRAP") {
            cmd.args(wrap.split_whitespace());
        }
        let child = cmd
            .arg(&self.pgdog)
            .arg("--config")
            .arg(self.dir.join("pgdog.toml"))
            .arg("--users")
            .arg(self.dir.join("users.toml"))
            .args([
                subcommand,
                "--from-database",
                from,
                "--from-user",
                "pgdog",
                "--to-database",
                to,
                "--to-user",
                "pgdog",
                "--publication",
                publication,
            ])
            .args(extra)
            .env(
                "PGDOG_LOG",
                std::env::var("PGDOG_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(child)
    }

    /// The `/usr/bin/time` line in `log`; without one the figures would be
    /// zeros, so its absence is an error.
    fn usage(&self, log: &str) -> Result<Usage> {
        let path = self.dir.join(log);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let v: Vec<f64> = text
            .lines()
            .rev()
            .find(|l| l.starts_with("PGDOG_USAGE"))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [wall, user, sys, rss] = v[..] else {
            return Err(format!(
                "{}: no usage line from /usr/bin/time (PGDOG_USAGE wall user sys rss)",
                path.display()
            )
            .into());
        };
        Ok(Usage {
            wall,
            cpu: user + sys,
            user,
            max_rss_kb: rss as u64,
        })
    }

    async fn pgdog_sync_only(&self, to: &str, log: &str) -> Result<Usage> {
        let status = self.pgdog(to, &["--sync-only"], log)?.wait().await?;
        if !status.success() {
            return Err(format!(
                "pgdog --sync-only failed:\n{}",
                std::fs::read_to_string(self.dir.join(log))?
            )
            .into());
        }
        self.usage(log)
    }

    /// `pgdog verify` of the move to `to` (nothing streams it: verify
    /// applies from the slot itself); it must find every table equal.
    async fn pgdog_verify(&self, to: &str, log: &str) -> Result<Usage> {
        let status = self
            .pgdog_command("verify", "source", "bench", to, &[], log)?
            .wait()
            .await?;
        if !status.success() {
            return Err(format!(
                "pgdog verify did not find the copy equal (exit {:?}):\n{}",
                status.code(),
                std::fs::read_to_string(self.dir.join(log))?
            )
            .into());
        }
        self.usage(log)
    }

    async fn pgdog_cleanup(&self, to: &str) -> Result<()> {
        let status = self
            .pgdog(to, &["--cleanup"], "cleanup.log")?
            .wait()
            .await?;
        if !status.success() {
            return Err(format!(
                "pgdog --cleanup failed:\n{}",
                std::fs::read_to_string(self.dir.join("cleanup.log"))?
            )
            .into());
        }
        Ok(())
    }

    /// `psql -c COPY ... TO STDOUT | psql -c COPY ... FROM STDIN`, binary,
    /// under `/usr/bin/time` so the CPU of both psql processes is known (a
    /// shell's usage includes its children's).
    fn pipe(&self, table: &str, to: &Cluster) -> Result<tokio::process::Child> {
        let psql = "psql";
        let cmd = format!(
            "{psql} '{}' -Xqc \"COPY {table} TO STDOUT (FORMAT binary)\" | {psql} '{}' -Xqc \"COPY {table} FROM STDIN (FORMAT binary)\"",
            conninfo(&self.fleet.sources[0]),
            conninfo(to)
        );
        Ok(Command::new("/usr/bin/time")
            .args(["-f", "PGDOG_USAGE %e %U %S %M", "-o"])
            .arg(self.dir.join(format!("pipe-{table}.time")))
            .args(["sh", "-c"])
            .arg(cmd)
            .kill_on_drop(true)
            .spawn()?)
    }

    /// Every table through its own pipe, one after another or all at once:
    /// the wall time, and the CPU seconds the psql processes used.
    async fn pipes(&self, parallel: bool) -> Result<(f64, f64)> {
        self.reset_dests().await?;
        let to = &self.fleet.dests[0];
        let started = Instant::now();
        if parallel {
            let mut children = Vec::new();
            for t in &TABLES[..3] {
                children.push(self.pipe(t, to)?);
            }
            for mut c in children {
                if !c.wait().await?.success() {
                    return Err("pipe failed".into());
                }
            }
        } else {
            for t in &TABLES[..3] {
                if !self.pipe(t, to)?.wait().await?.success() {
                    return Err("pipe failed".into());
                }
            }
        }
        let wall = started.elapsed().as_secs_f64();
        let mut cpu = 0.0;
        for t in &TABLES[..3] {
            cpu += self.usage(&format!("pipe-{t}.time"))?.cpu;
        }
        Ok((wall, cpu))
    }

    async fn native_copy(&self) -> Result<f64> {
        self.reset_dests().await?;
        let dest = &self.fleet.dests[0];
        let started = Instant::now();
        dest.exec(
            DATABASE,
            &format!(
                "CREATE SUBSCRIPTION bench_sub CONNECTION '{}' PUBLICATION bench WITH (binary = true)",
                conninfo(&self.fleet.sources[0])
            ),
        )
        .await?;
        let mut c = dest.connect(DATABASE).await?;
        loop {
            let rows = c
                .query("SELECT count(*) FILTER (WHERE srsubstate = 'r'), count(*) FROM pg_subscription_rel")
                .await?;
            let ready: u64 = rows[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0);
            let all: u64 = rows[0].text(1).and_then(|t| t.parse().ok()).unwrap_or(0);
            if all == TABLES.len() as u64 && ready == all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        dest.exec(DATABASE, "DROP SUBSCRIPTION bench_sub").await?;
        Ok(elapsed)
    }

    pub async fn copy(&self, report: &mut Report) -> Result<()> {
        let mut seq = Vec::new();
        let mut par = Vec::new();
        let mut native = Vec::new();
        let mut one = Vec::new();
        let mut two = Vec::new();
        let mut usage = Vec::new();
        let mut pipe_cpu = Vec::new();
        let (mut verify_one, mut verify_two) = (Vec::new(), Vec::new());
        for run in 0..self.runs {
            eprintln!("copy run {}/{}", run + 1, self.runs);
            let (wall, cpu) = self.pipes(false).await?;
            seq.push(wall);
            pipe_cpu.push(cpu);
            par.push(self.pipes(true).await?.0);
            native.push(self.native_copy().await?);
            self.drop_slots().await?;
            self.reset_dests().await?;
            let u = self.pgdog_sync_only("dest1", "copy1.log").await?;
            one.push(u.wall);
            usage.push(u);
            verify_one.push(self.pgdog_verify("dest1", "verify1.log").await?);
            self.pgdog_cleanup("dest1").await?;
            self.reset_dests().await?;
            let u = self.pgdog_sync_only("dest2", "copy2.log").await?;
            two.push(u.wall);
            usage.push(u);
            verify_two.push(self.pgdog_verify("dest2", "verify2.log").await?);
            self.pgdog_cleanup("dest2").await?;
        }
        let (seq, par, native, one, two) = (
            median(seq),
            median(par),
            median(native),
            median(one),
            median(two),
        );
        let secs = |v: f64| format!("{v:.2} s");
        let ratio = |v: f64, base: f64, name: &str| format!("{:.2}x {name}", v / base);
        report.row(
            "copy 1→1",
            "raw COPY binary pipe, tables one after another",
            secs(seq),
            "baseline".into(),
        );
        report.row(
            "copy 1→1",
            "raw COPY binary pipe, all tables at once",
            secs(par),
            ratio(par, seq, "sequential pipe"),
        );
        report.row(
            "copy 1→1",
            "native CREATE SUBSCRIPTION (binary)",
            secs(native),
            ratio(native, seq, "sequential pipe"),
        );
        report.row(
            "copy 1→1",
            "pgdog data-sync --sync-only",
            secs(one),
            format!(
                "{}, {}",
                ratio(one, seq, "sequential pipe"),
                ratio(one, par, "parallel pipe")
            ),
        );
        report.row(
            "copy 1→2",
            "pgdog data-sync --sync-only",
            secs(two),
            format!(
                "{}, {}",
                ratio(two, seq, "sequential pipe"),
                ratio(two, par, "parallel pipe")
            ),
        );
        for (name, runs, copy) in [("1→1", &verify_one, one), ("1→2", &verify_two, two)] {
            let wall = median(runs.iter().map(|u| u.wall).collect());
            let rss = runs.iter().map(|u| u.max_rss_kb).max().unwrap_or(0);
            report.row(
                &format!("verify {name}"),
                "pgdog verify (counts, checksums, placement, every row)",
                secs(wall),
                format!(
                    "{}, {}; peak RSS {:.1} MB; target ≤ 1x the copy",
                    ratio(wall, copy, "pgdog's copy"),
                    ratio(wall, seq, "sequential pipe"),
                    rss as f64 / 1024.0
                ),
            );
        }
        let gb = self.heap_bytes as f64 / 1e9;
        let cpu = median(usage.iter().map(|u| u.cpu / gb).collect());
        let user = median(usage.iter().map(|u| u.user / gb).collect());
        let rss = usage.iter().map(|u| u.max_rss_kb).max().unwrap_or(0);
        report.row(
            "pgdog resources",
            "CPU seconds per GB copied",
            format!("{cpu:.2} s/GB ({user:.2} user)"),
            format!(
                "target ≤ 1; the sequential pipe's two psql processes: {:.2} s/GB",
                median(pipe_cpu) / gb
            ),
        );
        report.row(
            "pgdog resources",
            "peak RSS during copy",
            format!("{:.1} MB", rss as f64 / 1024.0),
            "target ≤ 20".into(),
        );
        Ok(())
    }

    /// `backlog` single-row transactions (pgbench, 4 clients) on the source.
    async fn write_backlog(
        &self,
        transactions: u64,
        rate: Option<u64>,
    ) -> Result<tokio::process::Child> {
        let script = self.dir.join("backlog.sql");
        std::fs::write(&script, dataset::pgbench_script(self.accounts))?;
        let src = &self.fleet.sources[0];
        let mut cmd = Command::new(&self.pgbench);
        cmd.args([
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-h",
            src.host(),
            "-p",
            &src.port().to_string(),
            "-U",
            "postgres",
        ])
        .arg("-f")
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        match rate {
            Some(r) => cmd.args(["-R", &r.to_string(), "-T", &transactions.to_string()]),
            None => cmd.args(["-t", &(transactions / 4).to_string()]),
        };
        cmd.arg(DATABASE);
        Ok(cmd.spawn()?)
    }

    async fn current_lsn(&self) -> Result<Lsn> {
        let mut c = self.fleet.sources[0].connect(DATABASE).await?;
        let rows = c.query("SELECT pg_current_wal_insert_lsn()::text").await?;
        Ok(rows[0].text(0).and_then(Lsn::parse).unwrap_or_default())
    }

    /// Insert a marker row after the backlog; returns its id.
    async fn marker(&self) -> Result<i64> {
        static MARKERS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let id = -1 - MARKERS.fetch_add(1, Ordering::Relaxed);
        self.fleet.sources[0]
            .exec(DATABASE, &format!("INSERT INTO pings VALUES ({id}, now())"))
            .await?;
        Ok(id)
    }

    /// Seconds until the marker row is visible on one of `dests`.
    async fn until_visible(&self, dests: &[&Cluster], id: i64, started: Instant) -> Result<f64> {
        let mut conns = Vec::new();
        for d in dests {
            conns.push(d.connect(DATABASE).await?);
        }
        loop {
            for c in conns.iter_mut() {
                let rows = c
                    .query(&format!("SELECT 1 FROM pings WHERE id = {id}"))
                    .await?;
                if !rows.is_empty() {
                    return Ok(started.elapsed().as_secs_f64());
                }
            }
            if started.elapsed() > Duration::from_secs(1800) {
                return Err("marker never arrived".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Seconds until `slot` confirms `target`.
    async fn until_confirmed(&self, slot: &str, target: Lsn, started: Instant) -> Result<f64> {
        let mut c = self.fleet.sources[0].connect(DATABASE).await?;
        loop {
            let rows = c
                .query(&format!(
                    "SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ))
                .await?;
            let at = rows
                .first()
                .and_then(|r| r.text(0))
                .and_then(Lsn::parse)
                .unwrap_or_default();
            if at >= target {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > Duration::from_secs(1800) {
                return Err(format!("slot {slot} stuck at {at}, target {target}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn native_catch_up(&self) -> Result<(f64, f64)> {
        self.reset_dests().await?;
        let dest = &self.fleet.dests[0];
        dest.exec(
            DATABASE,
            &format!(
                "CREATE SUBSCRIPTION bench_sub CONNECTION '{}' PUBLICATION bench WITH (binary = true, slot_name = 'bench_sub')",
                conninfo(&self.fleet.sources[0])
            ),
        )
        .await?;
        // Wait for the copy, then stop applying.
        let mut c = dest.connect(DATABASE).await?;
        loop {
            let rows = c
                .query("SELECT count(*) FILTER (WHERE srsubstate = 'r'), count(*) FROM pg_subscription_rel")
                .await?;
            if rows[0].text(0) == rows[0].text(1)
                && rows[0].text(1) == Some(&TABLES.len().to_string())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dest.exec(DATABASE, "ALTER SUBSCRIPTION bench_sub DISABLE")
            .await?;
        self.write_backlog(self.backlog, None).await?.wait().await?;
        let marker = self.marker().await?;
        let target = self.current_lsn().await?;
        let started = Instant::now();
        dest.exec(DATABASE, "ALTER SUBSCRIPTION bench_sub ENABLE")
            .await?;
        let visible = self.until_visible(&[dest], marker, started).await?;
        let confirmed = self.until_confirmed("bench_sub", target, started).await?;
        dest.exec(DATABASE, "DROP SUBSCRIPTION bench_sub").await?;
        Ok((confirmed, visible))
    }

    async fn pgdog_catch_up(&self, to: &str) -> Result<(f64, f64, Usage)> {
        self.reset_dests().await?;
        self.pgdog_sync_only(to, "catchup-copy.log").await?;
        self.write_backlog(self.backlog, None).await?.wait().await?;
        let marker = self.marker().await?;
        let target = self.current_lsn().await?;
        let started = Instant::now();
        let mut child = self.pgdog(to, &["--replicate-only"], "catchup.log")?;
        let slot = format!("pgdog_bench_{to}");
        let visible = self.until_visible(&self.dests(to), marker, started).await;
        let t = self.until_confirmed(&slot, target, started).await;
        terminate(&child).await;
        child.wait().await?;
        let (t, visible) = (t?, visible?);
        if std::env::var("PGDOG_BENCH_LOG").is_ok() {
            let log = std::fs::read_to_string(self.dir.join("catchup.log")).unwrap_or_default();
            eprintln!(
                "--- pgdog log, catch-up to {to} ---\n{}",
                log.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let usage = self.usage("catchup.log")?;
        self.pgdog_cleanup(to).await?;
        Ok((t, visible, usage))
    }

    pub async fn catch_up(&self, report: &mut Report) -> Result<()> {
        let (mut native, mut native_seen) = (Vec::new(), Vec::new());
        let (mut one, mut one_seen) = (Vec::new(), Vec::new());
        let (mut two, mut two_seen) = (Vec::new(), Vec::new());
        let mut usage = Vec::new();
        for run in 0..self.runs {
            eprintln!("catch-up run {}/{}", run + 1, self.runs);
            let (c, v) = self.native_catch_up().await?;
            native.push(c);
            native_seen.push(v);
            let (c, v, u) = self.pgdog_catch_up("dest1").await?;
            one.push(c);
            one_seen.push(v);
            usage.push(u);
            let (c, v, u) = self.pgdog_catch_up("dest2").await?;
            two.push(c);
            two_seen.push(v);
            usage.push(u);
        }
        let m = |v: Vec<f64>| median(v);
        let (native, one, two) = (m(native), m(one), m(two));
        let (native_seen, one_seen, two_seen) = (m(native_seen), m(one_seen), m(two_seen));
        let what = format!("{} single-row transactions", self.backlog);
        report.row(
            "catch-up (confirmed_flush_lsn)",
            &format!("native subscription, {what}"),
            format!("{native:.2} s"),
            "baseline".into(),
        );
        report.row(
            "catch-up (confirmed_flush_lsn)",
            "pgdog 1→1",
            format!("{one:.2} s"),
            format!("{:.2}x native", one / native),
        );
        report.row(
            "catch-up (confirmed_flush_lsn)",
            "pgdog 1→2",
            format!("{two:.2} s"),
            format!("{:.2}x native", two / native),
        );
        report.row(
            "catch-up (last row visible)",
            &format!("native subscription, {what}"),
            format!("{native_seen:.2} s"),
            "baseline".into(),
        );
        report.row(
            "catch-up (last row visible)",
            "pgdog 1→1",
            format!("{one_seen:.2} s"),
            format!("{:.2}x native", one_seen / native_seen),
        );
        report.row(
            "catch-up (last row visible)",
            "pgdog 1→2",
            format!("{two_seen:.2} s"),
            format!("{:.2}x native", two_seen / native_seen),
        );
        let rss = usage.iter().map(|u| u.max_rss_kb).max().unwrap_or(0);
        let cpu = median(usage.iter().map(|u| u.cpu).collect());
        report.row(
            "pgdog resources",
            "CPU seconds during catch-up",
            format!("{cpu:.2} s"),
            String::new(),
        );
        report.row(
            "pgdog resources",
            "peak RSS during catch-up",
            format!("{:.1} MB", rss as f64 / 1024.0),
            String::new(),
        );
        Ok(())
    }

    /// Catch-up of `rows` inserts of 4 kB rows (in transactions of 1,000)
    /// into the 2-shard destination: pgdog's peak memory must not grow with
    /// row width, whatever the backlog.
    pub async fn wide(&self, report: &mut Report, rows: u64) -> Result<()> {
        let schema = "CREATE TABLE IF NOT EXISTS wide (id bigint PRIMARY KEY, tenant bigint NOT NULL, body text NOT NULL);";
        self.fleet.on_sources(schema).await?;
        for c in self.dests("dest2") {
            c.exec(
                DATABASE,
                &format!("{schema} TRUNCATE wide; DROP SCHEMA IF EXISTS pgdog CASCADE;"),
            )
            .await?;
        }
        self.fleet.sources[0]
            .exec(
                DATABASE,
                "TRUNCATE wide; DROP PUBLICATION IF EXISTS bench_wide; CREATE PUBLICATION bench_wide FOR TABLE wide;",
            )
            .await?;
        let status = self
            .pgdog_publication(
                "source",
                "bench_wide",
                "dest2",
                &["--sync-only", "--skip-schema-sync"],
                "wide-copy.log",
            )?
            .wait()
            .await?;
        if !status.success() {
            return Err(format!(
                "pgdog --sync-only (wide) failed:\n{}",
                std::fs::read_to_string(self.dir.join("wide-copy.log"))?
            )
            .into());
        }
        eprintln!("writing {rows} rows of 4 kB...");
        let mut start = 1u64;
        while start <= rows {
            let end = (start + 999).min(rows);
            self.fleet.sources[0]
                .exec(
                    DATABASE,
                    &format!("INSERT INTO wide SELECT g, g % 1000, repeat(md5(g::text), 128) FROM generate_series({start}, {end}) g"),
                )
                .await?;
            start = end + 1;
        }
        let target = self.current_lsn().await?;
        let started = Instant::now();
        let mut child = self.pgdog_publication(
            "source",
            "bench_wide",
            "dest2",
            &["--replicate-only"],
            "wide.log",
        )?;
        let slot = "pgdog_bench_wide_dest2";
        let t = self.until_confirmed(slot, target, started).await;
        terminate(&child).await;
        child.wait().await?;
        let t = t?;
        let usage = self.usage("wide.log")?;
        let status = self
            .pgdog_publication(
                "source",
                "bench_wide",
                "dest2",
                &["--cleanup"],
                "wide-cleanup.log",
            )?
            .wait()
            .await?;
        if !status.success() {
            return Err("pgdog --cleanup (wide) failed".into());
        }
        let mb = rows as f64 * 4096.0 / 1e6;
        report.row(
            "wide rows",
            &format!("catch-up of {rows} inserts of 4 kB rows, pgdog 1→2"),
            format!("{t:.2} s ({:.0} MB/s)", mb / t),
            String::new(),
        );
        report.row(
            "wide rows",
            "peak RSS during that catch-up",
            format!("{:.1} MB", usage.max_rss_kb as f64 / 1024.0),
            "target ≤ 20".into(),
        );
        Ok(())
    }

    /// `tables` small tables (2,000 rows each) on a source that always has
    /// a transaction open (pgbench runs one-second transactions): pgdog
    /// `--sync-only` 1→2 against a pipe per table one after another, and
    /// against a native subscription (which creates a slot per table).
    pub async fn many_tables(
        &self,
        report: &mut Report,
        tables: usize,
        native_limit: Duration,
    ) -> Result<()> {
        let create = format!(
            "DO $$ BEGIN FOR i IN 1..{tables} LOOP
               EXECUTE format('CREATE TABLE IF NOT EXISTS small_%s (id bigint PRIMARY KEY, tenant bigint NOT NULL, v text)', i);
             END LOOP; END $$;"
        );
        let truncate = format!(
            "DO $$ BEGIN FOR i IN 1..{tables} LOOP EXECUTE format('TRUNCATE small_%s', i); END LOOP; END $$;
             DROP SCHEMA IF EXISTS pgdog CASCADE;"
        );
        eprintln!("creating {tables} small tables...");
        self.fleet.sources[0]
            .exec(
                DATABASE,
                &format!(
                    "{create}
                     DO $$ BEGIN FOR i IN 1..{tables} LOOP
                       EXECUTE format('INSERT INTO small_%s SELECT g, g %% 97, md5(g::text) FROM generate_series(1, 2000) g ON CONFLICT DO NOTHING', i);
                     END LOOP; END $$;
                     CREATE TABLE IF NOT EXISTS busy (id bigserial PRIMARY KEY, at timestamptz);
                     DROP PUBLICATION IF EXISTS bench_many;
                     DO $$ BEGIN EXECUTE 'CREATE PUBLICATION bench_many FOR TABLE ' ||
                       (SELECT string_agg('small_' || i, ', ') FROM generate_series(1, {tables}) i); END $$;
                     ANALYZE;"
                ),
            )
            .await?;
        for c in &self.fleet.dests {
            c.exec(DATABASE, &format!("{create} {truncate}")).await?;
        }
        // Always a transaction open on the source, as on a busy server.
        let script = self.dir.join("busy.sql");
        std::fs::write(
            &script,
            "BEGIN;\nINSERT INTO busy (at) VALUES (now());\nSELECT pg_sleep(1);\nCOMMIT;\n",
        )?;
        let src = &self.fleet.sources[0];
        let mut busy = Command::new(&self.pgbench)
            .args(["-n", "-c", "2", "-T", "3600", "-h", src.host(), "-p"])
            .arg(src.port().to_string())
            .args(["-U", "postgres", "-f"])
            .arg(&script)
            .arg(DATABASE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        tokio::time::sleep(Duration::from_secs(2)).await;

        eprintln!("many tables: raw pipes, one after another...");
        let started = Instant::now();
        for i in 1..=tables {
            if !self
                .pipe(&format!("small_{i}"), &self.fleet.dests[0])?
                .wait()
                .await?
                .success()
            {
                return Err(format!("pipe of small_{i} failed").into());
            }
        }
        let pipe = started.elapsed().as_secs_f64();

        eprintln!("many tables: pgdog --sync-only 1→2...");
        let status = self
            .pgdog_publication(
                "source",
                "bench_many",
                "dest2",
                &["--sync-only", "--skip-schema-sync"],
                "many.log",
            )?
            .wait()
            .await?;
        if !status.success() {
            return Err(format!(
                "pgdog --sync-only (many tables) failed:\n{}",
                std::fs::read_to_string(self.dir.join("many.log"))?
            )
            .into());
        }
        let pgdog = self.usage("many.log")?.wall;
        let status = self
            .pgdog_publication(
                "source",
                "bench_many",
                "dest2",
                &["--cleanup"],
                "many-cleanup.log",
            )?
            .wait()
            .await?;
        if !status.success() {
            return Err("pgdog --cleanup (many tables) failed".into());
        }

        let what = format!("{tables} tables of 2,000 rows, 1 s transactions always open");
        report.row(
            "many tables",
            &format!("raw pipe per table, one after another, {what}"),
            format!("{pipe:.2} s"),
            "baseline".into(),
        );
        report.row(
            "many tables",
            "pgdog --sync-only 1→2",
            format!("{pgdog:.2} s"),
            format!("{:.2}x pipe (target ≤ 2)", pgdog / pipe),
        );
        if native_limit.is_zero() {
            let _ = busy.kill().await;
            return Ok(());
        }
        eprintln!(
            "many tables: native subscription (a slot per table; at most {} s)...",
            native_limit.as_secs()
        );
        let dest = &self.fleet.dests[0];
        dest.exec(DATABASE, &truncate).await?;
        let started = Instant::now();
        dest.exec(
            DATABASE,
            &format!(
                "CREATE SUBSCRIPTION bench_many_sub CONNECTION '{}' PUBLICATION bench_many WITH (binary = true)",
                conninfo(src)
            ),
        )
        .await?;
        let mut c = dest.connect(DATABASE).await?;
        let native = loop {
            let rows = c
                .query("SELECT count(*) FILTER (WHERE srsubstate = 'r'), count(*) FROM pg_subscription_rel")
                .await?;
            let ready: usize = rows[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0);
            let all: usize = rows[0].text(1).and_then(|t| t.parse().ok()).unwrap_or(0);
            if all == tables && ready == all {
                break Some(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > native_limit {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        dest.exec(DATABASE, "DROP SUBSCRIPTION bench_many_sub")
            .await?;
        // pgbench itself, not a wrapper: kill it directly.
        let _ = busy.kill().await;

        report.row(
            "many tables",
            "native CREATE SUBSCRIPTION (binary), until every table is ready",
            native.map_or(format!("> {} s", native_limit.as_secs()), |n| {
                format!("{n:.2} s")
            }),
            native.map_or(String::new(), |n| format!("{:.2}x pipe", n / pipe)),
        );
        Ok(())
    }

    /// Commit-to-visible delay on the 2-shard destination while pgbench
    /// writes at a steady rate: a ping row every 10 ms, its arrival polled.
    pub async fn steady(&self, report: &mut Report, duration: Duration) -> Result<()> {
        self.reset_dests().await?;
        let mut child = self.pgdog("dest2", &[], "steady.log")?;
        // Wait for streaming (the copy comes first).
        let slot = "pgdog_bench_dest2";
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            // The permanent slot turns active when streaming starts.
            if self.slot_active(slot).await? {
                break;
            }
            if Instant::now() > deadline {
                return Err("pgdog never started streaming".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let load = self.write_backlog(duration.as_secs(), Some(500)).await?;
        let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (sent, stop) = (sent.clone(), stop.clone());
            let opts = self.fleet.sources[0].options("postgres", DATABASE);
            tokio::spawn(async move {
                let mut c = Connection::connect(&opts).await?;
                let mut id = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    c.execute(&format!(
                        "INSERT INTO pings VALUES ({id}, clock_timestamp())"
                    ))
                    .await?;
                    sent.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, Instant::now());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok::<_, pgdog::net::ConnectionError>(())
            })
        };
        let mut readers = Vec::new();
        for d in self.dests("dest2") {
            let opts = d.options("postgres", DATABASE);
            let (sent, stop) = (sent.clone(), stop.clone());
            readers.push(tokio::spawn(async move {
                let mut c = Connection::connect(&opts).await?;
                let mut seen = std::collections::HashSet::new();
                let mut delays = Vec::new();
                let mut after = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let rows = c
                        .query(&format!(
                            "SELECT id FROM pings WHERE id > {after} ORDER BY id"
                        ))
                        .await?;
                    let now = Instant::now();
                    for r in rows {
                        let id: i64 = r.text(0).and_then(|t| t.parse().ok()).unwrap_or(0);
                        after = after.max(id);
                        if seen.insert(id) {
                            if let Some(t0) =
                                sent.lock().unwrap_or_else(|e| e.into_inner()).get(&id)
                            {
                                delays.push(
                                    now.saturating_duration_since(*t0).as_secs_f64() * 1000.0,
                                );
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<_, pgdog::net::ConnectionError>(delays)
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        writer.await??;
        let mut delays = Vec::new();
        for r in readers {
            delays.extend(r.await??);
        }
        drop(load);
        terminate(&child).await;
        child.wait().await?;
        self.pgdog_cleanup("dest2").await?;
        delays.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let pct = |p: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let what = format!(
            "commit to visible on 1→2, pgbench at 500 tx/s, {} pings",
            delays.len()
        );
        report.row(
            "steady state",
            &format!("{what}, p50"),
            format!("{:.1} ms", pct(0.5)),
            String::new(),
        );
        report.row(
            "steady state",
            &format!("{what}, p99"),
            format!("{:.1} ms", pct(0.99)),
            "target ≤ 50 ms".into(),
        );
        Ok(())
    }

    /// Drop and create the indexed figure's database on `servers`, empty.
    async fn fresh_indexed(&self, servers: &[&Cluster]) -> Result<()> {
        let idx = dataset::INDEXED_DATABASE;
        for c in servers {
            c.exec(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {idx} WITH (FORCE)"),
            )
            .await?;
            c.create_database(idx).await?;
            c.exec("postgres", "CHECKPOINT").await?;
        }
        Ok(())
    }

    /// A move into empty shards against pgcopydb and a raw pipe: one table
    /// with a primary key and three secondary indexes. The pipe goes into
    /// the indexed table (what a copy into a schema made beforehand costs);
    /// `pgcopydb clone` and pgdog start from an empty database and build
    /// the indexes after the copy.
    pub async fn schema_sync(&self, report: &mut Report, rows: u64) -> Result<()> {
        let idx = dataset::INDEXED_DATABASE;
        let src = &self.fleet.sources[0];
        self.fresh_indexed(&[src]).await?;
        eprintln!("loading {rows} indexed rows on the source...");
        src.exec(idx, dataset::INDEXED_SCHEMA).await?;
        src.exec(idx, &dataset::indexed_load_sql(rows)).await?;
        src.exec(idx, "VACUUM ANALYZE").await?;
        let mut c = src.connect(idx).await?;
        let size = c
            .query("SELECT pg_total_relation_size('orders_indexed')")
            .await?;
        let bytes: f64 = size[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0.0);
        c.close().await;
        let pgcopydb = which("pgcopydb").ok_or("pgcopydb not found (apt-get install pgcopydb)")?;
        let uri = |c: &Cluster| format!("postgres://postgres@{}:{}/{idx}", c.host(), c.port());
        let (mut pipe, mut copydb, mut one, mut two) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rss = 0u64;
        for run in 0..self.runs {
            eprintln!("schema sync run {}/{}", run + 1, self.runs);
            // The raw pipe into a table that has its indexes.
            let d0 = &self.fleet.dests[0];
            self.fresh_indexed(&[d0]).await?;
            d0.exec(idx, dataset::INDEXED_SCHEMA).await?;
            let cmd = format!(
                "psql 'host={} port={} user=postgres dbname={idx}' -Xqc \"COPY orders_indexed TO STDOUT (FORMAT binary)\" | psql 'host={} port={} user=postgres dbname={idx}' -Xqc \"COPY orders_indexed FROM STDIN (FORMAT binary)\"",
                src.host(), src.port(), d0.host(), d0.port()
            );
            let started = Instant::now();
            if !Command::new("sh")
                .args(["-c", &cmd])
                .status()
                .await?
                .success()
            {
                return Err("pipe into the indexed table failed".into());
            }
            pipe.push(started.elapsed().as_secs_f64());

            // pgcopydb clone into an empty database.
            self.fresh_indexed(&[d0]).await?;
            let dir = self.dir.join(format!("pgcopydb-{run}"));
            let _ = std::fs::remove_dir_all(&dir);
            let log = std::fs::File::create(self.dir.join("pgcopydb.log"))?;
            let started = Instant::now();
            let status = Command::new(&pgcopydb)
                .args(["clone", "--no-owner", "--no-acl"])
                .arg("--source")
                .arg(uri(src))
                .arg("--target")
                .arg(uri(d0))
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(log)
                .status()
                .await?;
            if !status.success() {
                return Err(format!(
                    "pgcopydb clone failed:\n{}",
                    std::fs::read_to_string(self.dir.join("pgcopydb.log"))?
                )
                .into());
            }
            copydb.push(started.elapsed().as_secs_f64());

            // pgdog into empty shards: schema sync, copy, indexes.
            for (to, list) in [("idx1", &mut one), ("idx2", &mut two)] {
                let dests = if to == "idx1" {
                    vec![d0]
                } else {
                    vec![&self.fleet.dests[1], &self.fleet.dests[2]]
                };
                self.fresh_indexed(&dests).await?;
                let log = format!("schema-{to}.log");
                let status = self
                    .pgdog_publication("idxsrc", "indexed", to, &["--sync-only"], &log)?
                    .wait()
                    .await?;
                if !status.success() {
                    return Err(format!(
                        "pgdog into empty shards failed:\n{}",
                        std::fs::read_to_string(self.dir.join(&log))?
                    )
                    .into());
                }
                let u = self.usage(&log)?;
                rss = rss.max(u.max_rss_kb);
                list.push(u.wall);
                let cleanup = self
                    .pgdog_publication(
                        "idxsrc",
                        "indexed",
                        to,
                        &["--cleanup"],
                        "schema-cleanup.log",
                    )?
                    .wait()
                    .await?;
                if !cleanup.success() {
                    return Err("pgdog --cleanup failed".into());
                }
            }
        }
        let (pipe, copydb, one, two) = (median(pipe), median(copydb), median(one), median(two));
        let section = "schema sync + copy";
        let what = format!(
            "{rows} rows, primary key + 3 indexes, {:.0} MB",
            bytes / 1e6
        );
        report.note(format!("schema sync figure: {what}"));
        report.row(
            section,
            "raw COPY binary pipe into the indexed table",
            format!("{pipe:.2} s"),
            "baseline".into(),
        );
        report.row(
            section,
            "pgcopydb clone into an empty database",
            format!("{copydb:.2} s"),
            format!("{:.2}x pipe", copydb / pipe),
        );
        report.row(
            section,
            "pgdog data-sync --sync-only, 1→1 into an empty shard",
            format!("{one:.2} s"),
            format!(
                "{:.2}x pgcopydb (target ≤ 0.8), {:.2}x pipe",
                one / copydb,
                one / pipe
            ),
        );
        report.row(
            section,
            "pgdog data-sync --sync-only, 1→2 into empty shards",
            format!("{two:.2} s"),
            format!(
                "{:.2}x pgcopydb, {:.2}x pipe; peak RSS {:.1} MB",
                two / copydb,
                two / pipe,
                rss as f64 / 1024.0
            ),
        );
        Ok(())
    }

    async fn slot_active(&self, slot: &str) -> Result<bool> {
        let mut c = self.fleet.sources[0].connect(DATABASE).await?;
        let rows = c
            .query(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
            ))
            .await?;
        Ok(rows[0].text(0) == Some("1"))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM to pgdog, which runs under `/usr/bin/time` (the child's child).
async fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &pid.to_string()])
            .status()
            .await;
    }
}

/// Copy from 0, 1 and 2 read replicas (PostgreSQL 16+): a primary with two
/// standbys and a one-shard destination, the same data, pgdog --sync-only
/// with each config.
pub async fn replicas(args: &Args, report: &mut Report) -> Result<()> {
    let Some(install) = PgInstall::newest_at_least(16) else {
        report.note("replicas: skipped, no PostgreSQL 16+ (scripts/fetch-postgres.sh)".into());
        return Ok(());
    };
    eprintln!(
        "replicas: PostgreSQL {} primary with 2 standbys and a destination",
        install.major
    );
    let options = pgdog::harness::ClusterOptions {
        install: Some(install.clone()),
        ..Default::default()
    }
    .setting("fsync", "on")
    .setting("max_wal_size", "4GB")
    .setting("shared_buffers", "256MB");
    let (primary, standbys) = Cluster::start_with_standbys(options.clone(), 2).await?;
    let dest = Cluster::start(options)?;
    primary.create_database(DATABASE).await?;
    dest.create_database(DATABASE).await?;
    primary.exec(DATABASE, dataset::SCHEMA).await?;
    dest.exec(DATABASE, dataset::SCHEMA).await?;
    primary
        .exec(DATABASE, &dataset::load_sql(args.rows))
        .await?;
    primary.exec(DATABASE, "VACUUM ANALYZE").await?;
    let dir = std::env::temp_dir().join(format!("pgdog-bench-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let users = "[[users]]\nname = \"pgdog\"\ndatabase = \"source\"\nserver_user = \"postgres\"\n\n[[users]]\nname = \"pgdog\"\ndatabase = \"dest1\"\nserver_user = \"postgres\"\n";
    std::fs::write(dir.join("users.toml"), users)?;
    let server = |name: &str, c: &Cluster, role: &str| {
        format!(
            "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nrole = \"{role}\"\ndatabase_name = \"{DATABASE}\"\n\n",
            c.host(),
            c.port()
        )
    };
    let mut figures = Vec::new();
    for n in 0..=2 {
        let mut toml = String::from("[general]\nport = 0\ntls_verify = \"disabled\"\n\n");
        toml.push_str(&server("source", &primary, "primary"));
        for s in standbys.iter().take(n) {
            toml.push_str(&server("source", s, "replica"));
        }
        toml.push_str(&server("dest1", &dest, "primary"));
        std::fs::write(dir.join("pgdog.toml"), toml)?;
        let mut times = Vec::new();
        for run in 0..args.runs.max(1) {
            eprintln!("replicas: {n} replica(s), run {}/{}", run + 1, args.runs);
            dest.exec(
                DATABASE,
                &format!(
                    "TRUNCATE {}; DROP SCHEMA IF EXISTS pgdog CASCADE; CHECKPOINT;",
                    TABLES.join(", ")
                ),
            )
            .await?;
            primary.exec(DATABASE, "CHECKPOINT").await?;
            let started = Instant::now();
            let sync = |extra: &str| {
                let mut cmd = data_sync_command(&args.pgdog, &dir, "dest1");
                cmd.arg(extra).env("PGDOG_LOG", "warn");
                cmd
            };
            let out = sync("--sync-only").output()?;
            if !out.status.success() {
                return Err(format!(
                    "pgdog --sync-only failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            times.push(started.elapsed().as_secs_f64());
            let out = sync("--cleanup").output()?;
            if !out.status.success() {
                return Err(format!(
                    "pgdog --cleanup failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
        }
        figures.push(median(times));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (n, t) in figures.iter().enumerate() {
        let what = match n {
            0 => format!(
                "pgdog --sync-only from the primary (PostgreSQL {})",
                install.major
            ),
            1 => "from 1 replica".to_string(),
            _ => format!("from {n} replicas"),
        };
        let ratio = if n == 0 {
            "baseline".to_string()
        } else {
            format!("{:.2}x primary", t / figures[0])
        };
        report.row("copy from replicas", &what, format!("{t:.2} s"), ratio);
    }
    Ok(())
}

/// `pgdog data-sync` of publication `bench` from cluster `source` to `to`,
/// with the config files in `dir`, without an admin console.
pub fn data_sync_command(
    pgdog: &std::path::Path,
    dir: &std::path::Path,
    to: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(pgdog);
    cmd.arg("--config")
        .arg(dir.join("pgdog.toml"))
        .arg("--users")
        .arg(dir.join("users.toml"))
        .args([
            "data-sync",
            "--from-database",
            "source",
            "--from-user",
            "pgdog",
            "--to-database",
            to,
            "--to-user",
            "pgdog",
            "--publication",
            "bench",
            "--admin-port",
            "0",
        ]);
    cmd
}

/// A program on `$PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.exists())
}
