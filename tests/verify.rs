//! `pgdog verify` against real moves: equal while the source keeps
//! writing (a move streaming in another process, and no move running, so
//! verify applies from the slot itself), 1→2 and 2→3; and after a value
//! is changed on one shard, a row deleted, a row added and a row put on
//! the wrong shard, exit status 1 naming the table, the shard and, with
//! `--detail`, the key.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet, PgInstall};
use pgdog::net::Connection;

const SCHEMA: &str = "
CREATE TABLE countries (code char(2) PRIMARY KEY, name text NOT NULL);
INSERT INTO countries VALUES ('US', 'United States'), ('DE', 'Germany'), ('JP', 'Japan');
-- Sharded on a column outside its primary key.
CREATE TABLE notes (id bigint PRIMARY KEY, tenant bigint NOT NULL, body text);
";

fn sharding(cluster: &str) -> String {
    format!(
        "[[sharded_tables]]\ndatabase = \"{cluster}\"\ncolumn = \"tenant\"\ndata_type = \"bigint\"\n\n"
    )
}

async fn fleet(n: usize, m: usize) -> (Fleet, String) {
    fleet_with(n, m, ClusterOptions::default()).await
}

/// The same, with destinations made by `dest` (another major version).
async fn fleet_with(n: usize, m: usize, dest: ClusterOptions) -> (Fleet, String) {
    init_logging();
    let fleet = Fleet::start_mixed(n, m, ClusterOptions::default(), dest)
        .await
        .unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.on_sources(SCHEMA).await.unwrap();
    for (s, c) in fleet.sources.iter().enumerate() {
        c.exec(DATABASE, &items_rows(20_000, s, n)).await.unwrap();
        c.exec(
            DATABASE,
            &format!(
                "INSERT INTO notes SELECT g, g % 997, 'note ' || g FROM generate_series(1, 3000) g WHERE g % {n} = {s}"
            ),
        )
        .await
        .unwrap();
    }
    if n > 1 {
        // Notes live on the source shard their tenant hashes to.
        for (s, c) in fleet.sources.iter().enumerate() {
            c.exec(
                DATABASE,
                &format!(
                    "CREATE SCHEMA helper; CREATE TABLE helper.h (k bigint) PARTITION BY HASH (k);
                     DELETE FROM notes WHERE NOT satisfies_hash_partition('helper.h'::regclass, {n}, {s}, tenant);"
                ),
            )
            .await
            .unwrap();
        }
    }
    fleet
        .on_sources("CREATE PUBLICATION pub FOR TABLE items, notes, countries")
        .await
        .unwrap();
    let mut toml = sharding("dest");
    if n > 1 {
        toml.push_str(&sharding("source"));
    }
    (fleet, toml)
}

