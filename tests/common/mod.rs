//! Shared pieces of the end-to-end data-sync tests: running a move in
//! process or as the real binary, a write workload, and verification.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog::config::Config;
use pgdog::data_sync::catalog::TableName;
use pgdog::data_sync::progress::Phase;
pub mod oracle;

use oracle::{TableCheck, TableReport};
use pgdog::data_sync::{self, Mode, Options, Outcome, Registry, Task};
use pgdog::harness::Fleet;
use pgdog::net::{ConnectOptions, Connection};
use pgdog::sharding::{DataType, Function, Sharder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A move running inside the test process.
pub struct InProcess {
    pub task: Arc<Task>,
    pub token: CancellationToken,
    pub handle: JoinHandle<data_sync::Result<Outcome>>,
    pub slot: String,
}

pub fn move_options(publication: &str, mode: Mode) -> Options {
    Options {
        from_database: "source".into(),
        from_user: "pgdog".into(),
        to_database: "dest".into(),
        to_user: "pgdog".into(),
        publication: publication.into(),
        slot: None,
        mode,
        schema_sync: true,
    }
}

/// Log to the test's output (shown for failing tests); `RUST_LOG` filters.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub fn start(config: Arc<Config>, opts: Options) -> InProcess {
    init_logging();
    let registry = Registry::default();
    let task = registry.new_task(&opts.from_database, &opts.to_database, &opts.publication);
    let token = CancellationToken::new();
    let slot = opts.slot_name();
    let handle = tokio::spawn(data_sync::run(config, opts, task.clone(), token.clone()));
    InProcess {
        task,
        token,
        handle,
        slot,
    }
}

