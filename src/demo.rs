//! `pgdog demo`: a whole move on throwaway local servers. A source and two
//! destination shards start, the source gets a sample schema and data,
//! writes keep coming while `data-sync` copies and streams, and at the end
//! the destination is checked row by row against the source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::data_sync::progress::Phase;
use crate::data_sync::verify;
use crate::data_sync::{self, Mode, Options, Registry};
use crate::harness::{ClusterOptions, Fleet};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Users to load (each gets three orders).
    #[arg(long, default_value_t = 100_000)]
    pub rows: u64,
    /// Destination shards.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Seconds of writes to stream after the copy finished.
    #[arg(long, default_value_t = 10)]
    pub stream_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Harness(#[from] crate::harness::HarnessError),
    #[error(transparent)]
    DataSync(#[from] data_sync::DataSyncError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Connection(#[from] crate::net::ConnectionError),
    #[error("{0}")]
    Failed(String),
}

pub const SCHEMA: &str = "
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    name text,
    profile jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    user_id bigint NOT NULL,
    id bigint NOT NULL,
    amount numeric(12,2),
    status text NOT NULL DEFAULT 'new',
    notes text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
";

/// The sharding of the demo's destination: users by id, orders by user_id,
/// countries everywhere.
pub const SHARDING: &str = "
[[sharded_tables]]
database = \"dest\"
name = \"users\"
column = \"id\"
data_type = \"bigint\"

[[sharded_tables]]
database = \"dest\"
name = \"orders\"
column = \"user_id\"
data_type = \"bigint\"
";

fn load_sql(users: u64) -> String {
    format!(
        "INSERT INTO countries VALUES ('PL', 'Poland'), ('US', 'United States'), ('JP', 'Japan'), ('BR', 'Brazil');
         INSERT INTO users (id, email, name, profile)
           SELECT g, 'user' || g || '@example.com', 'User ' || g, jsonb_build_object('plan', CASE WHEN g % 3 = 0 THEN 'pro' ELSE 'free' END, 'n', g)
           FROM generate_series(1, {users}) g;
         INSERT INTO orders (user_id, id, amount, status, notes)
           SELECT (g % {users}) + 1, g, (g % 10000) / 100.0, 'paid',
                  CASE WHEN g % 100 = 0 THEN (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 80) i) END
           FROM generate_series(1, {orders}) g;
         CREATE SEQUENCE ids START {next};
         ANALYZE;",
        orders = users * 3,
        next = users * 3 + 1
    )
}

/// Keep writing on the source until `stop`: inserts, updates (one leaving a
/// TOASTed value unchanged, one moving a row to another shard), deletes.
async fn writer(
    fleet_source: crate::net::ConnectOptions,
    users: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Result<(), DemoError> {
    let mut c = crate::net::Connection::connect(&fleet_source).await?;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let u = (i * 7919) % users + 1;
        let sql = match i % 5 {
            0 => format!(
                "BEGIN; INSERT INTO users (id, email) VALUES ({id}, 'new{id}@example.com');
                 INSERT INTO orders (user_id, id, amount) VALUES ({id}, nextval('ids'), 9.99), ({id}, nextval('ids'), 19.99); COMMIT;",
                id = users + i
            ),
            1 => format!("UPDATE users SET name = 'Renamed {i}', profile = profile || '{{\"seen\": {i}}}' WHERE id = {u}"),
            2 => format!("UPDATE orders SET status = 'shipped' WHERE user_id = {u}"),
            3 => format!("UPDATE orders SET user_id = {} WHERE user_id = {u} AND id % 2 = 0", (u % users) + 1),
            _ => format!("DELETE FROM orders WHERE user_id = {u} AND status = 'shipped'"),
        };
        c.execute(&sql).await?;
        done.fetch_add(1, Ordering::Relaxed);
        if i % 50 == 0 {
            // A steady, moderate load rather than a flood.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    c.close().await;
    Ok(())
}

pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let started = Instant::now();
    let m = args.shards.max(1);
    eprintln!("pgdog demo: starting {} throwaway PostgreSQL servers (1 source, {m} destination shards)...", m + 1);
    let fleet = Fleet::start(1, m, ClusterOptions::default()).await?;
    eprintln!(
        "  PostgreSQL {} on ports {}",
        fleet.sources[0].install.major,
        fleet
            .sources
            .iter()
            .chain(&fleet.dests)
            .map(|c| c.port().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The destinations start empty: schema sync creates the tables (their
    // secondary indexes and foreign keys after the copy).
    fleet.on_sources(SCHEMA).await?;
    eprintln!(
        "loading {} users and {} orders on the source...",
        args.rows,
        args.rows * 3
    );
    fleet.on_sources(&load_sql(args.rows)).await?;
    fleet
        .on_sources("CREATE PUBLICATION demo FOR TABLE users, orders, countries")
        .await?;
    let config = fleet.config(SHARDING)?;

    // Writes start before the move and go on during the copy and after.
    let stop_writes = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer_task = tokio::spawn(writer(
        fleet.source_options()[0].clone(),
        args.rows,
        stop_writes.clone(),
        writes.clone(),
    ));

    eprintln!("running: pgdog data-sync --from-database source --from-user pgdog --to-database dest --to-user pgdog --publication demo");
    let registry = Registry::default();
    let task = registry.new_task("source", "dest", "demo");
    let token = CancellationToken::new();
    let opts = Options {
        from_database: "source".into(),
        from_user: "pgdog".into(),
        to_database: "dest".into(),
        to_user: "pgdog".into(),
        publication: "demo".into(),
        slot: None,
        mode: Mode::Full,
        schema_sync: true,
    };
    let reporter = crate::report::spawn(task.clone(), token.clone());
    let sync = tokio::spawn(data_sync::run(
        config.clone(),
        opts.clone(),
        task.clone(),
        token.clone(),
    ));

    let copy_started = Instant::now();
    while task.phase() != Phase::Streaming {
        if sync.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if sync.is_finished() {
        stop_writes.store(true, Ordering::Relaxed);
        let outcome = sync.await.map_err(|e| DemoError::Failed(e.to_string()))??;
        return Err(DemoError::Failed(format!(
            "data-sync ended early: {outcome:?}"
        )));
    }
    eprintln!(
        "copy finished in {:.1}s; streaming, with writes still coming ({} source transactions so far)",
        copy_started.elapsed().as_secs_f64(),
        writes.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(args.stream_seconds)).await;
    eprintln!(
        "running: pgdog verify --from-database source --from-user pgdog --to-database dest --to-user pgdog --publication demo (writes still coming)"
    );
    let verify_task = registry.new_task("source", "dest", "demo");
    let report = verify::run(
        config.clone(),
        &opts,
        &verify::Request::default(),
        &verify_task,
        &token,
    )
    .await;
    stop_writes.store(true, Ordering::Relaxed);
    writer_task
        .await
        .map_err(|e| DemoError::Failed(e.to_string()))??;
    eprintln!(
        "writes stopped after {} transactions",
        writes.load(Ordering::Relaxed)
    );
    token.cancel();
    sync.await.map_err(|e| DemoError::Failed(e.to_string()))??;
    let _ = reporter.await;
    let report = report?;
    println!("\n{}", verify::render(&report));
    if report.equal() {
        println!(
            "all tables equal at one source LSN while writes went on: same rows and checksums as the source, every row on the shard PostgreSQL's hash partitioning picks ({:.0}s in all)",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(DemoError::Failed(
            "the destination differs from the source".into(),
        ))
    }
}