fn verify(files: &ConfigFiles, extra: &[&str]) -> Output {
    let out = files
        .command("verify", "pub")
        .args(extra)
        .env("PGDOG_LOG", "info")
        .output()
        .expect("run pgdog verify");
    eprintln!(
        "pgdog verify {extra:?}: {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Verify reports equal with the source writing all along: first while a
/// data-sync streams (in this process: verify runs as another one), then
/// with none running.
async fn equal_under_writes(n: usize, m: usize) -> (Fleet, ConfigFiles) {
    equal_under_writes_to(n, m, ClusterOptions::default()).await
}

async fn equal_under_writes_to(n: usize, m: usize, dest: ClusterOptions) -> (Fleet, ConfigFiles) {
    let (fleet, toml) = fleet_with(n, m, dest).await;
    let config = fleet.config(&toml).unwrap();
    let files = ConfigFiles::write(&fleet, &toml);
    let writer = Writer::start(fleet.source_options(), 10_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let out = verify(&files, &[]);
    assert_eq!(out.status.code(), Some(0), "verify while a move streams");
    let text = stdout(&out);
    assert!(text.contains("all 3 tables equal"), "{text}");
    assert!(!text.contains("applied by verify"), "{text}");
    // The move went on after the hold.
    let before = run.task.streams().iter().map(|s| s.confirmed().0).max();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = run.task.streams().iter().map(|s| s.confirmed().0).max();
    assert!(after > before, "the move did not go on after verify");

    // No move running: verify streams from the slot itself, still while
    // the source writes.
    run.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = verify(&files, &[]);
    assert_eq!(out.status.code(), Some(0), "verify with no move running");
    let text = stdout(&out);
    assert!(text.contains("applied by verify"), "{text}");
    let writes = writer.stop().await;
    assert!(writes > 100, "the writer made only {writes} writes");
    // Once more after the last write: the slot is drained, so a change a
    // test makes on a destination shard now cannot be overwritten by a
    // source change still on its way.
    let out = verify(&files, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify after the writes stopped"
    );
    (fleet, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_under_writes_2_to_3() {
    let (_fleet, _files) = equal_under_writes(2, 3).await;
}

/// Across major versions (the default server to the newest, 16 or later):
/// both sides' COPY output hashes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_under_writes_across_versions() {
    let Some(install) = PgInstall::newest_at_least(16) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 16+ for the destinations");
        return;
    };
    let dest = ClusterOptions {
        install: Some(install),
        ..Default::default()
    };
    let (_fleet, _files) = equal_under_writes_to(1, 2, dest).await;
}

/// An `items` row on destination shard `d`: its tenant and id.
async fn some_item(fleet: &Fleet, d: usize) -> (i64, i64) {
    let mut c = Connection::connect(&fleet.dest_options()[d]).await.unwrap();
    let rows = c
        .query("SELECT tenant, id FROM items WHERE big IS NULL ORDER BY id LIMIT 1")
        .await
        .unwrap();
    let r = &rows[0];
    (
        r.text(0).unwrap().parse().unwrap(),
        r.text(1).unwrap().parse().unwrap(),
    )
}

async fn on_dest(fleet: &Fleet, d: usize, sql: &str) {
    let mut c = Connection::connect(&fleet.dest_options()[d]).await.unwrap();
    c.execute(&format!("SET session_replication_role = replica; {sql}"))
        .await
        .unwrap();
}

/// A difference: exit status 1, and the table, the shard and (with
/// `--detail`) the kind and key named.
fn assert_differs(files: &ConfigFiles, d: usize, kind: &str, key: &str) {
    let out = verify(files, &["--detail"]);
    assert_eq!(out.status.code(), Some(1), "verify must see the {kind} row");
    let text = stdout(&out);
    let line = format!("{kind:<9} public.items shard {d} key {key}");
    assert!(text.contains(&line), "no '{line}' in:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("public.items")
            && l.contains(&format!(" {d} "))
            && l.contains("DIFFERS")),
        "shard {d} of items is not reported as differing:\n{text}"
    );
    assert!(text.contains("1 of 3 tables differ"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn differences_are_found_1_to_2() {
    let (fleet, files) = equal_under_writes(1, 2).await;
    let d = 1;
    let other = 0;
    let (tenant, id) = some_item(&fleet, d).await;
    let key = format!("({tenant}, {id})");

    // One value changed on one shard.
    on_dest(
        &fleet,
        d,
        &format!("UPDATE items SET qty = qty + 1000 WHERE id = {id}"),
    )
    .await;
    assert_differs(&files, d, "changed", &key);
    on_dest(
        &fleet,
        d,
        &format!("UPDATE items SET qty = qty - 1000 WHERE id = {id}"),
    )
    .await;

    // A row deleted.
    on_dest(
        &fleet,
        d,
        &format!("CREATE TABLE saved AS SELECT * FROM items WHERE id = {id}; DELETE FROM items WHERE id = {id}"),
    )
    .await;
    assert_differs(&files, d, "missing", &key);

    // The row put on the wrong shard.
    let mut c = Connection::connect(&fleet.dest_options()[d]).await.unwrap();
    let rows = c
        .query("SELECT tenant, id, qty, coalesce(label, 'NULL'), updated::text FROM saved")
        .await
        .unwrap();
    let r = &rows[0];
    let values = format!(
        "({}, {}, {}, {}, NULL, '{}')",
        r.text(0).unwrap(),
        r.text(1).unwrap(),
        r.text(2).unwrap(),
        match r.text(3).unwrap() {
            "NULL" => "NULL".to_string(),
            l => format!("'{l}'"),
        },
        r.text(4).unwrap()
    );
    on_dest(
        &fleet,
        other,
        &format!("INSERT INTO items (tenant, id, qty, label, big, updated) VALUES {values}"),
    )
    .await;
    let out = verify(&files, &["--detail"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must see the misplaced row"
    );
    let text = stdout(&out);
    let line = format!("misplaced public.items shard {other} key {key}");
    assert!(text.contains(&line), "no '{line}' in:\n{text}");
    on_dest(&fleet, other, &format!("DELETE FROM items WHERE id = {id}")).await;
    on_dest(
        &fleet,
        d,
        "INSERT INTO items SELECT * FROM saved; DROP TABLE saved",
    )
    .await;

    // A row added.
    on_dest(
        &fleet,
        d,
        &format!(
            "INSERT INTO items (tenant, id, qty, label) VALUES ({tenant}, 99999999, 1, 'stray')"
        ),
    )
    .await;
    assert_differs(&files, d, "extra", &format!("({tenant}, 99999999)"));
    on_dest(&fleet, d, "DELETE FROM items WHERE id = 99999999").await;

    // A table sharded on a column outside its primary key: the key found
    // across the shards.
    let mut c = Connection::connect(&fleet.dest_options()[d]).await.unwrap();
    let note: String = c
        .query("SELECT id FROM notes ORDER BY id LIMIT 1")
        .await
        .unwrap()[0]
        .text(0)
        .unwrap()
        .to_string();
    on_dest(
        &fleet,
        d,
        &format!("UPDATE notes SET body = 'edited' WHERE id = {note}"),
    )
    .await;
    let out = verify(&files, &["--detail", "--table", "notes"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let line = format!("changed   public.notes shard {d} key {note}");
    assert!(text.contains(&line), "no '{line}' in:\n{text}");
    on_dest(
        &fleet,
        d,
        &format!("UPDATE notes SET body = 'note ' || id WHERE id = {note}"),
    )
    .await;

    // Thousands of rows changed: at most 20 listed, and narrowing stops
    // early instead of walking the whole table.
    on_dest(
        &fleet,
        d,
        "UPDATE items SET qty = qty + 1 WHERE tenant < 500",
    )
    .await;
    let out = verify(&files, &["--detail"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let changed = text
        .lines()
        .filter(|l| l.trim_start().starts_with("changed"))
        .count();
    assert_eq!(changed, 20, "{text}");
    assert!(text.contains("differing keys; there may be more"), "{text}");
    on_dest(
        &fleet,
        d,
        "UPDATE items SET qty = qty - 1 WHERE tenant < 500",
    )
    .await;

    // Put back: equal again; and only the tables asked for are read.
    let out = verify(&files, &["--table", "items", "--table", "public.countries"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("all 2 tables equal"),
        "{}",
        stdout(&out)
    );
    // An error is exit status 2.
    let out = verify(&files, &["--table", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--table nope"));
    // No such move: said before anything is read.
    let out = verify(&files, &["--replication-slot", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(
            "pgdog verify looks at the move of replication slot \"nope\", which does not exist"
        ),
        "{err}"
    );
}

/// Whether `items` row `id` is on some destination shard.
async fn item_arrived(fleet: &Fleet, id: u64) -> bool {
    for o in fleet.dest_options() {
        let mut c = Connection::connect(&o).await.unwrap();
        let rows = c
            .query(&format!("SELECT 1 FROM items WHERE id = {id}"))
            .await
            .unwrap();
        if !rows.is_empty() {
            return true;
        }
    }
    false
}

/// A verify that dies while it holds a move (its hold never withdrawn):
/// the move stays paused, a second verify is refused naming the first,
/// and once the hold expires the move goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_verify_lets_the_move_go() {
    let (fleet, toml) = fleet(1, 2).await;
    let config = fleet.config(&toml).unwrap();
    let files = ConfigFiles::write(&fleet, &toml);
    let opts = move_options("pub", Mode::Full);
    let mut run = start(config.clone(), opts.clone());
    run.wait_streaming(Duration::from_secs(120)).await;

    let endpoints = pgdog::data_sync::Endpoints::of_move(config, &opts).unwrap();
    let mut hold = pgdog::data_sync::barrier::Hold::begin(&endpoints, &run.slot, "dead verify")
        .await
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    hold.wait("paused", Duration::from_secs(30), "test", &token)
        .await
        .unwrap();
    let died = std::time::Instant::now();
    drop(hold); // as if its process were killed: nothing is withdrawn
    fleet.sources[0]
        .exec(
            DATABASE,
            "INSERT INTO items (tenant, id, qty, label) VALUES (1, 77777777, 1, 'during the hold')",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !item_arrived(&fleet, 77777777).await,
        "the move applied a write while paused"
    );
    let out = verify(&files, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("another verify (dead verify"), "{err}");

    // The hold expires EXPIRY_SECS after its last heartbeat (before
    // `died`); a poll of the move's agent later it lets go.
    let deadline = Duration::from_secs(pgdog::data_sync::barrier::EXPIRY_SECS as u64 + 3);
    while !item_arrived(&fleet, 77777777).await {
        assert!(
            died.elapsed() < deadline,
            "the move is still held {:?} after its verify died",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The move answers the next verify.
    let out = verify(&files, &[]);
    assert_eq!(out.status.code(), Some(0));
    run.stop().await.unwrap();
}
