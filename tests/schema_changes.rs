//! A column added on the source while the move streams, without pgdog
//! capturing DDL (no event trigger): the stream notices the new shape from
//! the Relation message before it applies a row of it, and the move waits,
//! saying which table, column and type, and the statement to run on each
//! destination shard. It does not exit. Once every shard has the column it
//! goes on by itself, and nothing written meanwhile is lost.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdog::data_sync::progress::Phase;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::net::Connection;
use pgdog::sharding::DataType;

const SHARDING: &str =
    "[[sharded_tables]]\ndatabase = \"dest\"\nname = \"items\"\ncolumn = \"tenant\"\ndata_type = \"bigint\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_on_the_source_waits_for_the_shards_then_goes_on() {
    init_logging();
    let fleet = items_fleet(5_000).await;
    let config = fleet.config(SHARDING).unwrap();
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;

    // A migration on the source alone, then rows that use its column.
    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    src.execute("ALTER TABLE items ADD COLUMN priority int NOT NULL DEFAULT 3")
        .await
        .unwrap();
    src.execute(
        "INSERT INTO items (tenant, id, label, priority) SELECT g % 997, 200000000 + g, 'urgent', 9 FROM generate_series(1, 200) g;
         UPDATE items SET priority = 1 WHERE id % 11 = 0;",
    )
    .await
    .unwrap();

    // The move waits, says for what, and does not exit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let waiting = loop {
        if let Some(w) = run.task.waiting() {
            break w;
        }
        assert!(
            !run.handle.is_finished(),
            "the move ended instead of waiting"
        );
        assert!(Instant::now() < deadline, "the move never waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        waiting
            .contains("\"public\".\"items\" has new columns on source shard 0 (priority integer)")
            && waiting.contains(
                "ALTER TABLE \"public\".\"items\" ADD COLUMN IF NOT EXISTS \"priority\" integer;"
            ),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!run.handle.is_finished(), "the move ended while waiting");
    assert!(run.task.waiting().is_some(), "it still waits");

    // The operator runs the migration on one shard: not enough yet.
    fleet.dests[0]
        .exec(
            DATABASE,
            "ALTER TABLE items ADD COLUMN priority int NOT NULL DEFAULT 3",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(run.task.waiting().is_some(), "one shard still lacks it");
    fleet.dests[1]
        .exec(
            DATABASE,
            "ALTER TABLE items ADD COLUMN priority int NOT NULL DEFAULT 3",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.task.waiting().is_some() || run.task.phase() != Phase::Streaming {
        assert!(!run.handle.is_finished(), "the move ended");
        assert!(Instant::now() < deadline, "the move did not go on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    src.execute("UPDATE items SET priority = priority + 10 WHERE id % 13 = 0")
        .await
        .unwrap();
    src.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    verify_equal(
        &fleet,
        &[check(
            "items",
            &["tenant", "id", "qty", "label", "big", "updated", "priority"],
            Some("tenant"),
            DataType::Bigint,
            2,
            false,
        )],
    )
    .await;
}
