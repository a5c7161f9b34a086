//! Steady state: commit-to-visible delay on the 2-shard destination while
//! pgbench writes at a constant rate.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use pgdog::net::{ConnectOptions, Connection, ConnectionError};
use tokio::task::JoinHandle;

use super::Bench;
use crate::peers;
use crate::report::Report;
use crate::Result;

/// When each ping was committed, by id.
type Sent = Arc<Mutex<HashMap<i64, Instant>>>;

impl Bench {
    /// Commit-to-visible delay on the 2-shard destination while pgbench
    /// writes at a steady rate: a ping row every 10 ms, its arrival polled.
    pub async fn steady(&self, report: &mut Report, duration: Duration) -> Result<()> {
        self.reset_dests().await?;
        let mut child = self.pgdog("dest2", &[], "steady.log")?;
        self.until_streaming("pgdog_bench_dest2").await?;
        let load = self.write_backlog(duration.as_secs(), Some(500)).await?;
        let sent: Sent = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let opts = self.fleet.sources[0].options("postgres", DATABASE);
        let writer = ping_writer(opts, sent.clone(), stop.clone());
        let mut readers = Vec::new();
        for d in self.dests("dest2") {
            let opts = d.options("postgres", DATABASE);
            readers.push(ping_reader(opts, sent.clone(), stop.clone()));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        writer.await??;
        let mut delays = Vec::new();
        for r in readers {
            delays.extend(r.await??);
        }
        drop(load);
        peers::stop_pgdog(&child).await;
        child.wait().await?;
        self.pgdog_cleanup("dest2").await?;
        report_delays(report, delays);
        Ok(())
    }

    /// Wait for streaming (the copy comes first): the permanent slot turns
    /// active when streaming starts.
    async fn until_streaming(&self, slot: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            if self.slot_active(slot).await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("pgdog never started streaming".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// A ping row on the source every 10 ms until `stop`, its commit time
/// noted in `sent`.
fn ping_writer(
    opts: ConnectOptions,
    sent: Sent,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<(), ConnectionError>> {
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
        Ok(())
    })
}

/// Polls a shard for new pings until `stop`: the milliseconds from each
/// ping's commit to its first sight.
fn ping_reader(
    opts: ConnectOptions,
    sent: Sent,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<Vec<f64>, ConnectionError>> {
    tokio::spawn(async move {
        let mut c = Connection::connect(&opts).await?;
        let mut seen = HashSet::new();
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
                    if let Some(t0) = sent.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
                        delays.push(now.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(delays)
    })
}

/// The p50 and p99 of the delays.
fn report_delays(report: &mut Report, mut delays: Vec<f64>) {
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
}
