//! Copy of many small tables while the source always has a transaction
//! open: pgdog against one pipe per table and a native subscription.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use tokio::process::{Child, Command};

use super::Bench;
use crate::peers::{self, Move};
use crate::report::Report;
use crate::Result;

/// The move of the small tables' publication to two shards.
const MANY: Move = Move {
    from: "source",
    publication: "bench_many",
    to: "dest2",
};

impl Bench {
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
        let truncate = self.many_setup(tables).await?;
        let mut busy = self.busy_source()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pipe = self.many_pipes(tables).await?;
        let pgdog = self.many_pgdog().await?;

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
        let native = self.many_native(tables, &truncate, native_limit).await?;
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

    /// The small tables, filled on the source and empty on every
    /// destination, and their publication; returns the SQL that empties
    /// a destination again.
    async fn many_setup(&self, tables: usize) -> Result<String> {
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
        Ok(truncate)
    }

    /// Always a transaction open on the source, as on a busy server:
    /// pgbench, two clients, one-second transactions, until killed.
    fn busy_source(&self) -> Result<Child> {
        let script = self.dir.join("busy.sql");
        std::fs::write(
            &script,
            "BEGIN;\nINSERT INTO busy (at) VALUES (now());\nSELECT pg_sleep(1);\nCOMMIT;\n",
        )?;
        let src = &self.fleet.sources[0];
        Ok(Command::new(&self.pgbench)
            .args(["-n", "-c", "2", "-T", "3600", "-h", src.host(), "-p"])
            .arg(src.port().to_string())
            .args(["-U", "postgres", "-f"])
            .arg(&script)
            .arg(DATABASE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?)
    }

    /// Seconds for a pipe per table into the 1-shard destination, one
    /// after another.
    async fn many_pipes(&self, tables: usize) -> Result<f64> {
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
        Ok(started.elapsed().as_secs_f64())
    }

    /// Seconds of pgdog's copy 1→2 (its own wall time), then its cleanup.
    async fn many_pgdog(&self) -> Result<f64> {
        eprintln!("many tables: pgdog --sync-only 1→2...");
        let extra = ["--sync-only", "--skip-schema-sync"];
        self.run_data_sync(MANY, &extra, "many.log", "pgdog --sync-only (many tables)")
            .await?;
        let pgdog = self.usage("many.log")?.wall;
        let what = "pgdog --cleanup (many tables)";
        self.run_data_sync(MANY, &["--cleanup"], "many-cleanup.log", what)
            .await?;
        Ok(pgdog)
    }

    /// Seconds until a native subscription 1→1 has every table ready, or
    /// `None` past `limit`.
    async fn many_native(
        &self,
        tables: usize,
        truncate: &str,
        limit: Duration,
    ) -> Result<Option<f64>> {
        eprintln!(
            "many tables: native subscription (a slot per table; at most {} s)...",
            limit.as_secs()
        );
        let dest = &self.fleet.dests[0];
        dest.exec(DATABASE, truncate).await?;
        let started = Instant::now();
        peers::subscribe(
            &self.fleet.sources[0],
            dest,
            "bench_many_sub",
            "bench_many",
            false,
        )
        .await?;
        let poll = Duration::from_millis(100);
        let native =
            peers::until_subscription_ready(dest, Some(tables), poll, started, Some(limit)).await?;
        peers::unsubscribe(dest, "bench_many_sub").await?;
        Ok(native)
    }
}
