//! Trying a failed step again: which failures are worth it, and how long
//! to wait before each attempt. Decided here only; the copy and the stream
//! each hold a [`Retrier`] with their policy.
//!
//! Worth a retry (a new attempt starts from new connections and the
//! progress recorded on the destinations, so it repeats nothing):
//!
//! | failure | why |
//! |-|-|
//! | socket error, connection closed, connect or read timeout | the network or a server restart; the next attempt reconnects |
//! | SQLSTATE class 08 (connection exception) | the same, as the server saw it |
//! | 57P01, 57P02, 57P03 (admin or crash shutdown, cannot connect now) | a server restarting or failing over |
//! | class 53 (insufficient resources: too many connections, out of memory or disk) | often passes once other sessions end |
//! | 40001, 40P01 (serialization failure, deadlock) | the other transaction wins; ours can go again |
//! | 25P03 (idle in transaction timeout) | a server-side setting pgdog overrides; a pooler in between may still apply it |
//! | 55006 (object in use: the slot is still held by an ending session) | the old session's walsender exits within seconds |
//! | a change waited 30 s for a chunk of its table's copy being written | the chunk may wait for a row the stream's open destination transaction holds (a unique index): the stream lets go of it and starts again from the slot |
//!
//! Worth a new plan of the move instead (the stream stops cleanly, the
//! move plans again and goes on from the slot):
//!
//! | failure | why |
//! |-|-|
//! | 23514 "no partition of relation ... found for row" while applying | the source has a partition the destination lacks (created under a table published through its root); schema sync creates it |
//!
//! Everything else is permanent: a query cancel (57014: pgdog sets no
//! statement timeout, so somebody stopped its query on purpose), an
//! authentication or permission error, a constraint violation, a protocol
//! error, pgdog's own state not fitting, a stop.
//!
//! Waiting for something outside pgdog (a slot let go, a lag to shrink, a
//! replica to replay, a barrier to be reached) is the other policy here:
//! every poll loop ticks a [`Wait`], which knows what it waits for, how
//! often it looks, until when, and says so in the log and in its error.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::DataSyncError;
use crate::net::ConnectionError;

/// Whether a server's SQLSTATE is worth a retry (the table above).
pub fn sqlstate_worth_retrying(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "25P03" | "55006"
        )
}

/// Whether a connection error is worth a retry (the table above).
pub fn connection_worth_retrying(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::Io { .. }
        | ConnectionError::Closed { .. }
        | ConnectionError::Timeout { .. } => true,
        ConnectionError::Server(e) => sqlstate_worth_retrying(e.code()),
        ConnectionError::Tls { .. }
        | ConnectionError::Auth { .. }
        | ConnectionError::Protocol { .. }
        | ConnectionError::Unexpected { .. }
        | ConnectionError::Usage { .. } => false,
    }
}

/// Whether a data-sync error is worth a retry: connection failures,
/// however deep they are wrapped, and a change held too long by a chunk.
pub fn worth_retrying(e: &DataSyncError) -> bool {
    match e {
        DataSyncError::Connection(e) => connection_worth_retrying(e),
        DataSyncError::HeldByChunk { .. } => true,
        DataSyncError::Copy { error, .. } | DataSyncError::Apply { error, .. } => {
            worth_retrying(error)
        }
        DataSyncError::Spool { .. }
        | DataSyncError::Config(_)
        | DataSyncError::Preflight { .. }
        | DataSyncError::Sharding(_)
        | DataSyncError::Protocol(_)
        | DataSyncError::State(_)
        | DataSyncError::Stream { .. }
        | DataSyncError::Schema(_)
        | DataSyncError::NewColumns { .. }
        | DataSyncError::SchemaChanged { .. }
        | DataSyncError::ShapeChanged { .. }
        | DataSyncError::Stopped => false,
    }
}

