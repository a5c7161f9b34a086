//! The peers the figures measure pgdog against, and pgdog itself: one
//! function per setup, so every run starts and stops them the same way.
//!
//! - native logical replication: [`subscribe`], [`until_subscription_ready`],
//!   [`set_subscription_enabled`], [`unsubscribe`];
//! - the raw pipe: [`copy_pipe`];
//! - pgcopydb: [`pgcopydb_clone`];
//! - pgdog: [`data_sync`], [`timed_pgdog`], [`stop_pgdog`].

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pgdog::harness::fleet::DATABASE;
use pgdog::harness::Cluster;
use tokio::process::{Child, Command};

use crate::Result;

/// The `/usr/bin/time` format of a timed peer: wall, user, system, max RSS.
const USAGE_FORMAT: &str = "PGDOG_USAGE %e %U %S %M";

/// What `/usr/bin/time` says of a run.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall: f64,
    /// User plus system CPU seconds.
    pub cpu: f64,
    pub user: f64,
    pub max_rss_kb: u64,
}

impl Usage {
    /// The last usage line in `path`; without one the figures would be
    /// zeros, so its absence is an error.
    pub fn read(path: &Path) -> Result<Usage> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<f64> = text
            .lines()
            .rev()
            .find(|l| l.starts_with("PGDOG_USAGE"))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [wall, user, sys, rss] = v[..] else {
            return Err(format!(
                "{}: no usage line from /usr/bin/time (PGDOG_USAGE wall user sys rss)",
                path.display()
            )
            .into());
        };
        Ok(Usage {
            wall,
            cpu: user + sys,
            user,
            max_rss_kb: rss as u64,
        })
    }
}

/// The libpq connection string of database `dbname` on `c`.
pub fn conninfo(c: &Cluster, dbname: &str) -> String {
    format!(
        "host={} port={} user=postgres dbname={dbname}",
        c.host(),
        c.port()
    )
}

/// Native logical replication: subscribe `dest` to
/// `publication` on `source`, binary. With `named_slot` the slot's name is
/// spelled out; it is the subscription's name either way.
pub async fn subscribe(
    source: &Cluster,
    dest: &Cluster,
    name: &str,
    publication: &str,
    named_slot: bool,
) -> Result<()> {
    let slot = if named_slot {
        format!(", slot_name = '{name}'")
    } else {
        String::new()
    };
    dest.exec(
        DATABASE,
        &format!(
            "CREATE SUBSCRIPTION {name} CONNECTION '{}' PUBLICATION {publication} WITH (binary = true{slot})",
            conninfo(source, DATABASE)
        ),
    )
    .await?;
    Ok(())
}

