//! Throwaway local PostgreSQL clusters, for the tests, the demo and the
//! benchmark: initdb in a temp dir, a free loopback port, logical
//! replication on, everything removed on drop.

pub mod cluster;
pub mod fleet;
pub mod install;

pub use cluster::{Cluster, ClusterOptions, HarnessError};
pub use fleet::Fleet;
pub use install::PgInstall;

/// A test that needs a PostgreSQL version this machine lacks: skipped on a
/// developer's machine, a failure under CI (`CI` set), where
/// `scripts/setup.sh` installs every version the tests use.
pub fn skip_unless_ci(why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{why}, but CI must run this test: scripts/setup.sh installs it");
    }
    eprintln!("SKIP: {why}");
}
