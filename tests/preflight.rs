//! Every preflight error: each says what is wrong and how to fix it, and
//! nothing (no slot, no pgdog schema) is created before the checks pass.
//! Also `--sync-only` then `--replicate-only`, and `--cleanup`.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgdog::data_sync::{self, DataSyncError, Mode, Outcome, Registry};
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet};
use pgdog::sharding::DataType;
use tokio_util::sync::CancellationToken;

const SHARDING: &str = "[[sharded_tables]]\ndatabase = \"dest\"\nname = \"items\"\ncolumn = \"tenant\"\ndata_type = \"bigint\"\n";

async fn run_to_error(fleet: &Fleet, extra: &str, mode: Mode) -> String {
    let config = fleet.config(extra).unwrap();
    run_config_to_error(config, mode).await
}

async fn run_config_to_error(config: Arc<pgdog::config::Config>, mode: Mode) -> String {
    let registry = Registry::default();
    let task = registry.new_task("source", "dest", "pub");
    // These checks are of schemas made by hand: schema sync would create
    // the missing tables (tests/schema_sync.rs covers it).
    let mut opts = move_options("pub", mode);
    opts.schema_sync = false;
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        data_sync::run(config, opts, task, CancellationToken::new()),
    )
    .await
    .expect("preflight passed and the move went on instead of failing");
    match result {
        Err(e @ DataSyncError::Preflight { .. }) => e.to_string(),
        other => panic!("expected a preflight error, got {other:?}"),
    }
}

/// Nothing was created: no slot on the source, no pgdog schema on the
/// destination.
async fn nothing_created(fleet: &Fleet) {
    let mut c = fleet.sources[0].connect(DATABASE).await.unwrap();
    let slots = c
        .query("SELECT count(*) FROM pg_replication_slots")
        .await
        .unwrap();
    assert_eq!(slots[0].text(0), Some("0"), "a slot was created");
    let mut d = fleet.dests[0].connect(DATABASE).await.unwrap();
    let schema = d
        .query("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgdog'")
        .await
        .unwrap();
    assert_eq!(schema[0].text(0), Some("0"), "the pgdog schema was created");
}

