//! The admin console: SHOW commands over the Postgres protocol, for psql.
//! (Being built: see issue 5.)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::data_sync::Registry;

/// Serve the admin console until `shutdown`.
pub async fn serve(
    _config: Arc<Config>,
    _registry: Arc<Registry>,
    _port: Option<u16>,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    shutdown.cancelled().await;
    Ok(())
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
            out.push_str(&format!(
                "cluster {name}: {} shard(s), {replicas} replica(s)\n",
                t.shards.len()
            ));
        }
    }
    out.push_str(&format!(
        "sharded tables: {}\n",
        config.sharded_tables.len()
    ));
    out.push_str(&format!("users: {}\n", config.users.len()));
    out
}
