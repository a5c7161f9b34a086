//! Connections against real Postgres: every auth method with and without
//! TLS, certificate verification failures, wrong passwords, simple and
//! pipelined queries, COPY both ways, cancel, and a replication connection
//! that creates a slot and streams real changes.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use pgdog::harness::{Cluster, ClusterOptions, PgInstall};
use pgdog::net::replication::SnapshotAction;
use pgdog::net::{
    ChannelBinding, ConnectOptions, Connection, ConnectionError, TlsConnector, TlsMode, TlsOptions,
};
use pgdog_protocol::copy_binary::{Decoder, Encoder};
use pgdog_protocol::frontend::Format;
use pgdog_protocol::pgoutput::{self, Column};
use pgdog_protocol::replication::ServerMessage;
use pgdog_protocol::Lsn;

fn certs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(file)
}

fn tls(mode: TlsMode, ca: &str) -> Option<TlsConnector> {
    TlsConnector::new(&TlsOptions {
        mode,
        ca_file: Some(certs(ca)),
        client_cert: None,
    })
    .unwrap()
}

/// A cluster with SSL on, listening on 127.0.0.1 and 127.0.0.2, and one
/// user per password method; hostssl/hostnossl rules force each method.
async fn auth_cluster(install: Option<PgInstall>) -> Cluster {
    let mut opts = ClusterOptions::default().ssl();
    opts.extra_listen.push("127.0.0.2".into());
    opts.install = install;
    for (user, method) in [
        ("scram_user", "scram-sha-256"),
        ("md5_user", "md5"),
        ("clear_user", "password"),
    ] {
        opts = opts.hba(&format!("host all {user} 127.0.0.0/8 {method}"));
    }
    opts = opts.hba("host all trust_user 127.0.0.0/8 trust");
    let cluster = Cluster::start(opts).unwrap();
    cluster
        .exec(
            "postgres",
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
             CREATE ROLE clear_user LOGIN PASSWORD 'clear-secret';
             CREATE ROLE trust_user LOGIN;
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';",
        )
        .await
        .unwrap();
    cluster
}

async fn whoami(opts: &ConnectOptions) -> Result<(String, bool), ConnectionError> {
    let mut c = Connection::connect(opts).await?;
    let rows = c
        .query("SELECT current_user, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)")
        .await?;
    let user = rows[0].text(0).unwrap().to_string();
    let ssl = rows[0].text(1) == Some("t");
    assert_eq!(ssl, c.is_tls());
    c.close().await;
    Ok((user, ssl))
}

