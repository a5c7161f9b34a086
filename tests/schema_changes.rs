//! Schema changes on the source while a move copies and streams.
//!
//! With DDL capture (pgdog's user is a superuser on the source), each
//! statement reaches every destination shard at its place in the change
//! stream, and the shards equal the source. Without it (no event trigger),
//! the stream notices a new column from the Relation message before it
//! applies a row of it, and the move waits, saying which table, column and
//! type, and the statement to run on each destination shard. It does not
//! exit. Once every shard has the column it goes on by itself, and nothing
//! written meanwhile is lost.

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
    // pgdog's user may not create event triggers (here: capture is off).
    let mut config = (*fleet.config(SHARDING).unwrap()).clone();
    config.general.resharding_capture_ddl = false;
    let config = std::sync::Arc::new(config);
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;

    // A migration on the source alone, then rows that use its column.
    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    on_source(
        &mut src,
        "ALTER TABLE items ADD COLUMN priority int NOT NULL DEFAULT 3",
    )
    .await;
    on_source(
        &mut src,
        "INSERT INTO items (tenant, id, label, priority) SELECT g % 997, 200000000 + g, 'urgent', 9 FROM generate_series(1, 200) g;
         UPDATE items SET priority = 1 WHERE id % 11 = 0;",
    )
    .await;

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
    on_source(
        &mut src,
        "UPDATE items SET priority = priority + 10 WHERE id % 13 = 0",
    )
    .await;
    src.close().await;
    finish(
        &fleet,
        run,
        writer,
        true,
        &["tenant", "id", "qty", "label", "big", "updated", "priority"],
    )
    .await;
}

/// The columns of `items` at the end of [`migrations`].
const MIGRATED: &[&str] = &[
    "tenant", "id", "qty", "label", "big", "updated", "priority", "token", "kind",
];

/// An application's migrations, each followed by writes that use it. The
/// first half runs before pgdog is stopped and started again. `token`'s
/// default is `token_default`: a volatile one has `items` copied again
/// while the migrations after it arrive.
fn migrations(token_default: &str) -> Vec<String> {
    [
        "ALTER TABLE items ADD COLUMN priority int NOT NULL DEFAULT 3",
        "UPDATE items SET priority = 7 WHERE id % 17 = 0",
        "ALTER TABLE items ADD COLUMN remark text DEFAULT 'none'",
        "INSERT INTO items (tenant, id, label, priority, remark) SELECT g % 997, 300000000 + g, 'm', 2, 'set' FROM generate_series(1, 50) g",
        "ALTER TABLE items ADD COLUMN token uuid DEFAULT {token_default}",
        "ALTER TABLE items RENAME COLUMN remark TO note",
        "UPDATE items SET note = 'renamed' WHERE id % 19 = 0",
        "ALTER TABLE items ALTER COLUMN priority TYPE bigint",
        "UPDATE items SET priority = 5000000000 WHERE id % 23 = 0",
        "ALTER TABLE items ALTER COLUMN note SET DEFAULT 'later'; ALTER TABLE items ALTER COLUMN note SET NOT NULL",
        "INSERT INTO items (tenant, id, label) SELECT g % 997, 300001000 + g, 'defaulted' FROM generate_series(1, 30) g",
        "ALTER TABLE items ALTER COLUMN note DROP NOT NULL, ALTER COLUMN note DROP DEFAULT",
        "CREATE INDEX items_priority ON items (priority)",
        "CREATE INDEX CONCURRENTLY items_priority_tenant ON items (priority, tenant)",
        "DROP INDEX items_priority",
        "ALTER TABLE items ADD CONSTRAINT items_priority_positive CHECK (priority > 0)",
        "ALTER TABLE items ADD COLUMN kind int",
        "ALTER TABLE items ADD CONSTRAINT items_kind_fk FOREIGN KEY (kind) REFERENCES kinds (k)",
        "UPDATE items SET kind = 1 + id % 3 WHERE id % 5 = 0",
        "ALTER TABLE items DROP CONSTRAINT items_priority_positive",
        "CREATE SEQUENCE ticket_seq START 100",
        "ALTER SEQUENCE ticket_seq INCREMENT BY 5",
        "ALTER TABLE kinds RENAME TO categories",
        "INSERT INTO categories VALUES (4, 'four')",
        "ALTER TABLE items DROP COLUMN note",
        "UPDATE items SET priority = priority + 1 WHERE id % 29 = 0",
    ]
    .map(|sql| sql.replace("{token_default}", token_default))
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_ddl_reaches_every_shard_in_stream_order() {
    migrations_during_a_move("'00000000-0000-0000-0000-000000000001'", 5_000, None).await;
}

/// The same migrations, with `items` copied again in chunks (for the
/// volatile default) while the ones after it (a rename, a type change,
/// SET NOT NULL, a dropped column) arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_while_a_volatile_default_copies_the_table_again() {
    // Short chunks over many rows: the copy spans the migrations after it.
    migrations_during_a_move("gen_random_uuid()", 200_000, Some(0.01)).await;
}

