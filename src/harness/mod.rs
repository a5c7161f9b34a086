//! Throwaway local PostgreSQL clusters, for the tests, the demo and the
//! benchmark: initdb in a temp dir, a free loopback port, logical
//! replication on, everything removed on drop.

pub mod cluster;
pub mod fleet;
pub mod install;

pub use cluster::{Cluster, ClusterOptions, HarnessError};
pub use fleet::Fleet;
pub use install::PgInstall;