impl InProcess {
    /// Wait until streaming (the copy is done). Panics with the error if
    /// the move fails first.
    pub async fn wait_streaming(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.task.phase() != Phase::Streaming {
            if self.handle.is_finished() {
                let r = (&mut self.handle).await.unwrap();
                panic!("data-sync ended before streaming: {r:?}");
            }
            assert!(
                Instant::now() < deadline,
                "no streaming after {timeout:?}: phase {:?}",
                self.task.phase()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> data_sync::Result<Outcome> {
        self.token.cancel();
        self.handle.await.unwrap()
    }

    pub fn missing_rows(&self) -> u64 {
        self.task
            .streams()
            .iter()
            .map(|s| s.missing_rows.load(Ordering::Relaxed))
            .sum()
    }
}

/// A stream of small transactions on the source shards until stopped:
/// inserts, updates (one leaving a TOASTed value unchanged, one moving a
/// row to another shard), deletes. Works on `items` created by
/// [`ITEMS_SCHEMA`].
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub done: Arc<AtomicU64>,
    handles: Vec<JoinHandle<()>>,
}

/// `items`: sharded by `tenant`; `id` unique across the fleet.
pub const ITEMS_SCHEMA: &str = "
CREATE TABLE items (
    tenant bigint NOT NULL,
    id bigint NOT NULL,
    qty int NOT NULL DEFAULT 0,
    label text,
    big text,
    updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
";

/// Rows for `items` on source shard `s` of `n`: ids `s, s+n, s+2n, ...`
/// so they never collide; every 50th row has a TOASTed `big`.
pub fn items_rows(rows: u64, s: usize, n: usize) -> String {
    format!(
        "INSERT INTO items (tenant, id, qty, label, big)
         SELECT g % 997, g, g % 100, 'item ' || g,
                CASE WHEN g % 50 = 0 THEN (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 100) i) END
         FROM generate_series(1, {rows}) g WHERE g % {n} = {s};
         ANALYZE items;"
    )
}

/// SQL that keeps on source shard `s` of `n` only the `items` rows whose
/// tenant PostgreSQL's own hash partitioning gives that shard: the source
/// is then split the way a source rule on `tenant` says.
pub fn keep_own_tenants(s: usize, n: usize) -> String {
    format!(
        "CREATE TABLE pgdog_check (k bigint) PARTITION BY HASH (k);
         DELETE FROM items WHERE NOT satisfies_hash_partition('pgdog_check'::regclass, {n}, {s}, tenant);
         DROP TABLE pgdog_check;"
    )
}

/// One source with `rows` rows of `items` and a publication `pub` of it,
/// and two empty destination shards (schema sync creates the table).
pub async fn items_fleet(rows: u64) -> Fleet {
    let fleet = Fleet::start(1, 2, pgdog::harness::ClusterOptions::default())
        .await
        .unwrap();
    fleet.on_sources(ITEMS_SCHEMA).await.unwrap();
    fleet.sources[0]
        .exec(pgdog::harness::fleet::DATABASE, &items_rows(rows, 0, 1))
        .await
        .unwrap();
    fleet
        .on_sources("CREATE PUBLICATION pub FOR TABLE items")
        .await
        .unwrap();
    fleet
}

impl Writer {
    /// One writer per source shard. `n` source shards, ids start above
    /// `base` and stay unique per shard.
    pub fn start(sources: Vec<ConnectOptions>, base: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let n = sources.len() as u64;
        let handles = sources
            .into_iter()
            .enumerate()
            .map(|(s, opts)| {
                let (stop, done) = (stop.clone(), done.clone());
                tokio::spawn(async move {
                    let mut c = Connection::connect(&opts).await.expect("writer connects");
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let id = base + i * n + s as u64;
                        // Tenants this source shard owns (all of them with
                        // one source shard), so the source stays sharded.
                        let t = tenant_of(i * 31, s, n as usize);
                        let t2 = tenant_of(t + 1, s, n as usize);
                        let sql = match i % 6 {
                            0 | 1 => format!("INSERT INTO items (tenant, id, qty, label) VALUES ({t}, {id}, 1, 'new {id}')"),
                            2 => format!("UPDATE items SET qty = qty + 1, updated = now() WHERE tenant = {t}"),
                            3 => format!(
                                "BEGIN; UPDATE items SET tenant = {t2} WHERE tenant = {t} AND id % 7 = 0; \
                                 UPDATE items SET label = label || '!' WHERE tenant = {} AND big IS NOT NULL; COMMIT;",
                                tenant_of(t + 3, s, n as usize)
                            ),
                            4 => format!("DELETE FROM items WHERE tenant = {t} AND qty > 90"),
                            _ => format!("INSERT INTO items (tenant, id, label) VALUES ({t}, {id}, NULL) ON CONFLICT DO NOTHING"),
                        };
                        match c.execute(&sql).await {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            // A moved row can collide with a row already at
                            // the target key, and a test's own bulk UPDATE can
                            // lock rows in another order (a deadlock): that
                            // transaction just fails, as in any application.
                            Err(e) if matches!(e.code(), Some("23505" | "40P01")) => {
                                let _ = c.execute("ROLLBACK").await;
                            }
                            Err(e) => panic!("writer: {e}"),
                        }
                        if i % 20 == 0 {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                })
            })
            .collect();
        Writer {
            stop,
            done,
            handles,
        }
    }

    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.expect("writer");
        }
        self.done.load(Ordering::Relaxed)
    }
}

/// Runs a migration or bulk change on the source while the writer runs. A
/// bulk UPDATE locks rows in another order than the writer's, so the
/// deadlock detector may cancel either side; the loser goes again, as an
/// application's migration tool would.
pub async fn on_source(src: &mut Connection, sql: &str) {
    for attempt in 1.. {
        match src.execute(sql).await {
            Ok(()) => return,
            Err(e) if e.code() == Some("40P01") && attempt < 5 => {
                let _ = src.execute("ROLLBACK").await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// What every session of every cluster of `fleet` is doing, for a test
/// that waited too long to say why.
pub async fn activity(fleet: &Fleet) -> String {
    let mut out = String::new();
    let clusters = fleet.sources.iter().map(|c| ("source", c));
    for (side, cluster) in clusters.chain(fleet.dests.iter().map(|c| ("destination", c))) {
        let Ok(mut c) = cluster.connect(pgdog::harness::fleet::DATABASE).await else {
            continue;
        };
        let rows = c
            .query("SELECT pid || ' ' || coalesce(application_name, '') || ' ' || coalesce(state, '') || ' ' || coalesce(wait_event_type || ':' || wait_event, '') || ' xact ' || coalesce(now() - xact_start, '0')::text || ' ' || left(coalesce(query, ''), 200) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
            .await
            .unwrap_or_default();
        let locks = c
            .query("SELECT pid || ' waits for ' || locktype || ' ' || mode || ' on ' || coalesce(relation::regclass::text, transactionid::text, '') FROM pg_locks WHERE NOT granted")
            .await
            .unwrap_or_default();
        out.push_str(&format!("--- {side} {}\n", cluster.port()));
        for r in rows.iter().chain(locks.iter()) {
            out.push_str(r.text(0).unwrap_or(""));
            out.push('\n');
        }
        c.close().await;
    }
    out
}

/// The first tenant at or after `from` (mod 997) that hash sharding over
/// `n` source shards places on shard `s`.
pub fn tenant_of(from: u64, s: usize, n: usize) -> u64 {
    (0..997)
        .map(|k| (from + k) % 997)
        .find(|t| {
            n == 1
                || pgdog::sharding::hash::hash_shard(
                    Some(pgdog::sharding::ValueRef::Int(*t as i64)),
                    n,
                ) == s
        })
        .unwrap_or(0)
}

pub fn table(name: &str) -> TableName {
    TableName {
        schema: "public".into(),
        name: name.into(),
    }
}

/// A check of a table hash-sharded by `column` over `m` shards (or copied
/// whole when `column` is None).
pub fn check(
    name: &str,
    columns: &[&str],
    column: Option<&str>,
    data_type: DataType,
    m: usize,
    source_sharded: bool,
) -> TableCheck {
    TableCheck {
        table: table(name),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        routing: column.filter(|_| m > 1).map(|c| {
            (
                Sharder::new(name, c, data_type, Function::Hash, m).unwrap(),
                c.to_string(),
            )
        }),
        source_sharded,
    }
}

pub async fn verify_equal(fleet: &Fleet, checks: &[TableCheck]) -> Vec<TableReport> {
    let reports = oracle::compare(&fleet.source_options(), &fleet.dest_options(), checks)
        .await
        .unwrap();
    let rendered = oracle::render(&reports);
    eprintln!("{rendered}");
    for r in &reports {
        assert!(r.ok, "{} differs:\n{rendered}", r.table);
    }
    reports
}

/// The config files on disk, for runs of the real binary.
pub struct ConfigFiles {
    pub dir: PathBuf,
}

impl ConfigFiles {
    pub fn write(fleet: &Fleet, extra: &str) -> ConfigFiles {
        let dir = std::env::temp_dir().join(format!(
            "pgdog-test-config-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pgdog.toml"), fleet.pgdog_toml(extra)).unwrap();
        std::fs::write(dir.join("users.toml"), fleet.users_toml()).unwrap();
        ConfigFiles { dir }
    }

    /// The pgdog binary running `subcommand` from `source` to `dest` for
    /// `publication`, with these config files.
    pub fn command(&self, subcommand: &str, publication: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdog"));
        cmd.arg("--config")
            .arg(self.dir.join("pgdog.toml"))
            .arg("--users")
            .arg(self.dir.join("users.toml"))
            .args([
                subcommand,
                "--from-database",
                "source",
                "--from-user",
                "pgdog",
                "--to-database",
                "dest",
                "--to-user",
                "pgdog",
                "--publication",
                publication,
            ]);
        cmd
    }

    /// `pgdog data-sync` as a child process, its output in `log`.
    pub fn spawn(&self, publication: &str, extra_args: &[&str], log: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        self.command("data-sync", publication)
            .args(["--admin-port", "0"])
            .args(extra_args)
            .env("PGDOG_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("spawn pgdog")
    }

    /// `data-sync` of `pub` that ends itself at the fail point `point`
    /// (`PGDOG_CHUNK_CRASH_AT`), its log in `log`.
    pub fn spawn_crashing(&self, point: &str, log: &str) -> KillOnDrop {
        let out = std::fs::File::create(self.dir.join(log)).unwrap();
        KillOnDrop(
            self.command("data-sync", "pub")
                .args(["--admin-port", "0"])
                .env("PGDOG_LOG", "info")
                .env("PGDOG_CHUNK_CRASH_AT", point)
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .unwrap(),
        )
    }

    /// Wait (at most `seconds`) for `child` to end at its fail point.
    pub async fn wait_crashed(&self, child: &mut KillOnDrop, point: &str, log: &str, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{point} was never reached:\n{}",
                self.log(log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = self.log(log);
        assert!(
            !status.success() && text.contains(&format!("PGDOG_CHUNK_CRASH_AT={point}")),
            "the run to {point} ended otherwise: {status}\n{text}"
        );
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for ConfigFiles {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pgdog logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills a child on drop, so a failing test leaves no pgdog running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pg_dump --schema-only` of one server of the fleet, split into entries
/// (kind, schema, tag, SQL), without pgdog's own schema.
pub fn schema_entries(
    server: &pgdog::harness::Cluster,
) -> Vec<pgdog::data_sync::schema::dump::Entry> {
    let pg_dump = pgdog::harness::install::pg_dump().expect("a pg_dump on this machine");
    let out = Command::new(&pg_dump)
        .args([
            "--schema-only",
            "--no-owner",
            "--no-publications",
            "--exclude-schema=pgdog",
            "--username=postgres",
        ])
        .arg(format!("--host={}", server.host()))
        .arg(format!("--port={}", server.port()))
        .arg(format!("--dbname={}", pgdog::harness::fleet::DATABASE))
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pgdog's DDL capture (event triggers have no schema to exclude).
    pgdog::data_sync::schema::dump::parse(&String::from_utf8(out.stdout).unwrap())
        .into_iter()
        .filter(|e| !e.is_pgdog_capture())
        .collect()
}

/// Every destination shard has exactly the source's schema, except for
/// the objects `left_out` says the move does not take.
pub fn assert_same_schema(
    fleet: &Fleet,
    left_out: impl Fn(&pgdog::data_sync::schema::dump::Entry) -> bool,
) {
    // Session settings pg_dump prints between entries depend on what it
    // printed before; the statements are what matters.
    let render = |e: &pgdog::data_sync::schema::dump::Entry| {
        let sql: Vec<&str> = e
            .sql
            .lines()
            .filter(|l| !l.starts_with("SET ") && !l.is_empty())
            .collect();
        format!("{} {:?} {}\n{}", e.kind, e.schema, e.tag, sql.join("\n"))
    };
    let source: Vec<String> = schema_entries(&fleet.sources[0])
        .iter()
        .filter(|e| !left_out(e))
        .map(render)
        .collect();
    assert!(source.len() > 10, "the source schema is nearly empty");
    for (d, c) in fleet.dests.iter().enumerate() {
        let dest: Vec<String> = schema_entries(c)
            .iter()
            .map(render)
            .map(|e| {
                // A foreign key pgdog could not validate must really be
                // violated on that shard (a row whose parent another shard
                // holds); then it counts as the source's.
                match e.strip_suffix(" NOT VALID;") {
                    Some(valid) if e.starts_with("FK CONSTRAINT") => {
                        let src = format!("{valid};");
                        assert!(
                            source.contains(&src),
                            "destination shard {d} has a NOT VALID foreign key the source has valid or not at all:\n{e}"
                        );
                        let table_and_name = e.lines().next().unwrap_or("");
                        let mut words = table_and_name.rsplitn(3, ' ');
                        let (name, table) = (words.next().unwrap(), words.next().unwrap());
                        let result = std::process::Command::new(pgdog::harness::install::pg_dump().unwrap().with_file_name("psql"))
                            .args(["-X", "-q", "--username=postgres", "-v", "ON_ERROR_STOP=1"])
                            .arg(format!("--host={}", c.host()))
                            .arg(format!("--port={}", c.port()))
                            .arg(format!("--dbname={}", pgdog::harness::fleet::DATABASE))
                            .arg("-c")
                            .arg(format!("ALTER TABLE public.{table} VALIDATE CONSTRAINT {name}"))
                            .output()
                            .unwrap();
                        let err = String::from_utf8_lossy(&result.stderr);
                        assert!(
                            !result.status.success() && err.contains("violates foreign key constraint"),
                            "destination shard {d}: foreign key {name} was left NOT VALID, but it validates: {err}"
                        );
                        src
                    }
                    _ => e,
                }
            })
            .collect();
        let missing: Vec<&String> = source.iter().filter(|e| !dest.contains(e)).collect();
        let extra: Vec<&String> = dest.iter().filter(|e| !source.contains(e)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "destination shard {d} differs from the source schema.\nmissing or different:\n{}\nextra:\n{}",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
            extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}