async fn migrations_during_a_move(token_default: &str, rows: u64, chunk_seconds: Option<f64>) {
    init_logging();
    let fleet = items_fleet(rows).await;
    fleet
        .on_sources(
            "CREATE TABLE kinds (k int PRIMARY KEY, name text NOT NULL);
             INSERT INTO kinds VALUES (1, 'one'), (2, 'two'), (3, 'three');
             ALTER PUBLICATION pub ADD TABLE kinds;",
        )
        .await
        .unwrap();
    let mut config = (*fleet.config(SHARDING).unwrap()).clone();
    if let Some(seconds) = chunk_seconds {
        config.general.resharding_chunk_seconds = seconds;
    }
    let config = std::sync::Arc::new(config);
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config.clone(), move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    assert!(
        !run.task.notes().iter().any(|n| n.contains("not captured")),
        "{:?}",
        run.task.notes()
    );

    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    let all = migrations(token_default);
    let half = all.len() / 2;
    for (i, sql) in all.iter().enumerate() {
        if i == half {
            // pgdog stops and starts again in the middle of the
            // migrations: what it applied is not applied twice.
            run.stop().await.unwrap();
            run = start(config.clone(), move_options("pub", Mode::Full));
        }
        on_source(&mut src, sql).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    src.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;

    // Every statement reached both shards.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if run.handle.is_finished() {
            let r = (&mut run.handle).await.unwrap();
            panic!("the move ended: {r:?}");
        }
        // A chunk that sees a change before the stream has replayed it
        // waits a moment; the move must not stay waiting.
        if run.task.waiting().is_none()
            && run.task.phase() == Phase::Streaming
            && fleet
                .wait_caught_up(&run.slot, Duration::from_secs(1))
                .await
                .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the move did not catch up: {:?}\n{}",
                run.task.view(),
                activity(&fleet).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for d in &fleet.dests {
        let mut c = d.connect(DATABASE).await.unwrap();
        // CREATE INDEX CONCURRENTLY is built beside the stream.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = c
                .query("SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('items_priority_tenant') AND indisvalid")
                .await
                .unwrap();
            if r[0].text(0) == Some("1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "items_priority_tenant was not built"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What each migration left, as the source has it.
        for (sql, want) in [
            ("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'priority'", "bigint"),
            ("SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'note' AND NOT attisdropped", "0"),
            ("SELECT to_regclass('items_priority') IS NULL AND to_regclass('kinds') IS NULL AND to_regclass('categories') IS NOT NULL", "t"),
            ("SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'items'::regclass AND contype IN ('c', 'f')", "items_kind_fk"),
            ("SELECT start_value || '/' || increment_by FROM pg_sequences WHERE sequencename = 'ticket_seq'", "100/5"),
        ] {
            assert_eq!(one(&mut c, sql).await, want, "{sql}");
        }
        c.close().await;
    }
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    verify_equal(
        &fleet,
        &[
            check(
                "items",
                MIGRATED,
                Some("tenant"),
                DataType::Bigint,
                2,
                false,
            ),
            check(
                "categories",
                &["k", "name"],
                None,
                DataType::Bigint,
                2,
                false,
            ),
        ],
    )
    .await;

    // --cleanup removes what the move installed on the source.
    let cleaned = start(config, move_options("pub", Mode::Cleanup));
    cleaned.handle.await.unwrap().unwrap();
    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    let r = src
        .query("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgdog%'")
        .await
        .unwrap();
    assert_eq!(r[0].text(0), Some("0"));
    src.close().await;
}

/// The first value of a query's first row.
async fn one(c: &mut Connection, sql: &str) -> String {
    c.query(sql).await.unwrap()[0]
        .text(0)
        .map(str::to_string)
        .unwrap_or_default()
}

/// A volatile default gives every existing row a value no change carries:
/// the table is copied again, in chunks, while the writer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volatile_default_copies_the_table_again() {
    init_logging();
    let fleet = items_fleet(20_000).await;
    volatile_default_under_writes(&fleet, SHARDING).await;
}

