//! A hold on a move's apply at one source LSN, so that `pgdog verify` can
//! read every destination shard exactly as of the source snapshot it reads.
//!
//! The verify side and the streaming side may live in different processes,
//! so they meet in a table on destination shard 0
//! (`pgdog.verify_barriers`, one row per source shard of the slot):
//!
//! 1. verify writes `pause`; each streaming session stops at the next
//!    transaction boundary, commits what it applied, and answers `paused`.
//!    Nothing it applied can be newer than what verify is about to read.
//! 2. verify creates a temporary slot per source shard, whose exported
//!    snapshot sees exactly the transactions committed before its
//!    consistent point L, and writes `target` L. (It also writes a logical
//!    message after L, so an idle source still shows the stream it is past
//!    L.)
//! 3. each session applies every transaction committed before L, none
//!    after, commits, and answers `held`.
//! 4. verify opens a snapshot on every destination shard, then deletes the
//!    rows; the sessions go on.
//!
//! Rows expire: a verify that dies mid-way cannot hold a move for longer
//! than [`EXPIRY_SECS`] past its last heartbeat.
//!
//! `pgdog cutover` uses the same hold to drain a frozen source (a target
//! at the LSN of the freeze), keeps it through its verify (which moves the
//! target on), then writes `stop`: each session, held, commits and ends
//! its stream for good.

use std::time::{Duration, Instant};

use pgdog_protocol::Lsn;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::retry::Wait;
use crate::net::Connection;

/// A row not refreshed for this long no longer holds anything.
pub const EXPIRY_SECS: u32 = 30;
/// How often the streaming side looks for requests, and verify for answers.
const POLL: Duration = Duration::from_millis(100);

/// What verify asks of one source shard's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Stop at the next transaction boundary.
    Pause,
    /// Apply every transaction committed before this LSN, then stop.
    HoldAt(Lsn),
    /// End the stream at this transaction boundary (a cutover, once
    /// every session is held).
    Stop,
}

/// One request, by verify run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    pub ask: Ask,
}

/// A session's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub source_shard: usize,
    pub id: String,
    /// What it answers: an answer to an earlier ask (sent again while the
    /// request changed) must not overwrite the new one.
    pub ask: Ask,
    /// `paused` or `held`.
    pub state: &'static str,
    /// Commit LSN of the last transaction the session applied (or
    /// skipped) before it stopped; zero when none in this session.
    pub lsn: Lsn,
}

/// The streaming side's view: the open request per source shard.
pub type Requests = watch::Receiver<Vec<Option<Request>>>;

/// The streaming side: watch the table for requests, hand them to the
/// sessions, write their answers back. Runs until `shutdown`; a lost
/// connection is retried (verify waits or times out meanwhile).
pub fn spawn_agent(
    endpoints: Endpoints,
    slot: String,
    source_shards: usize,
    shutdown: CancellationToken,
) -> (Requests, mpsc::UnboundedSender<Answer>) {
    let (tx, rx) = watch::channel(vec![None; source_shards]);
    let (answer_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    tokio::spawn(async move {
        let mut conn: Option<Connection> = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let answer = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => None,
                a = answers.recv() => match a {
                    Some(a) => Some(a),
                    None => break,
                },
            };
            if conn.as_ref().is_none_or(|c| c.is_broken()) {
                conn = endpoints.connect_dest(0).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let result = match answer {
                Some(a) => write_answer(c, &slot, &a).await,
                None => read_requests(c, &slot, source_shards).await.map(|r| {
                    tx.send_if_modified(|old| {
                        let changed = *old != r;
                        *old = r;
                        changed
                    });
                }),
            };
            if let Err(e) = result {
                debug!("verify barrier agent: {e}");
                conn = None;
            }
        }
        if let Some(c) = conn {
            c.close().await;
        }
    });
    (rx, answer_tx)
}

