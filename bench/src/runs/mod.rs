//! The measured runs, one file each, and what they share: the servers and
//! data of [`Bench`], pgdog's config, and helpers used by more than one run.

mod catchup;
mod copy;
pub mod impact;
mod machine;
mod many;
pub mod replicas;
mod schema;
mod steady;
mod wide;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{Cluster, Fleet, PgInstall};
use pgdog_protocol::Lsn;
use tokio::process::{Child, Command};

use crate::dataset::{self, TABLES};
use crate::peers::{self, Move, Usage};
use crate::{Args, Result};

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

/// The first pgbench found among the installed servers.
pub fn pgbench() -> Result<PathBuf> {
    Ok(PgInstall::all()
        .into_iter()
        .map(|i| i.tool("pgbench"))
        .find(|p| p.exists())
        .ok_or("pgbench not found (apt-get install postgresql)")?)
}

/// Empties a destination of the benchmark tables and pgdog's state, then
/// checkpoints, so every run starts alike.
pub fn empty_dest_sql() -> String {
    format!(
        "TRUNCATE {}; DROP SCHEMA IF EXISTS pgdog CASCADE; CHECKPOINT;",
        TABLES.join(", ")
    )
}

/// The move of publication `bench` from cluster `source` to `to`.
fn bench_move(to: &str) -> Move<'_> {
    Move {
        from: "source",
        publication: "bench",
        to,
    }
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
        let pgbench = pgbench()?;
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

    /// Config with clusters `source`, `dest1` (one shard) and `dest2` (two),
    /// and the same for the indexed database: `idxsrc`, `idx1`, `idx2`.
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
        let idx = dataset::INDEXED_DATABASE;
        for (name, c, shard, db) in [
            ("source", &f.sources[0], 0, DATABASE),
            ("dest1", &f.dests[0], 0, DATABASE),
            ("dest2", &f.dests[1], 0, DATABASE),
            ("dest2", &f.dests[2], 1, DATABASE),
            ("idxsrc", &f.sources[0], 0, idx),
            ("idx1", &f.dests[0], 0, idx),
            ("idx2", &f.dests[1], 0, idx),
            ("idx2", &f.dests[2], 1, idx),
        ] {
            toml.push_str(&format!(
                "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nshard = {shard}\ndatabase_name = \"{db}\"\n\n",
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

    /// The servers behind pgdog cluster `to`: one shard or two.
    fn dests(&self, to: &str) -> Vec<&Cluster> {
        match to {
            "dest1" | "idx1" => vec![&self.fleet.dests[0]],
            _ => vec![&self.fleet.dests[1], &self.fleet.dests[2]],
        }
    }

    /// Empty every destination and drop pgdog's state, then checkpoint so
    /// every run starts alike.
    async fn reset_dests(&self) -> Result<()> {
        for c in &self.fleet.dests {
            c.exec(DATABASE, &empty_dest_sql()).await?;
        }
        self.fleet.sources[0].exec(DATABASE, "CHECKPOINT").await?;
        Ok(())
    }

    /// `pgdog data-sync` of publication `bench` to `to` without schema
    /// sync; returns at once with the child (the usage is read when it
    /// exits).
    fn pgdog(&self, to: &str, extra: &[&str], log: &str) -> Result<Child> {
        let mut args = vec!["--skip-schema-sync"];
        args.extend_from_slice(extra);
        self.data_sync(bench_move(to), &args, log)
    }

    /// `pgdog data-sync` of any move, without an admin console.
    fn data_sync(&self, m: Move, extra: &[&str], log: &str) -> Result<Child> {
        let mut args = vec!["--admin-port", "0"];
        args.extend_from_slice(extra);
        self.pgdog_command("data-sync", m, &args, log)
    }

    /// A pgdog subcommand of a move, under `/usr/bin/time`, its output in
    /// `log` (in the run's directory).
    fn pgdog_command(&self, subcommand: &str, m: Move, extra: &[&str], log: &str) -> Result<Child> {
        let log = std::fs::File::create(self.dir.join(log))?;
        peers::timed_pgdog(&self.pgdog, &self.dir, subcommand, m, extra, log)
    }

    /// [`Bench::data_sync`] to its end; `what` names it in the error,
    /// which carries the log.
    async fn run_data_sync(
        &self,
        m: Move<'_>,
        extra: &[&str],
        log: &str,
        what: &str,
    ) -> Result<()> {
        let status = self.data_sync(m, extra, log)?.wait().await?;
        if !status.success() {
            return Err(format!(
                "{what} failed:\n{}",
                std::fs::read_to_string(self.dir.join(log))?
            )
            .into());
        }
        Ok(())
    }

    /// The `/usr/bin/time` line in `log`.
    fn usage(&self, log: &str) -> Result<Usage> {
        Usage::read(&self.dir.join(log))
    }

    /// pgdog's copy of publication `bench` to `to`, to its end.
    async fn pgdog_sync_only(&self, to: &str, log: &str) -> Result<Usage> {
        let extra = ["--skip-schema-sync", "--sync-only"];
        self.run_data_sync(bench_move(to), &extra, log, "pgdog --sync-only")
            .await?;
        self.usage(log)
    }

    /// Drop what pgdog left of the move to `to` (slot, publication state).
    async fn pgdog_cleanup(&self, to: &str) -> Result<()> {
        let extra = ["--skip-schema-sync", "--cleanup"];
        self.run_data_sync(bench_move(to), &extra, "cleanup.log", "pgdog --cleanup")
            .await
    }

    /// The raw pipe of `table` from the source to `to`, timed into
    /// `pipe-{table}.time`.
    fn pipe(&self, table: &str, to: &Cluster) -> Result<Child> {
        let usage = self.dir.join(format!("pipe-{table}.time"));
        peers::copy_pipe(&self.fleet.sources[0], to, DATABASE, table, Some(&usage))
    }

    /// `transactions` single-row transactions (pgbench, 4 clients) on the
    /// source; with `rate`, that many per second for `transactions` seconds.
    async fn write_backlog(&self, transactions: u64, rate: Option<u64>) -> Result<Child> {
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
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