/// Whether a failure of the stream needs a new plan of the move (the
/// second table above); what to say when it does.
pub fn wants_new_plan(e: &DataSyncError) -> Option<String> {
    if let DataSyncError::SchemaChanged { .. } = e {
        return Some(e.to_string());
    }
    let server = match e {
        DataSyncError::Apply { error, .. } => match error.as_ref() {
            DataSyncError::Connection(c) => c.server_error()?,
            _ => return None,
        },
        _ => return None,
    };
    (server.code() == "23514" && server.message().starts_with("no partition of relation"))
        .then(|| format!("the destination lacks a partition the source has: {e}"))
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry; it doubles with each failure...
    pub first: Duration,
    /// ...up to this.
    pub max: Duration,
    /// Attempts in all before giving up (`None`: never give up).
    pub attempts: Option<u32>,
    /// An attempt that ran this long was healthy: the count starts again.
    pub healthy_after: Duration,
}

impl RetryPolicy {
    /// A table copy: a few attempts (each redoes the whole table).
    pub const COPY: RetryPolicy = RetryPolicy {
        first: Duration::from_millis(500),
        max: Duration::from_secs(8),
        attempts: Some(5),
        healthy_after: Duration::from_secs(600),
    };
    /// A replication stream: as long as it takes (a source restart or a
    /// failover can take minutes), resuming from the slot each time.
    pub const STREAM: RetryPolicy = RetryPolicy {
        first: Duration::from_millis(250),
        max: Duration::from_secs(10),
        attempts: None,
        healthy_after: Duration::from_secs(60),
    };

    /// The wait after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// The retry state of one step.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    failures: u32,
    started: Instant,
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> Retrier {
        Retrier {
            policy,
            failures: 0,
            started: Instant::now(),
        }
    }

    /// Failures so far in this run of failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After `error`: how long to wait before the next attempt, or `None`
    /// when it is not worth one (or the attempts are used up).
    pub fn after(&mut self, error: &DataSyncError) -> Option<Duration> {
        if !worth_retrying(error) {
            return None;
        }
        if self.started.elapsed() >= self.policy.healthy_after {
            self.failures = 0;
        }
        self.failures += 1;
        if self.policy.attempts.is_some_and(|a| self.failures >= a) {
            return None;
        }
        Some(self.policy.delay(self.failures))
    }

    /// Wait `delay`, unless `shutdown` comes first (then `Err(Stopped)`);
    /// the next attempt's clock starts after it.
    pub async fn wait(
        &mut self,
        delay: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), DataSyncError> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {
                self.started = Instant::now();
                Ok(())
            }
            _ = shutdown.cancelled() => Err(DataSyncError::Stopped),
        }
    }
}

/// One poll loop's policy: what it waits for (for the log and the error),
/// how often it looks, and until when. The loop checks, and when the
/// check is not satisfied calls [`Wait::tick`] with what it saw.
#[derive(Debug)]
pub struct Wait {
    what: String,
    interval: Duration,
    started: Instant,
    deadline: Option<Instant>,
    log_every: Option<Duration>,
    last_log: Instant,
}

impl Wait {
    /// Waiting for `what` ("the stream of slot x to let go of it"),
    /// looking every `interval`, for `timeout` at most (`None`: until
    /// stopped).
    pub fn new(what: impl Into<String>, timeout: Option<Duration>, interval: Duration) -> Wait {
        let now = Instant::now();
        Wait {
            what: what.into(),
            interval,
            started: now,
            deadline: timeout.map(|t| now + t),
            log_every: None,
            last_log: now,
        }
    }

