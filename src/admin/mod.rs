//! The admin console: a PostgreSQL-protocol server (built on pgwire) that
//! psql logs in to with SCRAM, answering SHOW commands from the live
//! progress of data-sync tasks ([`crate::data_sync::Registry`]) and
//! starting and stopping moves; plus an OpenMetrics endpoint.
//!
//! `server` accepts sessions (limit, TLS, startup timeout, shutdown);
//! `auth` admits or refuses a startup packet and runs SCRAM; `console`
//! runs queries as commands, which live one per file in `commands/`;
//! `metrics` renders and serves the metrics.

mod auth;
mod commands;
mod console;
mod error;
mod format;
mod metrics;
mod reply;
mod server;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::data_sync::Registry;

pub use error::{AdminError, CommandError};
pub use server::{AdminServer, STARTUP_TIMEOUT};

/// Serve the admin console (on `port`, or `[general] port` when `None`)
/// and, when `[general] openmetrics_port` is set, the metrics endpoint,
/// until `shutdown`.
pub async fn serve(
    config: Arc<Config>,
    registry: Arc<Registry>,
    port: Option<u16>,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    AdminServer::bind(config, registry, port)
        .await?
        .run(shutdown)
        .await
}

/// The summary `pgdog configcheck` prints.
pub fn config_summary(config: &Config) -> String {
    let mut out = format!(
        "{} and {} are valid\n",
        config.path.display(),
        config.users_path.display()
    );
    for name in config.cluster_names() {
        if let Ok(t) = config.cluster(name) {
            let replicas: usize = t.shards.iter().map(|s| s.replicas.len()).sum();
            let users = config.users.iter().filter(|u| u.database == name).count();
            out.push_str(&format!(
                "cluster {name}: {} shard(s), {replicas} replica(s), {users} user(s)\n",
                t.shards.len()
            ));
        }
    }
    out.push_str(&format!(
        "sharded tables: {}\n",
        config.sharded_tables.len()
    ));
    out.push_str(&format!("users: {}\n", config.users.len()));
    let g = &config.general;
    let tls = match (&g.tls_certificate, g.tls_client_required) {
        (None, _) => "no TLS",
        (Some(_), false) => "TLS offered",
        (Some(_), true) => "TLS required",
    };
    out.push_str(&format!(
        "admin console: {}:{} database \"{}\" user \"{}\", {tls}, at most {} sessions\n",
        g.host, g.port, config.admin.name, config.admin.user, g.max_admin_connections
    ));
    if config.admin.password.is_empty() {
        out.push_str(
            "  warning: [admin] password is not set, so every admin login will be refused\n",
        );
    }
    match g.openmetrics_port {
        Some(p) => out.push_str(&format!("metrics: http://{}:{p}/metrics\n", g.host)),
        None => out.push_str("metrics: off (set [general] openmetrics_port)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn summary_mentions_console_and_metrics() {
        let c = Config::from_strs(
            Path::new("pgdog.toml"),
            "[general]\ntls_verify = \"disabled\"\nopenmetrics_port = 9090\n[[databases]]\nname = \"d\"\nhost = \"h\"\n",
            Path::new("users.toml"),
            "[[users]]\nname = \"u\"\ndatabase = \"d\"\n",
        )
        .unwrap();
        let s = config_summary(&c);
        assert!(
            s.contains("cluster d: 1 shard(s), 0 replica(s), 1 user(s)"),
            "{s}"
        );
        assert!(s.contains("password is not set"), "{s}");
        assert!(s.contains(":9090/metrics"), "{s}");
    }
}
