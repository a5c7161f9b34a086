//! Partitioned tables, published through the root
//! (`publish_via_partition_root = true`: copied and streamed as the root)
//! and through the leaves (the default: each partition its own table), with
//! rows moving between partitions while streaming.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet};
use pgdog::sharding::DataType;

const SCHEMA: &str = "
CREATE TABLE measurements (
    id bigint NOT NULL,
    at date NOT NULL,
    v int,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE m2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE m2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
";

const SHARDING: &str =
    "[[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n";

async fn partitioned(via_root: bool) {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_dests(SCHEMA).await.unwrap();
    fleet
        .on_sources(&format!(
            "INSERT INTO measurements SELECT g, '2024-01-01'::date + (g % 700), g FROM generate_series(1, 20000) g;
             CREATE PUBLICATION pub FOR TABLE measurements WITH (publish_via_partition_root = {via_root});
             ANALYZE;"
        ))
        .await
        .unwrap();
    let config = fleet.config(SHARDING).unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(60)).await;
    let tables: Vec<String> = run.task.copies().iter().map(|c| c.table.clone()).collect();
    if via_root {
        assert_eq!(tables, ["measurements"], "copied through the root");
    } else {
        let mut t = tables.clone();
        t.sort();
        assert_eq!(t, ["m2024", "m2025"], "copied partition by partition");
    }
    fleet.sources[0]
        .exec(
            DATABASE,
            "INSERT INTO measurements SELECT g, '2025-06-01', g FROM generate_series(30000, 30100) g;
             UPDATE measurements SET v = -v WHERE id % 10 = 0;
             -- rows that change partition (a delete and an insert underneath)
             UPDATE measurements SET at = at + 400 WHERE id % 13 = 0 AND at < '2024-06-01';
             DELETE FROM measurements WHERE id % 17 = 0;",
        )
        .await
        .unwrap();
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    let mut checks = vec![check(
        "measurements",
        &["id", "at", "v"],
        Some("id"),
        DataType::Bigint,
        2,
        false,
    )];
    for leaf in ["m2024", "m2025"] {
        checks.push(check(
            leaf,
            &["id", "at", "v"],
            Some("id"),
            DataType::Bigint,
            2,
            false,
        ));
    }
    verify_equal(&fleet, &checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_published_via_root() {
    partitioned(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_published_via_leaves() {
    partitioned(false).await;
}
