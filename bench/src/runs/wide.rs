//! Catch-up of a backlog of 4 kB rows into the 2-shard destination:
//! pgdog's peak memory must not grow with row width.

use std::time::Instant;

use pgdog::harness::fleet::DATABASE;

use super::Bench;
use crate::peers::{self, Move};
use crate::report::Report;
use crate::Result;

/// The move of the `wide` table's publication to two shards.
const WIDE: Move = Move {
    from: "source",
    publication: "bench_wide",
    to: "dest2",
};

impl Bench {
    /// Catch-up of `rows` inserts of 4 kB rows (in transactions of 1,000)
    /// into the 2-shard destination: pgdog's peak memory must not grow with
    /// row width, whatever the backlog.
    pub async fn wide(&self, report: &mut Report, rows: u64) -> Result<()> {
        self.wide_setup().await?;
        let extra = ["--sync-only", "--skip-schema-sync"];
        self.run_data_sync(WIDE, &extra, "wide-copy.log", "pgdog --sync-only (wide)")
            .await?;
        self.write_wide_rows(rows).await?;
        let target = self.current_lsn().await?;
        let started = Instant::now();
        let mut child = self.data_sync(WIDE, &["--replicate-only"], "wide.log")?;
        let slot = "pgdog_bench_wide_dest2";
        let t = self.until_confirmed(slot, target, started).await;
        peers::stop_pgdog(&child).await;
        child.wait().await?;
        let t = t?;
        let usage = self.usage("wide.log")?;
        self.run_data_sync(
            WIDE,
            &["--cleanup"],
            "wide-cleanup.log",
            "pgdog --cleanup (wide)",
        )
        .await?;
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

    /// The `wide` table, empty, on the source and both shards, and its
    /// publication.
    async fn wide_setup(&self) -> Result<()> {
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
        Ok(())
    }

    /// `rows` rows of 4 kB into `wide`, 1,000 per transaction.
    async fn write_wide_rows(&self, rows: u64) -> Result<()> {
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
        Ok(())
    }
}
