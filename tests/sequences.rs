//! `pgdog sequence-sync` after a 1→2 move: identity, serial and
//! default-named sequences of sharded tables interleave across the shards
//! above everything the source handed out, a reference table's sequence is
//! the same on every shard, an unrelated sequence is left alone, a dry run
//! changes nothing, and a rerun never moves a sequence backwards.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use pgdog::data_sync::Mode;
use pgdog::harness::{ClusterOptions, Fleet};
use pgdog::net::Connection;

const SCHEMA: &str = "
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, total int);
CREATE SEQUENCE invoice_no START 500;
CREATE TABLE invoices (no bigint PRIMARY KEY DEFAULT nextval('invoice_no'), customer_id bigint NOT NULL);
CREATE TABLE plans (id serial PRIMARY KEY, name text);
-- Partitioned, published partition by partition: the parent's identity.
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, customer_id bigint NOT NULL, at date NOT NULL,
                     PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events (customer_id, at) SELECT 1 + g % 300, '2025-01-01'::date + g % 700 FROM generate_series(1, 400) g;
CREATE SEQUENCE unrelated;
INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 300, g FROM generate_series(1, 900) g;
INSERT INTO invoices (customer_id) SELECT 1 + g % 300 FROM generate_series(1, 200) g;
INSERT INTO plans (name) VALUES ('free'), ('pro'), ('team');
SELECT nextval('unrelated');
CREATE PUBLICATION pub FOR TABLE customers, orders, invoices, plans, events;
";

const SHARDING: &str = "[[sharded_tables]]\ndatabase = \"dest\"\nname = \"customers\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n\n\
    [[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"customer_id\"\ndata_type = \"bigint\"\n\n";

async fn one(c: &mut Connection, sql: &str) -> Option<String> {
    let rows = c.query(sql).await.unwrap();
    rows.first().and_then(|r| r.text(0).map(str::to_string))
}

/// Insert `n` rows through the default on destination shard `d`; the ids.
async fn new_ids(fleet: &Fleet, d: usize, insert: &str, n: usize) -> Vec<i64> {
    let mut c = Connection::connect(&fleet.dest_options()[d]).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(one(&mut c, insert).await.unwrap().parse().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequences_interleave_above_the_source() {
    init_logging();
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(SCHEMA).await.unwrap();
    let config = fleet.config(SHARDING).unwrap();
    let files = ConfigFiles::write(&fleet, SHARDING);
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    run.stop().await.unwrap();

    let out = files
        .command("sequence-sync", "pub")
        .arg("--dry-run")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    for seq in [
        "public.customers_id_seq",
        "public.orders_id_seq",
        "public.invoice_no",
        "public.plans_id_seq",
        "public.events_id_seq",
    ] {
        assert!(text.contains(seq), "{seq} not planned:\n{text}");
    }
    assert!(!text.contains("unrelated"), "{text}");
    let never_used =
        "SELECT last_value IS NULL FROM pg_sequences WHERE sequencename = 'orders_id_seq'";
    for o in fleet.dest_options() {
        let mut c = Connection::connect(&o).await.unwrap();
        assert_eq!(
            one(&mut c, never_used).await.as_deref(),
            Some("t"),
            "the dry run changed a sequence"
        );
    }

    let out = files.command("sequence-sync", "pub").output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Sharded tables: every new id above the source's, never the same on
    // two shards.
    for (insert, source_max) in [
        (
            "INSERT INTO customers (name) VALUES ('new') RETURNING id",
            300,
        ),
        (
            "INSERT INTO orders (customer_id, total) VALUES (1, 0) RETURNING id",
            900,
        ),
        (
            "INSERT INTO invoices (customer_id) VALUES (1) RETURNING no",
            699,
        ),
        (
            "INSERT INTO events (customer_id, at) VALUES (1, '2026-05-01') RETURNING id",
            400,
        ),
    ] {
        let a = new_ids(&fleet, 0, insert, 30).await;
        let b = new_ids(&fleet, 1, insert, 30).await;
        assert!(
            a.iter().chain(&b).all(|v| *v > source_max),
            "{insert}: {a:?} {b:?}"
        );
        let a: HashSet<i64> = a.into_iter().collect();
        assert!(b.iter().all(|v| !a.contains(v)), "{insert}: shards collide");
    }
    // A reference table: the same next value on every shard.
    let insert = "INSERT INTO plans (name) VALUES ('x') RETURNING id";
    let a = new_ids(&fleet, 0, insert, 1).await;
    let b = new_ids(&fleet, 1, insert, 1).await;
    assert_eq!(a, b);
    assert!(a[0] > 3);
    // Not used by a published table: left alone.
    for o in fleet.dest_options() {
        let mut c = Connection::connect(&o).await.unwrap();
        let unrelated =
            "SELECT last_value IS NULL FROM pg_sequences WHERE sequencename = 'unrelated'";
        // (Schema sync leaves out sequences no published table uses.)
        let left_alone = one(&mut c, unrelated).await;
        assert!(
            matches!(left_alone.as_deref(), None | Some("t")),
            "{left_alone:?}"
        );
    }

    // A rerun after the destination handed out values: never backwards.
    let before = new_ids(
        &fleet,
        1,
        "INSERT INTO orders (customer_id, total) VALUES (1, 0) RETURNING id",
        1,
    )
    .await[0];
    let out = files.command("sequence-sync", "pub").output().unwrap();
    assert!(out.status.success());
    for d in 0..2 {
        let after = new_ids(
            &fleet,
            d,
            "INSERT INTO orders (customer_id, total) VALUES (1, 0) RETURNING id",
            1,
        )
        .await[0];
        assert!(
            after > before,
            "shard {d} went back to {after} (was at {before})"
        );
    }
}
