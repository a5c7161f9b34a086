//! Copy from 0, 1 and 2 read replicas (PostgreSQL 16+): a primary with two
//! standbys and a one-shard destination, the same data, pgdog
//! `--sync-only` with each config.

use std::path::Path;
use std::time::Instant;

use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{Cluster, ClusterOptions, PgInstall};

use super::empty_dest_sql;
use crate::dataset;
use crate::peers;
use crate::report::Report;
use crate::{median, Args, Result};

/// A primary, its two standbys and a destination. Fields drop in order:
/// the destination and standbys stop before the primary.
struct ReplicaSet {
    dest: Cluster,
    standbys: Vec<Cluster>,
    primary: Cluster,
}

/// The replicas section; skipped without PostgreSQL 16+.
pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    let Some(install) = PgInstall::newest_at_least(16) else {
        report.note("replicas: skipped, no PostgreSQL 16+ (scripts/fetch-postgres.sh)".into());
        return Ok(());
    };
    eprintln!(
        "replicas: PostgreSQL {} primary with 2 standbys and a destination",
        install.major
    );
    let set = start(&install, args.rows).await?;
    let dir = std::env::temp_dir().join(format!("pgdog-bench-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let users = "[[users]]\nname = \"pgdog\"\ndatabase = \"source\"\nserver_user = \"postgres\"\n\n[[users]]\nname = \"pgdog\"\ndatabase = \"dest1\"\nserver_user = \"postgres\"\n";
    std::fs::write(dir.join("users.toml"), users)?;
    let mut figures = Vec::new();
    for n in 0..=2 {
        write_config(&dir, &set, n)?;
        figures.push(median(time_copies(args, &dir, &set, n).await?));
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

/// The servers, with the benchmark's data on the primary.
async fn start(install: &PgInstall, rows: u64) -> Result<ReplicaSet> {
    let options = ClusterOptions {
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
    primary.exec(DATABASE, &dataset::load_sql(rows)).await?;
    primary.exec(DATABASE, "VACUUM ANALYZE").await?;
    Ok(ReplicaSet {
        dest,
        standbys,
        primary,
    })
}

/// pgdog's config: cluster `source` is the primary and `replicas`
/// standbys, `dest1` the destination.
fn write_config(dir: &Path, set: &ReplicaSet, replicas: usize) -> Result<()> {
    let server = |name: &str, c: &Cluster, role: &str| {
        format!(
            "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nrole = \"{role}\"\ndatabase_name = \"{DATABASE}\"\n\n",
            c.host(),
            c.port()
        )
    };
    let mut toml = String::from("[general]\nport = 0\ntls_verify = \"disabled\"\n");
    // Schema sync of a newer primary needs a pg_dump as new.
    if let Some(pg_dump) = pgdog::harness::install::pg_dump() {
        toml.push_str(&format!("pg_dump = \"{}\"\n", pg_dump.display()));
    }
    toml.push('\n');
    toml.push_str(&server("source", &set.primary, "primary"));
    for s in set.standbys.iter().take(replicas) {
        toml.push_str(&server("source", s, "replica"));
    }
    toml.push_str(&server("dest1", &set.dest, "primary"));
    std::fs::write(dir.join("pgdog.toml"), toml)?;
    Ok(())
}

/// Seconds of each run's pgdog copy with the config in `dir`.
async fn time_copies(args: &Args, dir: &Path, set: &ReplicaSet, n: usize) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for run in 0..args.runs.max(1) {
        eprintln!("replicas: {n} replica(s), run {}/{}", run + 1, args.runs);
        set.dest.exec(DATABASE, &empty_dest_sql()).await?;
        set.primary.exec(DATABASE, "CHECKPOINT").await?;
        let started = Instant::now();
        let sync = |extra: &str| {
            let mut cmd = peers::data_sync(&args.pgdog, dir, "dest1");
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
    Ok(times)
}
