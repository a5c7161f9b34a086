//! Schemas as applications really have them, moved end to end: foreign keys
//! and triggers on the destination, database defaults that fight pgdog's
//! session settings, REPLICA IDENTITY FULL on a partitioned table, TRUNCATE
//! of inheritance parents, with RESTART IDENTITY and of referenced tables,
//! chained unique updates, GENERATED ALWAYS identities, and a replayed row
//! move with an unchanged TOASTed value after one destination shard
//! committed and another failed.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::oracle::TableCheck;
use common::*;
use pgdog::data_sync::progress::{CopyState, Phase};
use pgdog::data_sync::{DataSyncError, Mode, Outcome};
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{Cluster, ClusterOptions, Fleet};
use pgdog::net::Connection;
use pgdog::sharding::hash::hash_shard;
use pgdog::sharding::{DataType, ValueRef};
use pgdog_protocol::Lsn;

const WAIT: Duration = Duration::from_secs(60);

/// `[[sharded_tables]]` for `dest`: hash on a bigint column per table.
fn sharding(tables: &[(&str, &str)]) -> String {
    tables
        .iter()
        .map(|(t, c)| {
            format!(
                "[[sharded_tables]]\ndatabase = \"dest\"\nname = \"{t}\"\ncolumn = \"{c}\"\ndata_type = \"bigint\"\n\n"
            )
        })
        .collect()
}

/// A session on `c` that ignores whatever timeouts the database sets by
/// default (some tests set them very low on purpose).
async fn connect(c: &Cluster) -> Connection {
    let mut opts = c.options("postgres", DATABASE);
    for k in [
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
    ] {
        opts.params.push((k.to_string(), "0".to_string()));
    }
    Connection::connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", c.port()))
}

async fn sql(c: &Cluster, sql: &str) {
    let mut conn = connect(c).await;
    conn.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await;
}

/// Every row of `sql` as text (NULL as None).
async fn rows(c: &Cluster, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut conn = connect(c).await;
    let out = conn
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await;
    out.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.text(i).map(str::to_string))
                .collect()
        })
        .collect()
}

/// The first column of the first row.
async fn scalar(c: &Cluster, q: &str) -> String {
    rows(c, q)
        .await
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_else(|| "NULL".to_string())
}

async fn count(c: &Cluster, q: &str) -> u64 {
    scalar(c, q)
        .await
        .parse()
        .unwrap_or_else(|_| panic!("{q}: not a count"))
}

/// The sum of a count over every destination shard.
async fn dest_count(fleet: &Fleet, q: &str) -> u64 {
    let mut n = 0;
    for d in &fleet.dests {
        n += count(d, q).await;
    }
    n
}

