//! A throwaway Postgres cluster: a data directory in a temp dir, a free
//! loopback port, settings for logical replication, stopped and removed on
//! drop (its log tail printed if the test is failing).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::install::{chown_to_postgres, pg_command, PgInstall};
use crate::net::{ConnectOptions, Connection, ConnectionError};

/// What can go wrong starting a cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("no PostgreSQL server binaries found: set PG_BIN to a directory with initdb, pg_ctl and postgres, or install them (apt-get install postgresql)")]
    NoInstall,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}); log {log}:\n{tail}")]
    Command {
        command: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

type Result<T, E = HarnessError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// How to set up a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub install: Option<PgInstall>,
    /// `ssl = on` with the certificates in `certs/`.
    pub ssl: bool,
    /// `pg_hba.conf` lines placed before the defaults (which trust every
    /// local TCP connection, replication included).
    pub hba: Vec<String>,
    /// Extra `postgresql.conf` settings, after the defaults.
    pub settings: Vec<(String, String)>,
    /// Also listen on these loopback addresses (besides 127.0.0.1).
    pub extra_listen: Vec<String>,
}

impl ClusterOptions {
    pub fn install(mut self, install: PgInstall) -> Self {
        self.install = Some(install);
        self
    }
    pub fn ssl(mut self) -> Self {
        self.ssl = true;
        self
    }
    pub fn hba(mut self, line: &str) -> Self {
        self.hba.push(line.to_string());
        self
    }
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running throwaway cluster. Dropping it stops the server and deletes
/// its directory (unless `PGDOG_KEEP_CLUSTERS` is set).
#[derive(Debug)]
pub struct Cluster {
    pub install: PgInstall,
    /// Temp dir holding `data/`, the log, the socket and TLS files.
    dir: PathBuf,
    port: u16,
    running: bool,
    /// Settings written to `postgresql.auto.conf` after the port (a
    /// standby's connection to its primary).
    auto_conf: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// initdb (from a cached template), configure and start.
    pub fn start(options: ClusterOptions) -> Result<Cluster> {
        let install = match options.install.clone() {
            Some(i) => i,
            None => PgInstall::default_install().ok_or(HarnessError::NoInstall)?,
        };
        let dir = new_temp_dir()?;
        let mut cluster = Cluster {
            install,
            dir,
            port: 0,
            running: false,
            auto_conf: String::new(),
        };
        cluster.init(&options)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// Pick a free port and start. A port found free can be taken by
    /// someone else before the server binds it; try a few.
    fn start_on_free_port(&mut self) -> Result<()> {
        let cluster = self;
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            cluster.write_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.running = true;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(HarnessError::NoInstall))
    }

    /// A primary and `n` streaming standbys (hot standby feedback on, a
    /// physical slot each). The standbys start as cold copies of the
    /// primary's data directory, which the primary is stopped for.
    pub async fn start_with_standbys(
        options: ClusterOptions,
        n: usize,
    ) -> Result<(Cluster, Vec<Cluster>)> {
        let mut primary = Cluster::start(options)?;
        for i in 0..n {
            primary
                .exec(
                    "postgres",
                    &format!("SELECT pg_create_physical_replication_slot('standby{i}')"),
                )
                .await?;
        }
        primary.stop()?;
        let mut standbys = Vec::with_capacity(n);
        for i in 0..n {
            let dir = new_temp_dir()?;
            let status = Command::new("cp")
                .arg("-a")
                .arg(primary.data_dir())
                .arg(dir.join("data"))
                .status()
                .map_err(io("copying the primary's data directory"))?;
            if !status.success() {
                return Err(HarnessError::Io {
                    what: "cp -a of the primary's data directory".into(),
                    source: std::io::Error::other("copy failed"),
                });
            }
            std::fs::write(dir.join("data").join("standby.signal"), "")
                .map_err(io("writing standby.signal"))?;
            let mut standby = Cluster {
                install: primary.install.clone(),
                auto_conf: format!(
                    "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby{i}'\n\
                     primary_slot_name = 'standby{i}'\nhot_standby = on\nhot_standby_feedback = on\n\
                     unix_socket_directories = '{}'\n",
                    primary.port,
                    dir.display()
                ),
                dir,
                port: 0,
                running: false,
            };
            chown_to_postgres(&standby.dir).map_err(io("chown of the standby directory"))?;
            standby.start_on_free_port()?;
            standbys.push(standby);
        }
        primary.start_again()?;
        // Wait until every standby streams.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = primary.connect("postgres").await?;
            let rows = c
                .query("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                .await?;
            if rows[0].text(0).and_then(|t| t.parse::<usize>().ok()) == Some(n) {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Io {
                    what: format!("waiting for {n} standbys to stream"),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((primary, standbys))
    }

    /// Start a cluster with default options.
    pub fn start_default() -> Result<Cluster> {
        Self::start(ClusterOptions::default())
    }

    fn init(&mut self, options: &ClusterOptions) -> Result<()> {
        let template = template_for(&self.install)?;
        let data = self.data_dir();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .map_err(io("copying the template data directory"))?;
        if !status.success() {
            return Err(HarnessError::Io {
                what: format!("cp -a {} {}", template.display(), data.display()),
                source: std::io::Error::other("copy failed"),
            });
        }
        let mut conf = format!(
            "\n# pgdog test harness\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_wal_senders = 40\nmax_replication_slots = 40\n\
             max_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 64MB\nmax_worker_processes = 16\nwal_sender_timeout = 60s\n\
             log_min_messages = warning\nlog_line_prefix = '%m [%p] %q%u@%d '\n",
            std::iter::once("127.0.0.1".to_string())
                .chain(options.extra_listen.iter().cloned())
                .collect::<Vec<_>>()
                .join(","),
            self.dir.display()
        );
        if options.ssl {
            let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
            for f in ["server.pem", "server.key", "ca.pem"] {
                std::fs::copy(certs.join(f), self.dir.join(f))
                    .map_err(io(format!("copying certs/{f}")))?;
            }
            set_mode(&self.dir.join("server.key"), 0o600)?;
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{d}/server.pem'\nssl_key_file = '{d}/server.key'\nssl_ca_file = '{d}/ca.pem'\n",
                d = self.dir.display()
            ));
        }
        for (k, v) in &options.settings {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let mut hba = String::new();
        for line in &options.hba {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n\
             host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n",
        );
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(io("writing pg_hba.conf"))?;
        chown_to_postgres(&self.dir).map_err(io("chown of the cluster directory"))?;
        Ok(())
    }

    fn write_port(&self) -> Result<()> {
        std::fs::write(
            self.data_dir().join("postgresql.auto.conf"),
            format!("port = {}\n{}", self.port, self.auto_conf),
        )
        .map_err(io("writing the port"))?;
        chown_to_postgres(&self.data_dir().join("postgresql.auto.conf")).map_err(io("chown"))
    }

    fn pg_ctl_start(&self) -> Result<()> {
        self.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some(self.log_path()))
    }

    fn pg_ctl(&self, args: &[&str], log: Option<PathBuf>) -> Result<()> {
        let mut cmd = pg_command(&self.install.tool("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir());
        cmd.args(args);
        if let Some(log) = log {
            cmd.arg(log);
        }
        let out = cmd.output().map_err(io(format!(
            "running {}",
            self.install.tool("pg_ctl").display()
        )))?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: format!("pg_ctl {}", args.join(" ")),
                status: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                log: self.log_path().display().to_string(),
                tail: self.log_tail(30),
            });
        }
        Ok(())
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Connection options for `user` on `database`, plain TCP, no password.
    pub fn options(&self, user: &str, database: &str) -> ConnectOptions {
        ConnectOptions::new(self.host(), self.port, user, database)
    }

    /// Connect as the superuser `postgres`.
    pub async fn connect(&self, database: &str) -> Result<Connection> {
        Ok(Connection::connect(&self.options("postgres", database)).await?)
    }

    /// Run SQL as `postgres` on `database` (a convenience for tests).
    pub async fn exec(&self, database: &str, sql: &str) -> Result<()> {
        let mut c = self.connect(database).await?;
        c.execute(sql).await?;
        c.close().await;
        Ok(())
    }

    /// Create a database.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        self.exec("postgres", &format!("CREATE DATABASE \"{name}\""))
            .await
    }