async fn read_requests(
    conn: &mut Connection,
    slot: &str,
    n: usize,
) -> Result<Vec<Option<Request>>> {
    let rows = conn
        .query_text(
            "SELECT source_shard, verify_id, state, coalesce(target_lsn::text, '')
             FROM pgdog.verify_barriers WHERE slot_name = $1 AND expires_at > now()",
            &[slot],
        )
        .await?;
    let mut out = vec![None; n];
    for r in &rows {
        let Some(s) = r.text(0).and_then(|t| t.parse::<usize>().ok()) else {
            continue;
        };
        let ask = match (r.text(2), r.text(3).and_then(Lsn::parse)) {
            (Some("pause") | Some("paused"), _) => Ask::Pause,
            (Some("target") | Some("held"), Some(lsn)) => Ask::HoldAt(lsn),
            (Some("stop"), _) => Ask::Stop,
            _ => continue,
        };
        if let Some(slot) = out.get_mut(s) {
            *slot = Some(Request {
                id: r.text(1).unwrap_or("").to_string(),
                ask,
            });
        }
    }
    Ok(out)
}

async fn write_answer(conn: &mut Connection, slot: &str, a: &Answer) -> Result<()> {
    let s = a.source_shard.to_string();
    let lsn = a.lsn.to_string();
    // Only while the row still asks what the answer answers.
    match &a.ask {
        Ask::Pause => {
            conn.query_text(
                "UPDATE pgdog.verify_barriers SET state = $4, reached_lsn = $5::pg_lsn
                 WHERE slot_name = $1 AND source_shard = $2::int AND verify_id = $3
                   AND state IN ('pause', 'paused')",
                &[slot, &s, &a.id, a.state, &lsn],
            )
            .await?
        }
        Ask::HoldAt(target) => {
            conn.query_text(
                "UPDATE pgdog.verify_barriers SET state = $4, reached_lsn = $5::pg_lsn
                 WHERE slot_name = $1 AND source_shard = $2::int AND verify_id = $3
                   AND state IN ('target', 'held') AND target_lsn = $6::pg_lsn",
                &[slot, &s, &a.id, a.state, &lsn, &target.to_string()],
            )
            .await?
        }
        Ask::Stop => return Ok(()),
    };
    Ok(())
}

/// The verify side: one hold on every source shard of a move.
#[derive(Debug)]
pub struct Hold {
    conn: Connection,
    slot: String,
    id: String,
    source_shards: usize,
    last_beat: Instant,
}

impl Hold {
    /// Ask every session of `slot` to pause. Refused while another verify
    /// holds the same move.
    pub async fn begin(endpoints: &Endpoints, slot: &str, id: &str) -> Result<Hold> {
        let n = endpoints.source.shards.len();
        let mut conn = endpoints.connect_dest(0).await?;
        super::state::ensure_schema(&mut conn).await?;
        conn.query_text(
            "DELETE FROM pgdog.verify_barriers WHERE slot_name = $1 AND expires_at <= now()",
            &[slot],
        )
        .await?;
        let n_text = n.to_string();
        let secs = EXPIRY_SECS.to_string();
        // All rows or none: a verify that started at the same moment may
        // own some of them (the primary key decides).
        let inserted = conn
            .query_text(
                "INSERT INTO pgdog.verify_barriers (slot_name, source_shard, verify_id, state, expires_at)
                 SELECT $1, s, $2, 'pause', now() + make_interval(secs => $4::int)
                 FROM generate_series(0, $3::int - 1) s
                 ON CONFLICT (slot_name, source_shard) DO NOTHING
                 RETURNING source_shard",
                &[slot, id, &n_text, &secs],
            )
            .await?;
        if inserted.len() != n {
            conn.query_text(
                "DELETE FROM pgdog.verify_barriers WHERE slot_name = $1 AND verify_id = $2",
                &[slot, id],
            )
            .await?;
            let busy = conn
                .query_text(
                    "SELECT verify_id, extract(epoch FROM now() - started_at)::int
                     FROM pgdog.verify_barriers WHERE slot_name = $1 AND verify_id <> $2 LIMIT 1",
                    &[slot, id],
                )
                .await?;
            let r = busy.first();
            return Err(DataSyncError::preflight(
                format!(
                    "another verify ({}, started {} s ago) holds the move of slot \"{slot}\"",
                    r.and_then(|r| r.text(0)).unwrap_or("?"),
                    r.and_then(|r| r.text(1)).unwrap_or("?")
                ),
                format!("wait for it to finish (its hold expires {EXPIRY_SECS} s after it stops)"),
            ));
        }
        Ok(Hold {
            conn,
            slot: slot.to_string(),
            id: id.to_string(),
            source_shards: n,
            last_beat: Instant::now(),
        })
    }

