//! End-to-end moves between real Postgres servers: 1→2, 2→3, 3→1 and 1→1,
//! with writes during the copy and during streaming, an omnisharded table,
//! a REPLICA IDENTITY FULL table, TRUNCATE, a streamed large transaction,
//! sync-only then replicate-only, cleanup, and every preflight error.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use pgdog::data_sync::{Mode, Outcome};
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet, PgInstall};
use pgdog::sharding::DataType;

const EXTRA_SCHEMA: &str = "
CREATE TABLE settings (key text PRIMARY KEY, value text);
CREATE TABLE events (kind int, payload text);
ALTER TABLE events REPLICA IDENTITY FULL;
";

fn sharding(column_tables: &[(&str, &str)], cluster: &str) -> String {
    column_tables
        .iter()
        .map(|(t, c)| format!("[[sharded_tables]]\ndatabase = \"{cluster}\"\nname = \"{t}\"\ncolumn = \"{c}\"\ndata_type = \"bigint\"\n\n"))
        .collect()
}

fn checks(m: usize, source_sharded: bool) -> Vec<common::oracle::TableCheck> {
    vec![
        check(
            "items",
            &["tenant", "id", "qty", "label", "big", "updated"],
            Some("tenant"),
            DataType::Bigint,
            m,
            source_sharded,
        ),
        check(
            "settings",
            &["key", "value"],
            None,
            DataType::Text,
            m,
            false,
        ),
        check(
            "events",
            &["kind", "payload"],
            None,
            DataType::Bigint,
            m,
            false,
        ),
    ]
}

/// Load every source shard: items split by id, settings and events the
/// same everywhere (omnisharded on the source).
async fn load(fleet: &Fleet, rows: u64) {
    let n = fleet.sources.len();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.on_sources(EXTRA_SCHEMA).await.unwrap();
    fleet.on_dests(ITEMS_SCHEMA).await.unwrap();
    fleet.on_dests(EXTRA_SCHEMA).await.unwrap();
    for (s, c) in fleet.sources.iter().enumerate() {
        c.exec(DATABASE, &items_rows(rows, s, n)).await.unwrap();
    }
    fleet
        .on_sources(
            "INSERT INTO settings SELECT 'k' || g, 'v' || g FROM generate_series(1, 100) g;
             INSERT INTO events SELECT g % 10, 'event ' || (g % 20) FROM generate_series(1, 500) g;
             CREATE PUBLICATION pub FOR TABLE items, settings, events;",
        )
        .await
        .unwrap();
}

/// Changes to the omnisharded and FULL tables, on source shard 0 only
/// (as the proxy would route them to the one primary that owns them).
async fn touch_omni_and_full(fleet: &Fleet) {
    fleet.sources[0]
        .exec(
            DATABASE,
            "UPDATE settings SET value = 'changed' WHERE key IN ('k1', 'k2');
             DELETE FROM settings WHERE key = 'k3';
             INSERT INTO settings VALUES ('new', 'setting');
             -- duplicates: FULL identity must touch exactly one of them
             INSERT INTO events VALUES (1, 'dup'), (1, 'dup'), (1, 'dup');
             DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE kind = 1 AND payload = 'dup' LIMIT 1);
             UPDATE events SET payload = 'updated' WHERE ctid = (SELECT ctid FROM events WHERE kind = 1 AND payload = 'dup' LIMIT 1);",
        )
        .await
        .unwrap();
}

async fn run_move(n: usize, m: usize, rows: u64) {
    run_move_on(n, m, rows, ClusterOptions::default()).await;
}

async fn run_move_on(n: usize, m: usize, rows: u64, options: ClusterOptions) {
    let fleet = Fleet::start(n, m, options).await.unwrap();
    load(&fleet, rows).await;
    let mut extra = sharding(&[("items", "tenant")], "dest");
    if n > 1 {
        extra.push_str(&sharding(&[("items", "tenant")], "source"));
    }
    // Sources must be split the way the source config says.
    if n > 1 {
        for (s, c) in fleet.sources.iter().enumerate() {
            c.exec(DATABASE, &keep_own_tenants(s, n)).await.unwrap();
        }
    }
    let config = fleet.config(&extra).unwrap();
    let writer = Writer::start(fleet.source_options(), 10_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    touch_omni_and_full(&fleet).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = writer.stop().await;
    assert!(writes > 50, "the workload ran ({writes} transactions)");
    // A TRUNCATE of the omnisharded table streams too.
    fleet.sources[0]
        .exec(
            DATABASE,
            "TRUNCATE settings; INSERT INTO settings VALUES ('after', 'truncate');",
        )
        .await
        .unwrap();
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0, "no update or delete missed its row");
    let outcome = run.stop().await.unwrap();
    assert_eq!(outcome, Outcome::Stopped);
    verify_equal(&fleet, &checks(m, n > 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_two() {
    run_move(1, 2, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_to_three() {
    run_move(2, 3, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_one() {
    run_move(3, 1, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one() {
    run_move(1, 1, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_two_newer_postgres() {
    let Some(install) = PgInstall::newest_at_least(16) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 16+ found (run scripts/fetch-postgres.sh)");
        return;
    };
    run_move_on(
        1,
        2,
        20_000,
        ClusterOptions {
            install: Some(install),
            ..Default::default()
        },
    )
    .await;
}
