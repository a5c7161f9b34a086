//! Thousands of tables and a long transaction on the source: every table
//! copy shares the one snapshot the permanent slot exports, so the move
//! waits for the running transaction once, says what it waits for while it
//! does, and copies 2,000 tables.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdog::data_sync::progress::Phase;
use pgdog::data_sync::{Mode, Outcome};
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet};

const TABLES: usize = 2000;

fn union_all(select: &str) -> String {
    (1..=TABLES)
        .map(|i| select.replace("{t}", &format!("t{i}")))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_tables_one_snapshot() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    let schema = format!(
        "DO $$ BEGIN FOR i IN 1..{TABLES} LOOP
           EXECUTE format('CREATE TABLE t%s (id bigint PRIMARY KEY, tenant bigint NOT NULL, v text)', i);
         END LOOP; END $$;
         CREATE TABLE busy (id int PRIMARY KEY);"
    );
    fleet.on_sources(&schema).await.unwrap();
    fleet.on_dests(&schema).await.unwrap();
    fleet
        .on_sources(&format!(
            "DO $$ BEGIN FOR i IN 1..{TABLES} LOOP
               EXECUTE format('INSERT INTO t%s SELECT g, g * %s, ''row '' || g FROM generate_series(1, 5) g', i, i);
             END LOOP; END $$;
             CREATE PUBLICATION pub FOR ALL TABLES;"
        ))
        .await
        .unwrap();

    // A transaction with an xid, open before the move starts: the slot
    // creation must wait for it, and say so.
    let mut blocker = fleet.sources[0].connect(DATABASE).await.unwrap();
    blocker
        .execute("BEGIN; INSERT INTO busy VALUES (1)")
        .await
        .unwrap();
    let pid = blocker.backend_pid().unwrap();

    let config = fleet
        .config("[[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"tenant\"\ndata_type = \"bigint\"\n")
        .unwrap();
    let run = start(config, move_options("pub", Mode::SyncOnly));
    let deadline = Instant::now() + Duration::from_secs(60);
    let waiting = loop {
        if let Some(w) = run.task.waiting() {
            break w;
        }
        assert!(
            !run.handle.is_finished(),
            "the move ended while a transaction blocked its slot"
        );
        assert!(Instant::now() < deadline, "no waiting reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        waiting.contains(&format!("pid {pid}")) && waiting.contains("INSERT INTO busy"),
        "{waiting}"
    );
    assert!(
        matches!(run.task.phase(), Phase::Preflight),
        "copying began before the slot existed"
    );
    blocker.execute("COMMIT").await.unwrap();

    let outcome = run.handle.await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Copied);
    assert_eq!(run.task.waiting(), None);
    // One snapshot for all 2,000 tables, let go once they were copied.
    let snapshots = run.task.snapshots.lock().unwrap().len();
    assert_eq!(snapshots, 1, "one snapshot per source server");
    assert!(
        run.task.held_snapshots().is_empty(),
        "the snapshot is still held"
    );
    assert_eq!(run.task.copies().len(), TABLES + 1);

    // Every row, each on its shard.
    let sum = union_all("SELECT count(*) AS n, sum(hashtext({t}::text)) AS h FROM {t}");
    let total_sql = format!("SELECT sum(n)::text, sum(h)::text FROM ({sum}) x");
    let mut src = fleet.sources[0].connect(DATABASE).await.unwrap();
    let expected = src.query(&total_sql).await.unwrap();
    let (want_rows, want_hash) = (
        expected[0].text(0).unwrap().to_string(),
        expected[0].text(1).unwrap().to_string(),
    );
    assert_eq!(want_rows, (TABLES * 5).to_string());
    let mut got_rows = 0i64;
    let mut got_hash = 0i64;
    for (d, c) in fleet.dests.iter().enumerate() {
        let mut conn = c.connect(DATABASE).await.unwrap();
        let rows = conn.query(&total_sql).await.unwrap();
        got_rows += rows[0].text(0).unwrap().parse::<i64>().unwrap();
        got_hash += rows[0].text(1).unwrap().parse::<i64>().unwrap();
        let misplaced = union_all(&format!(
            "SELECT count(*) AS n FROM {{t}} WHERE NOT satisfies_hash_partition('pgdog.hash_bigint'::regclass, 2, {d}, tenant)"
        ));
        let bad = conn
            .query(&format!("SELECT sum(n)::text FROM ({misplaced}) x"))
            .await
            .unwrap();
        assert_eq!(bad[0].text(0), Some("0"), "rows on the wrong shard {d}");
    }
    assert_eq!(got_rows.to_string(), want_rows);
    assert_eq!(got_hash.to_string(), want_hash);
}
