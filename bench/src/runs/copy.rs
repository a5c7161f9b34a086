//! Copy 1→1 and 1→2: the raw pipe one table after another and all at
//! once, a native subscription, pgdog `--sync-only`, then `pgdog verify`
//! of each pgdog copy and pgdog's CPU and memory.

use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;

use super::{bench_move, Bench};
use crate::dataset::TABLES;
use crate::peers::{self, Usage};
use crate::report::Report;
use crate::{median, Result};

/// Every run's figures, before the medians.
#[derive(Debug, Default)]
struct Samples {
    seq: Vec<f64>,
    par: Vec<f64>,
    native: Vec<f64>,
    one: Vec<f64>,
    two: Vec<f64>,
    /// pgdog's copies, 1→1 and 1→2.
    usage: Vec<Usage>,
    /// CPU seconds of the sequential pipe's psql processes.
    pipe_cpu: Vec<f64>,
    verify_one: Vec<Usage>,
    verify_two: Vec<Usage>,
}

impl Bench {
    pub async fn copy(&self, report: &mut Report) -> Result<()> {
        let mut s = Samples::default();
        for run in 0..self.runs {
            eprintln!("copy run {}/{}", run + 1, self.runs);
            let (wall, cpu) = self.pipes(false).await?;
            s.seq.push(wall);
            s.pipe_cpu.push(cpu);
            s.par.push(self.pipes(true).await?.0);
            s.native.push(self.native_copy().await?);
            self.drop_slots().await?;
            self.reset_dests().await?;
            let u = self.pgdog_sync_only("dest1", "copy1.log").await?;
            s.one.push(u.wall);
            s.usage.push(u);
            s.verify_one
                .push(self.pgdog_verify("dest1", "verify1.log").await?);
            self.pgdog_cleanup("dest1").await?;
            self.reset_dests().await?;
            let u = self.pgdog_sync_only("dest2", "copy2.log").await?;
            s.two.push(u.wall);
            s.usage.push(u);
            s.verify_two
                .push(self.pgdog_verify("dest2", "verify2.log").await?);
            self.pgdog_cleanup("dest2").await?;
        }
        self.report_copy(report, s);
        Ok(())
    }

    fn report_copy(&self, report: &mut Report, s: Samples) {
        let (seq, par, native, one, two) = (
            median(s.seq),
            median(s.par),
            median(s.native),
            median(s.one),
            median(s.two),
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
        for (section, wall) in [("copy 1→1", one), ("copy 1→2", two)] {
            report.row(
                section,
                "pgdog data-sync --sync-only",
                secs(wall),
                format!(
                    "{}, {}",
                    ratio(wall, seq, "sequential pipe"),
                    ratio(wall, par, "parallel pipe")
                ),
            );
        }
        for (name, runs, copy) in [("1→1", &s.verify_one, one), ("1→2", &s.verify_two, two)] {
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
        self.report_copy_resources(report, &s.usage, s.pipe_cpu);
    }

    /// pgdog's CPU per GB and peak memory over its copies.
    fn report_copy_resources(&self, report: &mut Report, usage: &[Usage], pipe_cpu: Vec<f64>) {
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

    /// A native subscription 1→1: seconds until every table is ready.
    async fn native_copy(&self) -> Result<f64> {
        self.reset_dests().await?;
        let dest = &self.fleet.dests[0];
        let started = Instant::now();
        peers::subscribe(&self.fleet.sources[0], dest, "bench_sub", "bench", false).await?;
        let poll = Duration::from_millis(20);
        let ready = peers::until_subscription_ready(dest, Some(TABLES.len()), poll, started, None);
        // No time limit: it returns only once ready.
        let elapsed = ready.await?.ok_or("subscription never ready")?;
        peers::unsubscribe(dest, "bench_sub").await?;
        Ok(elapsed)
    }

    /// Drop the source's slots that nothing uses.
    async fn drop_slots(&self) -> Result<()> {
        self.fleet.sources[0]
            .exec(
                DATABASE,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active",
            )
            .await?;
        Ok(())
    }

    /// `pgdog verify` of the move to `to` (nothing streams it: verify
    /// applies from the slot itself); it must find every table equal.
    async fn pgdog_verify(&self, to: &str, log: &str) -> Result<Usage> {
        let status = self
            .pgdog_command("verify", bench_move(to), &[], log)?
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
}
