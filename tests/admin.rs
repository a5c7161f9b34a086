//! The admin console against real clients: psql (the Debian binary) and
//! our own connection, during a real data-sync between throwaway clusters;
//! logins refused for every reason; TLS offered and required; garbage and
//! stalled clients; the metrics endpoint scraped over HTTP.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog::admin::{self, AdminServer};
use pgdog::config::Config;
use pgdog::data_sync::Registry;
use pgdog::harness::cluster::free_port;
use pgdog::harness::{ClusterOptions, Fleet};
use pgdog::net::{
    ChannelBinding, ConnectOptions, Connection, ConnectionError, TlsConnector, TlsMode, TlsOptions,
};
use pgdog_protocol::frontend::Format;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "console-secret";

fn certs(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(file)
}

/// `pgdog.toml` text: `general` lines go into `[general]`, then `rest`.
fn config_from(general: &str, rest: &str, users: &str) -> Arc<Config> {
    let text =
        format!("[general]\nhost = \"127.0.0.1\"\ntls_verify = \"disabled\"\n{general}\n{rest}");
    Arc::new(
        Config::from_strs(
            Path::new("pgdog.toml"),
            &text,
            Path::new("users.toml"),
            users,
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}")),
    )
}

fn admin_section(password: &str) -> String {
    format!("[admin]\npassword = \"{password}\"\n")
}

/// A console served by `pgdog::admin::serve` on a free port.
struct Served {
    port: u16,
    token: CancellationToken,
    handle: JoinHandle<Result<(), admin::AdminError>>,
}

impl Served {
    async fn start(config: Arc<Config>, registry: Arc<Registry>) -> Served {
        let port = free_port().unwrap();
        let token = CancellationToken::new();
        let handle = tokio::spawn(admin::serve(config, registry, Some(port), token.clone()));
        wait_listening(port).await;
        Served {
            port,
            token,
            handle,
        }
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(90), self.handle)
            .await
            .expect("the console stops on its token")
            .unwrap()
            .unwrap();
    }
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options(port: u16, password: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port, "admin", "admin").password(Some(password))
}

async fn connect(port: u16) -> Connection {
    Connection::connect(&options(port, PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("admin login: {e}"))
}

/// Rows of a query as text cells (NULL as "").
async fn rows(conn: &mut Connection, sql: &str) -> Vec<Vec<String>> {
    let rows = conn
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.text(i).unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

/// psql's `--csv` output: the header, then the rows (RFC 4180 quoting:
/// a cell with a comma or quote is quoted, a quote inside is doubled; our
/// cells hold no newlines).
fn csv(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|line| {
            let mut cells = vec![String::new()];
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        chars.next();
                        cells.last_mut().unwrap().push('"');
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => cells.push(String::new()),
                    (c, _) => cells.last_mut().unwrap().push(c),
                }
            }
            cells
        })
        .collect()
}

/// Run psql with a connection string and extra arguments.
async fn psql(conninfo: &str, password: &str, args: &[&str]) -> Output {
    tokio::process::Command::new("psql")
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(conninfo)
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .output()
        .await
        .expect("psql runs (apt-get install postgresql-client)")
}

fn conninfo(port: u16, extra: &str) -> String {
    format!("host=127.0.0.1 port={port} user=admin dbname=admin {extra}")
}

