//! `pgdog demo`: a whole move on throwaway local servers. A source and two
//! destination shards start, the source gets a sample schema and data, an
//! application role keeps writing while `data-sync` copies and streams,
//! the destination is checked row by row against the source, and then
//! `cutover` switches the application over: the source is frozen for it,
//! sequences are set, and the destination streams back to the source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::data_sync::cutover::{self, Done};
use crate::data_sync::on_move::{self, OnMove};
use crate::data_sync::progress::Phase;
use crate::data_sync::verify;
use crate::data_sync::{self, Mode, Options, Registry};
use crate::harness::fleet::DATABASE;
use crate::harness::{ClusterOptions, Fleet};
use crate::net::{ConnectOptions, Connection};

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
CREATE SEQUENCE orders_id_seq;
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    name text,
    profile jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    user_id bigint NOT NULL,
    id bigint NOT NULL DEFAULT nextval('orders_id_seq'),
    amount numeric(12,2),
    status text NOT NULL DEFAULT 'new',
    notes text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);
ALTER SEQUENCE orders_id_seq OWNED BY orders.id;
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
";

/// The application's login role: it writes during the move, and the
/// cutover freezes it on the source.
pub const APP_ROLE: &str = "webapp";

fn grants() -> String {
    format!(
        "GRANT USAGE ON SCHEMA public TO {APP_ROLE};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};"
    )
}

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
         SELECT setval('orders_id_seq', {orders});
         ANALYZE;",
        orders = users * 3,
    )
}

