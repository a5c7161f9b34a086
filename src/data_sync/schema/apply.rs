//! Running schema entries on a destination shard: pre-data in
//! transactions of many entries (one round trip each), index builds and
//! foreign key validations in parallel sessions with their progress read
//! from `pg_stat_progress_create_index`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::data_sync::endpoints::Endpoints;
use crate::data_sync::error::{DataSyncError, Result};
use crate::data_sync::progress::{SchemaItem, SchemaState};
use crate::net::{Connection, ConnectionError};

use super::dump::PREAMBLE;

/// Entries per transaction in pre-data and the other sequential steps: few
/// enough that the locks of one transaction (one per table created) stay
/// far below the shared lock table, many enough that thousands of tables
/// take seconds.
const BATCH_ENTRIES: usize = 200;

/// A statement to run, and how to name it when it fails.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub object: String,
    /// Kinds pgdog cannot look up in the catalog (operators, casts...):
    /// "already exists" means there is nothing to do.
    pub may_exist: bool,
}

/// SQLSTATEs that say an object is there already.
const ALREADY_EXISTS: [&str; 5] = ["42710", "42P07", "42723", "42P06", "42P16"];

/// A session for schema work on destination shard `d`.
pub async fn session(
    endpoints: &Endpoints,
    d: usize,
    maintenance_work_mem: &str,
) -> Result<Connection> {
    let mut conn = endpoints.connect_dest(d).await?;
    conn.execute(PREAMBLE).await?;
    conn.query_text(
        "SELECT pg_catalog.set_config('maintenance_work_mem', $1, false)",
        &[maintenance_work_mem],
    )
    .await?;
    Ok(conn)
}

fn failed(object: &str, shard: usize, e: ConnectionError) -> DataSyncError {
    DataSyncError::Schema(format!(
        "creating {object} on destination shard {shard}: {e}"
    ))
}

/// Run `statements` in order, [`BATCH_ENTRIES`] to a transaction. A batch
/// that fails runs again one statement at a time, so the error names the
/// object. `extra` runs in the same transaction as the batch of the
/// statement at that index (pgdog's record of a table it created).
pub async fn run_batches(
    conn: &mut Connection,
    shard: usize,
    statements: &[Statement],
    extra: &HashMap<usize, String>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut i = 0;
    while i < statements.len() {
        if shutdown.is_cancelled() {
            return Err(DataSyncError::Stopped);
        }
        let end = (i + BATCH_ENTRIES).min(statements.len());
        let batch = &statements[i..end];
        let mut sql = String::new();
        let together = batch.iter().all(|s| !s.may_exist);
        if together {
            for (j, s) in batch.iter().enumerate() {
                sql.push_str(&s.sql);
                sql.push('\n');
                if let Some(x) = extra.get(&(i + j)) {
                    sql.push_str(x);
                    sql.push('\n');
                }
            }
            if conn.execute(&sql).await.is_ok() {
                i = end;
                continue;
            }
        }
        // One at a time: find the one that fails, or tolerate "exists".
        for (j, s) in batch.iter().enumerate() {
            let mut sql = s.sql.clone();
            if let Some(x) = extra.get(&(i + j)) {
                sql.push('\n');
                sql.push_str(x);
            }
            match conn.execute(&sql).await {
                Ok(()) => {}
                Err(e) if s.may_exist && e.code().is_some_and(|c| ALREADY_EXISTS.contains(&c)) => {}
                Err(e) => return Err(failed(&s.object, shard, e)),
            }
        }
        i = end;
    }
    Ok(())
}

/// A piece of parallel work: one index build or foreign key validation.
#[derive(Debug)]
pub struct Work {
    pub item: Arc<SchemaItem>,
    pub sql: String,
    /// A foreign key validation: a violation leaves it NOT VALID (rows of
    /// this shard reference rows another shard holds) instead of failing.
    pub validation: bool,
}

/// The index builds waiting on one shard.
type Queue = Arc<Mutex<VecDeque<Work>>>;
/// What each session (by backend pid) builds now.
type Running = Arc<Mutex<HashMap<i32, Arc<SchemaItem>>>>;

/// One session on shard `d`: takes work from `queue` until it is empty.
async fn worker(
    endpoints: &Endpoints,
    d: usize,
    mwm: &str,
    queue: &Queue,
    running: &Running,
    stop: &CancellationToken,
) -> Result<()> {
    let mut conn = session(endpoints, d, mwm).await?;
    let pid = conn.backend_pid().unwrap_or(0);
    loop {
        if stop.is_cancelled() {
            return Err(DataSyncError::Stopped);
        }
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(work) = next else { break };
        work.item.set_state(SchemaState::Running);
        running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, work.item.clone());
        let result = conn.execute(&work.sql).await;
        running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        match result {
            Ok(()) => work.item.set_state(SchemaState::Done),
            Err(e) if work.validation && e.code() == Some("23503") => {
                warn!(
                    dest_shard = d,
                    object = %work.item.object,
                    "foreign key stays NOT VALID: {}",
                    e
                );
                work.item.set_message(e.to_string());
                work.item.set_state(SchemaState::NotValid);
            }
            Err(e) => {
                work.item.set_message(e.to_string());
                work.item.set_state(SchemaState::Failed);
                return Err(failed(&work.item.object, d, e));
            }
        }
    }
    conn.close().await;
    Ok(())
}