/// The migration with a volatile default on every source shard of
/// `fleet`, moved with `rules` under writes: the copy starts again, ends,
/// and the shards equal the sources.
async fn volatile_default_under_writes(fleet: &pgdog::harness::Fleet, rules: &str) {
    let mut config = (*fleet.config(rules).unwrap()).clone();
    config.general.resharding_chunk_seconds = 0.01;
    let config = std::sync::Arc::new(config);
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    for opts in fleet.source_options() {
        let mut src = Connection::connect(&opts).await.unwrap();
        on_source(
            &mut src,
            "ALTER TABLE items ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid()",
        )
        .await;
        src.close().await;
    }
    // The copy starts again, and ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.task.phase() == Phase::Streaming {
        assert!(Instant::now() < deadline, "the table was not copied again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.wait_streaming(Duration::from_secs(120)).await;
    finish(
        fleet,
        run,
        writer,
        true,
        &["tenant", "id", "qty", "label", "big", "updated", "token"],
    )
    .await;
}

/// Schema changes while a table is being copied in chunks: a column added
/// (and written), the table rewritten by VACUUM FULL and by a type change.
/// Chunks read before a change and after it, and the stream between them,
/// make exactly the source: a chunk never reads a rewritten table through
/// an older snapshot (which would see it empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_while_a_table_is_copied_in_chunks() {
    init_logging();
    let fleet = items_fleet(300_000).await;
    let mut config = (*fleet.config(SHARDING).unwrap()).clone();
    config.general.resharding_chunk_seconds = 0.01;
    config.general.resharding_copy_chunk_size = 4_000_000;
    let config = std::sync::Arc::new(config);
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let run = start(config, move_options("pub", Mode::Full));
    // Some chunks are in, not all.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let chunks = run
            .task
            .copies()
            .iter()
            .find(|c| c.table == "items")
            .map(|c| c.chunks.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0);
        if chunks >= 3 {
            break;
        }
        assert!(!run.handle.is_finished(), "the move ended");
        assert!(Instant::now() < deadline, "no chunk was copied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    for sql in [
        "ALTER TABLE items ADD COLUMN priority int NOT NULL DEFAULT 3",
        "UPDATE items SET priority = id % 7 WHERE id % 5 = 0",
        "VACUUM FULL items",
        "ALTER TABLE items ALTER COLUMN qty TYPE bigint",
        "UPDATE items SET qty = 10000000000 + id WHERE id % 11 = 0",
    ] {
        on_source(&mut src, sql).await;
    }
    src.close().await;
    let copying = run.task.phase() != Phase::Streaming;
    let mut run = run;
    run.wait_streaming(Duration::from_secs(180)).await;
    eprintln!("the changes ran while the copy ran: {copying}");
    finish(
        &fleet,
        run,
        writer,
        false,
        &["tenant", "id", "qty", "label", "big", "updated", "priority"],
    )
    .await;
}

/// The end of a move under writes: the writer stops, the stream catches
/// up (`no_missing`: without an update or delete that missed its row),
/// the move stops, and `items` with `columns` equals the source.
async fn finish(
    fleet: &pgdog::harness::Fleet,
    mut run: InProcess,
    writer: Writer,
    no_missing: bool,
    columns: &[&str],
) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;
    if let Err(e) = fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
    {
        let ended = if run.handle.is_finished() {
            format!("the move ended: {:?}", (&mut run.handle).await)
        } else {
            format!("{:?}", run.task.view())
        };
        panic!("{e}: {ended}\n{}", activity(fleet).await);
    }
    if no_missing {
        assert_eq!(run.missing_rows(), 0);
    }
    run.stop().await.unwrap();
    verify_equal(
        fleet,
        &[check(
            "items",
            columns,
            Some("tenant"),
            DataType::Bigint,
            2,
            fleet.sources.len() > 1,
        )],
    )
    .await;
}

