//! Catch-up of a backlog of single-row transactions written while the
//! subscriber was stopped: a native subscription against pgdog 1→1 and
//! 1→2, until the slot confirms the backlog and until its last row shows.

use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use pgdog::harness::Cluster;

use super::Bench;
use crate::dataset::TABLES;
use crate::peers::{self, Usage};
use crate::report::Report;
use crate::{median, Result};

impl Bench {
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
        let what = format!("{} single-row transactions", self.backlog);
        for (section, native, one, two) in [
            ("catch-up (confirmed_flush_lsn)", native, one, two),
            (
                "catch-up (last row visible)",
                native_seen,
                one_seen,
                two_seen,
            ),
        ] {
            let (native, one, two) = (median(native), median(one), median(two));
            report.row(
                section,
                &format!("native subscription, {what}"),
                format!("{native:.2} s"),
                "baseline".into(),
            );
            for (who, t) in [("pgdog 1→1", one), ("pgdog 1→2", two)] {
                report.row(
                    section,
                    who,
                    format!("{t:.2} s"),
                    format!("{:.2}x native", t / native),
                );
            }
        }
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

    /// A native subscription copies, is disabled while the backlog is
    /// written, then enabled: (seconds to confirmed, seconds to visible).
    async fn native_catch_up(&self) -> Result<(f64, f64)> {
        self.reset_dests().await?;
        let dest = &self.fleet.dests[0];
        peers::subscribe(&self.fleet.sources[0], dest, "bench_sub", "bench", true).await?;
        // Wait for the copy, then stop applying.
        let poll = Duration::from_millis(50);
        peers::until_subscription_ready(dest, Some(TABLES.len()), poll, Instant::now(), None)
            .await?;
        peers::set_subscription_enabled(dest, "bench_sub", false).await?;
        self.write_backlog(self.backlog, None).await?.wait().await?;
        let marker = self.marker().await?;
        let target = self.current_lsn().await?;
        let started = Instant::now();
        peers::set_subscription_enabled(dest, "bench_sub", true).await?;
        let visible = self.until_visible(&[dest], marker, started).await?;
        let confirmed = self.until_confirmed("bench_sub", target, started).await?;
        peers::unsubscribe(dest, "bench_sub").await?;
        Ok((confirmed, visible))
    }

    /// pgdog copies to `to`, stops, the backlog is written, then pgdog
    /// `--replicate-only` runs: (seconds to confirmed, seconds to visible,
    /// its usage).
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
        peers::stop_pgdog(&child).await;
        child.wait().await?;
        let (t, visible) = (t?, visible?);
        if std::env::var("PGDOG_BENCH_LOG").is_ok() {
            self.print_log_tail(to);
        }
        let usage = self.usage("catchup.log")?;
        self.pgdog_cleanup(to).await?;
        Ok((t, visible, usage))
    }

    /// The last 40 lines of pgdog's catch-up log, on stderr.
    fn print_log_tail(&self, to: &str) {
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

    /// Insert a marker row after the backlog; returns its id.
    async fn marker(&self) -> Result<i64> {
        static MARKERS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let id = -1 - MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
}
