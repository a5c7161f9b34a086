//! Records the wire captures in `fixtures/` from real PostgreSQL servers
//! started with the test harness: a binary COPY of a table with many types,
//! and a pgoutput session (protocol 1 on PostgreSQL 15, the highest version
//! on the newer server). `fixtures/README.md` describes them.
//!
//! `cargo run --example record_fixtures` (rewrites the files).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BufMut;
use pgdog::harness::{Cluster, ClusterOptions, PgInstall};
use pgdog::net::replication::SnapshotAction;
use pgdog::net::Connection;
use pgdog_protocol::pgoutput::{self, Message};
use pgdog_protocol::replication::ServerMessage;
use pgdog_protocol::Lsn;

/// The table of fixture (a), with one row of values, one of NULLs and one
/// with a TOASTed text over 100 kB.
pub const TYPES_SQL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE types (
    id bigint, i int, n numeric, s text, big text, b bytea, f bool, d8 float8,
    ts timestamptz, d date, u uuid, j jsonb, ia int[], ta text[], m mood
);
INSERT INTO types VALUES
  (1, -42, 12345.678, 'żółw 🐢', 'short', '\\xdeadbeef', true, 2.5,
   '2024-02-29 12:34:56.789+00', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{\"k\": [1, null, \"v\"]}', '{1,NULL,3}', '{a,NULL,\"b c\"}', 'happy'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, 0, -0.5, '', repeat('ab', 60000), '\\x', false, -1e300,
   '1999-12-31 23:59:59+00', '1970-01-01', '00000000-0000-0000-0000-000000000000',
   '[]', '{}', '{}', 'sad');
";

/// The session of fixture (b).
pub const SESSION_SETUP: &str = "
CREATE TABLE a (id bigint PRIMARY KEY, v text, big text);
CREATE TABLE b (id int, v text);
ALTER TABLE b REPLICA IDENTITY FULL;
CREATE PUBLICATION pub FOR TABLE a, b;
";

pub const SESSION_SQL: &[&str] = &[
    // Begin, Relation, Insert with a TOASTed (incompressible) value, Commit
    "INSERT INTO a VALUES (1, 'one', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i))",
    // Update changing the key: 'K' old tuple; big left unchanged ('u')
    "UPDATE a SET id = 2 WHERE id = 1",
    // Update of a non-key column: no old tuple, big unchanged ('u')
    "UPDATE a SET v = 'two' WHERE id = 2",
    // REPLICA IDENTITY FULL: 'O' old tuple
    "INSERT INTO b VALUES (1, 'x'); UPDATE b SET v = 'y' WHERE id = 1",
    "DELETE FROM a WHERE id = 2",
    "TRUNCATE a, b",
    "SELECT pg_logical_emit_message(true, 'pgdog', 'hello')",
    // Large enough to be streamed in progress (logical_decoding_work_mem = 64kB)
    "INSERT INTO a SELECT g, repeat('x', 200), NULL FROM generate_series(10, 509) g",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

async fn record_copy(cluster: &Cluster, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    cluster.exec("postgres", TYPES_SQL).await?;
    let mut conn = cluster.connect("postgres").await?;
    let mut out = conn
        .copy_out("COPY types TO STDOUT (FORMAT binary)")
        .await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = out.next().await? {
        bytes.extend_from_slice(&chunk);
    }
    let path = fixtures().join("copy").join(name);
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, &bytes)?;
    println!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}

async fn record_session(
    cluster: &Cluster,
    version: u32,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    cluster.exec("postgres", SESSION_SETUP).await?;
    let mut repl =
        Connection::connect(&cluster.options("postgres", "postgres").replication(true)).await?;
    repl.create_replication_slot("fixture", false, SnapshotAction::NoExport)
        .await?;
    for sql in SESSION_SQL {
        cluster.exec("postgres", sql).await?;
    }
    let mut options: Vec<(&str, String)> = vec![
        ("proto_version", version.to_string()),
        ("publication_names", "\"pub\"".into()),
        ("messages", "true".into()),
    ];
    if version >= 2 {
        options.push(("streaming", "on".into()));
        options.push(("binary", "true".into()));
    }
    let mut stream = repl
        .start_replication("fixture", Lsn::ZERO, &options)
        .await?;
    let mut decoder = pgoutput::Decoder::new(version);
    let mut file = Vec::new();
    let mut commits = 0;
    let mut messages = 0;
    // Every entry above is one transaction (a query string runs in one
    // implicit transaction; the transactional message commits too).
    while commits < SESSION_SQL.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.recv()).await??;
        let Some(ServerMessage::XLogData { data, .. }) = msg else {
            if let Some(ServerMessage::PrimaryKeepalive {
                end, reply: true, ..
            }) = msg
            {
                stream.send_status(end, Lsn::ZERO, Lsn::ZERO, false).await?;
            }
            continue;
        };
        file.put_u32(data.len() as u32);
        file.extend_from_slice(&data);
        messages += 1;
        if matches!(
            decoder.decode(data)?,
            Message::Commit { .. } | Message::StreamCommit { .. }
        ) {
            commits += 1;
        }
    }
    let path = fixtures().join("pgoutput").join(name);
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, &file)?;
    println!(
        "wrote {} ({messages} messages, {} bytes)",
        path.display(),
        file.len()
    );
    Ok(())
}

fn options(install: PgInstall) -> ClusterOptions {
    ClusterOptions {
        install: Some(install),
        ..Default::default()
    }
    .setting("logical_decoding_work_mem", "64kB")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let old = PgInstall::major(15).ok_or("PostgreSQL 15 server binaries not found")?;
    let new = PgInstall::newest_at_least(16)
        .ok_or("no PostgreSQL 16+ found: run scripts/fetch-postgres.sh")?;
    for (install, version) in [(old, 1u32), (new, 4u32)] {
        let major = install.major;
        let cluster = Cluster::start(options(install.clone()))?;
        record_copy(&cluster, &format!("types-pg{major}.bin")).await?;
        let cluster = Cluster::start(options(install))?;
        record_session(
            &cluster,
            version,
            &format!("session-v{version}-pg{major}.bin"),
        )
        .await?;
    }
    Ok(())
}