/// Two moves from one source share the DDL capture: the cleanup of one
/// keeps it while the other's slot exists or the other has just listed
/// itself, and the last one removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_stays_while_another_move_uses_it() {
    use pgdog::data_sync::ddl::capture::{self, Installed, Removal};
    init_logging();
    let cluster = pgdog::harness::cluster::Cluster::start_default().unwrap();
    let mut c = cluster.connect("postgres").await.unwrap();
    for slot in ["pgdog_a", "pgdog_b", "pgdog_c"] {
        c.query_text(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[slot],
        )
        .await
        .unwrap();
    }
    for slot in ["pgdog_a", "pgdog_b"] {
        assert_eq!(
            capture::install(&mut c, "the source", slot).await.unwrap(),
            Installed::Yes
        );
    }
    // Installed again by a rerun of the same move: listed once.
    capture::install(&mut c, "the source", "pgdog_a")
        .await
        .unwrap();
    assert_eq!(
        capture::remove(&mut c, "pgdog_a").await.unwrap(),
        Removal::KeptFor(vec!["pgdog_b".into()])
    );
    assert!(capture::installed(&mut c).await.unwrap());
    assert_eq!(
        capture::remove(&mut c, "pgdog_b").await.unwrap(),
        Removal::Removed
    );
    assert!(!capture::installed(&mut c).await.unwrap());
    assert_eq!(
        capture::remove(&mut c, "pgdog_b").await.unwrap(),
        Removal::NotInstalled
    );

    // A move that listed itself and has not created its slot yet (its
    // creation waits for long transactions) still counts.
    for slot in ["pgdog_c", "pgdog_d"] {
        capture::install(&mut c, "the source", slot).await.unwrap();
    }
    assert_eq!(
        capture::remove(&mut c, "pgdog_c").await.unwrap(),
        Removal::KeptFor(vec!["pgdog_d".into()])
    );
    // Until it is old: a move abandoned before it made its slot (its entry
    // from more than an hour ago, written here by hand) does not.
    c.execute(
        "COMMENT ON EVENT TRIGGER pgdog_ddl_capture IS 'pgdog: DDL capture for the moves of slots: pgdog_d@1'",
    )
    .await
    .unwrap();
    assert_eq!(
        capture::remove(&mut c, "pgdog_c").await.unwrap(),
        Removal::Removed
    );
    assert!(!capture::installed(&mut c).await.unwrap());

    // A move abandoned without its cleanup, its slot dropped by hand: its
    // entry is recent, so the capture stays for now.
    for slot in ["pgdog_b", "pgdog_c"] {
        capture::install(&mut c, "the source", slot).await.unwrap();
    }
    c.query_text("SELECT pg_drop_replication_slot($1)", &["pgdog_b"])
        .await
        .unwrap();
    assert_eq!(
        capture::remove(&mut c, "pgdog_c").await.unwrap(),
        Removal::KeptFor(vec!["pgdog_b".into()])
    );
    c.close().await;
}

/// A migration that commits after schema sync read the source and before
/// the move's slot exists reaches neither the shards (made from the
/// earlier dump) nor the stream. The move stops before copying and names
/// it; once the change is made on the shards as the message says, the
/// same command resumes and the shards equal the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_while_pgdog_reads_the_schema_stops_the_move() {
    init_logging();
    let fleet = items_fleet(2_000).await;
    fleet
        .on_sources("CREATE TABLE blocker (x int)")
        .await
        .unwrap();
    let config = fleet.config(SHARDING).unwrap();
    // A transaction with an xid keeps the slot's creation waiting (schema
    // sync is done by then).
    let mut holder = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    holder
        .execute("BEGIN; INSERT INTO blocker VALUES (1)")
        .await
        .unwrap();
    let run = start(config.clone(), move_options("pub", Mode::Full));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run
        .task
        .waiting()
        .is_some_and(|w| w.contains("creating replication slot"))
    {
        assert!(!run.handle.is_finished(), "the move ended");
        assert!(
            Instant::now() < deadline,
            "the slot's creation did not wait"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    src.execute("CREATE INDEX items_label_idx ON items (label)")
        .await
        .unwrap();
    holder.execute("COMMIT").await.unwrap();
    holder.close().await;
    src.close().await;

    let ended = tokio::time::timeout(Duration::from_secs(60), run.handle).await;
    let err = ended
        .expect("the move went on after a migration it cannot replay")
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("INDEX public.items_label_idx was created on source shard 0 while pgdog read its schema"),
        "{err}"
    );
    assert!(
        err.contains("make the same change on every destination shard"),
        "{err}"
    );
    for d in &fleet.dests {
        let mut c = d.connect(DATABASE).await.unwrap();
        let copied = c.query("SELECT count(*) FROM items").await.unwrap();
        assert_eq!(copied[0].text(0), Some("0"), "nothing is copied");
        c.execute("CREATE INDEX items_label_idx ON items (label)")
            .await
            .unwrap();
        c.close().await;
    }

    // As the message says: the same command again resumes.
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    finish(
        &fleet,
        run,
        writer,
        true,
        &["tenant", "id", "qty", "label", "big", "updated"],
    )
    .await;
}

