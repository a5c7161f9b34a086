//! pgdog: the data-moving part of a PostgreSQL sharding proxy.
//!
//! - [`config`]: `pgdog.toml` and `users.toml`.
//! - [`net`]: client connections to Postgres (TLS, auth, queries, COPY,
//!   replication mode) over the sans-IO `pgdog-protocol` crate.
//! - [`sharding`]: which shard a row belongs to, exactly as PostgreSQL hash
//!   partitioning would place it.
//! - [`data_sync`]: the online copy and the logical replication stream.
//! - [`harness`]: throwaway local Postgres clusters for tests and the demo.
//! - [`names`]: table names and SQL quoting.
//! - [`report`] and [`logging`]: what the operator sees on the terminal.

// No function here runs past 100 lines (clippy.toml sets the limit; CI
// denies warnings).
#![warn(clippy::too_many_lines)]

pub mod admin;
pub mod config;
pub mod data_sync;
pub mod demo;
pub mod harness;
pub mod logging;
pub mod names;
pub mod net;
pub mod report;
pub mod sharding;
