use pgdog::harness::{Cluster, ClusterOptions, PgInstall};
use pgdog::net::replication::SnapshotAction;
use pgdog::net::Connection;
async fn probe(
    s: pgdog::net::ConnectOptions,
    p: pgdog::net::ConnectOptions,
    name: String,
) -> String {
    let mut repl = Connection::connect(&s.replication(true)).await.unwrap();
    repl.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .unwrap();
    let slot = repl
        .create_replication_slot(&name, true, SnapshotAction::Use)
        .await
        .unwrap();
    let l = slot.consistent_point;
    let rows = repl
        .query("SELECT coalesce(max(i), -1), count(*) FROM log")
        .await
        .unwrap();
    let maxi: i64 = rows[0].text(0).unwrap().parse().unwrap();
    let mut pc = Connection::connect(&p).await.unwrap();
    let before = pc
        .query(&format!(
            "SELECT count(*), max(i) FROM log WHERE lsn < '{l}'"
        ))
        .await
        .unwrap();
    format!("{name}: L={l} snapshot sees {} rows (max i {maxi}); primary rows with lsn < L: {:?} max {:?}", rows[0].text(1).unwrap(), before[0].text(0), before[0].text(1))
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment() {
    let install = PgInstall::newest_at_least(16).unwrap();
    let opts = ClusterOptions {
        install: Some(install),
        ..Default::default()
    };
    let (primary, standbys) = Cluster::start_with_standbys(opts, 2).await.unwrap();
    primary.exec("postgres", "CREATE TABLE log (i int primary key, lsn pg_lsn); CREATE TABLE other (i int primary key, n int)").await.unwrap();
    primary
        .exec(
            "postgres",
            "INSERT INTO other SELECT generate_series(1, 10000), 0",
        )
        .await
        .unwrap();
    let popts = primary.options("postgres", "postgres");
    let w = tokio::spawn(async move {
        let mut c = Connection::connect(&popts).await.unwrap();
        for i in 0..200000 {
            c.execute(&format!("INSERT INTO log VALUES ({i}, pg_current_wal_insert_lsn()); UPDATE other SET n = n + 1 WHERE i = {}; DELETE FROM other WHERE i = {};", i % 10000 + 1, i % 10000 + 5000)).await.unwrap();
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // a permanent slot on the primary first, as data-sync does
    let mut prepl = Connection::connect(&primary.options("postgres", "postgres").replication(true))
        .await
        .unwrap();
    let perm = prepl
        .create_replication_slot("perm", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    eprintln!("permanent slot at {}", perm.consistent_point);
    let p2 = primary.options("postgres", "postgres");
    let kick = tokio::spawn(async move {
        let mut c = Connection::connect(&p2).await.unwrap();
        loop {
            c.execute("SELECT pg_log_standby_snapshot()").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    for round in 0..3 {
        let p = primary.options("postgres", "postgres");
        let a = tokio::spawn(probe(
            standbys[0].options("postgres", "postgres"),
            p.clone(),
            format!("a{round}"),
        ));
        let b = tokio::spawn(probe(
            standbys[0].options("postgres", "postgres"),
            p.clone(),
            format!("b{round}"),
        ));
        let c = tokio::spawn(probe(
            standbys[1].options("postgres", "postgres"),
            p.clone(),
            format!("c{round}"),
        ));
        eprintln!(
            "{}\n{}\n{}",
            a.await.unwrap(),
            b.await.unwrap(),
            c.await.unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    kick.abort();
    w.abort();
}