async fn every_auth_method(install: Option<PgInstall>) {
    let cluster = auth_cluster(install).await;
    let users = [
        ("scram_user", Some("scram-secret")),
        ("md5_user", Some("md5-secret")),
        ("clear_user", Some("clear-secret")),
        ("trust_user", None),
    ];
    for (user, password) in users {
        for tls_conf in [
            None,
            tls(TlsMode::Prefer, "ca.pem"),
            tls(TlsMode::Require, "ca.pem"),
            tls(TlsMode::VerifyCa, "ca.pem"),
            tls(TlsMode::VerifyFull, "ca.pem"),
        ] {
            let want_tls = tls_conf.is_some();
            let opts = cluster
                .options(user, "postgres")
                .password(password)
                .tls(tls_conf);
            let (who, ssl) = whoami(&opts)
                .await
                .unwrap_or_else(|e| panic!("{user} tls={want_tls}: {e}"));
            assert_eq!(who, user);
            assert_eq!(ssl, want_tls);
        }
    }

    // SCRAM over TLS uses channel binding; requiring it works over TLS and
    // fails without.
    let mut opts = cluster
        .options("scram_user", "postgres")
        .password(Some("scram-secret"))
        .tls(tls(TlsMode::VerifyFull, "ca.pem"));
    opts.channel_binding = ChannelBinding::Require;
    whoami(&opts).await.expect("SCRAM-SHA-256-PLUS");
    opts.tls = None;
    let err = whoami(&opts).await.unwrap_err().to_string();
    assert!(err.contains("channel binding is required"), "{err}");

    // Wrong password: the server's own error, with SQLSTATE and server.
    let opts = cluster
        .options("scram_user", "postgres")
        .password(Some("wrong"));
    let err = whoami(&opts).await.unwrap_err();
    assert_eq!(err.code(), Some("28P01"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("password authentication failed")
            && text.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{text}"
    );
    assert!(!pgdog::data_sync::retry::connection_worth_retrying(&err));

    // No password configured for a password method.
    let opts = cluster.options("md5_user", "postgres");
    let err = whoami(&opts).await.unwrap_err().to_string();
    assert!(err.contains("none is configured"), "{err}");

    // verify-full against a name the certificate does not cover.
    let mut opts = cluster
        .options("trust_user", "postgres")
        .tls(tls(TlsMode::VerifyFull, "ca.pem"));
    opts.host = "127.0.0.2".into();
    let err = whoami(&opts).await.unwrap_err().to_string();
    assert!(
        err.contains("TLS") && err.contains("not valid for name"),
        "{err}"
    );
    // verify-ca does not check the name.
    opts.tls = tls(TlsMode::VerifyCa, "ca.pem");
    whoami(&opts)
        .await
        .expect("verify-ca ignores the host name");
    // An unknown CA fails both.
    for mode in [TlsMode::VerifyCa, TlsMode::VerifyFull] {
        let opts = cluster
            .options("trust_user", "postgres")
            .tls(tls(mode, "other-ca.pem"));
        let err = whoami(&opts).await.unwrap_err().to_string();
        assert!(
            err.contains("TLS") && err.contains("UnknownIssuer"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_methods_and_tls_pg15() {
    every_auth_method(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_methods_and_tls_newer_postgres() {
    let Some(install) = PgInstall::newest_at_least(16) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 16+ found (run scripts/fetch-postgres.sh)");
        return;
    };
    every_auth_method(Some(install)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_against_a_server_without_it() {
    let cluster = Cluster::start_default().unwrap();
    let opts = cluster
        .options("postgres", "postgres")
        .tls(tls(TlsMode::Require, "ca.pem"));
    let err = Connection::connect(&opts).await.unwrap_err().to_string();
    assert!(err.contains("does not accept TLS"), "{err}");
    // prefer falls back to plain.
    let opts = cluster
        .options("postgres", "postgres")
        .tls(tls(TlsMode::Prefer, "ca.pem"));
    let c = Connection::connect(&opts).await.unwrap();
    assert!(!c.is_tls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_pipelines_copy_and_cancel() {
    let cluster = Cluster::start_default().unwrap();
    let mut c = cluster.connect("postgres").await.unwrap();
    assert!(c.server_version_num() >= 140000);

    // Errors keep the connection usable and carry the server's fields.
    let err = c.query("SELECT * FROM missing_table").await.unwrap_err();
    assert_eq!(err.code(), Some("42P01"));
    assert_eq!(c.query("SELECT 1").await.unwrap()[0].text(0), Some("1"));

    c.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text)")
        .await
        .unwrap();
    c.prepare("ins", "INSERT INTO t VALUES ($1, $2)", &[20, 25])
        .await
        .unwrap();
    for i in 0..100i64 {
        let id = i.to_be_bytes();
        let name = format!("row {i}");
        c.queue_execute(
            "ins",
            &[Format::Binary, Format::Text],
            [Some(&id[..]), Some(name.as_bytes())],
        )
        .unwrap();
    }
    let mut affected = Vec::new();
    c.sync_pipeline(100, &mut affected).await.unwrap();
    assert_eq!(affected, vec![1; 100]);

    // A failing statement in the middle: the error says which.
    for i in [200i64, 5, 201] {
        let id = i.to_be_bytes();
        c.queue_execute(
            "ins",
            &[Format::Binary, Format::Text],
            [Some(&id[..]), Some(&b"x"[..])],
        )
        .unwrap();
    }
    let mut affected = Vec::new();
    let err = c.sync_pipeline(3, &mut affected).await.unwrap_err();
    assert_eq!(err.index, 1);
    assert_eq!(err.error.code(), Some("23505"));
    // Everything up to Sync is one implicit transaction: 200 was rolled back.
    assert_eq!(
        c.query("SELECT count(*) FROM t").await.unwrap()[0].text(0),
        Some("100")
    );

    // COPY out in binary, decoded, and back in through COPY FROM.
    c.execute("CREATE TABLE t2 (LIKE t)").await.unwrap();
    let mut rows = Vec::new();
    {
        let mut out = c
            .copy_out("COPY t TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        let mut dec = Decoder::new();
        while let Some(chunk) = out.next().await.unwrap() {
            dec.push(chunk).unwrap();
            while let Some(row) = dec.next_row().unwrap() {
                rows.push(row);
            }
        }
        dec.finish().unwrap();
        assert_eq!(out.rows(), Some(100));
    }
    assert_eq!(rows.len(), 100);
    let mut copy = c
        .copy_in("COPY t2 FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    Encoder::header(&mut buf);
    copy.write(&buf);
    for row in &rows {
        copy.write(row.as_bytes());
        copy.maybe_flush().await.unwrap();
    }
    copy.write(pgdog_protocol::copy_binary::TRAILER);
    assert_eq!(copy.finish().await.unwrap(), 100);
    let same = c
        .query("SELECT count(*) FROM (SELECT * FROM t EXCEPT SELECT * FROM t2) d")
        .await
        .unwrap();
    assert_eq!(same[0].text(0), Some("0"));

    // A failed COPY FROM leaves nothing and the connection usable.
    let mut copy = c
        .copy_in("COPY t2 FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    copy.write(&buf);
    copy.fail("test abort").await.unwrap();
    assert_eq!(
        c.query("SELECT count(*) FROM t2").await.unwrap()[0].text(0),
        Some("100")
    );

    // Cancel: a long sleep stopped by the client-side timeout.
    let err = c
        .query_timeout("SELECT pg_sleep(30)", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectionError::Timeout { .. }), "{err}");
    assert!(pgdog::data_sync::retry::connection_worth_retrying(&err));
    let mut check = cluster.connect("postgres").await.unwrap();
    for _ in 0..50 {
        let active = check
            .query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
            .await
            .unwrap();
        if active[0].text(0) == Some("0") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cancelled query is still running");
}

async fn replication_round_trip(install: Option<PgInstall>) {
    let cluster = Cluster::start(ClusterOptions {
        install,
        ..Default::default()
    })
    .unwrap();
    cluster
        .exec(
            "postgres",
            "CREATE TABLE items (id bigint PRIMARY KEY, name text);
             CREATE PUBLICATION pub FOR TABLE items;",
        )
        .await
        .unwrap();
    let mut repl = Connection::connect(&cluster.options("postgres", "postgres").replication(true))
        .await
        .unwrap();
    let ident = repl.identify_system().await.unwrap();
    assert!(ident.xlogpos > Lsn::ZERO);

    // A permanent slot, plus a temporary one whose snapshot a transaction uses.
    let slot = repl
        .create_replication_slot("pgdog_test_slot", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    assert!(slot.consistent_point > Lsn::ZERO);
    let mut snap = Connection::connect(&cluster.options("postgres", "postgres").replication(true))
        .await
        .unwrap();
    snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .unwrap();
    let temp = snap
        .create_replication_slot("pgdog_test_tmp", true, SnapshotAction::Use)
        .await
        .unwrap();
    assert!(temp.consistent_point >= slot.consistent_point);

    cluster
        .exec(
            "postgres",
            "INSERT INTO items VALUES (1, 'one'), (2, 'two');
             UPDATE items SET name = 'uno' WHERE id = 1;
             DELETE FROM items WHERE id = 2;",
        )
        .await
        .unwrap();
    // The snapshot predates the inserts.
    assert_eq!(
        snap.query("SELECT count(*) FROM items").await.unwrap()[0].text(0),
        Some("0")
    );
    snap.execute("COMMIT").await.unwrap();

    let version = if repl.server_version_num() >= 160000 {
        4
    } else {
        1
    };
    let mut stream = repl
        .start_replication(
            "pgdog_test_slot",
            Lsn::ZERO,
            &[
                ("proto_version", version.to_string()),
                ("publication_names", "\"pub\"".into()),
            ],
        )
        .await
        .unwrap();
    let mut decoder = pgoutput::Decoder::new(version);
    let mut seen = Vec::new();
    let mut last_end = Lsn::ZERO;
    while seen.len() < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.recv())
            .await
            .expect("changes within 20s")
            .unwrap()
            .expect("stream open");
        match msg {
            ServerMessage::XLogData { data, end, .. } => {
                last_end = last_end.max(end);
                match decoder.decode(data).unwrap() {
                    pgoutput::Message::Insert { new, .. } => {
                        seen.push(format!("I {}", text(new.get(1))))
                    }
                    pgoutput::Message::Update { new, .. } => {
                        seen.push(format!("U {}", text(new.get(1))))
                    }
                    pgoutput::Message::Delete { old, .. } => {
                        seen.push(format!("D {}", text(old.tuple().get(0))))
                    }
                    _ => {}
                }
            }
            ServerMessage::PrimaryKeepalive { reply: true, .. } => {
                stream
                    .send_status(last_end, last_end, last_end, false)
                    .await
                    .unwrap();
            }
            ServerMessage::PrimaryKeepalive { .. } => {}
        }
    }
    assert_eq!(seen, ["I one", "I two", "U uno", "D 2"]);
    stream
        .send_status(last_end, last_end, last_end, false)
        .await
        .unwrap();
    stream.stop().await.unwrap();
    repl.drop_replication_slot("pgdog_test_slot", false)
        .await
        .unwrap();
    let left = cluster
        .connect("postgres")
        .await
        .unwrap()
        .query("SELECT count(*) FROM pg_replication_slots")
        .await
        .unwrap();
    assert_eq!(
        left[0].text(0),
        Some("1"),
        "the temporary slot lives with its session"
    );
}

fn text(col: Option<Column<'_>>) -> String {
    match col {
        Some(Column::Text(v)) => String::from_utf8_lossy(v).into_owned(),
        Some(Column::Binary(v)) => format!("{:?}", Bytes::copy_from_slice(v)),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_slot_and_stream_pg15() {
    replication_round_trip(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_slot_and_stream_newer_postgres() {
    let Some(install) = PgInstall::newest_at_least(16) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 16+ found (run scripts/fetch-postgres.sh)");
        return;
    };
    replication_round_trip(Some(install)).await;
}

/// A message longer than the configured cap is a clean protocol error that
/// names the server, in a plain query and inside COPY, and the connection
/// refuses further use instead of misreading the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_cap_are_refused() {
    let cluster = Cluster::start_default().unwrap();
    let opts = cluster
        .options("postgres", "postgres")
        .max_message_size(64 * 1024);
    let mut c = Connection::connect(&opts).await.unwrap();
    // Under the cap: fine.
    let rows = c.query("SELECT repeat('x', 60000)").await.unwrap();
    assert_eq!(rows[0].text(0).map(str::len), Some(60000));
    // A 200 kB DataRow: refused before it is buffered.
    let err = c.query("SELECT repeat('x', 200000)").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectionError::Protocol { .. }), "{text}");
    assert!(
        text.contains(&format!("{}", cluster.port())),
        "names the server: {text}"
    );
    assert!(c.is_broken());
    assert!(
        c.query("SELECT 1").await.is_err(),
        "a broken connection is not reused"
    );

    // The same inside COPY, where CopyData frames are scanned in place.
    let mut c = Connection::connect(&opts).await.unwrap();
    let mut out = c
        .copy_out("COPY (SELECT repeat('y', 300000)) TO STDOUT")
        .await
        .unwrap();
    let mut result = Ok(None);
    for _ in 0..10 {
        result = out.next().await;
        if !matches!(result, Ok(Some(_))) {
            break;
        }
    }
    let err = result.expect_err("an oversized CopyData is an error");
    assert!(matches!(err, ConnectionError::Protocol { .. }), "{err}");
}