/// Progress of the builds on shard `d` once a second (from
/// pg_stat_progress_create_index), and cancelling them on `stop`.
async fn monitor(
    endpoints: &Endpoints,
    d: usize,
    running: &Running,
    done: &CancellationToken,
    stop: &CancellationToken,
) {
    let Ok(mut conn) = endpoints.connect_dest(d).await else {
        return;
    };
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = stop.cancelled() => {
                let pids: Vec<String> = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .map(|p| p.to_string())
                    .collect();
                for pid in pids {
                    let _ = conn.query_text("SELECT pg_cancel_backend($1::int)", &[&pid]).await;
                }
                break;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Ok(rows) = conn
            .query(
                "SELECT pid, phase, blocks_total, blocks_done, tuples_total, tuples_done
                   FROM pg_catalog.pg_stat_progress_create_index",
            )
            .await
        else {
            break;
        };
        let running = running.lock().unwrap_or_else(|e| e.into_inner());
        for r in &rows {
            let Some(item) = r
                .text(0)
                .and_then(|p| p.parse().ok())
                .and_then(|p: i32| running.get(&p))
            else {
                continue;
            };
            let num = |i: usize| r.text(i).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
            let permille = build_permille(r.text(1).unwrap_or(""), num(2), num(3), num(4), num(5));
            if let Some(p) = permille {
                item.permille.store(p, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    conn.close().await;
}

/// Run `works` on destination shard `d` in `parallel` sessions, largest
/// tables first; index build progress is read once a second.
pub async fn run_parallel(
    endpoints: &Endpoints,
    d: usize,
    mut works: Vec<Work>,
    parallel: usize,
    maintenance_work_mem: &str,
    shutdown: &CancellationToken,
) -> Result<()> {
    if works.is_empty() {
        return Ok(());
    }
    works.sort_by_key(|w| std::cmp::Reverse(w.item.table_bytes));
    let queue = Arc::new(Mutex::new(works.into_iter().collect::<VecDeque<_>>()));
    let running: Running = Arc::default();
    let done = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    let n = parallel
        .max(1)
        .min(queue.lock().unwrap_or_else(|e| e.into_inner()).len());
    for _ in 0..n {
        let (endpoints, queue, running, mwm, stop) = (
            endpoints.clone(),
            queue.clone(),
            running.clone(),
            maintenance_work_mem.to_string(),
            shutdown.clone(),
        );
        workers.spawn(async move { worker(&endpoints, d, &mwm, &queue, &running, &stop).await });
    }
    // Progress of the builds, and cancelling them on shutdown.
    let monitor = {
        let (endpoints, running, done, stop) = (
            endpoints.clone(),
            running.clone(),
            done.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move { monitor(&endpoints, d, &running, &done, &stop).await })
    };
    let mut result = Ok(());
    while let Some(r) = workers.join_next().await {
        let r = r.unwrap_or_else(|e| Err(DataSyncError::Schema(format!("index build task: {e}"))));
        if let Err(e) = r {
            if result.is_ok() {
                // The first failure stops the others from taking more work.
                queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
                result = Err(e);
            }
        }
    }
    done.cancel();
    let _ = monitor.await;
    result
}

/// How far a build is, in permille, from its phase and counters: scanning
/// the table is most of it, then sorting, then loading the tree.
pub fn build_permille(
    phase: &str,
    blocks_total: f64,
    blocks_done: f64,
    tuples_total: f64,
    tuples_done: f64,
) -> Option<u64> {
    let frac = |done: f64, total: f64| {
        if total > 0.0 {
            (done / total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let p = if phase.contains("scanning table") {
        600.0 * frac(blocks_done, blocks_total)
    } else if phase.contains("sorting") {
        650.0
    } else if phase.contains("loading tuples") {
        700.0 + 290.0 * frac(tuples_done, tuples_total)
    } else {
        // Initializing, waiting for lockers, validating: no counters.
        return None;
    };
    Some(p as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_progress_grows_through_the_phases() {
        let scan = build_permille("building index: scanning table", 100.0, 50.0, 0.0, 0.0);
        let sort = build_permille(
            "building index: sorting live tuples",
            100.0,
            100.0,
            0.0,
            0.0,
        );
        let load = build_permille(
            "building index: loading tuples in tree",
            100.0,
            100.0,
            10.0,
            5.0,
        );
        assert_eq!(scan, Some(300));
        assert_eq!(sort, Some(650));
        assert_eq!(load, Some(845));
        assert_eq!(build_permille("initializing", 0.0, 0.0, 0.0, 0.0), None);
    }
}
