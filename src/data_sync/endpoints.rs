//! Connection options for every server of the move, from the config and
//! the two users given on the command line.

use std::sync::Arc;

use crate::config::{Config, Database, Topology, User};
use crate::net::{ConnectOptions, Connection};

use super::error::Result;

/// Startup settings of every session pgdog opens, whatever the server,
/// database or role defaults say. No timeout: a copy, a slot creation
/// waiting for old transactions, a snapshot held open for the whole copy
/// and an apply session idle between changes all legitimately take long.
/// Text values in a fixed format, as a subscription's walsender and table
/// sync read them: dates in ISO, intervals in the postgres style, floats
/// with every digit (so they survive the trip exactly). Backslashes in
/// string literals are plain characters. No JIT: pgdog's catalog queries
/// are estimated expensive (unions over catalogs) but run in
/// milliseconds, and compiling them took seconds.
pub const SESSION_SETTINGS: [(&str, &str); 9] = [
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("standard_conforming_strings", "on"),
    ("jit", "off"),
];

/// Where the source and destination shards are and who logs in.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub config: Arc<Config>,
    pub source: Topology,
    pub dest: Topology,
    source_user: User,
    dest_user: User,
}

impl Endpoints {
    pub fn new(
        config: Arc<Config>,
        from_db: &str,
        from_user: &str,
        to_db: &str,
        to_user: &str,
    ) -> Result<Endpoints> {
        let source = config.cluster(from_db)?;
        let dest = config.cluster(to_db)?;
        let source_user = config.user(from_user, from_db)?.clone();
        let dest_user = config.user(to_user, to_db)?.clone();
        Ok(Endpoints {
            config,
            source,
            dest,
            source_user,
            dest_user,
        })
    }

    /// The endpoints of a move's command line.
    pub fn of_move(config: Arc<Config>, opts: &super::options::Options) -> Result<Endpoints> {
        Endpoints::new(
            config,
            &opts.from_database,
            &opts.from_user,
            &opts.to_database,
            &opts.to_user,
        )
    }

    fn options(&self, server: &Database, user: &User, role: &str) -> ConnectOptions {
        let mut o = self.config.connect_options(server, user);
        o.application_name = format!("pgdog data-sync {role}");
        o.params.extend(
            SESSION_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        o
    }

    /// The primary of source shard `s`.
    pub fn source(&self, s: usize) -> ConnectOptions {
        self.options(&self.source.shards[s].primary, &self.source_user, "source")
    }

    /// A server of source shard `s`: the primary or one of its replicas.
    pub fn source_server(&self, server: &Database) -> ConnectOptions {
        self.options(server, &self.source_user, "source")
    }

    /// The primary of destination shard `d`.
    pub fn dest(&self, d: usize) -> ConnectOptions {
        self.options(&self.dest.shards[d].primary, &self.dest_user, "destination")
    }

    /// `destination shard 1 (127.0.0.1:6432)`, for messages.
    pub fn describe_dest(&self, d: usize) -> String {
        let o = self.dest(d);
        format!("destination shard {d} ({}:{})", o.host, o.port)
    }

    pub async fn connect_source(&self, s: usize, replication: bool) -> Result<Connection> {
        Ok(Connection::connect(&self.source(s).replication(replication)).await?)
    }

    /// A session on destination shard `d` that behaves like a
    /// subscription's apply worker: `session_replication_role = replica`,
    /// so foreign keys and ordinary triggers (checked and fired on the
    /// source already) do not fire, and tables fill in any order.
    /// Preflight checks the user may set it.
    pub async fn connect_dest(&self, d: usize) -> Result<Connection> {
        let mut conn = Connection::connect(&self.dest(d)).await?;
        conn.execute("SET session_replication_role = replica")
            .await?;
        Ok(conn)
    }

    pub fn source_user(&self) -> &str {
        self.source_user.server_user()
    }

    pub fn dest_user(&self) -> &str {
        self.dest_user.server_user()
    }
}