/// Like `Fleet::wait_caught_up`, through sessions immune to database
/// default timeouts.
async fn caught_up(fleet: &Fleet, slot: &str) {
    let deadline = Instant::now() + WAIT;
    for c in &fleet.sources {
        let target = Lsn::parse(&scalar(c, "SELECT pg_current_wal_insert_lsn()::text").await)
            .expect("an LSN");
        loop {
            let at = scalar(
                c,
                &format!(
                    "SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ),
            )
            .await;
            if Lsn::parse(&at).unwrap_or_default() >= target {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} at {at}, not caught up to {target}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn checks(tables: &[(&str, &[&str], Option<&str>)], m: usize) -> Vec<TableCheck> {
    tables
        .iter()
        .map(|(t, cols, key)| check(t, cols, *key, DataType::Bigint, m, false))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Foreign keys and triggers exist on the destination too.

const SHOP_SCHEMA: &str = "
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE orders (
    customer_id bigint NOT NULL REFERENCES customers (id),
    id bigint NOT NULL,
    amount numeric(12, 2) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (customer_id, id)
);
CREATE TABLE audit_log (
    customer_id bigint NOT NULL,
    id bigserial,
    what text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (customer_id, id)
);
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER customers_stamp BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TRIGGER orders_stamp BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE FUNCTION audit_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_log (customer_id, what) VALUES (NEW.id, 'customer ' || NEW.name); RETURN NULL; END $$;
CREATE FUNCTION audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_log (customer_id, what) VALUES (NEW.customer_id, 'order ' || NEW.id || ' ' || NEW.amount); RETURN NULL; END $$;
CREATE TRIGGER customers_audit AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION audit_customer();
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit_order();
";

fn shop_checks() -> Vec<TableCheck> {
    checks(
        &[
            ("customers", &["id", "name", "updated_at"], Some("id")),
            (
                "orders",
                &["customer_id", "id", "amount", "updated_at"],
                Some("customer_id"),
            ),
            (
                "audit_log",
                &["customer_id", "id", "what", "at"],
                Some("customer_id"),
            ),
        ],
        2,
    )
}

/// Small transactions on the shop: new customers with orders, orders of
/// existing customers, updates (stamped by the trigger), deletes.
fn shop_writes(from: u64, to: u64) -> Vec<String> {
    (from..to)
        .map(|i| {
            let id = 100_000 + i;
            let c = 1 + (i * 37) % 2000;
            let c2 = 1 + (i * 53) % 2000;
            let mut s = format!(
                "BEGIN;
                 INSERT INTO customers (id, name) VALUES ({id}, 'new {id}');
                 INSERT INTO orders (customer_id, id, amount) VALUES ({id}, {}, {i}.25), ({c}, {}, 1);
                 UPDATE customers SET name = name || '+' WHERE id = {c};
                 UPDATE orders SET amount = amount + 1 WHERE customer_id = {c2};",
                1_000_000 + i,
                2_000_000 + i
            );
            if i % 5 == 0 {
                // A customer that leaves, with its orders.
                s.push_str(&format!(
                    "DELETE FROM orders WHERE customer_id = {0}; DELETE FROM customers WHERE id = {0};",
                    id - 1
                ));
            }
            s.push_str("COMMIT;");
            s
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_and_triggers_on_the_destination() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(SHOP_SCHEMA).await.unwrap();
    fleet.on_dests(SHOP_SCHEMA).await.unwrap();
    fleet
        .on_sources(
            "INSERT INTO customers (id, name) SELECT g, 'customer ' || g FROM generate_series(1, 2000) g;
             INSERT INTO orders (customer_id, id, amount) SELECT 1 + g % 2000, g, (g % 1000) / 10.0 FROM generate_series(1, 10000) g;
             UPDATE customers SET name = upper(name) WHERE id % 3 = 0;
             CREATE PUBLICATION pub FOR TABLE customers, orders, audit_log;
             ANALYZE;",
        )
        .await
        .unwrap();
    // The destination's triggers are ordinary ones: they would fire in a
    // normal session.
    for d in &fleet.dests {
        assert_eq!(
            count(
                d,
                "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'O'"
            )
            .await,
            4
        );
    }
    let config = fleet
        .config(&sharding(&[
            ("customers", "id"),
            ("orders", "customer_id"),
            ("audit_log", "customer_id"),
        ]))
        .unwrap();
    let mut run = start(config.clone(), move_options("pub", Mode::Full));
    // Writes while the tables are copied...
    let src = fleet.source_options()[0].clone();
    let during_copy = tokio::spawn(async move {
        let mut c = Connection::connect(&src).await.unwrap();
        for s in shop_writes(1, 150) {
            c.execute(&s).await.unwrap();
        }
        c.close().await;
    });
    run.wait_streaming(WAIT).await;
    during_copy.await.unwrap();
    // ...and while streaming.
    let mut c = connect(&fleet.sources[0]).await;
    for s in shop_writes(150, 300) {
        c.execute(&s).await.unwrap();
    }
    c.close().await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    assert_eq!(run.missing_rows(), 0);
    assert_eq!(run.stop().await.unwrap(), Outcome::Stopped);
    let audit_rows = count(&fleet.sources[0], "SELECT count(*) FROM audit_log").await;
    assert!(
        audit_rows > 12_000,
        "the source's triggers wrote {audit_rows}"
    );
    // Equal rows include equal updated_at stamps and exactly the source's
    // audit rows: no destination trigger fired.
    verify_equal(&fleet, &shop_checks()).await;
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM audit_log").await,
        audit_rows
    );

    // An interrupted copy of the parent, as a copy in chunks leaves one:
    // its chunks never committed (neither their rows nor their records),
    // and the table is not recorded as copied. The resume copies what is
    // missing; orders, which references it, is left alone.
    fleet
        .on_dests(
            "DELETE FROM pgdog.copy_progress WHERE table_schema = 'public' AND table_name = 'customers';
             DELETE FROM pgdog.copy_chunks WHERE table_schema = 'public' AND table_name = 'customers';
             SET session_replication_role = replica; DELETE FROM customers;",
        )
        .await
        .unwrap();
    let customers = count(&fleet.sources[0], "SELECT count(*) FROM customers").await;
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM customers").await,
        0,
        "the chunks are gone"
    );
    let again = start(config, move_options("pub", Mode::SyncOnly));
    let task = again.task.clone();
    let outcome = tokio::time::timeout(WAIT, again.handle)
        .await
        .expect("the resumed copy finishes")
        .unwrap();
    assert_eq!(outcome.unwrap(), Outcome::Copied);
    for copy in task.copies() {
        let expected = if copy.table == "customers" {
            CopyState::Done
        } else {
            CopyState::Skipped
        };
        assert_eq!(copy.state(), expected, "{}", copy.table);
        if copy.table == "customers" {
            assert_eq!(
                copy.rows.load(std::sync::atomic::Ordering::Relaxed),
                customers
            );
        }
    }
    verify_equal(&fleet, &shop_checks()).await;
    for d in &fleet.dests {
        assert_eq!(
            count(
                d,
                "SELECT count(*) FROM pgdog.copy_progress WHERE table_name = 'customers'"
            )
            .await,
            1
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Database defaults must not reach pgdog's sessions.

const READINGS_SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE readings (
    id bigint PRIMARY KEY,
    f float8,
    d date,
    ts timestamptz,
    iv interval,
    moods mood[]
);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_win_over_database_defaults() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(READINGS_SCHEMA).await.unwrap();
    fleet.on_dests(READINGS_SCHEMA).await.unwrap();
    fleet
        .on_sources(
            "INSERT INTO readings
             SELECT g,
                    CASE g % 4 WHEN 0 THEN 0.1::float8 + 0.2 WHEN 1 THEN 1 / 3.0::float8
                               WHEN 2 THEN g / 7.0::float8 ELSE 1e-300 * g END,
                    '2024-01-01'::date + (g % 1000),
                    '2024-01-01 00:00:00.123456+00'::timestamptz + g * interval '37 seconds',
                    CASE g % 3 WHEN 0 THEN interval '-1 day -2 hours'
                               WHEN 1 THEN interval '1 year 2 mons -3 days 04:05:06.5'
                               ELSE g * interval '1 minute' END,
                    ARRAY['happy', (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]]::mood[]
             FROM generate_series(1, 200000) g;
             CREATE PUBLICATION pub FOR TABLE readings;
             ANALYZE;",
        )
        .await
        .unwrap();
    // Defaults that break a naive session: timeouts far shorter than a copy
    // (or an apply session idle between changes), and on the source, text
    // formats a destination would misread (day-first dates, SQL-standard
    // intervals with mixed signs, floats rounded to 15 digits).
    let timeouts = "ALTER DATABASE app SET statement_timeout = '30ms';
                    ALTER DATABASE app SET idle_in_transaction_session_timeout = '30ms';
                    ALTER DATABASE app SET lock_timeout = '10ms';";
    fleet.on_dests(timeouts).await.unwrap();
    fleet
        .on_sources(&format!(
            "{timeouts}
             ALTER DATABASE app SET DateStyle = 'SQL, DMY';
             ALTER DATABASE app SET IntervalStyle = 'sql_standard';
             ALTER DATABASE app SET extra_float_digits = 0;"
        ))
        .await
        .unwrap();
    // The defaults are in force for a new plain session.
    let mut plain = fleet.sources[0].connect(DATABASE).await.unwrap();
    let probe = plain
        .query("SELECT current_setting('statement_timeout'), current_setting('DateStyle'), '2024-01-13'::date::text, (0.1::float8 + 0.2)::text")
        .await
        .unwrap();
    plain.close().await;
    assert_eq!(
        (0..4)
            .map(|i| probe[0].text(i).map(str::to_string))
            .collect::<Vec<_>>(),
        [
            Some("30ms".to_string()),
            Some("SQL, DMY".to_string()),
            Some("13/01/2024".to_string()),
            Some("0.3".to_string())
        ]
    );

    let config = fleet.config(&sharding(&[("readings", "id")])).unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(WAIT).await;
    assert!(
        run.task
            .copies()
            .iter()
            .all(|c| c.state() == CopyState::Done),
        "copied"
    );
    let source = &fleet.sources[0];
    sql(
        source,
        "UPDATE readings SET f = f * 3, d = d + 1, ts = ts + interval '1 hour 0.5 seconds',
                            iv = iv - interval '1 day 2 hours' WHERE id % 100 = 0",
    )
    .await;
    sql(
        source,
        "INSERT INTO readings
         SELECT g, 0.1::float8 + 0.7, '1999-12-31', '1999-12-31 23:59:59.999999+00',
                interval '-3 days -4 hours -5 minutes', '{sad,ok}'
         FROM generate_series(300001, 300100) g",
    )
    .await;
    sql(source, "DELETE FROM readings WHERE id % 1000 = 1").await;
    // An apply session stays idle in its group transaction well past 30ms
    // between these.
    for i in 0..5 {
        sql(
            source,
            &format!(
                "UPDATE readings SET f = f / 3.0, iv = iv * 2 WHERE id = {}",
                400 + i
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caught_up(&fleet, &run.slot).await;
    assert_eq!(run.missing_rows(), 0);
    assert_eq!(run.task.phase(), Phase::Streaming);
    assert!(run.task.error().is_none(), "{:?}", run.task.error());
    assert_eq!(run.stop().await.unwrap(), Outcome::Stopped);

    // The checking sessions see the servers' own defaults again.
    for c in fleet.sources.iter().chain(&fleet.dests) {
        sql(c, "ALTER DATABASE app RESET ALL").await;
    }
    verify_equal(
        &fleet,
        &checks(
            &[(
                "readings",
                &["id", "f", "d", "ts", "iv", "moods"],
                Some("id"),
            )],
            2,
        ),
    )
    .await;
    // And exactly, where a rounded or misread value would show.
    let probe = "SELECT id, f = 0.1::float8 + 0.2, d, iv FROM readings WHERE id = 4";
    let mut found = Vec::new();
    for d in &fleet.dests {
        found.extend(rows(d, probe).await);
    }
    assert_eq!(found, rows(source, probe).await);
    assert_eq!(found[0][1].as_deref(), Some("t"), "{found:?}");
}

// ---------------------------------------------------------------------------
// 3. REPLICA IDENTITY FULL on a partitioned destination.

const EVENTS_SCHEMA: &str = "
CREATE TABLE events (k int, at date NOT NULL, v text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
ALTER TABLE events REPLICA IDENTITY FULL;
ALTER TABLE events_2024 REPLICA IDENTITY FULL;
ALTER TABLE events_2025 REPLICA IDENTITY FULL;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_identity_on_partitioned_destination_touches_one_row() {
    init_logging();
    let fleet = Fleet::start(1, 1, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(EVENTS_SCHEMA).await.unwrap();
    fleet.on_dests(EVENTS_SCHEMA).await.unwrap();
    // Each partition: (0,1) the k = 1 row, (0,2) the k = 2 row; two
    // complete duplicates after them in 2024.
    fleet
        .on_sources(
            "INSERT INTO events VALUES (1, '2024-01-05', 'x'), (1, '2025-01-05', 'x'),
                                       (2, '2024-02-05', 'y'), (2, '2025-02-05', 'y'),
                                       (3, '2024-03-05', 'd'), (3, '2024-03-05', 'd');
             CREATE PUBLICATION pub FOR TABLE events WITH (publish_via_partition_root = true);
             ANALYZE;",
        )
        .await
        .unwrap();
    let config = fleet.config("").unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(WAIT).await;
    let layout =
        "SELECT tableoid::regclass::text, ctid::text, k, at::text, v FROM events ORDER BY 1, 2";
    let dest = &fleet.dests[0];
    let source = &fleet.sources[0];
    // The premise: same ctids in both partitions on the destination.
    assert_eq!(rows(dest, layout).await, rows(source, layout).await);
    assert_eq!(
        count(
            dest,
            "SELECT count(*) FROM events WHERE ctid = '(0,1)' AND k = 1 AND v = 'x'"
        )
        .await,
        2
    );

    sql(
        source,
        "DELETE FROM events WHERE k = 1 AND at = '2024-01-05'",
    )
    .await;
    sql(
        source,
        "UPDATE events SET v = 'z' WHERE k = 2 AND at = '2024-02-05'",
    )
    .await;
    sql(
        source,
        "DELETE FROM events WHERE ctid = (SELECT ctid FROM events_2024 WHERE k = 3 LIMIT 1) AND tableoid = 'events_2024'::regclass",
    )
    .await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    assert_eq!(run.missing_rows(), 0);
    assert!(!run.handle.is_finished(), "still streaming");
    run.stop().await.unwrap();

    let contents =
        "SELECT tableoid::regclass::text, k, at::text, v FROM events ORDER BY 1, 2, 3, 4";
    let expected = rows(source, contents).await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        expected,
        vec![
            vec![s("events_2024"), s("2"), s("2024-02-05"), s("z")],
            vec![s("events_2024"), s("3"), s("2024-03-05"), s("d")],
            vec![s("events_2025"), s("1"), s("2025-01-05"), s("x")],
            vec![s("events_2025"), s("2"), s("2025-02-05"), s("y")],
        ]
    );
    assert_eq!(
        rows(dest, contents).await,
        expected,
        "the other rows stayed"
    );
    for part in ["events_2024", "events_2025"] {
        let q = format!("SELECT count(*) FROM {part}");
        assert_eq!(count(dest, &q).await, count(source, &q).await, "{part}");
    }
    let cols: &[&str] = &["k", "at", "v"];
    verify_equal(
        &fleet,
        &checks(
            &[
                ("events", cols, None),
                ("events_2024", cols, None),
                ("events_2025", cols, None),
            ],
            1,
        ),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 4. TRUNCATE as the source meant it.

const TRUNCATE_SCHEMA: &str = "
CREATE TABLE base (id bigint PRIMARY KEY, v text);
CREATE TABLE derived (extra text) INHERITS (base);
ALTER TABLE derived ADD PRIMARY KEY (id);
CREATE TABLE counters (id bigserial PRIMARY KEY, v text);
CREATE TABLE products (id bigint PRIMARY KEY, name text);
";

/// Only on the destinations: a table of their own referencing a moved one.
const DEST_ONLY: &str = "
CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint NOT NULL REFERENCES products (id), body text);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_as_the_source_meant_it() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(TRUNCATE_SCHEMA).await.unwrap();
    fleet.on_dests(TRUNCATE_SCHEMA).await.unwrap();
    fleet.on_dests(DEST_ONLY).await.unwrap();
    fleet
        .on_sources(
            "INSERT INTO base SELECT g, 'base ' || g FROM generate_series(1, 100) g;
             INSERT INTO derived SELECT g, 'derived ' || g, 'x' FROM generate_series(1001, 1100) g;
             INSERT INTO counters (v) SELECT 'c' || g FROM generate_series(1, 50) g;
             INSERT INTO products SELECT g, 'product ' || g FROM generate_series(1, 100) g;
             CREATE PUBLICATION pub FOR TABLE ONLY base, ONLY derived, counters, products;
             ANALYZE;",
        )
        .await
        .unwrap();
    // Every table with an `id`: hash on it.
    let config = fleet
        .config(
            "[[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n",
        )
        .unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(WAIT).await;
    let source = &fleet.sources[0];
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM ONLY base").await,
        100
    );
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM derived").await,
        100
    );
    // The destinations' own rows, and a sequence moved on (a RESTART
    // IDENTITY must bring it back).
    fleet
        .on_dests(
            "INSERT INTO reviews SELECT id, id, 'review of ' || id FROM products;
             SELECT setval('counters_id_seq', 500);",
        )
        .await
        .unwrap();
    let reviews = dest_count(&fleet, "SELECT count(*) FROM reviews").await;
    assert_eq!(reviews, 100);

    // (a) The parent alone: the child's rows stay.
    sql(source, "TRUNCATE ONLY base").await;
    // (b) With RESTART IDENTITY, then a row numbered from the start again.
    sql(source, "TRUNCATE counters RESTART IDENTITY").await;
    sql(source, "INSERT INTO counters (v) VALUES ('after restart')").await;
    // (c) A table the destinations reference from a table of their own.
    sql(source, "TRUNCATE products").await;
    // The stream goes on.
    sql(
        source,
        "INSERT INTO products VALUES (1000, 'after truncate'); INSERT INTO base VALUES (5000, 'after truncate');",
    )
    .await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    assert!(
        !run.handle.is_finished() && run.task.phase() == Phase::Streaming,
        "the stream is not wedged: {:?} {:?}",
        run.task.phase(),
        run.task.error()
    );

    assert_eq!(count(source, "SELECT count(*) FROM ONLY base").await, 1);
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM ONLY base").await,
        1,
        "parent rows gone but the new one"
    );
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM derived").await,
        100,
        "child rows untouched"
    );
    assert_eq!(
        scalar(
            source,
            "SELECT string_agg(id || ':' || v, ',') FROM counters"
        )
        .await,
        "1:after restart"
    );
    let mut ids = Vec::new();
    for d in &fleet.dests {
        ids.extend(rows(d, "SELECT id, v FROM counters").await);
        // RESTART IDENTITY reached the destination's sequence too.
        assert_eq!(
            rows(d, "SELECT last_value, is_called FROM counters_id_seq").await,
            vec![vec![Some("1".to_string()), Some("f".to_string())]]
        );
    }
    assert_eq!(
        ids,
        vec![vec![
            Some("1".to_string()),
            Some("after restart".to_string())
        ]]
    );
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM reviews").await,
        reviews,
        "the destination-only table keeps its rows"
    );
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM products").await,
        1,
        "emptied, then the later insert"
    );
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM products WHERE id = 1000").await,
        1
    );

    // A TRUNCATE of the parent with its children: both go.
    sql(
        source,
        "INSERT INTO derived VALUES (7000, 'd', 'y'); TRUNCATE base;",
    )
    .await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    assert_eq!(dest_count(&fleet, "SELECT count(*) FROM base").await, 0);
    assert_eq!(run.missing_rows(), 0);
    assert_eq!(run.stop().await.unwrap(), Outcome::Stopped);
    verify_equal(
        &fleet,
        &checks(
            &[
                ("base", &["id", "v"], Some("id")),
                ("derived", &["id", "v", "extra"], Some("id")),
                ("counters", &["id", "v"], Some("id")),
                ("products", &["id", "name"], Some("id")),
            ],
            2,
        ),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 5. Updates valid one at a time against a unique index.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_unique_updates_stay_valid() {
    init_logging();
    let fleet = Fleet::start(1, 1, ClusterOptions::default()).await.unwrap();
    let schema = "CREATE TABLE chain (id int PRIMARY KEY, u int UNIQUE NOT NULL, pad text);";
    fleet.on_sources(schema).await.unwrap();
    fleet.on_dests(schema).await.unwrap();
    fleet
        .on_sources(
            "INSERT INTO chain SELECT g, g, repeat('p', g % 50) FROM generate_series(1, 1000) g;
             CREATE PUBLICATION pub FOR TABLE chain;
             ANALYZE;",
        )
        .await
        .unwrap();
    let config = fleet.config("").unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(WAIT).await;
    let source = &fleet.sources[0];
    // Each update frees the value the next one takes: valid in this order
    // only, all in one transaction.
    sql(
        source,
        "DO $$ BEGIN
           FOR i IN REVERSE 1000..1 LOOP UPDATE chain SET u = u + 1 WHERE id = i; END LOOP;
         END $$;",
    )
    .await;
    // And the other way round, in another.
    sql(
        source,
        "DO $$ BEGIN
           FOR i IN 1..1000 LOOP UPDATE chain SET u = u - 1, pad = 'back' WHERE id = i; END LOOP;
         END $$;",
    )
    .await;
    sql(source, "UPDATE chain SET u = u + 5000 WHERE id % 2 = 0").await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    assert_eq!(run.missing_rows(), 0);
    assert_eq!(
        run.task.phase(),
        Phase::Streaming,
        "failed: {:?}",
        run.task.error()
    );
    assert!(!run.handle.is_finished());
    assert_eq!(run.stop().await.unwrap(), Outcome::Stopped);
    assert_eq!(
        count(
            &fleet.dests[0],
            "SELECT count(*) FROM chain WHERE u = id AND pad = 'back'"
        )
        .await,
        500
    );
    verify_equal(&fleet, &checks(&[("chain", &["id", "u", "pad"], None)], 1)).await;
}

// ---------------------------------------------------------------------------
// 6. GENERATED ALWAYS identity columns.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_always_columns_stream() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    let schema = "CREATE TABLE tickets (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        title text NOT NULL,
        n int NOT NULL DEFAULT 0
    );";
    fleet.on_sources(schema).await.unwrap();
    fleet.on_dests(schema).await.unwrap();
    fleet
        .on_sources(
            "INSERT INTO tickets (title) SELECT 'ticket ' || g FROM generate_series(1, 2000) g;
             CREATE PUBLICATION pub FOR TABLE tickets;
             ANALYZE;",
        )
        .await
        .unwrap();
    let config = fleet.config(&sharding(&[("tickets", "id")])).unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(WAIT).await;
    let source = &fleet.sources[0];
    sql(
        source,
        "INSERT INTO tickets (title) SELECT 'streamed ' || g FROM generate_series(1, 50) g",
    )
    .await;
    sql(source, "INSERT INTO tickets (title) VALUES ('single')").await;
    sql(
        source,
        "UPDATE tickets SET n = n + 1, title = title || '!' WHERE id % 10 = 0",
    )
    .await;
    sql(source, "UPDATE tickets SET n = 7 WHERE id = 3").await;
    // New identities: each arrives as a delete and an insert, on the same
    // shard or moving to another.
    let (mut stayed, mut moved) = (0, 0);
    let mut renumbered = Vec::new();
    for old in 5..=12i64 {
        let new: i64 = scalar(
            source,
            &format!("UPDATE tickets SET id = DEFAULT, n = n + 100 WHERE id = {old} RETURNING id"),
        )
        .await
        .parse()
        .unwrap();
        if hash_shard(Some(ValueRef::Int(old)), 2) == hash_shard(Some(ValueRef::Int(new)), 2) {
            stayed += 1;
        } else {
            moved += 1;
        }
        renumbered.push((old, new));
    }
    eprintln!("renumbered {renumbered:?}: {stayed} on the same shard, {moved} moved");
    assert!(stayed > 0 && moved > 0, "both cases covered");
    sql(source, "DELETE FROM tickets WHERE id = 20").await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    assert_eq!(run.missing_rows(), 0);
    assert_eq!(
        run.task.phase(),
        Phase::Streaming,
        "failed: {:?}",
        run.task.error()
    );
    assert_eq!(run.stop().await.unwrap(), Outcome::Stopped);
    for (old, new) in &renumbered {
        assert_eq!(
            dest_count(
                &fleet,
                &format!("SELECT count(*) FROM tickets WHERE id = {old}")
            )
            .await,
            0
        );
        assert_eq!(
            dest_count(
                &fleet,
                &format!("SELECT count(*) FROM tickets WHERE id = {new} AND n >= 100")
            )
            .await,
            1
        );
    }
    assert_eq!(
        dest_count(&fleet, "SELECT count(*) FROM tickets").await,
        2000 + 51 - 1
    );
    verify_equal(
        &fleet,
        &checks(&[("tickets", &["id", "title", "n"], Some("id"))], 2),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 7. A row move with an unchanged TOASTed value, replayed after one
//    destination shard committed and the other failed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_row_move_with_toast_after_partial_commit() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.on_dests(ITEMS_SCHEMA).await.unwrap();
    let source = &fleet.sources[0];
    // Out of line, uncompressed: an update that leaves `big` alone sends
    // it as unchanged ('u').
    sql(
        source,
        "ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL",
    )
    .await;
    sql(source, &items_rows(3000, 0, 1)).await;
    sql(source, "CREATE PUBLICATION pub FOR TABLE items").await;
    // Row 100: tenant 100, a TOASTed big.
    let x = 100i64;
    let t = x % 997;
    let a = hash_shard(Some(ValueRef::Int(t)), 2);
    let b = 1 - a;
    let t2 = (0..997i64)
        .find(|k| hash_shard(Some(ValueRef::Int(*k)), 2) == b)
        .unwrap();
    let big_sql = format!("SELECT md5(big) || ':' || length(big) FROM items WHERE id = {x}");
    let big = scalar(source, &big_sql).await;
    assert!(big.ends_with(":3200"), "row {x} has a big value: {big}");
    let toast = scalar(
        source,
        "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'items'::regclass",
    )
    .await;
    assert!(
        count(
            source,
            &format!("SELECT count(DISTINCT chunk_id) FROM {toast}")
        )
        .await
            >= 60,
        "the big values are stored out of line"
    );

    let config = fleet.config(&sharding(&[("items", "tenant")])).unwrap();
    let mut run = start(config.clone(), move_options("pub", Mode::Full));
    run.wait_streaming(WAIT).await;
    fleet.wait_caught_up(&run.slot, WAIT).await.unwrap();
    let (shard_a, shard_b) = (&fleet.dests[a], &fleet.dests[b]);
    // Shard B refuses the insert, after a second (shard A commits first).
    sql(
        shard_b,
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RAISE EXCEPTION 'boom'; END $$;
         CREATE TRIGGER boom BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION boom();
         ALTER TABLE items ENABLE ALWAYS TRIGGER boom;",
    )
    .await;
    sql(
        source,
        &format!("UPDATE items SET tenant = {t2} WHERE id = {x}"),
    )
    .await;
    let result = tokio::time::timeout(WAIT, &mut run.handle)
        .await
        .expect("the move fails")
        .unwrap();
    match &result {
        Err(DataSyncError::Apply { dest_shard, .. }) if *dest_shard == b => {}
        other => panic!("expected an apply error on shard {b}: {other:?}"),
    }
    assert!(format!("{:?}", result).contains("boom"), "{result:?}");
    assert_eq!(run.task.phase(), Phase::Failed);
    let here = format!("SELECT count(*) FROM items WHERE id = {x}");
    assert_eq!(
        count(shard_a, &here).await,
        0,
        "shard {a} committed the delete"
    );
    assert_eq!(count(shard_b, &here).await, 0, "shard {b} has no row yet");

    sql(shard_b, "DROP TRIGGER boom ON items; DROP FUNCTION boom();").await;
    let mut again = start(config, move_options("pub", Mode::Full));
    assert_eq!(again.slot, run.slot);
    again.wait_streaming(WAIT).await;
    fleet.wait_caught_up(&again.slot, WAIT).await.unwrap();
    assert_eq!(again.missing_rows(), 0);
    assert!(again
        .task
        .copies()
        .iter()
        .all(|c| c.state() == CopyState::Skipped));
    assert_eq!(again.stop().await.unwrap(), Outcome::Stopped);
    assert_eq!(
        rows(
            shard_b,
            &format!("SELECT tenant, md5(big) || ':' || length(big) FROM items WHERE id = {x}")
        )
        .await,
        vec![vec![Some(t2.to_string()), Some(big.clone())]],
        "the moved row is whole on shard {b}"
    );
    assert_eq!(count(shard_a, &here).await, 0);
    verify_equal(
        &fleet,
        &checks(
            &[(
                "items",
                &["tenant", "id", "qty", "label", "big", "updated"],
                Some("tenant"),
            )],
            2,
        ),
    )
    .await;
}