/// Poll `dest` every `poll` until every table of its subscription is
/// ready, and there are `tables` of them when given. The seconds since
/// `started`, or `None` once `limit` has passed.
pub async fn until_subscription_ready(
    dest: &Cluster,
    tables: Option<usize>,
    poll: Duration,
    started: Instant,
    limit: Option<Duration>,
) -> Result<Option<f64>> {
    let mut c = dest.connect(DATABASE).await?;
    loop {
        let rows = c
            .query("SELECT count(*) FILTER (WHERE srsubstate = 'r'), count(*) FROM pg_subscription_rel")
            .await?;
        let ready: usize = rows[0].text(0).and_then(|t| t.parse().ok()).unwrap_or(0);
        let all: usize = rows[0].text(1).and_then(|t| t.parse().ok()).unwrap_or(0);
        if ready == all && tables.is_none_or(|n| n == all) {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
        if limit.is_some_and(|l| started.elapsed() > l) {
            return Ok(None);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Stop or resume applying a subscription (its slot keeps the backlog).
pub async fn set_subscription_enabled(dest: &Cluster, name: &str, enabled: bool) -> Result<()> {
    let verb = if enabled { "ENABLE" } else { "DISABLE" };
    dest.exec(DATABASE, &format!("ALTER SUBSCRIPTION {name} {verb}"))
        .await?;
    Ok(())
}

/// Drop a subscription, and with it its slot on the source.
pub async fn unsubscribe(dest: &Cluster, name: &str) -> Result<()> {
    dest.exec(DATABASE, &format!("DROP SUBSCRIPTION {name}"))
        .await?;
    Ok(())
}

/// The raw pipe, started: `psql -c COPY ... TO STDOUT | psql -c COPY ...
/// FROM STDIN`, binary, of `table` in database `dbname`. With `usage`, it
/// runs under `/usr/bin/time` writing there, so the CPU of both psql
/// processes is known (a shell's usage includes its children's).
pub fn copy_pipe(
    source: &Cluster,
    dest: &Cluster,
    dbname: &str,
    table: &str,
    usage: Option<&Path>,
) -> Result<Child> {
    let psql = "psql";
    let pipe = format!(
        "{psql} '{}' -Xqc \"COPY {table} TO STDOUT (FORMAT binary)\" | {psql} '{}' -Xqc \"COPY {table} FROM STDIN (FORMAT binary)\"",
        conninfo(source, dbname),
        conninfo(dest, dbname)
    );
    let mut cmd = match usage {
        Some(file) => {
            let mut cmd = Command::new("/usr/bin/time");
            cmd.args(["-f", USAGE_FORMAT, "-o"]).arg(file).arg("sh");
            cmd
        }
        None => Command::new("sh"),
    };
    Ok(cmd.args(["-c", &pipe]).kill_on_drop(true).spawn()?)
}

/// `pgcopydb clone` of database `dbname` into `dest`, its work files in
/// `dir` and its stderr in `log`; returns when it ends.
pub async fn pgcopydb_clone(
    pgcopydb: &Path,
    source: &Cluster,
    dest: &Cluster,
    dbname: &str,
    dir: &Path,
    log: std::fs::File,
) -> Result<ExitStatus> {
    let uri = |c: &Cluster| format!("postgres://postgres@{}:{}/{dbname}", c.host(), c.port());
    Ok(Command::new(pgcopydb)
        .args(["clone", "--no-owner", "--no-acl"])
        .arg("--source")
        .arg(uri(source))
        .arg("--target")
        .arg(uri(dest))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .await?)
}

/// Which move a pgdog subcommand acts on: the clusters of pgdog's config
/// and the publication.
#[derive(Debug, Clone, Copy)]
pub struct Move<'a> {
    pub from: &'a str,
    pub publication: &'a str,
    pub to: &'a str,
}

/// pgdog's command line for `subcommand` of a move, with the config files
/// in `dir`, as user `pgdog` on both sides.
fn pgdog_args(dir: &Path, subcommand: &str, m: Move) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--config".into(),
        dir.join("pgdog.toml").into(),
        "--users".into(),
        dir.join("users.toml").into(),
    ];
    args.extend(
        [
            subcommand,
            "--from-database",
            m.from,
            "--from-user",
            "pgdog",
            "--to-database",
            m.to,
            "--to-user",
            "pgdog",
            "--publication",
            m.publication,
        ]
        .map(OsString::from),
    );
    args
}

/// `pgdog data-sync` of publication `bench` from cluster `source` to `to`,
/// with the config files in `dir`, without an admin console; not started.
pub fn data_sync(pgdog: &Path, dir: &Path, to: &str) -> std::process::Command {
    let m = Move {
        from: "source",
        publication: "bench",
        to,
    };
    let mut cmd = std::process::Command::new(pgdog);
    cmd.args(pgdog_args(dir, "data-sync", m))
        .args(["--admin-port", "0"]);
    cmd
}

/// A pgdog subcommand of a move under `/usr/bin/time`, started, its stderr
/// (and the usage line) in `log`. `PGDOG_BENCH_WRAP` names a profiler or
/// tracer to run it under, `PGDOG_BENCH_LOG` its log level (`warn`).
pub fn timed_pgdog(
    pgdog: &Path,
    dir: &Path,
    subcommand: &str,
    m: Move,
    extra: &[&str],
    log: std::fs::File,
) -> Result<Child> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", USAGE_FORMAT]);
    // For example PGDOG_BENCH_WRAP="strace -c -f -o /tmp/strace.txt".
    if let Ok(wrap) = std::env::var("PGDOG_BENCH_WRAP") {
        cmd.args(wrap.split_whitespace());
    }
    let child = cmd
        .arg(pgdog)
        .args(pgdog_args(dir, subcommand, m))
        .args(extra)
        .env(
            "PGDOG_LOG",
            std::env::var("PGDOG_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

/// SIGTERM to a pgdog started by [`timed_pgdog`] (the child's child).
pub async fn stop_pgdog(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &pid.to_string()])
            .status()
            .await;
    }
}
