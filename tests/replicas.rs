//! Copying from read replicas: a PostgreSQL 17 primary with two streaming
//! standbys moves to two destination shards while the primary takes writes;
//! the copies are spread over both standbys and the destination ends equal
//! to the source. A PostgreSQL 15 standby (no logical decoding on standbys)
//! is reported and the primary is used instead.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgdog::config::Config;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{Cluster, ClusterOptions, Fleet, PgInstall};
use pgdog::sharding::DataType;

const TABLES: &[&str] = &["t1", "t2", "t3", "t4"];

fn schema() -> String {
    TABLES
        .iter()
        .map(|t| {
            format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);")
        })
        .collect()
}

/// Tables of different sizes, so spreading by bytes matters.
fn load() -> String {
    let mut sql: String = TABLES
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, {}) g;",
                5_000 * (i + 1) * (i + 1)
            )
        })
        .collect();
    sql.push_str(&format!(
        "CREATE PUBLICATION pub FOR TABLE {}; ANALYZE;",
        TABLES.join(", ")
    ));
    sql
}

fn config(primary: &Cluster, standbys: &[Cluster], dests: &Fleet) -> Arc<Config> {
    let mut toml = String::from("[general]\nport = 0\ntls_verify = \"disabled\"\n");
    if let Some(pg_dump) = pgdog::harness::install::pg_dump() {
        toml.push_str(&format!("pg_dump = \"{}\"\n", pg_dump.display()));
    }
    toml.push('\n');
    let server = |name: &str, c: &Cluster, shard: usize, role: &str| {
        format!(
            "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nshard = {shard}\nrole = \"{role}\"\ndatabase_name = \"app\"\n\n",
            c.host(),
            c.port()
        )
    };
    toml.push_str(&server("source", primary, 0, "primary"));
    for s in standbys {
        toml.push_str(&server("source", s, 0, "replica"));
    }
    for (d, c) in dests.dests.iter().enumerate() {
        toml.push_str(&server("dest", c, d, "primary"));
    }
    toml.push_str(
        "[[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n",
    );
    Arc::new(
        Config::from_strs(
            "pgdog.toml".as_ref(),
            &toml,
            "users.toml".as_ref(),
            &dests.users_toml(),
        )
        .unwrap(),
    )
}

async fn move_from_replicas(install: PgInstall, expect_replicas: bool) {
    init_logging();
    let cluster_options = ClusterOptions {
        install: Some(install.clone()),
        ..Default::default()
    };
    let (primary, standbys) = Cluster::start_with_standbys(cluster_options.clone(), 2)
        .await
        .unwrap();
    let dests = Fleet::start(0, 2, cluster_options).await.unwrap();
    // Created on the primary, replayed by the standbys.
    primary.create_database(DATABASE).await.unwrap();
    primary.exec(DATABASE, &schema()).await.unwrap();
    dests.on_dests(&schema()).await.unwrap();
    primary.exec(DATABASE, &load()).await.unwrap();
    let config = config(&primary, &standbys, &dests);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let primary_opts = primary.options("postgres", DATABASE);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = pgdog::net::Connection::connect(&primary_opts)
                .await
                .unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let t = TABLES[(i % 4) as usize];
                c.execute(&format!(
                    "INSERT INTO {t} VALUES ({}, pg_current_wal_insert_lsn()::text); UPDATE {t} SET n = n + 1 WHERE id = {}; DELETE FROM {t} WHERE id = {};",
                    10_000_000 + i,
                    i % 5000 + 1,
                    i % 5000 + 2500
                ))
                .await
                .unwrap();
            }
            i
        })
    };
    let mut opts = move_options("pub", Mode::Full);
    opts.to_database = "dest".into();
    let mut run = start(config, opts);
    run.wait_streaming(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = writer.await.unwrap();
    assert!(n > 10, "writes happened during the move ({n})");

    // Which servers did the copies read?
    let hosts: HashSet<String> = run
        .task
        .copies()
        .iter()
        .map(|c| c.source_hosts.get())
        .collect();
    let standby_hosts: HashSet<String> = standbys
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    // Tables with a key are read in chunks, each in its own short
    // snapshot; a table copied whole takes one snapshot per server read,
    // whatever the number of tables (a temporary slot per standby, or the
    // permanent slot's export). Only servers the copies read hold one.
    let snapshot_servers: Vec<String> = run
        .task
        .snapshots()
        .iter()
        .map(|h| h.server.clone())
        .collect();
    let unique: HashSet<&String> = snapshot_servers.iter().collect();
    assert_eq!(unique.len(), snapshot_servers.len(), "{snapshot_servers:?}");
    assert!(
        unique
            .into_iter()
            .cloned()
            .collect::<HashSet<String>>()
            .is_subset(&hosts),
        "{snapshot_servers:?} {hosts:?}"
    );
    // Every table was copied in chunks, from the servers listed.
    for c in run.task.copies() {
        assert!(
            c.method().starts_with("chunks by"),
            "{}: {}",
            c.table,
            c.method()
        );
    }
    assert!(
        run.task.held_snapshots().is_empty(),
        "snapshots let go after the copy"
    );
    if expect_replicas {
        assert_eq!(
            hosts, standby_hosts,
            "both replicas copied, the primary did not"
        );
    } else {
        assert_eq!(
            hosts,
            HashSet::from([format!("127.0.0.1:{}", primary.port())]),
            "fell back to the primary"
        );
    }

    // Caught up: compare with the primary.
    let fleet = Fleet {
        sources: vec![primary],
        dests: dests.dests,
    };
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    run.stop().await.unwrap();
    let checks: Vec<_> = TABLES
        .iter()
        .map(|t| check(t, &["id", "v", "n"], Some("id"), DataType::Bigint, 2, false))
        .collect();
    verify_equal(&fleet, &checks).await;
    drop(standbys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_spread_over_two_standbys() {
    let Some(install) = PgInstall::newest_at_least(16) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 16+ found (run scripts/fetch-postgres.sh)");
        return;
    };
    move_from_replicas(install, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_older_than_16_fall_back_to_the_primary() {
    let Some(install) = PgInstall::major(15) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 15 found");
        return;
    };
    move_from_replicas(install, false).await;
}