/// psql -c in CSV, asserting success.
async fn psql_csv(port: u16, sql: &str) -> Vec<Vec<String>> {
    let out = psql(
        &conninfo(port, "sslmode=disable"),
        PASSWORD,
        &["--csv", "-c", sql],
    )
    .await;
    assert!(
        out.status.success(),
        "psql -c {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    csv(&String::from_utf8_lossy(&out.stdout))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `GET <path>` over a raw socket; the whole response.
async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{accept}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const USERS: u64 = 20_000;

/// Every command's columns and values through psql and our client while
/// a DATA_SYNC started from the console copies and streams; STOP_TASK;
/// the metrics endpoint scraped by curl and a raw socket during the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_during_a_move() {
    let fleet = Fleet::start(1, 2, ClusterOptions::default()).await.unwrap();
    fleet.on_sources(pgdog::demo::SCHEMA).await.unwrap();
    fleet.on_dests(pgdog::demo::SCHEMA).await.unwrap();
    fleet
        .on_sources(&format!(
            "INSERT INTO countries VALUES ('PL', 'Poland'), ('JP', 'Japan');
             INSERT INTO users (id, email) SELECT g, 'u' || g || '@example.com' FROM generate_series(1, {USERS}) g;
             INSERT INTO orders (user_id, id, amount) SELECT (g % {USERS}) + 1, g, g / 100.0 FROM generate_series(1, {n}) g;
             ANALYZE;
             CREATE PUBLICATION moving FOR TABLE users, orders, countries;",
            n = USERS * 2
        ))
        .await
        .unwrap();
    let metrics_port = free_port().unwrap();
    let toml = fleet.pgdog_toml(pgdog::demo::SHARDING).replacen(
        "[general]\n",
        &format!("[general]\nhost = \"127.0.0.1\"\nopenmetrics_port = {metrics_port}\n"),
        1,
    ) + &admin_section(PASSWORD);
    let config = Arc::new(
        Config::from_strs(
            Path::new("pgdog.toml"),
            &toml,
            Path::new("users.toml"),
            &fleet.users_toml(),
        )
        .unwrap(),
    );
    let registry = Arc::new(Registry::default());
    let console = Served::start(config, registry.clone()).await;
    let port = console.port;
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics_port).into();

    // Start the move through psql; the id comes back at once.
    let out = psql(
        &conninfo(port, "sslmode=disable"),
        PASSWORD,
        &[
            "-A",
            "-F|",
            "-t",
            "-c",
            "DATA_SYNC source pgdog dest pgdog moving;",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(line, "1|source|dest|moving|pgdog_moving_dest");
    let task = registry.get(1).expect("DATA_SYNC registered the task");

    // Scrape while it runs (copying or already streaming).
    let scrape = tokio::process::Command::new("curl")
        .args(["-sf", &format!("http://{metrics_addr}/metrics")])
        .output()
        .await
        .expect("curl runs");
    assert!(scrape.status.success(), "curl: {}", stderr(&scrape));
    let text = String::from_utf8_lossy(&scrape.stdout);
    assert!(text.contains("# TYPE pgdog_task_phase gauge"), "{text}");
    let phases: f64 = [
        "preflight",
        "schema sync",
        "copying",
        "building indexes",
        "streaming",
        "stopped",
        "failed",
        "done",
    ]
    .iter()
    .filter_map(|p| {
        sample(
            &text,
            &format!("pgdog_task_phase{{task=\"1\",phase=\"{p}\"}}"),
        )
    })
    .sum();
    assert_eq!(phases, 1.0, "exactly one phase is current:\n{text}");

    // Our client follows the task to streaming.
    let mut conn = connect(port).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let t = rows(&mut conn, "show tasks").await;
        assert_eq!(t.len(), 1);
        match t[0][6].as_str() {
            "streaming" => break,
            "preflight" | "schema sync" | "copying" | "building indexes" => {}
            other => panic!("task ended early: {other}: {}", t[0][11]),
        }
        assert!(Instant::now() < deadline, "no streaming after 180s: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SHOW TASKS through psql: columns and values.
    let t = psql_csv(port, "SHOW TASKS").await;
    assert_eq!(
        t[0].join(","),
        "id,kind,source,destination,publication,slot,phase,started,elapsed,waiting_on,snapshot_held,error,copy,notes"
    );
    assert_eq!(
        t[1][..7],
        [
            "1",
            "data-sync",
            "source",
            "dest",
            "moving",
            "pgdog_moving_dest",
            "streaming"
        ]
    );
    assert!(
        t[1][7].ends_with("+00") && t[1][7].starts_with("20"),
        "{t:?}"
    );
    assert!(t[1][8].contains(':'), "elapsed as an interval: {t:?}");
    assert_eq!(t[1][9], "", "waits on nothing while streaming");
    assert_eq!(t[1][10], "", "the copy snapshot was let go after the copy");
    assert_eq!(t[1][11], "", "no error");

    // SHOW TABLE_COPIES: three tables from the one source shard, all done,
    // every row counted.
    let c = psql_csv(port, "SHOW TABLE_COPIES;").await;
    assert_eq!(
        c[0].join(","),
        "task_id,schema,table,source_shard,source_hosts,status,rows,bytes,rows_per_second,bytes_per_second,estimated_rows,percent,eta,elapsed,method,chunks,cursor"
    );
    assert_eq!(c.len(), 4, "{c:?}");
    let users = c.iter().find(|r| r[2] == "users").expect("users copy");
    assert_eq!(users[0], "1");
    assert_eq!(users[1], "public");
    assert_eq!(users[3], "0");
    assert!(
        users[4].contains(&fleet.sources[0].port().to_string()),
        "{users:?}"
    );
    assert_eq!(users[5], "done");
    assert_eq!(users[6], USERS.to_string());
    assert!(users[7].parse::<u64>().unwrap() > USERS * 10, "{users:?}");
    assert!(users[8].parse::<f64>().unwrap() > 0.0, "{users:?}");
    let estimate: f64 = users[10].parse().unwrap();
    assert!(
        (estimate - USERS as f64).abs() < USERS as f64 * 0.2,
        "{users:?}"
    );
    assert_eq!(users[11], "100.0");
    assert_eq!(users[12], "", "no ETA once done");
    // Copied in key-range chunks, the last one ending the table.
    assert_eq!(users[14], "chunks by (\"id\")", "{users:?}");
    assert!(users[15].parse::<u64>().unwrap() >= 1, "{users:?}");
    let orders = c.iter().find(|r| r[2] == "orders").expect("orders copy");
    assert_eq!(orders[6], (USERS * 2).to_string());

    // Changes stream through; SHOW REPLICATION_SLOTS counts them.
    fleet
        .on_sources(
            "INSERT INTO users (id, email) SELECT g, 'late' FROM generate_series(1000001, 1000100) g;
             UPDATE users SET name = 'x' WHERE id <= 10;",
        )
        .await
        .unwrap();
    fleet
        .wait_caught_up("pgdog_moving_dest", Duration::from_secs(60))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let slots = loop {
        let s = psql_csv(port, "show replication_slots").await;
        if s.len() == 2 && s[1][12].parse::<u64>().unwrap_or(0) >= 110 {
            break s;
        }
        assert!(Instant::now() < deadline, "changes not counted: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        slots[0].join(","),
        "task_id,source_shard,host,slot,confirmed_flush_lsn,current_wal_lsn,lag_bytes,lag_seconds,last_commit_time,last_applied_at,changes_per_second,transactions,changes,skipped_transactions,missing_rows"
    );
    let s = &slots[1];
    assert_eq!((s[0].as_str(), s[1].as_str()), ("1", "0"));
    assert_eq!(s[3], "pgdog_moving_dest");
    assert!(s[4].contains('/') && s[5].contains('/'), "LSNs: {s:?}");
    assert!(s[9].ends_with("+00"), "last applied: {s:?}");
    assert!(s[10].parse::<f64>().unwrap() >= 0.0);
    // One simple query of two statements: one transaction.
    assert!(s[11].parse::<u64>().unwrap() >= 1, "{s:?}");
    assert_eq!(s[14], "0", "no missing rows");

    // The metrics endpoint during the stream: raw socket, OpenMetrics.
    let om = http_get(
        metrics_addr,
        "/metrics",
        Some("application/openmetrics-text"),
    )
    .await;
    assert!(om.starts_with("HTTP/1.1 200 OK"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(
        sample(
            &om,
            "pgdog_copy_rows_total{task=\"1\",schema=\"public\",table=\"users\",source_shard=\"0\"}"
        ),
        Some(USERS as f64),
        "{om}"
    );
    assert_eq!(
        sample(&om, "pgdog_task_phase{task=\"1\",phase=\"streaming\"}"),
        Some(1.0)
    );
    assert!(
        sample(
            &om,
            "pgdog_replication_changes_total{task=\"1\",source_shard=\"0\"}"
        )
        .unwrap()
            >= 110.0
    );
    assert!(sample(
        &om,
        "pgdog_replication_lag_bytes{task=\"1\",source_shard=\"0\"}"
    )
    .is_some());
    assert!(sample(&om, "pgdog_copy_bytes_per_second{task=\"1\"").is_some());

    // The other SHOW commands.
    let d = psql_csv(port, "SHOW DATABASES").await;
    assert_eq!(
        d[0].join(","),
        "cluster,shard,role,host,port,database,reachable,detail"
    );
    assert_eq!(d.len(), 4, "{d:?}");
    let source_port = fleet.sources[0].port().to_string();
    assert_eq!(
        d[1][..7],
        [
            "source",
            "0",
            "primary",
            "127.0.0.1",
            source_port.as_str(),
            "app",
            "yes"
        ]
    );
    assert_eq!(d[3][..3], ["dest", "1", "primary"]);
    assert!(d.iter().skip(1).all(|r| r[6] == "yes"), "{d:?}");
    assert!(
        d[1][7].starts_with("logged in as \"postgres\", PostgreSQL 1"),
        "{d:?}"
    );

    let u = rows(&mut conn, "SHOW USERS").await;
    assert_eq!(
        u,
        [
            ["pgdog", "source", "postgres"],
            ["pgdog", "dest", "postgres"]
        ]
    );

    let cfg = rows(&mut conn, "SHOW CONFIG").await;
    let find = |section: &str, name: &str| {
        cfg.iter()
            .find(|r| r[0] == section && r[1] == name)
            .map(|r| r[2].clone())
    };
    assert_eq!(find("admin", "password").as_deref(), Some("********"));
    assert_eq!(
        find("general", "openmetrics_port"),
        Some(metrics_port.to_string())
    );
    assert!(find("sharded_tables", "dest: users")
        .unwrap()
        .contains("hash"));
    assert!(!format!("{cfg:?}").contains(PASSWORD));

    let v = rows(&mut conn, "SHOW VERSION").await;
    assert_eq!(v, [[format!("pgdog {}", env!("CARGO_PKG_VERSION"))]]);
    let help = psql_csv(port, "HELP").await;
    assert_eq!(help[0], ["command", "description"]);
    assert_eq!(help.len(), 16, "{help:?}");
    // How each table is routed, as the plan decided before the copy.
    let routing = psql_csv(port, "SHOW ROUTING").await;
    assert_eq!(
        routing[0].join(","),
        "task_id,table,source,destination,bytes,warning"
    );
    let dest_of = |table: &str| {
        routing
            .iter()
            .find(|r| r[1] == table)
            .unwrap_or_else(|| panic!("{table} not in SHOW ROUTING: {routing:?}"))[3]
            .clone()
    };
    assert_eq!(
        dest_of("public.orders"),
        "sharded by \"user_id\" (hash, its own rule)"
    );
    assert_eq!(
        dest_of("public.countries"),
        "copied whole to every one of the 2 destination shards (no sharding rule)"
    );
    // The destinations had the schema: pre-data found every object there.
    let schema = psql_csv(port, "SHOW SCHEMA_SYNC").await;
    assert_eq!(
        schema[0].join(","),
        "task_id,dest_shard,phase,object,state,elapsed,percent,eta,message"
    );
    for shard in ["0", "1"] {
        let pre = schema
            .iter()
            .find(|r| r[1] == shard && r[2] == "pre-data")
            .unwrap_or_else(|| panic!("no pre-data row for shard {shard}: {schema:?}"));
        assert_eq!(pre[4], "done", "{pre:?}");
        assert!(pre[3].starts_with("0 objects to create"), "{pre:?}");
    }
    // VERIFY of the streaming move: a task of its own, followed in SHOW
    // VERIFY, every destination shard equal.
    let v = rows(&mut conn, "VERIFY 1").await;
    assert_eq!(v[0][1], "1", "{v:?}");
    let verify_id = v[0][0].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = psql_csv(port, "SHOW TASKS").await;
        let row = t.iter().find(|r| r[0] == verify_id).cloned().unwrap();
        if row.iter().any(|c| c == "done") {
            break;
        }
        assert!(!row.iter().any(|c| c == "failed"), "verify failed: {row:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "verify did not end: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sv = psql_csv(port, "SHOW VERIFY").await;
    assert_eq!(
        sv[0],
        [
            "task_id", "schema", "table", "side", "shard", "state", "rows", "bytes", "elapsed",
            "percent", "result"
        ]
    );
    let dest_rows: Vec<&Vec<String>> = sv.iter().filter(|r| r[3] == "destination").collect();
    assert!(!dest_rows.is_empty(), "{sv:?}");
    for r in &dest_rows {
        assert_eq!(r[0], verify_id);
        assert_eq!(r[5], "read", "{r:?}");
        assert_eq!(r[10], "equal", "{sv:?}");
    }
    assert!(
        sv.iter().any(|r| r[3] == "source" && r[2] == "users"),
        "{sv:?}"
    );
    assert!(help.iter().any(|r| r[0] == "STOP_TASK <id>"));
    assert!(
        help.iter()
            .any(|r| r[0] == "SHOW TASKS" && r[1].contains("publication, slot")),
        "{help:?}"
    );

    // Errors: a SQLSTATE, the offending text, a hint; the session goes on.
    let err = conn.query("SELECT 1").await.unwrap_err();
    let e = err.server_error().expect("an ErrorResponse");
    assert_eq!(e.code(), "42704");
    assert!(e.message().contains("SELECT 1"), "{err}");
    assert_eq!(e.fields.hint(), Some("try HELP"));
    let err = conn.query("SHOW TASKS extra").await.unwrap_err();
    assert_eq!(err.code(), Some("42601"), "{err}");
    assert_eq!(rows(&mut conn, "show version").await.len(), 1);
    let out = psql(
        &conninfo(port, "sslmode=disable"),
        PASSWORD,
        &["-c", "SHOW NOTHING"],
    )
    .await;
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("ERROR:  unknown SHOW target \"NOTHING\"") && msg.contains("HINT:"),
        "{msg}"
    );

    // A second move with the same slot is refused while the first runs.
    let err = conn
        .query("DATA_SYNC source pgdog dest pgdog moving")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("55006"), "{err}");
    let err = conn
        .query("DATA_SYNC nowhere pgdog dest pgdog moving")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"nowhere\""), "{err}");
    assert_eq!(registry.tasks().len(), 2, "the move and its verify");

    // STOP_TASK: stopped cleanly, the slot kept.
    let stopped = rows(&mut conn, "STOP_TASK 1").await;
    assert_eq!(stopped, [["1", "stopped", "pgdog_moving_dest"]]);
    assert_eq!(task.phase().as_str(), "stopped");
    let t = psql_csv(port, "SHOW TASKS").await;
    assert_eq!(t[1][6], "stopped");
    let err = conn.query("STOP_TASK 1").await.unwrap_err();
    assert_eq!(err.code(), Some("55000"), "{err}");
    let err = conn.query("STOP_TASK 42").await.unwrap_err();
    assert_eq!(err.code(), Some("42704"), "{err}");
    let mut source = fleet.sources[0].connect("app").await.unwrap();
    let kept = source
        .query("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgdog_moving_dest'")
        .await
        .unwrap();
    assert_eq!(kept[0].text(0), Some("1"));
    source.close().await;

    conn.close().await;
    console.stop().await;
}

/// Logins: right and wrong passwords and users, other databases, no
/// password configured, the connection limit; garbage and stalled startup
/// packets leave other sessions alone; shutdown ends sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_and_refusals() {
    let config = config_from("max_admin_connections = 3\n", &admin_section(PASSWORD), "");
    let registry = Arc::new(Registry::default());
    let server = AdminServer::bind(config.clone(), registry, Some(0))
        .await
        .unwrap()
        .with_startup_timeout(Duration::from_secs(1));
    let port = server.local_addr().port();
    assert!(server.metrics_addr().is_none());
    let token = CancellationToken::new();
    let served = tokio::spawn(server.run(token.clone()));

    // Right password, case-insensitive commands, several per query.
    let mut conn = connect(port).await;
    let both = rows(&mut conn, "show version; HELP;").await;
    assert_eq!(both.len(), 1 + 15);
    let out = psql(
        &conninfo(port, "sslmode=disable"),
        PASSWORD,
        &["-A", "-t", "-c", "SHOW VERSION"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pgdog "));

    // Wrong password, wrong user: PostgreSQL's own error.
    for (user, password) in [("admin", "wrong"), ("root", PASSWORD)] {
        let opts = ConnectOptions::new("127.0.0.1", port, user, "admin").password(Some(password));
        let err = Connection::connect(&opts).await.unwrap_err();
        assert_eq!(err.code(), Some("28P01"), "{err}");
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }
    let out = psql(
        &conninfo(port, "sslmode=disable"),
        "wrong",
        &["-c", "SHOW VERSION"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed for user \"admin\""),
        "{}",
        stderr(&out)
    );

    // Another database: 3D000, naming the one this serves.
    let opts = ConnectOptions::new("127.0.0.1", port, "admin", "app").password(Some(PASSWORD));
    let err = Connection::connect(&opts).await.unwrap_err();
    assert_eq!(err.code(), Some("3D000"), "{err}");
    let fields = &err.server_error().unwrap().fields;
    assert!(
        fields
            .detail()
            .unwrap()
            .contains("only the database \"admin\""),
        "{err}"
    );
    let out = psql(
        &format!("host=127.0.0.1 port={port} user=admin dbname=app sslmode=disable"),
        PASSWORD,
        &["-c", "SHOW VERSION"],
    )
    .await;
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("database \"app\" does not exist") && msg.contains("\"admin\""),
        "{msg}"
    );

    // The extended protocol is refused, and the session goes on.
    let err = conn
        .query_params("SHOW VERSION", &[], std::iter::empty(), Format::Text)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("0A000"), "{err}");
    assert_eq!(rows(&mut conn, "SHOW VERSION").await.len(), 1);

    // Garbage, and a client that never finishes its startup packet: the
    // open session does not notice; both are dropped.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4])
        .await
        .unwrap();
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    assert_eq!(rows(&mut conn, "SHOW VERSION").await.len(), 1);
    for (name, socket) in [("garbage", &mut garbage), ("stalled", &mut stalled)] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name} client not dropped"));
        assert!(matches!(read, Ok(0) | Err(_)), "{name}: {read:?}");
    }
    drop(garbage);
    drop(stalled);

    // The limit is 3: with `conn` and two more open, a fourth gets 53300.
    let second = connect(port).await;
    let third = connect(port).await;
    let err = Connection::connect(&options(port, PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("53300"), "{err}");
    assert!(err.to_string().contains("max_admin_connections"), "{err}");
    second.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let fourth = loop {
        match Connection::connect(&options(port, PASSWORD)).await {
            Ok(c) => break c,
            Err(e) if e.code() == Some("53300") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(rows(&mut conn, "SHOW TASKS").await.len(), 0);

    // Shutdown: sessions are told, and the server returns.
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
    let err = conn.query("SHOW VERSION").await.unwrap_err();
    assert!(
        err.code() == Some("57P01") || !matches!(err, ConnectionError::Server(_)),
        "{err}"
    );
    drop((third, fourth));

    // No password configured: every login refused with the fix.
    let open = config_from("", "", "");
    let console = Served::start(open, Arc::new(Registry::default())).await;
    let err = Connection::connect(&options(console.port, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("28000"), "{err}");
    assert!(err.to_string().contains("[admin] password"), "{err}");
    let out = psql(
        &conninfo(console.port, "sslmode=disable"),
        "anything",
        &["-c", "SHOW VERSION"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no admin password is configured"),
        "{}",
        stderr(&out)
    );
    console.stop().await;
}

/// TLS offered (plain and TLS both work, SCRAM binds to the certificate)
/// and required (plain refused with the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_offered_and_required() {
    let tls_lines = format!(
        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
        certs("server.pem").display(),
        certs("server.key").display()
    );
    let tls = |mode| {
        TlsConnector::new(&TlsOptions {
            mode,
            ca_file: Some(certs("ca.pem")),
            client_cert: None,
        })
        .unwrap()
    };
    let ca = certs("ca.pem");

    for required in [false, true] {
        let general = format!("{tls_lines}tls_client_required = {required}\n");
        let console = Served::start(
            config_from(&general, &admin_section(PASSWORD), ""),
            Arc::new(Registry::default()),
        )
        .await;
        let port = console.port;

        // Our client over TLS, verifying the certificate, with channel
        // binding required (SCRAM-SHA-256-PLUS).
        let mut opts = options(port, PASSWORD).tls(tls(TlsMode::VerifyFull));
        opts.channel_binding = ChannelBinding::Require;
        let mut c = Connection::connect(&opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.is_tls());
        assert_eq!(rows(&mut c, "SHOW VERSION").await.len(), 1);
        c.close().await;
        let c = Connection::connect(&options(port, PASSWORD).tls(tls(TlsMode::Require)))
            .await
            .unwrap();
        assert!(c.is_tls());
        c.close().await;

        // psql over TLS, verify-full against our CA, channel binding.
        let out = psql(
            &conninfo(
                port,
                &format!(
                    "sslmode=verify-full sslrootcert={} channel_binding=require",
                    ca.display()
                ),
            ),
            PASSWORD,
            &["-A", "-t", "-c", "SHOW VERSION"],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let out = psql(
            &conninfo(port, "sslmode=require"),
            PASSWORD,
            &["-A", "-t", "-c", "show version;"],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));

        // Plain: fine when offered, refused when required.
        let plain = Connection::connect(&options(port, PASSWORD)).await;
        let out = psql(
            &conninfo(port, "sslmode=disable"),
            PASSWORD,
            &["-c", "SHOW VERSION"],
        )
        .await;
        if required {
            let err = plain.unwrap_err();
            assert_eq!(err.code(), Some("28000"), "{err}");
            assert!(err.to_string().contains("requires TLS"), "{err}");
            assert!(!out.status.success());
            let msg = stderr(&out);
            assert!(
                msg.contains("requires TLS") && msg.contains("sslmode=require"),
                "{msg}"
            );
        } else {
            let mut c = plain.unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.is_tls());
            assert_eq!(rows(&mut c, "SHOW TASKS").await.len(), 0);
            c.close().await;
            assert!(out.status.success(), "{}", stderr(&out));
        }
        console.stop().await;
    }
}