/// Two source shards run one migration with a volatile default: each
/// destination shard runs it once, and each source shard's rows (only
/// its own) are copied again, so the shards get every source shard's
/// values, not values of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volatile_default_on_two_source_shards() {
    init_logging();
    let n = 2;
    let fleet = pgdog::harness::Fleet::start(n, 2, pgdog::harness::ClusterOptions::default())
        .await
        .unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    for (s, c) in fleet.sources.iter().enumerate() {
        // Each source shard holds the tenants the source rule gives it.
        let load = format!("{}{}", items_rows(10_000, s, n), keep_own_tenants(s, n));
        c.exec(DATABASE, &load).await.unwrap();
    }
    fleet
        .on_sources("CREATE PUBLICATION pub FOR TABLE items")
        .await
        .unwrap();
    let rules = format!("{SHARDING}\n{}", SHARDING.replace("\"dest\"", "\"source\""));
    volatile_default_under_writes(&fleet, &rules).await;
}

/// A table added to the publication mid-move, with rows and written to,
/// joins the move: created on the shards, copied, streamed, routed by its
/// rule. A table that leaves the publication is reported in the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_joins_the_publication_and_another_leaves() {
    init_logging();
    let fleet = items_fleet(5_000).await;
    fleet
        .on_sources(
            "CREATE TABLE audit (id bigint PRIMARY KEY, what text);
             INSERT INTO audit SELECT g, 'event ' || g FROM generate_series(1, 100) g;
             ALTER PUBLICATION pub ADD TABLE audit;",
        )
        .await
        .unwrap();
    let rules = format!(
        "{SHARDING}\n[[sharded_tables]]\ndatabase = \"dest\"\nname = \"orders\"\ncolumn = \"tenant\"\ndata_type = \"bigint\"\n"
    );
    let config = fleet.config(&rules).unwrap();
    let writer = Writer::start(fleet.source_options(), 100_000_000);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;

    let mut src = Connection::connect(&fleet.source_options()[0])
        .await
        .unwrap();
    on_source(
        &mut src,
        "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant bigint NOT NULL, \"Total\" numeric(12,2));
         INSERT INTO orders (tenant, \"Total\") SELECT g % 97, g * 1.5 FROM generate_series(1, 3000) g;
         ALTER PUBLICATION pub ADD TABLE orders;",
    )
    .await;
    // The application goes on writing to it while pgdog takes it in.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    while !run.task.routing().iter().any(|r| r.table.name == "orders") {
        assert!(!run.handle.is_finished(), "the move ended");
        assert!(Instant::now() < deadline, "orders never joined the move");
        i += 1;
        on_source(
            &mut src,
            &format!(
                "INSERT INTO orders (tenant, \"Total\") VALUES ({}, 1); UPDATE orders SET \"Total\" = \"Total\" + 1 WHERE id = {}",
                i % 97,
                1 + i * 7 % 3000
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routing = run.task.routing();
    let orders = routing.iter().find(|r| r.table.name == "orders").unwrap();
    assert_eq!(orders.dest, "sharded by \"tenant\" (hash, its own rule)");
    run.wait_streaming(Duration::from_secs(120)).await;
    on_source(
        &mut src,
        "DELETE FROM orders WHERE id % 10 = 0; UPDATE orders SET tenant = tenant + 1 WHERE id % 13 = 0",
    )
    .await;

    on_source(&mut src, "ALTER PUBLICATION pub DROP TABLE audit").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run
        .task
        .notes()
        .iter()
        .any(|n| n.contains("table public.audit left publication \"pub\""))
    {
        assert!(
            Instant::now() < deadline,
            "audit leaving was not reported: {:?}",
            run.task.notes()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    src.close().await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.stop().await;
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    verify_equal(
        &fleet,
        &[
            check(
                "items",
                &["tenant", "id", "qty", "label", "big", "updated"],
                Some("tenant"),
                DataType::Bigint,
                2,
                false,
            ),
            check(
                "orders",
                &["id", "tenant", "Total"],
                Some("tenant"),
                DataType::Bigint,
                2,
                false,
            ),
        ],
    )
    .await;
}
