//! The real `pgdog` binary killed with SIGKILL at random moments during the
//! copy and during streaming, then run again, while the source keeps taking
//! writes: the destination must end exactly equal to the source, every row
//! on its shard, nothing lost and nothing applied twice. Also: a
//! destination shard restarted mid-stream.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet};
use pgdog::sharding::DataType;

const SHARDING: &str = "[[sharded_tables]]\ndatabase = \"dest\"\nname = \"items\"\ncolumn = \"tenant\"\ndata_type = \"bigint\"\n";

/// A small deterministic generator; the seed is printed so a failure can
/// be replayed with PGDOG_CRASH_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("PGDOG_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("crash test seed: {seed} (rerun with PGDOG_CRASH_SEED={seed})");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

async fn wait_for_log(files: &ConfigFiles, log: &str, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if files.log(log).contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn items_check(m: usize) -> Vec<common::oracle::TableCheck> {
    vec![check(
        "items",
        &["tenant", "id", "qty", "label", "big", "updated"],
        Some("tenant"),
        DataType::Bigint,
        m,
        false,
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_copy_and_streaming_then_resume() {
    let mut rng = Rng::new();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.on_dests(ITEMS_SCHEMA).await.unwrap();
    fleet.sources[0]
        .exec(DATABASE, &items_rows(300_000, 0, 1))
        .await
        .unwrap();
    fleet
        .on_sources("CREATE PUBLICATION pub FOR TABLE items")
        .await
        .unwrap();
    // Small ranges: the big table is copied in several parallel streams,
    // so kills also land between ranges of one table.
    let files = ConfigFiles::write(&fleet, SHARDING);
    std::fs::write(
        files.dir.join("pgdog.toml"),
        fleet.pgdog_toml(SHARDING).replace(
            "[general]\n",
            "[general]\nresharding_copy_chunk_size = 4000000\n",
        ),
    )
    .unwrap();

    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut kills = Vec::new();
    // Two kills during the copy, two during streaming.
    for round in 0..4 {
        let log = format!("run{round}.log");
        let child = KillOnDrop(files.spawn("pub", &[], &log));
        if round < 2 {
            // Somewhere in the copy: wait for it to start, then a random delay.
            assert!(
                wait_for_log(&files, &log, "copying", Duration::from_secs(60)).await,
                "run {round} did not start copying:\n{}",
                files.log(&log)
            );
            let delay = 50 + rng.below(700);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            kills.push(format!(
                "copy +{delay}ms (streaming: {})",
                files.log(&log).contains("streaming changes")
            ));
        } else {
            assert!(
                wait_for_log(&files, &log, "streaming changes", Duration::from_secs(120)).await,
                "run {round} did not reach streaming:\n{}",
                files.log(&log)
            );
            let delay = 100 + rng.below(1500);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            kills.push(format!("stream +{delay}ms"));
        }
        drop(child); // SIGKILL
    }
    eprintln!("killed at: {kills:?}");

    // The last run goes to the end.
    let log = "final.log";
    let mut child = KillOnDrop(files.spawn("pub", &[], log));
    assert!(
        wait_for_log(&files, log, "streaming changes", Duration::from_secs(120)).await,
        "final run did not reach streaming:\n{}",
        files.log(log)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writer.stop().await;
    eprintln!("{writes} source transactions during the test");
    fleet
        .wait_caught_up("pgdog_pub_dest", Duration::from_secs(60))
        .await
        .unwrap();
    // A clean stop: SIGTERM, exit status 0, the slot kept.
    let pid = child.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "clean stop exits 0: {status}\n{}",
        files.log(log)
    );
    let out = files.log(log);
    assert!(
        out.contains("resume:") && out.contains("--cleanup"),
        "{out}"
    );
    assert!(
        !out.contains("found no row"),
        "an update or delete missed its row:\n{out}"
    );
    // Written to a file, not a terminal: no colour codes.
    assert!(!out.contains('\x1b'), "ANSI escapes in a log file:\n{out}");
    verify_equal(&fleet, &items_check(2)).await;
    // Later runs resumed rather than starting over: the copy of a finished
    // table is never repeated.
    assert!(
        files
            .log("final.log")
            .contains("every table was copied by an earlier run")
            || files
                .log("run3.log")
                .contains("reusing existing replication slot")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_restart_mid_stream() {
    let mut fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.on_dests(ITEMS_SCHEMA).await.unwrap();
    fleet.sources[0]
        .exec(DATABASE, &items_rows(5_000, 0, 1))
        .await
        .unwrap();
    fleet
        .on_sources("CREATE PUBLICATION pub FOR TABLE items")
        .await
        .unwrap();
    let config = fleet.config(SHARDING).unwrap();
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Shard 1 goes down hard and comes back; writes never stop.
    fleet.dests[1].crash().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.dests[1].start_again().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // And a clean restart of shard 0.
    fleet.dests[0].restart().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop().await;
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!run.handle.is_finished(), "the move survived the restarts");
    let errors = run.task.errors();
    assert!(
        !errors.is_empty(),
        "the interruptions were seen and retried"
    );
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    verify_equal(&fleet, &items_check(2)).await;
}

/// The process ends (as with SIGKILL) inside the chunked copy: after a
/// chunk's rows reached the destinations but before anything committed,
/// after one destination shard committed a chunk and before the other
/// did, and while the stream waited for a chunk being written. Each rerun
/// resumes from what the destinations recorded; the source writes all
/// along; the end is exactly the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_inside_a_chunk_and_while_the_stream_waits_for_one() {
    let fleet = items_fleet(200_000).await;
    fleet.on_dests(ITEMS_SCHEMA).await.unwrap();
    // Short chunks in several ranges: many chunks, held changes likely.
    let files = ConfigFiles::write(&fleet, SHARDING);
    std::fs::write(
        files.dir.join("pgdog.toml"),
        fleet.pgdog_toml(SHARDING).replace(
            "[general]\n",
            "[general]\nresharding_copy_chunk_size = 4000000\nresharding_chunk_seconds = 0.2\n",
        ),
    )
    .unwrap();
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    for (round, point) in ["read:2", "between-commits:3", "hold:1", "read:4"]
        .iter()
        .enumerate()
    {
        let log = format!("crash{round}.log");
        let mut child = files.spawn_crashing(point, &log);
        files.wait_crashed(&mut child, point, &log, 120).await;
    }
    let log = "final.log";
    let mut child = KillOnDrop(files.spawn("pub", &[], log));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !files.log(log).contains("copy complete") {
        assert!(
            child.0.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "the final run did not finish the copy:\n{}",
            files.log(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Resumed: chunks already on the destinations were not read again.
    let text = files.log(log);
    assert!(!text.contains("copying in chunks while the stream runs tables=0"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop().await;
    fleet
        .wait_caught_up("pgdog_pub_dest", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        !files.log(log).contains("found no row"),
        "an update or delete missed its row:\n{}",
        files.log(log)
    );
    verify_equal(&fleet, &items_check(2)).await;
    // Chunks were read in short transactions, each recorded once per shard.
    for d in &fleet.dests {
        let mut c = pgdog::net::Connection::connect(&d.options("postgres", DATABASE))
            .await
            .unwrap();
        let rows = c
            .query("SELECT count(*) > 4, count(*) = count(DISTINCT (lo_key, hi_key)) FROM pgdog.copy_chunks")
            .await
            .unwrap();
        assert_eq!(rows[0].text(0), Some("t"), "several chunks");
        assert_eq!(rows[0].text(1), Some("t"), "no chunk recorded twice");
        c.close().await;
    }
}

/// The process ends (as with SIGKILL) right after a captured schema change
/// ran on the destination shards, before it committed, and again right
/// after it committed, before the move planned again; each time the rows
/// that use the new column follow it in the stream. Each rerun resumes:
/// the change is applied once, no row is lost, and the shards equal the
/// source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_a_schema_change_and_the_rows_that_use_it() {
    let fleet = items_fleet(5_000).await;
    let files = ConfigFiles::write(&fleet, SHARDING);
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut src = pgdog::net::Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    for (round, (point, column)) in [("ddl:1", "first"), ("ddl-committed:1", "second")]
        .iter()
        .enumerate()
    {
        let log = format!("ddl{round}.log");
        let mut child = files.spawn_crashing(point, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !files.log(&log).contains("copy complete") {
            assert!(
                child.0.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "run {round} did not get to stream:\n{}",
                files.log(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The migration, then rows that use it, in their own transactions.
        on_source(
            &mut src,
            &format!("ALTER TABLE items ADD COLUMN {column} int NOT NULL DEFAULT 7"),
        )
        .await;
        on_source(
            &mut src,
            &format!(
                "INSERT INTO items (tenant, id, label, {column}) SELECT g % 997, {} + g, 'after', g FROM generate_series(1, 100) g;
                 UPDATE items SET {column} = {column} + 1 WHERE id % 13 = 0;",
                300_000_000 + round * 1000
            ),
        )
        .await;
        files.wait_crashed(&mut child, point, &log, 60).await;
    }
    src.close().await;
    let log = "final.log";
    let _child = KillOnDrop(files.spawn("pub", &[], log));
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.stop().await;
    fleet
        .wait_caught_up("pgdog_pub_dest", Duration::from_secs(90))
        .await
        .unwrap();
    // Each migration ran once per shard, and its rows are there.
    for d in &fleet.dests {
        let mut c = pgdog::net::Connection::connect(&d.options("postgres", DATABASE))
            .await
            .unwrap();
        let rows = c
            .query("SELECT count(*) FROM pgdog.ddl_applied")
            .await
            .unwrap();
        assert_eq!(rows[0].text(0), Some("2"), "each migration recorded once");
        c.close().await;
    }
    verify_equal(
        &fleet,
        &[check(
            "items",
            &[
                "tenant", "id", "qty", "label", "big", "updated", "first", "second",
            ],
            Some("tenant"),
            DataType::Bigint,
            2,
            false,
        )],
    )
    .await;
}