    /// Log what the loop sees at info level every `every` while it waits.
    pub fn log_every(mut self, every: Duration) -> Wait {
        self.log_every = Some(every);
        self
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// After a check that found `now` (what stands, for people): `Ok(true)`
    /// once one interval (cut at the deadline) has passed, `Ok(false)` when
    /// the deadline has passed, `Err(Stopped)` when `stop` comes first.
    pub async fn tick(
        &mut self,
        now: &str,
        stop: Option<&CancellationToken>,
    ) -> Result<bool, DataSyncError> {
        let left = self.left();
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(false);
        }
        if self
            .log_every
            .is_some_and(|every| self.last_log.elapsed() >= every)
        {
            tracing::info!(
                waited_s = self.started.elapsed().as_secs(),
                "waiting for {}: {now}",
                self.what
            );
            self.last_log = Instant::now();
        }
        let pause = left.map_or(self.interval, |l| l.min(self.interval));
        let stopped = async {
            match stop {
                Some(s) => s.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => Ok(true),
            _ = stopped => Err(DataSyncError::Stopped),
        }
    }

    /// [`Wait::tick`], with the deadline an error that says what was
    /// awaited, for how long, and what stood at the end.
    pub async fn tick_or_fail(
        &mut self,
        now: &str,
        stop: Option<&CancellationToken>,
    ) -> Result<(), DataSyncError> {
        if self.tick(now, stop).await? {
            Ok(())
        } else {
            Err(self.timed_out(now))
        }
    }

    /// The error of a wait whose deadline passed with `now` standing.
    pub fn timed_out(&self, now: &str) -> DataSyncError {
        DataSyncError::State(format!(
            "waited {} s for {}, in vain: {now}",
            self.started.elapsed().as_secs(),
            self.what
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> DataSyncError {
        DataSyncError::Connection(crate::net::error::server_error_for_tests(code))
    }

    #[test]
    fn the_table() {
        for code in ["57P01", "08006", "53300", "40P01", "55006"] {
            assert!(worth_retrying(&server_error(code)), "{code}");
        }
        for code in ["23505", "57014", "42P01", "28P01", "42501"] {
            assert!(!worth_retrying(&server_error(code)), "{code}");
        }
        let wrapped = DataSyncError::Copy {
            table: "t".into(),
            source_shard: 0,
            error: Box::new(server_error("57P01")),
        };
        assert!(worth_retrying(&wrapped));
        assert!(!worth_retrying(&DataSyncError::State("x".into())));
        assert!(!worth_retrying(&DataSyncError::Stopped));
        assert!(worth_retrying(&DataSyncError::HeldByChunk {
            table: "t".into(),
            source_shard: 0,
            seconds: 30,
        }));
        // Columns added on the source: not a retry, a wait for the
        // destination shards, then a new plan.
        assert!(!worth_retrying(&DataSyncError::NewColumns {
            table: "t".into(),
            source_shard: 0,
            columns: vec![],
        }));
    }

    #[test]
    fn backoff_and_attempts() {
        let p = RetryPolicy::COPY;
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(10), Duration::from_secs(8));
        let mut r = Retrier::new(p);
        let e = server_error("57P01");
        let waits: Vec<Option<Duration>> = (0..5).map(|_| r.after(&e)).collect();
        assert_eq!(waits.iter().filter(|w| w.is_some()).count(), 4);
        assert_eq!(waits[4], None, "five attempts in all");
        let mut s = Retrier::new(RetryPolicy::STREAM);
        assert!(
            (0..100).all(|_| s.after(&e).is_some()),
            "streams never give up"
        );
        assert_eq!(s.after(&server_error("23505")), None);
    }

    #[tokio::test]
    async fn a_wait_ticks_until_its_deadline_then_says_what_it_waited_for() {
        let mut w = Wait::new(
            "the slot to be let go",
            Some(Duration::from_millis(120)),
            Duration::from_millis(50),
        );
        let mut ticks = 0;
        while w.tick("pid 7 holds it", None).await.unwrap() {
            ticks += 1;
            assert!(ticks < 10, "the deadline never came");
        }
        // However late the sleeps wake, no tick is granted past the
        // deadline.
        assert!(w.elapsed() >= Duration::from_millis(120));
        assert_eq!(w.left(), Some(Duration::ZERO));
        let e = w.tick_or_fail("pid 7 holds it", None).await.unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("the slot to be let go") && m.contains("pid 7 holds it"),
            "{m}"
        );
        // No deadline: only a stop ends it.
        let token = CancellationToken::new();
        token.cancel();
        let mut forever = Wait::new("x", None, Duration::from_secs(60));
        assert_eq!(forever.left(), None);
        assert!(matches!(
            forever.tick("y", Some(&token)).await,
            Err(DataSyncError::Stopped)
        ));
    }

    #[tokio::test]
    async fn waiting_listens_for_shutdown() {
        let token = CancellationToken::new();
        token.cancel();
        let mut r = Retrier::new(RetryPolicy::STREAM);
        let started = Instant::now();
        let res = r.wait(Duration::from_secs(60), &token).await;
        assert!(matches!(res, Err(DataSyncError::Stopped)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
