//! The two files as written on disk: `pgdog.toml` and `users.toml`.
//! Unknown keys are rejected so a typo is an error, not a silent default.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sharding::DataType;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PgdogToml {
    #[serde(default)]
    pub general: General,
    #[serde(default)]
    pub databases: Vec<Database>,
    #[serde(default)]
    pub sharded_tables: Vec<ShardedTable>,
    #[serde(default)]
    pub admin: Admin,
}

/// `[general]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Admin listener address.
    pub host: String,
    pub port: u16,
    /// TLS towards Postgres: `disabled`, `prefer`, `require`, `verify_ca`,
    /// `verify_full`.
    pub tls_verify: String,
    /// CA bundle for `verify_ca` / `verify_full`.
    pub tls_server_ca_certificate: Option<PathBuf>,
    /// Our own listener's certificate and key (PEM).
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// Refuse admin clients that do not use TLS (needs the two above).
    pub tls_client_required: bool,
    /// How many table copies run at once per source shard; `None` picks
    /// from the cores.
    pub resharding_parallel_copies: Option<usize>,
    /// Tables larger than this (bytes) are copied in several ctid ranges in
    /// parallel, within one snapshot; 0 never splits.
    pub resharding_copy_chunk_size: u64,
    /// Seconds a chunk of a table copied in key ranges aims to take: its
    /// snapshot is held that long.
    pub resharding_chunk_seconds: f64,
    /// Where to serve OpenMetrics text; off when unset.
    pub openmetrics_port: Option<u16>,
    /// Admin connections allowed at once.
    pub max_admin_connections: usize,
    /// The largest protocol message accepted from a server, in bytes: a
    /// corrupt or hostile length above it is an error, not an allocation.
    pub max_message_size: usize,
    /// The `pg_dump` schema sync runs (a program, or the directory that
    /// holds it); unset: `$PG_BIN`, then `$PATH`, then
    /// `/usr/lib/postgresql/*/bin`.
    pub pg_dump: Option<PathBuf>,
    /// Index builds and foreign key validations at once per destination
    /// shard after the copy; `None` picks from the cores.
    pub schema_sync_parallel: Option<usize>,
    /// `maintenance_work_mem` of those sessions (a PostgreSQL size).
    pub schema_sync_maintenance_work_mem: String,
    /// A table without a sharding rule is copied whole to every
    /// destination shard; above this size (bytes) that is a warning that
    /// names it.
    pub omnisharded_warning_size: u64,
    /// Install event triggers on each source shard that capture DDL, so
    /// schema changes reach the destination shards in stream order
    /// (needs a superuser on the source).
    pub resharding_capture_ddl: bool,
}

impl Default for General {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 6432,
            tls_verify: "prefer".into(),
            tls_server_ca_certificate: None,
            tls_certificate: None,
            tls_private_key: None,
            tls_client_required: false,
            resharding_parallel_copies: None,
            resharding_copy_chunk_size: 64 * 1024 * 1024,
            resharding_chunk_seconds: 2.0,
            openmetrics_port: None,
            max_admin_connections: 32,
            max_message_size: pgdog_protocol::frame::DEFAULT_MAX_FRAME,
            pg_dump: None,
            schema_sync_parallel: None,
            schema_sync_maintenance_work_mem: "256MB".into(),
            omnisharded_warning_size: 100 * 1024 * 1024,
            resharding_capture_ddl: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Primary,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

/// `[[databases]]`: one Postgres server of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// The cluster; its shards share the name.
    pub name: String,
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub shard: usize,
    /// The database on that server; defaults to `name`.
    pub database_name: Option<String>,
    /// A replica reserved for resharding copies.
    #[serde(default)]
    pub resharding_only: bool,
}

fn default_pg_port() -> u16 {
    5432
}

impl Database {
    pub fn database_name(&self) -> &str {
        self.database_name.as_deref().unwrap_or(&self.name)
    }
}

/// `[[sharded_tables]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardedTable {
    pub database: String,
    pub schema: Option<String>,
    /// Without a name, the rule covers every table having `column`.
    pub name: Option<String>,
    pub column: String,
    #[serde(default = "default_data_type")]
    pub data_type: DataType,
    /// List/range rules; hash when absent.
    pub mapping: Option<Vec<MappingRule>>,
}

fn default_data_type() -> DataType {
    DataType::Bigint
}

/// One `mapping` entry: `{ values = [...], shard = N }`,
/// `{ start = A, end = B, shard = N }` or `{ shard = N }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    pub values: Option<Vec<toml::Value>>,
    pub start: Option<toml::Value>,
    pub end: Option<toml::Value>,
    pub shard: usize,
}

/// `[admin]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub name: String,
    pub user: String,
    pub password: String,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            name: "admin".into(),
            user: "admin".into(),
            password: String::new(),
        }
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &"********")
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UsersToml {
    #[serde(default)]
    pub users: Vec<User>,
}

/// `[[users]]`: a login for one cluster.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub database: String,
    pub password: Option<String>,
    /// The Postgres login when it differs from `name`.
    pub server_user: Option<String>,
    pub server_password: Option<String>,
}

impl User {
    /// Role name used on the servers.
    pub fn server_user(&self) -> &str {
        self.server_user.as_deref().unwrap_or(&self.name)
    }

    /// Password used on the servers.
    pub fn server_password(&self) -> Option<&str> {
        self.server_password.as_deref().or(self.password.as_deref())
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mask = |p: &Option<String>| p.as_ref().map(|_| "********");
        f.debug_struct("User")
            .field("name", &self.name)
            .field("database", &self.database)
            .field("password", &mask(&self.password))
            .field("server_user", &self.server_user)
            .field("server_password", &mask(&self.server_password))
            .finish()
    }
}
