//! How schema sync runs, from `[general]`.

use std::path::PathBuf;

use crate::config::Config;

/// How schema sync works, from `[general]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[general] pg_dump`: a program or the directory holding it.
    pub pg_dump: Option<PathBuf>,
    /// Index builds and foreign key validations at once, per destination
    /// shard.
    pub parallel: usize,
    /// `maintenance_work_mem` of those sessions.
    pub maintenance_work_mem: String,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            pg_dump: config.general.pg_dump.clone(),
            parallel: config
                .general
                .schema_sync_parallel
                .unwrap_or_else(default_parallel),
            maintenance_work_mem: config.general.schema_sync_maintenance_work_mem.clone(),
        }
    }
}

/// Default index builds at once per destination shard: 4, as a table
/// has a few indexes and each build also takes the server's parallel
/// maintenance workers; raise it for servers with many cores.
pub fn default_parallel() -> usize {
    4
}
