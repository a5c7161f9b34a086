//! A source cluster and a destination cluster made of throwaway servers,
//! with the pgdog config that describes them: what the demo, the tests and
//! the benchmark move data between.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdog_protocol::Lsn;

use super::cluster::{Cluster, ClusterOptions, HarnessError};
use crate::config::Config;
use crate::net::ConnectOptions;

/// The database every fleet server holds the data in.
pub const DATABASE: &str = "app";

/// Source shards and destination shards, each its own server.
#[derive(Debug)]
pub struct Fleet {
    pub sources: Vec<Cluster>,
    pub dests: Vec<Cluster>,
}

impl Fleet {
    /// Start `n` source and `m` destination servers (in parallel threads:
    /// each start takes a moment) and create the `app` database on each.
    pub async fn start(n: usize, m: usize, options: ClusterOptions) -> Result<Fleet, HarnessError> {
        Fleet::start_mixed(n, m, options.clone(), options).await
    }

    /// Sources made with `source`, destinations with `dest` (another
    /// PostgreSQL major version, say), all started at once.
    pub async fn start_mixed(
        n: usize,
        m: usize,
        source: ClusterOptions,
        dest: ClusterOptions,
    ) -> Result<Fleet, HarnessError> {
        let total = n + m;
        let handles: Vec<_> = (0..total)
            .map(|i| {
                let o = if i < n { source.clone() } else { dest.clone() };
                std::thread::spawn(move || Cluster::start(o))
            })
            .collect();
        let mut clusters = Vec::with_capacity(total);
        for h in handles {
            clusters.push(h.join().map_err(|_| HarnessError::NoInstall)??);
        }
        for c in &clusters {
            c.create_database(DATABASE).await?;
        }
        let dests = clusters.split_off(n);
        Ok(Fleet {
            sources: clusters,
            dests,
        })
    }

    /// Run the same SQL on every source shard.
    pub async fn on_sources(&self, sql: &str) -> Result<(), HarnessError> {
        for c in &self.sources {
            c.exec(DATABASE, sql).await?;
        }
        Ok(())
    }

    /// Run the same SQL on every destination shard.
    pub async fn on_dests(&self, sql: &str) -> Result<(), HarnessError> {
        for c in &self.dests {
            c.exec(DATABASE, sql).await?;
        }
        Ok(())
    }

    pub fn source_options(&self) -> Vec<ConnectOptions> {
        self.sources
            .iter()
            .map(|c| c.options("postgres", DATABASE))
            .collect()
    }

    pub fn dest_options(&self) -> Vec<ConnectOptions> {
        self.dests
            .iter()
            .map(|c| c.options("postgres", DATABASE))
            .collect()
    }

    /// `pgdog.toml` for clusters `source` and `dest`, plus `extra` TOML
    /// (sharded tables, general settings).
    pub fn pgdog_toml(&self, extra: &str) -> String {
        let mut out = String::from("[general]\nport = 0\ntls_verify = \"disabled\"\n");
        if let Some(pg_dump) = super::install::pg_dump() {
            out.push_str(&format!("pg_dump = \"{}\"\n", pg_dump.display()));
        }
        out.push('\n');
        for (name, servers) in [("source", &self.sources), ("dest", &self.dests)] {
            for (shard, c) in servers.iter().enumerate() {
                out.push_str(&format!(
                    "[[databases]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nshard = {shard}\ndatabase_name = \"{DATABASE}\"\n\n",
                    c.host(),
                    c.port()
                ));
            }
        }
        out.push_str(extra);
        out
    }

    /// `users.toml`: user `pgdog` (the superuser `postgres` on the servers)
    /// for both clusters.
    pub fn users_toml(&self) -> String {
        "[[users]]\nname = \"pgdog\"\ndatabase = \"source\"\nserver_user = \"postgres\"\n\n\
         [[users]]\nname = \"pgdog\"\ndatabase = \"dest\"\nserver_user = \"postgres\"\n"
            .to_string()
    }

    /// The config, loaded as the binary would load it.
    pub fn config(&self, extra: &str) -> Result<Arc<Config>, crate::config::ConfigError> {
        Config::from_strs(
            Path::new("pgdog.toml"),
            &self.pgdog_toml(extra),
            Path::new("users.toml"),
            &self.users_toml(),
        )
        .map(Arc::new)
    }

    /// Wait until `slot` has confirmed every source shard's current WAL
    /// insert position: the destination has everything committed before now.
    pub async fn wait_caught_up(&self, slot: &str, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        for (s, c) in self.sources.iter().enumerate() {
            let mut conn = c.connect(DATABASE).await?;
            // The insert position, not pg_current_wal_lsn(): with
            // synchronous_commit = off a transaction is committed before its
            // WAL is written, and it must be waited for too.
            let rows = conn
                .query("SELECT pg_current_wal_insert_lsn()::text")
                .await?;
            let target = rows[0].text(0).and_then(Lsn::parse).unwrap_or_default();
            loop {
                let rows = conn
                    .query(&format!(
                        "SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = '{slot}'"
                    ))
                    .await?;
                let confirmed = rows
                    .first()
                    .and_then(|r| r.text(0))
                    .and_then(Lsn::parse)
                    .unwrap_or_default();
                if confirmed >= target {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(HarnessError::Io {
                        what: format!("waiting for slot {slot} on source shard {s} to reach {target} (at {confirmed})"),
                        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}
