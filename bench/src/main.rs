//! `pgdog-bench`: pgdog data-sync against what a user would otherwise do,
//! on the same throwaway servers in the same run. Each figure is the
//! median of several runs and is shown as a ratio to its baseline.
//!
//! 1. Copy 1→1: a raw `COPY TO | COPY FROM` (binary) pipe per table, one
//!    after another and all at once; native `CREATE SUBSCRIPTION ... WITH
//!    (binary = true)` until every table is ready; `pgdog data-sync
//!    --sync-only`.
//! 2. Copy 1→2 with pgdog.
//! 3. Catch-up of a backlog of single-row transactions written while the
//!    subscriber was stopped: native against pgdog 1→1 and 1→2.
//! 4. Catch-up of a backlog of 4 kB rows, for pgdog's peak memory.
//! 5. Copy of many small tables while the source always has a transaction
//!    open: pgdog against one pipe per table and a native subscription.
//! 6. Steady state: commit-to-visible delay under a constant load.
//! 7. pgdog's CPU seconds and peak memory (from `/usr/bin/time`).
//! 8. Copy from 0, 1 and 2 read replicas (PostgreSQL 16+).
//! 9. A move into empty shards (schema sync, copy, index builds) of a
//!    table with a primary key and three secondary indexes, against
//!    `pgcopydb clone` and a raw pipe into the indexed table.
//!
//! 10. Source impact: the source's xmin horizon and the WAL its slot
//!     retains while a large table is moved under pgbench, pgdog against
//!     a native subscription.
//!
//! Run it with `bench/data-sync` (builds in release mode first).

mod dataset;
mod peers;
mod report;
mod runs;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pgdog::harness::{ClusterOptions, Fleet, PgInstall};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[derive(Debug, Parser)]
pub struct Args {
    /// Rows in all (about 400 MB at the default).
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Transactions in the catch-up backlog.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: u64,
    /// Seconds of steady-state load.
    #[arg(long, default_value_t = 15)]
    pub steady_seconds: u64,
    /// PostgreSQL major version of the servers (default: the oldest found).
    #[arg(long)]
    pub pg: Option<u32>,
    /// The pgdog binary.
    #[arg(long, default_value = "target/release/pgdog")]
    pub pgdog: PathBuf,
    /// Rows of 4 kB in the wide-row catch-up.
    #[arg(long, default_value_t = 200_000)]
    pub wide_rows: u64,
    /// Small tables in the many-tables copy.
    #[arg(long, default_value_t = 300)]
    pub many_tables: usize,
    /// Seconds the native subscription gets in the many-tables copy (0:
    /// leave it out).
    #[arg(long, default_value_t = 600)]
    pub many_native_seconds: u64,
    /// Rows of the indexed table in the schema-sync figure.
    #[arg(long, default_value_t = 2_000_000)]
    pub schema_rows: u64,
    /// pgbench scale of the source-impact section (100,000 accounts each,
    /// about 13 MB).
    #[arg(long, default_value_t = 300)]
    pub impact_scale: u32,
    /// pgbench transactions per second during the source-impact moves.
    #[arg(long, default_value_t = 200)]
    pub impact_rate: u32,
    /// Sections to skip: copy, catchup, wide, many, steady, schema, replicas, impact.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Write the report here too.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.pgdog.exists() {
        return Err(format!(
            "{} not found: cargo build --release first (bench/data-sync does)",
            args.pgdog.display()
        )
        .into());
    }
    let install = match args.pg {
        Some(v) => PgInstall::major(v).ok_or(format!("PostgreSQL {v} not found"))?,
        None => PgInstall::default_install().ok_or("no PostgreSQL server binaries found")?,
    };
    eprintln!(
        "starting 4 PostgreSQL {} servers: source, a 1-shard and a 2-shard destination",
        install.major
    );
    // Durability settings as a production server has them; checkpoints
    // spread out so a run does not straddle one by chance.
    let options = ClusterOptions {
        install: Some(install.clone()),
        ..Default::default()
    }
    .setting("fsync", "on")
    .setting("synchronous_commit", "on")
    .setting("full_page_writes", "on")
    .setting("max_wal_size", "4GB")
    .setting("checkpoint_timeout", "30min")
    .setting("shared_buffers", "256MB")
    .setting("max_sync_workers_per_subscription", "2");
    let fleet = Fleet::start(1, 3, options).await?;
    let bench = runs::Bench::new(fleet, install.clone(), &args).await?;
    let mut report = report::Report::default();
    bench.machine(&mut report).await?;
    if !args.skip.iter().any(|s| s == "copy") {
        bench.copy(&mut report).await?;
    }
    if !args.skip.iter().any(|s| s == "catchup") {
        bench.catch_up(&mut report).await?;
    }
    if !args.skip.iter().any(|s| s == "wide") {
        bench.wide(&mut report, args.wide_rows).await?;
    }
    if !args.skip.iter().any(|s| s == "many") {
        bench
            .many_tables(
                &mut report,
                args.many_tables,
                Duration::from_secs(args.many_native_seconds),
            )
            .await?;
    }
    if !args.skip.iter().any(|s| s == "schema") {
        bench.schema_sync(&mut report, args.schema_rows).await?;
    }
    if !args.skip.iter().any(|s| s == "steady") {
        bench
            .steady(&mut report, Duration::from_secs(args.steady_seconds))
            .await?;
    }
    // The four servers go before the replica set starts.
    drop(bench);
    if !args.skip.iter().any(|s| s == "replicas") {
        runs::replicas::run(&args, &mut report).await?;
    }
    if !args.skip.iter().any(|s| s == "impact") {
        runs::impact::run(&args, &install, &args.pgdog.canonicalize()?, &mut report).await?;
    }
    let text = report.render();
    println!("{text}");
    std::fs::write(&args.out, &text)?;
    eprintln!("written to {}", args.out.display());
    Ok(())
}