    /// Wait until every source shard answered `state`; the LSN each had
    /// applied. `what` says what is waited for, in the error on timeout.
    pub async fn wait(
        &mut self,
        state: &str,
        timeout: Duration,
        what: &str,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Lsn>> {
        let mut wait = Wait::new(what, Some(timeout), POLL / 2);
        let mut warned = false;
        loop {
            self.beat().await?;
            let rows = self
                .conn
                .query_text(
                    "SELECT source_shard, state, coalesce(reached_lsn::text, '')
                     FROM pgdog.verify_barriers WHERE slot_name = $1 AND verify_id = $2 ORDER BY source_shard",
                    &[&self.slot, &self.id],
                )
                .await?;
            if rows.len() != self.source_shards {
                return Err(DataSyncError::State(format!(
                    "the verify hold rows of slot \"{}\" on destination shard 0 were removed by someone else",
                    self.slot
                )));
            }
            let waiting: Vec<String> = rows
                .iter()
                .filter(|r| r.text(1) != Some(state))
                .map(|r| r.text(0).unwrap_or("?").to_string())
                .collect();
            if waiting.is_empty() {
                return Ok(rows
                    .iter()
                    .map(|r| r.text(2).and_then(Lsn::parse).unwrap_or_default())
                    .collect());
            }
            if !warned && wait.elapsed() >= Duration::from_secs(10) {
                warn!(
                    "verify: still waiting for source shard(s) {} to be {state}",
                    waiting.join(", ")
                );
                warned = true;
            }
            let now = format!("source shard(s) {} not {state} yet", waiting.join(", "));
            if !wait.tick(&now, Some(shutdown)).await? {
                return Err(DataSyncError::State(format!(
                    "{what}: source shard(s) {} did not answer within {} s",
                    waiting.join(", "),
                    timeout.as_secs()
                )));
            }
        }
    }

    /// Keep the rows from expiring (at most one write per 5 s): call it
    /// while something else is waited for.
    pub async fn beat(&mut self) -> Result<()> {
        if self.last_beat.elapsed() < Duration::from_secs(5) {
            return Ok(());
        }
        let secs = EXPIRY_SECS.to_string();
        self.conn
            .query_text(
                "UPDATE pgdog.verify_barriers SET expires_at = now() + make_interval(secs => $3::int)
                 WHERE slot_name = $1 AND verify_id = $2",
                &[&self.slot, &self.id, &secs],
            )
            .await?;
        self.last_beat = Instant::now();
        Ok(())
    }

    /// Ask each source shard to apply up to its LSN in `targets` and stop
    /// there.
    pub async fn hold_at(&mut self, targets: &[Lsn]) -> Result<()> {
        for (s, lsn) in targets.iter().enumerate() {
            let (s, lsn) = (s.to_string(), lsn.to_string());
            self.conn
                .query_text(
                    "UPDATE pgdog.verify_barriers SET state = 'target', target_lsn = $4::pg_lsn
                     WHERE slot_name = $1 AND verify_id = $2 AND source_shard = $3::int",
                    &[&self.slot, &self.id, &s, &lsn],
                )
                .await?;
        }
        Ok(())
    }

    /// The id the rows carry.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// End every session's stream where it is held (a cutover): each
    /// commits what it applied and stops for good. Call once every source
    /// shard answered `held`; the caller then waits for the slots to be
    /// let go.
    pub async fn stop(&mut self) -> Result<()> {
        let secs = EXPIRY_SECS.to_string();
        self.conn
            .query_text(
                "UPDATE pgdog.verify_barriers SET state = 'stop', expires_at = now() + make_interval(secs => $3::int)
                 WHERE slot_name = $1 AND verify_id = $2",
                &[&self.slot, &self.id, &secs],
            )
            .await?;
        self.last_beat = Instant::now();
        Ok(())
    }

    /// Let the move go on.
    pub async fn release(mut self) -> Result<()> {
        self.conn
            .query_text(
                "DELETE FROM pgdog.verify_barriers WHERE slot_name = $1 AND verify_id = $2",
                &[&self.slot, &self.id],
            )
            .await?;
        self.conn.close().await;
        Ok(())
    }
}
