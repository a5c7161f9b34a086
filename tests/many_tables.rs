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

/// 2,000 tables; `PGDOG_TEST_TABLES` asks for more (10,000 was run by
/// hand).
fn table_count() -> usize {
    std::env::var("PGDOG_TEST_TABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Tables per statement: a transaction that touches every table at once
/// would hold more locks than the server's lock table has room for.
const CHUNK: usize = 500;

/// `sum` of the first two columns of `select` (with `{t}` for the table)
/// over every table, a chunk of tables per query.
async fn sum_over_tables(conn: &mut pgdog::net::Connection, select: &str) -> (i64, i64) {
    let (mut a, mut b) = (0i64, 0i64);
    let n = table_count();
    for start in (1..=n).step_by(CHUNK) {
        let parts: Vec<String> = (start..(start + CHUNK).min(n + 1))
            .map(|i| select.replace("{t}", &format!("t{i}")))
            .collect();
        let rows = conn
            .query(&format!(
                "SELECT coalesce(sum(x.a), 0)::text, coalesce(sum(x.b), 0)::text FROM ({}) x",
                parts.join(" UNION ALL ")
            ))
            .await
            .unwrap();
        a += rows[0].text(0).unwrap().parse::<i64>().unwrap();
        b += rows[0].text(1).unwrap().parse::<i64>().unwrap();
    }
    (a, b)
}

/// Run `sql` (with `{from}` and `{to}`) for every chunk of tables on
/// every server of `servers`.
async fn in_chunks(servers: &[pgdog::harness::Cluster], sql: &str) {
    let n = table_count();
    for start in (1..=n).step_by(CHUNK) {
        let to = (start + CHUNK - 1).min(n);
        let chunk = sql
            .replace("{from}", &start.to_string())
            .replace("{to}", &to.to_string());
        for c in servers {
            c.exec(DATABASE, &chunk).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_tables_one_snapshot() {
    init_logging();
    let tables = table_count();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    let create = "DO $$ BEGIN FOR i IN {from}..{to} LOOP
           EXECUTE format('CREATE TABLE t%s (id bigint PRIMARY KEY, tenant bigint NOT NULL, v text)', i);
         END LOOP; END $$;";
    in_chunks(&fleet.sources, create).await;
    in_chunks(&fleet.dests, create).await;
    in_chunks(
        &fleet.sources,
        "DO $$ BEGIN FOR i IN {from}..{to} LOOP
           EXECUTE format('INSERT INTO t%s SELECT g, g * %s, ''row '' || g FROM generate_series(1, 5) g', i, i);
         END LOOP; END $$;",
    )
    .await;
    fleet
        .on_sources(
            "CREATE TABLE busy (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
        )
        .await
        .unwrap();
    fleet
        .on_dests("CREATE TABLE busy (id int PRIMARY KEY)")
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
    // Preflight reads the catalogs of every table first.
    let deadline = Instant::now() + Duration::from_secs(60 + tables as u64 / 20);
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
    // One snapshot for all the tables, let go once they were copied.
    let snapshots = run.task.snapshots().len();
    assert_eq!(snapshots, 1, "one snapshot per source server");
    assert!(
        run.task.held_snapshots().is_empty(),
        "the snapshot is still held"
    );
    assert_eq!(run.task.copies().len(), tables + 1);

    // Every row, each on its shard.
    let sum = "SELECT count(*) AS a, sum(hashtext({t}::text)) AS b FROM {t}";
    let mut src = fleet.sources[0].connect(DATABASE).await.unwrap();
    let (want_rows, want_hash) = sum_over_tables(&mut src, sum).await;
    assert_eq!(want_rows, (tables * 5) as i64);
    let mut got_rows = 0i64;
    let mut got_hash = 0i64;
    for (d, c) in fleet.dests.iter().enumerate() {
        let mut conn = c.connect(DATABASE).await.unwrap();
        let (rows, hash) = sum_over_tables(&mut conn, sum).await;
        got_rows += rows;
        got_hash += hash;
        let misplaced = format!(
            "SELECT count(*) AS a, 0 AS b FROM {{t}} WHERE NOT satisfies_hash_partition('pgdog.hash_bigint'::regclass, 2, {d}, tenant)"
        );
        let (bad, _) = sum_over_tables(&mut conn, &misplaced).await;
        assert_eq!(bad, 0, "rows on the wrong shard {d}");
    }
    assert_eq!(got_rows, want_rows);
    assert_eq!(got_hash, want_hash);
}