fn expect(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error does not mention {p:?}:\n{err}");
    }
    assert!(err.contains("fix:"), "error has no fix:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_preflight_error() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();

    // Publication missing, then empty.
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(
        &err,
        &[
            "publication \"pub\" does not exist",
            "source shard 0",
            "CREATE PUBLICATION",
        ],
    );
    fleet.on_sources("CREATE PUBLICATION pub").await.unwrap();
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(&err, &["has no tables", "ALTER PUBLICATION"]);

    // A table without a replica identity.
    fleet
        .on_sources("CREATE TABLE nokey (a int); ALTER PUBLICATION pub ADD TABLE nokey;")
        .await
        .unwrap();
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(
        &err,
        &["public.nokey", "replica identity", "REPLICA IDENTITY FULL"],
    );
    fleet
        .on_sources(
            "ALTER PUBLICATION pub DROP TABLE nokey; ALTER PUBLICATION pub ADD TABLE items;",
        )
        .await
        .unwrap();

    // Tables missing on the destination, then a column of another type.
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(
        &err,
        &[
            "table public.items does not exist on destination shard 0",
            "pg_dump --schema-only",
        ],
    );
    fleet
        .on_dests(&ITEMS_SCHEMA.replace("qty int", "qty bigint"))
        .await
        .unwrap();
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(
        &err,
        &[
            "column public.items.qty is integer on the source but bigint",
            "ALTER TABLE",
        ],
    );
    fleet
        .on_dests("ALTER TABLE items ALTER COLUMN qty TYPE int")
        .await
        .unwrap();

    // Sharding rules that cannot work.
    let err = run_to_error(
        &fleet,
        &SHARDING.replace("\"tenant\"", "\"nope\""),
        Mode::Full,
    )
    .await;
    expect(&err, &["sharded on column \"nope\"", "does not publish"]);
    let err = run_to_error(&fleet, &SHARDING.replace("bigint", "uuid"), Mode::Full).await;
    expect(&err, &["as uuid, but the column is bigint", "data_type"]);
    // Several problems at once: all of them named in one run.
    fleet
        .on_sources("CREATE TABLE loose (id bigint PRIMARY KEY, owner bigint NOT NULL, made bigint GENERATED ALWAYS AS (owner * 2) STORED); ALTER PUBLICATION pub ADD TABLE loose;")
        .await
        .unwrap();
    fleet
        .on_dests("CREATE TABLE loose (id bigint, owner int, made bigint GENERATED ALWAYS AS (owner * 3) STORED)")
        .await
        .unwrap();
    let loose = format!("{SHARDING}\n[[sharded_tables]]\ndatabase = \"dest\"\nname = \"loose\"\ncolumn = \"owner\"\ndata_type = \"bigint\"\n");
    let err = run_to_error(&fleet, &loose, Mode::Full).await;
    expect(
        &err,
        &[
            "preflight found",
            "column public.loose.owner is bigint on the source but integer on destination shard 0",
            "generated column public.loose.made is computed as",
            "INSERT ... ON CONFLICT (id)",
            "no unique index on exactly those columns",
        ],
    );
    // Fixed, a table sharded outside its identity is moved, not refused.
    fleet
        .on_dests("DROP TABLE loose; CREATE TABLE loose (id bigint PRIMARY KEY, owner bigint NOT NULL, made bigint GENERATED ALWAYS AS (owner * 2) STORED)")
        .await
        .unwrap();
    fleet
        .on_sources("ALTER PUBLICATION pub DROP TABLE loose")
        .await
        .unwrap();

    // No replication slot free for the move: every copy shares one
    // snapshot, so one free slot is all it needs, and none is too few.
    let mut c = fleet.sources[0].connect(DATABASE).await.unwrap();
    let free = c
        .query("SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)")
        .await
        .unwrap();
    let free: i64 = free[0].text(0).unwrap().parse().unwrap();
    c.execute(&format!(
        "SELECT pg_create_logical_replication_slot('filler_' || g, 'pgoutput') FROM generate_series(1, {free}) g"
    ))
    .await
    .unwrap();
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(
        &err,
        &[
            "0 free replication slots, this move needs 1",
            "max_replication_slots",
        ],
    );
    c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'filler_%'")
        .await
        .unwrap();
    c.close().await;

    // Destination not empty.
    fleet.dests[1]
        .exec(DATABASE, "INSERT INTO items (tenant, id) VALUES (1, 1)")
        .await
        .unwrap();
    let err = run_to_error(&fleet, SHARDING, Mode::Full).await;
    expect(
        &err,
        &["already has rows", "destination shard 1", "TRUNCATE"],
    );
    fleet.dests[1]
        .exec(DATABASE, "TRUNCATE items")
        .await
        .unwrap();

    // --replicate-only without a slot.
    let err = run_to_error(&fleet, SHARDING, Mode::ReplicateOnly).await;
    expect(
        &err,
        &[
            "--replicate-only needs the replication slot",
            "pgdog_pub_dest",
        ],
    );

    // A source user without REPLICATION, and a wrong password.
    fleet
        .on_sources("CREATE ROLE plain LOGIN PASSWORD 'secret'")
        .await
        .unwrap();
    let plain =
        fleet
            .users_toml()
            .replacen("server_user = \"postgres\"", "server_user = \"plain\"", 1);
    let config = Arc::new(
        pgdog::config::Config::from_strs(
            "pgdog.toml".as_ref(),
            &fleet.pgdog_toml(SHARDING),
            "users.toml".as_ref(),
            &plain,
        )
        .unwrap(),
    );
    let err = run_config_to_error(config, Mode::Full).await;
    expect(
        &err,
        &["user \"plain\"", "may not use replication", "ALTER ROLE"],
    );

    // Unreachable source.
    let dead = fleet.pgdog_toml(SHARDING).replacen(
        &format!("port = {}", fleet.sources[0].port()),
        "port = 1",
        1,
    );
    let config = Arc::new(
        pgdog::config::Config::from_strs(
            "pgdog.toml".as_ref(),
            &dead,
            "users.toml".as_ref(),
            &fleet.users_toml(),
        )
        .unwrap(),
    );
    let err = run_config_to_error(config, Mode::Full).await;
    expect(&err, &["cannot connect to source shard 0", "127.0.0.1:1"]);

    nothing_created(&fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_must_be_logical() {
    let fleet = Fleet::start(
        1,
        1,
        ClusterOptions::default().setting("wal_level", "replica"),
    )
    .await
    .unwrap();
    let err = run_to_error(&fleet, "", Mode::Full).await;
    expect(&err, &["wal_level = replica", "wal_level = logical"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_only_then_replicate_only_then_cleanup() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.on_dests(ITEMS_SCHEMA).await.unwrap();
    fleet.sources[0]
        .exec(DATABASE, &items_rows(10_000, 0, 1))
        .await
        .unwrap();
    fleet
        .on_sources("CREATE PUBLICATION pub FOR TABLE items")
        .await
        .unwrap();
    let config = fleet.config(SHARDING).unwrap();
    let checks = vec![check(
        "items",
        &["tenant", "id", "qty", "label", "big", "updated"],
        Some("tenant"),
        DataType::Bigint,
        2,
        false,
    )];

    // Copy only; the slot stays and keeps the changes made meanwhile.
    let run = start(config.clone(), move_options("pub", Mode::SyncOnly));
    let outcome = run.handle.await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Copied);
    let writer = Writer::start(fleet.source_options(), 50_000_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop().await;

    // A second --sync-only copies nothing again.
    let run = start(config.clone(), move_options("pub", Mode::SyncOnly));
    assert_eq!(run.handle.await.unwrap().unwrap(), Outcome::Copied);

    // Stream what happened since the copy.
    let mut run = start(config.clone(), move_options("pub", Mode::ReplicateOnly));
    run.wait_streaming(Duration::from_secs(30)).await;
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    verify_equal(&fleet, &checks).await;

    // Cleanup: slot and state gone.
    let run = start(config, move_options("pub", Mode::Cleanup));
    assert_eq!(run.handle.await.unwrap().unwrap(), Outcome::CleanedUp);
    nothing_created(&fleet).await;
}

/// On a multi-shard source, a table without a sharding rule is read from
/// shard 0 only, on the promise that every shard holds the same rows:
/// preflight checks the row counts and refuses when they differ, and
/// `--replicate-only` names tables the destination never received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsharded_tables_must_agree_across_source_shards() {
    init_logging();
    let fleet = Fleet::start(2, 1, ClusterOptions::default()).await.unwrap();
    let schema = "CREATE TABLE countries (code text PRIMARY KEY, name text);
                  CREATE TABLE later (id int PRIMARY KEY);";
    fleet.on_sources(schema).await.unwrap();
    fleet.on_dests(schema).await.unwrap();
    fleet
        .on_sources(
            "INSERT INTO countries VALUES ('DE', 'Germany'), ('FR', 'France');
             CREATE PUBLICATION pub FOR TABLE countries;",
        )
        .await
        .unwrap();
    fleet.sources[1]
        .exec(DATABASE, "INSERT INTO countries VALUES ('JP', 'Japan')")
        .await
        .unwrap();
    let err = run_to_error(&fleet, "", Mode::Full).await;
    expect(
        &err,
        &[
            "table public.countries has no sharding rule for the source cluster \"source\"",
            "shard 0: 2, shard 1: 3",
            "[[sharded_tables]]",
        ],
    );
    nothing_created(&fleet).await;

    // Made equal, the move goes ahead.
    fleet.sources[0]
        .exec(DATABASE, "INSERT INTO countries VALUES ('JP', 'Japan')")
        .await
        .unwrap();
    let config = fleet.config("").unwrap();
    let outcome = data_sync::run(
        config.clone(),
        move_options("pub", Mode::SyncOnly),
        Registry::default().new_task("source", "dest", "pub"),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Copied);
    let mut d = fleet.dests[0].connect(DATABASE).await.unwrap();
    let rows = d.query("SELECT count(*) FROM countries").await.unwrap();
    assert_eq!(rows[0].text(0), Some("3"), "copied once, from shard 0");

    // A table added to the publication afterwards was never copied:
    // --replicate-only streams it from now on and says so.
    fleet
        .on_sources("INSERT INTO later VALUES (1); ALTER PUBLICATION pub ADD TABLE later;")
        .await
        .unwrap();
    let endpoints =
        pgdog::data_sync::Endpoints::new(config, "source", "pgdog", "dest", "pgdog").unwrap();
    let findings = pgdog::data_sync::preflight::run(
        &endpoints,
        "pub",
        "pgdog_pub_dest",
        pgdog::data_sync::preflight::Intent::ReplicateOnly,
    )
    .await
    .unwrap();
    assert!(
        findings
            .notes
            .iter()
            .any(|n| n.contains("table public.later has no copy recorded")
                && n.contains("--replicate-only")),
        "{:?}",
        findings.notes
    );
    assert!(
        !findings
            .notes
            .iter()
            .any(|n| n.contains("public.countries")),
        "{:?}",
        findings.notes
    );
}
