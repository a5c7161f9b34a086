//! `SHOW REPLICATION_SLOTS`: every source shard's replication stream of
//! every task: how far behind the destination is, and how fast changes
//! are applied.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgdog_protocol::replication::PG_EPOCH_OFFSET_MICROS;
use pgdog_protocol::Lsn;

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::{decimal, text, timestamp_micros};
use crate::admin::reply::Reply;

/// A rate is measured over at least this long; asking again sooner shows
/// the last one measured instead of the noise of a few milliseconds.
const MIN_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowReplicationSlots;

impl AdminCommand for ShowReplicationSlots {
    const USAGE: Usage = Usage {
        syntax: "SHOW REPLICATION_SLOTS",
        description:
            "replication streams of every task: LSNs, lag, last commit applied, apply rate, counts",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowReplicationSlots)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new(
            "SHOW",
            &[
                "task_id",
                "source_shard",
                "host",
                "slot",
                "confirmed_flush_lsn",
                "current_wal_lsn",
                "lag_bytes",
                "lag_seconds",
                "last_commit_time",
                "last_applied_at",
                "changes_per_second",
                "transactions",
                "changes",
                "skipped_transactions",
                "missing_rows",
            ],
        );
        for task in ctx.registry.tasks() {
            for s in task.streams() {
                let changes = s.changes.load(Ordering::Relaxed);
                let rate = ctx.apply_rates.rate(
                    task.id,
                    s.source_shard,
                    changes,
                    task.started_at.elapsed(),
                );
                let commit = s.last_commit_time.load(Ordering::Relaxed);
                let applied = s.last_apply_at.load(Ordering::Relaxed);
                reply.push(vec![
                    text(task.id),
                    text(s.source_shard),
                    text(&s.host),
                    text(&s.slot),
                    text(s.confirmed()),
                    text(Lsn(s.current_wal.load(Ordering::Relaxed))),
                    text(s.lag_bytes()),
                    s.lag_seconds().map(|l| format!("{l:.3}")),
                    (commit != 0).then(|| timestamp_micros(commit + PG_EPOCH_OFFSET_MICROS)),
                    (applied != 0).then(|| timestamp_micros(applied)),
                    decimal(rate),
                    text(s.transactions.load(Ordering::Relaxed)),
                    text(changes),
                    text(s.skipped.load(Ordering::Relaxed)),
                    text(s.missing_rows.load(Ordering::Relaxed)),
                ]);
            }
        }
        Ok(reply)
    }
}

/// Change counters seen before, per (task, source shard), so a rate can
/// be the changes since the last look divided by the time since.
#[derive(Debug, Default)]
pub struct ApplyRates {
    samples: Mutex<HashMap<(u64, usize), Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    changes: u64,
    rate: f64,
}

impl ApplyRates {
    /// Changes per second since the previous look (at least
    /// [`MIN_WINDOW`] ago); at the first look, since the task started.
    pub fn rate(&self, task: u64, shard: usize, changes: u64, since_start: Duration) -> f64 {
        self.rate_at(Instant::now(), task, shard, changes, since_start)
    }

    fn rate_at(
        &self,
        now: Instant,
        task: u64,
        shard: usize,
        changes: u64,
        since_start: Duration,
    ) -> f64 {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match samples.get_mut(&(task, shard)) {
            None => {
                let rate = changes as f64 / since_start.as_secs_f64().max(0.001);
                samples.insert(
                    (task, shard),
                    Sample {
                        at: now,
                        changes,
                        rate,
                    },
                );
                rate
            }
            Some(s) => {
                let window = now.saturating_duration_since(s.at);
                if window >= MIN_WINDOW {
                    s.rate = changes.saturating_sub(s.changes) as f64 / window.as_secs_f64();
                    s.at = now;
                    s.changes = changes;
                }
                s.rate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::progress::Stream;
    use crate::data_sync::Registry;

    #[test]
    fn rates_from_deltas() {
        let rates = ApplyRates::default();
        let t0 = Instant::now();
        // First look: since the start.
        assert_eq!(rates.rate_at(t0, 1, 0, 100, Duration::from_secs(10)), 10.0);
        // Too soon: the same answer.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(rates.rate_at(t1, 1, 0, 500, Duration::from_secs(10)), 10.0);
        // Two seconds later, 400 more changes.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(rates.rate_at(t2, 1, 0, 500, Duration::from_secs(12)), 200.0);
        // Another shard is its own.
        assert_eq!(rates.rate_at(t2, 1, 1, 0, Duration::from_secs(12)), 0.0);
    }

    #[tokio::test]
    async fn stream_columns() {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("a", "b", "p");
        let stream = Arc::new(Stream {
            source_shard: 0,
            host: "127.0.0.1:5432".into(),
            slot: "pgdog_p_b".into(),
            ..Default::default()
        });
        stream
            .confirmed_flush
            .store(0x1_0000_0010, Ordering::Relaxed);
        stream.current_wal.store(0x1_0000_0110, Ordering::Relaxed);
        stream.changes.store(7, Ordering::Relaxed);
        task.add_stream(stream);
        let ctx = super::super::test_context(registry);
        let r = ShowReplicationSlots.execute(&ctx).await.unwrap();
        assert_eq!(r.get(0, "confirmed_flush_lsn"), Some("1/10"));
        assert_eq!(r.get(0, "current_wal_lsn"), Some("1/110"));
        assert_eq!(r.get(0, "lag_bytes"), Some("256"));
        assert_eq!(r.get(0, "lag_seconds"), None);
        assert_eq!(r.get(0, "last_applied_at"), None);
        assert_eq!(r.get(0, "changes"), Some("7"));
        assert_eq!(r.get(0, "slot"), Some("pgdog_p_b"));
        assert!(r.get(0, "changes_per_second").is_some());
    }
}
