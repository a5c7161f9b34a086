//! A move into empty shards (schema sync, copy, index builds) of a table
//! with a primary key and three secondary indexes, against `pgcopydb
//! clone` and a raw pipe into the indexed table.

use std::path::PathBuf;
use std::time::Instant;

use pgdog::harness::Cluster;

use super::Bench;
use crate::dataset::{self, INDEXED_DATABASE as IDX};
use crate::peers::{self, Move};
use crate::report::Report;
use crate::{median, Result};

/// Every run's seconds, before the medians.
#[derive(Debug, Default)]
struct Samples {
    pipe: Vec<f64>,
    copydb: Vec<f64>,
    one: Vec<f64>,
    two: Vec<f64>,
    /// pgdog's peak RSS over all its runs, kB.
    rss: u64,
}

impl Bench {
    /// A move into empty shards against pgcopydb and a raw pipe: one table
    /// with a primary key and three secondary indexes. The pipe goes into
    /// the indexed table (what a copy into a schema made beforehand costs);
    /// `pgcopydb clone` and pgdog start from an empty database and build
    /// the indexes after the copy.
    pub async fn schema_sync(&self, report: &mut Report, rows: u64) -> Result<()> {
        let bytes = self.load_indexed(rows).await?;
        let pgcopydb = which("pgcopydb").ok_or("pgcopydb not found (apt-get install pgcopydb)")?;
        let mut s = Samples::default();
        for run in 0..self.runs {
            eprintln!("schema sync run {}/{}", run + 1, self.runs);
            s.pipe.push(self.indexed_pipe().await?);
            s.copydb.push(self.indexed_pgcopydb(&pgcopydb, run).await?);
            // pgdog into empty shards: schema sync, copy, indexes.
            for (to, list) in [("idx1", &mut s.one), ("idx2", &mut s.two)] {
                let u = self.indexed_pgdog(to).await?;
                s.rss = s.rss.max(u.max_rss_kb);
                list.push(u.wall);
            }
        }
        report_schema(report, rows, bytes, s);
        Ok(())
    }

    /// The indexed table with `rows` rows on the source, in a fresh
    /// database; its total bytes.
    async fn load_indexed(&self, rows: u64) -> Result<f64> {
        let src = &self.fleet.sources[0];
        self.fresh_indexed(&[src]).await?;
        eprintln!("loading {rows} indexed rows on the source...");
        src.exec(IDX, dataset::INDEXED_SCHEMA).await?;
        src.exec(IDX, &dataset::indexed_load_sql(rows)).await?;
        src.exec(IDX, "VACUUM ANALYZE").await?;
        let mut c = src.connect(IDX).await?;
        let size = c
            .query("SELECT pg_total_relation_size('orders_indexed')")
            .await?;
        let bytes: f64 = size[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0.0);
        c.close().await;
        Ok(bytes)
    }

    /// Seconds of the raw pipe into a table that has its indexes.
    async fn indexed_pipe(&self) -> Result<f64> {
        let d0 = &self.fleet.dests[0];
        self.fresh_indexed(&[d0]).await?;
        d0.exec(IDX, dataset::INDEXED_SCHEMA).await?;
        let started = Instant::now();
        let src = &self.fleet.sources[0];
        let mut pipe = peers::copy_pipe(src, d0, IDX, "orders_indexed", None)?;
        if !pipe.wait().await?.success() {
            return Err("pipe into the indexed table failed".into());
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Seconds of `pgcopydb clone` into an empty database.
    async fn indexed_pgcopydb(&self, pgcopydb: &std::path::Path, run: usize) -> Result<f64> {
        let d0 = &self.fleet.dests[0];
        self.fresh_indexed(&[d0]).await?;
        let dir = self.dir.join(format!("pgcopydb-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let log = std::fs::File::create(self.dir.join("pgcopydb.log"))?;
        let started = Instant::now();
        let src = &self.fleet.sources[0];
        let status = peers::pgcopydb_clone(pgcopydb, src, d0, IDX, &dir, log).await?;
        if !status.success() {
            return Err(format!(
                "pgcopydb clone failed:\n{}",
                std::fs::read_to_string(self.dir.join("pgcopydb.log"))?
            )
            .into());
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// pgdog `--sync-only` into empty shards of pgdog cluster `to`, then
    /// its cleanup; its usage.
    async fn indexed_pgdog(&self, to: &str) -> Result<peers::Usage> {
        self.fresh_indexed(&self.dests(to)).await?;
        let m = Move {
            from: "idxsrc",
            publication: "indexed",
            to,
        };
        let log = format!("schema-{to}.log");
        self.run_data_sync(m, &["--sync-only"], &log, "pgdog into empty shards")
            .await?;
        let usage = self.usage(&log)?;
        self.run_data_sync(m, &["--cleanup"], "schema-cleanup.log", "pgdog --cleanup")
            .await?;
        Ok(usage)
    }

    /// Drop and create the indexed figure's database on `servers`, empty.
    async fn fresh_indexed(&self, servers: &[&Cluster]) -> Result<()> {
        for c in servers {
            c.exec(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {IDX} WITH (FORCE)"),
            )
            .await?;
            c.create_database(IDX).await?;
            c.exec("postgres", "CHECKPOINT").await?;
        }
        Ok(())
    }
}

/// The schema-sync rows: pipe baseline, pgcopydb, pgdog 1→1 and 1→2.
fn report_schema(report: &mut Report, rows: u64, bytes: f64, s: Samples) {
    let (pipe, copydb) = (median(s.pipe), median(s.copydb));
    let (one, two) = (median(s.one), median(s.two));
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
            s.rss as f64 / 1024.0
        ),
    );
}

/// A program on `$PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.exists())
}
