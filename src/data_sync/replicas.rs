//! Copying from read replicas (PostgreSQL 16+): which replicas of each
//! source shard qualify, how table copies are spread over them, and what a
//! copy on a standby must do first.
//!
//! A standby can create a temporary logical slot (logical decoding on
//! standbys, 16+) whose snapshot LSN is exact, just like the primary; the
//! copy then reads the standby while the stream reads the primary's slot.
//! Two things make that safe: the standby must have replayed at least up to
//! the permanent slot's start on the primary (else changes between the two
//! would be in neither), and `hot_standby_feedback` must be on (else the
//! primary may vacuum rows the copy still reads).

use std::time::Duration;

use pgdog_protocol::Lsn;
use tracing::{info, warn};

use crate::config::Database;
use crate::net::Connection;

use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::retry::Wait;

/// The servers table copies of one source shard read from: qualifying
/// replicas, or the primary alone.
#[derive(Debug, Clone)]
pub struct CopySources {
    pub servers: Vec<Database>,
    /// True when `servers` are replicas.
    pub replicas: bool,
}

/// Check the replicas of every source shard (the `resharding_only` ones
/// when there are any). A replica that does not qualify is reported with the
/// reason; a shard without a qualifying replica copies from its primary,
/// and says so when it had replicas to offer.
pub async fn qualify(endpoints: &Endpoints) -> Result<Vec<CopySources>> {
    let mut out = Vec::new();
    for (s, shard) in endpoints.source.shards.iter().enumerate() {
        let dedicated: Vec<&Database> = shard
            .replicas
            .iter()
            .filter(|r| r.resharding_only)
            .collect();
        let candidates: Vec<&Database> = if dedicated.is_empty() {
            shard.replicas.iter().collect()
        } else {
            dedicated
        };
        let mut good = Vec::new();
        let mut reasons = Vec::new();
        for r in candidates.iter().copied() {
            match check(endpoints, r).await {
                Ok(()) => good.push(r.clone()),
                Err(reason) => {
                    warn!(source_shard = s, replica = %format!("{}:{}", r.host, r.port), "replica not used for copying: {reason}");
                    reasons.push(format!("{}:{}: {reason}", r.host, r.port));
                }
            }
        }
        if good.is_empty() {
            if !candidates.is_empty() {
                warn!(
                    source_shard = s,
                    "copying from the primary: no replica qualifies ({})",
                    reasons.join("; ")
                );
            }
            out.push(CopySources {
                servers: vec![shard.primary.clone()],
                replicas: false,
            });
        } else {
            info!(
                source_shard = s,
                replicas = %good.iter().map(|r| format!("{}:{}", r.host, r.port)).collect::<Vec<_>>().join(", "),
                "table copies will read from replicas"
            );
            out.push(CopySources {
                servers: good,
                replicas: true,
            });
        }
    }
    Ok(out)
}

/// Why a replica cannot serve copies, if it cannot.
async fn check(endpoints: &Endpoints, r: &Database) -> Result<(), String> {
    let opts = endpoints.source_server(r);
    let mut conn = Connection::connect(&opts)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    if conn.server_version_num() < 160000 {
        return Err(format!(
            "PostgreSQL {} has no logical decoding on standbys (16 or newer needed)",
            conn.param("server_version").unwrap_or("?")
        ));
    }
    let rows = conn
        .query("SELECT pg_is_in_recovery(), current_setting('hot_standby_feedback'), (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)")
        .await
        .map_err(|e| e.to_string())?;
    let row = rows
        .first()
        .ok_or("the standby check (pg_is_in_recovery, hot_standby_feedback, replication right) returned no row")?;
    if row.text(0) != Some("t") {
        return Err(
            "not a standby (pg_is_in_recovery() is false); list it as the primary or remove it"
                .into(),
        );
    }
    if row.text(1) != Some("on") {
        return Err("hot_standby_feedback is off: the primary could vacuum rows a copy still reads; set hot_standby_feedback = on".into());
    }
    if row.text(2) != Some("t") {
        return Err(format!(
            "user \"{}\" may not use replication here",
            opts.user
        ));
    }
    conn.close().await;
    Ok(())
}

/// Spread `(job, bytes)` over `servers` so each gets about as many bytes:
/// largest first, each to the least loaded. Returns a server index per job.
pub fn assign(jobs: &[u64], servers: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i]));
    let mut load = vec![0u64; servers.max(1)];
    let mut out = vec![0; jobs.len()];
    for i in order {
        let (k, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .unwrap_or((0, &0));
        out[i] = k;
        load[k] += jobs[i].max(1);
    }
    out
}

/// The LSN a query of one value returns (0/0 for none).
pub async fn query_lsn(conn: &mut Connection, sql: &str) -> Result<Lsn> {
    let rows = conn.query(sql).await?;
    Ok(rows
        .first()
        .and_then(|r| r.text(0))
        .and_then(Lsn::parse)
        .unwrap_or_default())
}

/// Wait until `replica` has replayed the primary's WAL up to `lsn`.
pub async fn wait_replayed(replica: &mut Connection, lsn: Lsn, source_shard: usize) -> Result<()> {
    let mut wait = Wait::new(
        format!(
            "replica {} of source shard {source_shard} to replay up to {lsn}",
            replica.addr()
        ),
        Some(Duration::from_secs(600)),
        Duration::from_millis(50),
    )
    .log_every(Duration::from_secs(30));
    loop {
        let at = query_lsn(replica, "SELECT pg_last_wal_replay_lsn()::text").await?;
        if at >= lsn {
            return Ok(());
        }
        if !wait.tick(&format!("replayed up to {at}"), None).await? {
            return Err(DataSyncError::State(format!(
                "replica {} of source shard {source_shard} replayed only up to {at} after 10 minutes, and copies need {lsn}: is it streaming from the primary?",
                replica.addr()
            )));
        }
    }
}

/// While a standby creates a logical slot it waits for the primary to log
/// its running transactions; ask the primary to do so now and then, until
/// dropped.
pub fn kick_standby_snapshots(
    endpoints: &Endpoints,
    source_shard: usize,
) -> tokio::task::JoinHandle<()> {
    let opts = endpoints.source(source_shard);
    tokio::spawn(async move {
        let Ok(mut c) = Connection::connect(&opts).await else {
            return;
        };
        loop {
            if c.execute("SELECT pg_log_standby_snapshot()").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::assign;

    #[test]
    fn spreads_by_bytes_not_count() {
        // One big table and many small ones: the big one alone on one side.
        let jobs = [1000, 10, 10, 10, 10, 10];
        let a = assign(&jobs, 2);
        let big = a[0];
        assert!(a[1..].iter().all(|&k| k != big));
        // Even split.
        assert_eq!(
            assign(&[5, 5, 5, 5], 2).iter().filter(|&&k| k == 0).count(),
            2
        );
        assert_eq!(assign(&[], 3), Vec::<usize>::new());
        assert_eq!(assign(&[7], 1), vec![0]);
    }
}