    /// Stop the server (fast shutdown); `start_again` brings it back.
    pub fn stop(&mut self) -> Result<()> {
        if self.running {
            self.pg_ctl(&["stop", "-w", "-m", "fast"], None)?;
            self.running = false;
        }
        Ok(())
    }

    /// Kill the server without a checkpoint, as a crash would.
    pub fn crash(&mut self) -> Result<()> {
        if self.running {
            self.pg_ctl(&["stop", "-w", "-m", "immediate"], None)?;
            self.running = false;
        }
        Ok(())
    }

    /// Start again on the same port.
    pub fn start_again(&mut self) -> Result<()> {
        if !self.running {
            self.pg_ctl_start()?;
            self.running = true;
        }
        Ok(())
    }

    /// Restart (fast stop, then start) on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    pub fn is_running(&self) -> bool {
        self.running
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- server log of the cluster on port {} ({}), last lines ---\n{}\n---",
                self.port,
                self.log_path().display(),
                self.log_tail(40)
            );
        }
        if self.running {
            let _ = self.pg_ctl(&["stop", "-w", "-m", "immediate"], None);
        }
        if std::env::var_os("PGDOG_KEEP_CLUSTERS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept cluster directory {}", self.dir.display());
        }
    }
}

fn new_temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!(
        "pgdog-pg-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    set_mode(&dir, 0o700)?;
    Ok(dir)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", path.display())))
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

/// A free loopback port, as the kernel hands it out.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

/// An initdb'd data directory per install, made once and copied for every
/// cluster (initdb takes seconds; a copy takes milliseconds). Several test
/// processes may race to make it: a lock directory serializes them.
fn template_for(install: &PgInstall) -> Result<PathBuf> {
    let key: u64 = install
        .bin
        .to_string_lossy()
        .bytes()
        .fold(0xcbf29ce484222325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
    let root = std::env::temp_dir().join("pgdog-templates");
    std::fs::create_dir_all(&root).map_err(io("creating the template directory"))?;
    let template = root.join(format!("pg{}-{key:016x}", install.major));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let lock = root.join(format!("pg{}-{key:016x}.lock", install.major));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => {
                if template.join("PG_VERSION").exists() {
                    return Ok(template);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => {
                // A holder died; take over.
                let _ = std::fs::remove_dir_all(&lock);
                let _ = std::fs::create_dir(&lock);
                break;
            }
        }
    }
    let result = (|| {
        if template.join("PG_VERSION").exists() {
            return Ok(());
        }
        let staging = root.join(format!(
            "pg{}-{key:016x}.staging-{}",
            install.major,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io("creating the staging directory"))?;
        chown_to_postgres(&staging).map_err(io("chown staging"))?;
        let data = staging.join("data");
        let out = pg_command(&install.tool("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(io(format!("running {}", install.tool("initdb").display())))?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: "initdb".into(),
                status: out.status.to_string(),
                log: String::new(),
                tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        std::fs::rename(&data, &template).map_err(io("moving the template into place"))?;
        let _ = std::fs::remove_dir_all(&staging);
        Ok(())
    })();
    let _ = std::fs::remove_dir(&lock);
    result.map(|_| template)
}