/// Keep writing on the source as the application until `stop`, or until
/// the cutover freezes it (then: the error it got): inserts, updates (one
/// leaving a TOASTed value unchanged, one moving a row to another shard),
/// deletes.
async fn writer(
    source: ConnectOptions,
    users: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Result<Option<String>, DemoError> {
    let mut c = Connection::connect(&source).await?;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let u = (i * 7919) % users + 1;
        let sql = match i % 5 {
            0 => format!(
                "BEGIN; INSERT INTO users (id, email) VALUES ({id}, 'new{id}@example.com');
                 INSERT INTO orders (user_id, amount) VALUES ({id}, 9.99), ({id}, 19.99); COMMIT;",
                id = users + i
            ),
            1 => format!("UPDATE users SET name = 'Renamed {i}', profile = profile || '{{\"seen\": {i}}}' WHERE id = {u}"),
            2 => format!("UPDATE orders SET status = 'shipped' WHERE user_id = {u}"),
            3 => format!("UPDATE orders SET user_id = {} WHERE user_id = {u} AND id % 2 = 0", (u % users) + 1),
            _ => format!("DELETE FROM orders WHERE user_id = {u} AND status = 'shipped'"),
        };
        match c.execute(&sql).await {
            Ok(()) => {}
            // read_only_sql_transaction: the cutover's freeze.
            Err(e) if e.code() == Some("25006") => return Ok(Some(e.to_string())),
            Err(e) => return Err(e.into()),
        }
        done.fetch_add(1, Ordering::Relaxed);
        if i % 50 == 0 {
            // A steady, moderate load rather than a flood.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    c.close().await;
    Ok(None)
}

/// The demo's `pgdog.toml` and `users.toml`, in a folder of their own that
/// is removed when the demo ends, however it ends.
struct ConfigDir(std::path::PathBuf);

impl ConfigDir {
    fn write(fleet: &Fleet) -> Result<ConfigDir, DemoError> {
        let dir = std::env::temp_dir().join(format!("pgdog-demo-{}", std::process::id()));
        let io = |e: std::io::Error| DemoError::Failed(format!("writing {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let files = ConfigDir(dir.clone());
        std::fs::write(files.pgdog(), fleet.pgdog_toml(SHARDING)).map_err(io)?;
        std::fs::write(files.users(), fleet.users_toml()).map_err(io)?;
        Ok(files)
    }

    fn pgdog(&self) -> std::path::PathBuf {
        self.0.join("pgdog.toml")
    }

    fn users(&self) -> std::path::PathBuf {
        self.0.join("users.toml")
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The throwaway servers with the demo's schema, rows, publication and
/// application role on the source, and the config files that name them.
async fn setup(
    args: &DemoArgs,
) -> Result<(Fleet, ConfigDir, Arc<crate::config::Config>), DemoError> {
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
    // Roles belong to a server, not to the schema a move creates; schema
    // sync carries the grants to them.
    let create_role = format!("CREATE ROLE {APP_ROLE} LOGIN");
    fleet.on_sources(&create_role).await?;
    fleet.on_dests(&create_role).await?;
    fleet.on_sources(&grants()).await?;
    // The config lives in files, as it would for the binary: the cutover
    // writes its swapped copy next to them.
    let files = ConfigDir::write(&fleet)?;
    let config = Arc::new(crate::config::Config::load(&files.pgdog(), &files.users())?);

    Ok((fleet, files, config))
}

/// The application writes an order on each destination shard; each must
/// reach the source through the reverse stream within 30 s.
async fn orders_come_back(
    fleet: &Fleet,
    back: &tokio::task::JoinHandle<Result<data_sync::Outcome, data_sync::DataSyncError>>,
    back_stop: &CancellationToken,
) -> Result<(), DemoError> {
    let mut ids = Vec::new();
    for (d, shard) in fleet.dests.iter().enumerate() {
        let mut c = Connection::connect(&shard.options(APP_ROLE, DATABASE)).await?;
        let rows = c
            .query(
                "INSERT INTO orders (user_id, amount) SELECT min(id), 1.00 FROM users RETURNING id",
            )
            .await?;
        let id = rows
            .first()
            .and_then(|r| r.text(0))
            .ok_or_else(|| {
                DemoError::Failed(format!("destination shard {d} returned no order id"))
            })?
            .to_string();
        println!("the application writes on destination shard {d}: a new order gets id {id} from that shard's sequence");
        ids.push(id);
        c.close().await;
    }
    let written = Instant::now();
    let mut source = Connection::connect(&fleet.source_options()[0]).await?;
    let count = format!(
        "SELECT count(*) FROM orders WHERE id IN ({})",
        ids.join(", ")
    );
    loop {
        let rows = source.query(&count).await?;
        if rows.first().and_then(|r| r.text(0)) == Some(ids.len().to_string().as_str()) {
            break;
        }
        if back.is_finished() || written.elapsed() > Duration::from_secs(30) {
            back_stop.cancel();
            return Err(DemoError::Failed(
                "the orders written on the destination did not reach the source".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    source.close().await;
    println!(
        "{} reached the source {} ms later, through the reverse stream",
        if ids.len() == 2 {
            "both orders".to_string()
        } else {
            format!("all {} orders", ids.len())
        },
        written.elapsed().as_millis()
    );
    Ok(())
}

/// `pgdog verify` while the writes go on: every table equal, or an error.
async fn verify_now(
    config: &Arc<crate::config::Config>,
    opts: &Options,
    registry: &Registry,
    token: &CancellationToken,
) -> Result<(), DemoError> {
    let verify_task = registry.new_task("source", "dest", "demo");
    let report = verify::run(
        config.clone(),
        opts,
        &verify::Request::default(),
        &verify_task,
        token,
    )
    .await?;
    println!("\n{}", verify::render(&report));
    if !report.equal() {
        return Err(DemoError::Failed(
            "the destination differs from the source".into(),
        ));
    }
    println!(
        "all tables equal at one source LSN while writes went on: same rows and checksums as the source, every row on the shard PostgreSQL's hash partitioning picks\n"
    );

    Ok(())
}

/// The demo's move, as its command line says it.
fn demo_options() -> Options {
    Options {
        from_database: "source".into(),
        from_user: "pgdog".into(),
        to_database: "dest".into(),
        to_user: "pgdog".into(),
        publication: "demo".into(),
        slot: None,
        mode: Mode::Full,
        schema_sync: true,
    }
}

/// The cluster `source` in the swapped configuration the cutover wrote.
fn show_swapped(files: &ConfigDir) -> Result<(), DemoError> {
    let swapped = crate::config::Config::load(
        &files.0.join("pgdog.toml.cutover"),
        &files.0.join("users.toml.cutover"),
    )?;
    for d in swapped.databases.iter().filter(|d| d.name == "source") {
        println!(
            "pgdog.toml.cutover: database \"source\" shard {} is now {}:{}",
            d.shard, d.host, d.port
        );
    }
    Ok(())
}

/// Until the move streams; an error if it ended before.
async fn until_streaming(
    task: &data_sync::Task,
    sync: &mut tokio::task::JoinHandle<Result<data_sync::Outcome, data_sync::DataSyncError>>,
) -> Result<(), DemoError> {
    while task.phase() != Phase::Streaming {
        if sync.is_finished() {
            let outcome = sync.await.map_err(|e| DemoError::Failed(e.to_string()))??;
            return Err(DemoError::Failed(format!(
                "data-sync ended early: {outcome:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let started = Instant::now();
    let (fleet, files, config) = setup(&args).await?;

    // Writes start before the move and go on during the copy and after.
    let stop_writes = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer_task = tokio::spawn(writer(
        fleet.sources[0].options(APP_ROLE, DATABASE),
        args.rows,
        stop_writes.clone(),
        writes.clone(),
    ));

    eprintln!("running: pgdog data-sync --from-database source --from-user pgdog --to-database dest --to-user pgdog --publication demo");
    let registry = Registry::default();
    let task = registry.new_task("source", "dest", "demo");
    let token = CancellationToken::new();
    let opts = demo_options();
    let reporter = crate::report::spawn(task.clone(), token.clone());
    let mut sync = tokio::spawn(data_sync::run(
        config.clone(),
        opts.clone(),
        task.clone(),
        token.clone(),
    ));

    let copy_started = Instant::now();
    let streaming = until_streaming(&task, &mut sync).await;
    if streaming.is_err() {
        stop_writes.store(true, Ordering::Relaxed);
    }
    streaming?;
    eprintln!(
        "copy finished in {:.1}s; streaming, with writes still coming ({} source transactions so far)",
        copy_started.elapsed().as_secs_f64(),
        writes.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(args.stream_seconds)).await;
    eprintln!(
        "running: pgdog verify --from-database source --from-user pgdog --to-database dest --to-user pgdog --publication demo (writes still coming)"
    );
    let verified = verify_now(&config, &opts, &registry, &token).await;
    if verified.is_err() {
        stop_writes.store(true, Ordering::Relaxed);
    }
    verified?;

    eprintln!(
        "running: pgdog cutover --from-database source --from-user pgdog --to-database dest --to-user pgdog --publication demo --freeze-role {APP_ROLE} (writes still coming)"
    );
    let cutover_started = Instant::now();
    let cut_task = registry.new_task("source", "dest", "demo");
    let request = cutover::Request {
        freeze_roles: vec![APP_ROLE.to_string()],
        ..Default::default()
    };
    let done = on_move::whole(&cut_task, async {
        cutover::run(&OnMove::open(&config, &opts, &cut_task, &token)?, &request).await
    })
    .await;
    let frozen = tokio::time::timeout(Duration::from_secs(30), writer_task).await;
    stop_writes.store(true, Ordering::Relaxed);
    let Done::CutOver { reverse, summary } = done? else {
        return Err(DemoError::Failed(
            "the cutover ended without switching".into(),
        ));
    };
    println!("{summary}");
    show_swapped(&files)?;
    println!(
        "cutover took {:.1}s; the application's writes on the source after {} transactions: {}",
        cutover_started.elapsed().as_secs_f64(),
        writes.load(Ordering::Relaxed),
        match frozen {
            Ok(Ok(Ok(Some(refused)))) => format!("refused ({refused})"),
            Ok(Ok(Ok(None))) => "stopped without being refused".to_string(),
            Ok(Ok(Err(e))) => format!("failed: {e}"),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(_) => "still going after 30 s".to_string(),
        }
    );
    sync.await.map_err(|e| DemoError::Failed(e.to_string()))??;

    // The destination streams back, so a rollback would lose nothing.
    let back_task = registry.new_task(
        &reverse.from_database,
        &reverse.to_database,
        &reverse.publication,
    );
    let back_stop = token.child_token();
    let back = tokio::spawn({
        let (config, opts, stop) = (config.clone(), opts.clone(), back_stop.clone());
        async move { cutover::stream_back(config, &opts, reverse, back_task, stop).await }
    });
    orders_come_back(&fleet, &back, &back_stop).await?;
    back_stop.cancel();
    back.await.map_err(|e| DemoError::Failed(e.to_string()))??;
    token.cancel();
    let _ = reporter.await;
    println!(
        "\nmoved, verified and cut over while the application wrote ({:.0}s in all)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
