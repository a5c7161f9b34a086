//! Cross-checks that TOML types alone cannot express: cluster shapes,
//! references between sections, TLS files.

use std::collections::BTreeMap;
use std::path::Path;

use super::{build_sharder, Config, ConfigError, Role};
use crate::net::{TlsConnector, TlsMode, TlsOptions};

/// Check everything; on success return the TLS connector for Postgres.
pub(super) fn check(config: &Config) -> Result<Option<TlsConnector>, ConfigError> {
    let file = config.path.as_path();
    database_entries(config, file)?;
    let clusters = clusters(config, file)?;
    references(config, file, &clusters)?;
    general(config, file)?;
    tls(config, file)
}

fn invalid(file: &Path, field: String, message: String) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        field,
        message,
    }
}

/// Cluster name -> shard number -> the indexes of its entries.
type Clusters<'a> = BTreeMap<&'a str, BTreeMap<usize, Vec<usize>>>;

fn database_entries(config: &Config, file: &Path) -> Result<(), ConfigError> {
    // Every database entry names a server.
    for (i, d) in config.databases.iter().enumerate() {
        if d.name.is_empty() {
            return Err(invalid(
                file,
                format!("databases[{i}].name"),
                "must not be empty".into(),
            ));
        }
        if d.host.is_empty() {
            return Err(invalid(
                file,
                format!("databases[{i}].host"),
                "must not be empty".into(),
            ));
        }
        if d.resharding_only && d.role != Role::Replica {
            return Err(invalid(
                file,
                format!("databases[{i}].resharding_only"),
                format!(
                    "only replicas can be resharding_only, but \"{}\" shard {} is a primary",
                    d.name, d.shard
                ),
            ));
        }
    }

    Ok(())
}

fn clusters<'a>(config: &'a Config, file: &Path) -> Result<Clusters<'a>, ConfigError> {
    // Shards of a cluster numbered 0..M-1 without gaps, one primary each.
    let mut clusters: Clusters = BTreeMap::new();
    for (i, d) in config.databases.iter().enumerate() {
        clusters
            .entry(&d.name)
            .or_default()
            .entry(d.shard)
            .or_default()
            .push(i);
    }
    for (name, shards) in &clusters {
        let count = shards.keys().max().map(|m| m + 1).unwrap_or(0);
        if let Some(missing) = (0..count).find(|s| !shards.contains_key(s)) {
            return Err(invalid(
                file,
                "databases".into(),
                format!(
                    "cluster \"{name}\" has shards up to {} but none numbered {missing}; shards must be numbered 0..{} without gaps",
                    count - 1,
                    count - 1
                ),
            ));
        }
        for (shard, entries) in shards {
            let primaries: Vec<usize> = entries
                .iter()
                .copied()
                .filter(|&i| config.databases[i].role == Role::Primary)
                .collect();
            match primaries.len() {
                1 => {}
                0 => {
                    return Err(invalid(
                        file,
                        format!("databases[{}]", entries[0]),
                        format!("cluster \"{name}\" shard {shard} has no primary; mark one entry role = \"primary\""),
                    ))
                }
                _ => {
                    return Err(invalid(
                        file,
                        format!("databases[{}]", primaries[1]),
                        format!(
                            "cluster \"{name}\" shard {shard} has {} primaries (databases[{}]); exactly one is allowed, mark the others role = \"replica\"",
                            primaries.len(),
                            primaries.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("], databases[")
                        ),
                    ))
                }
            }
        }
    }

    Ok(clusters)
}

/// Sharding rules and users name clusters that exist.
fn references(config: &Config, file: &Path, clusters: &Clusters) -> Result<(), ConfigError> {
    // Sharded tables refer to a cluster and their mappings fit it.
    for (i, t) in config.sharded_tables.iter().enumerate() {
        let Some(shards) = clusters.get(t.database.as_str()) else {
            return Err(invalid(
                file,
                format!("sharded_tables[{i}].database"),
                format!(
                    "\"{}\" is not a cluster in [[databases]]; clusters: {}",
                    t.database,
                    super::quoted_list(&clusters.keys().copied().collect::<Vec<_>>())
                ),
            ));
        };
        if t.column.is_empty() {
            return Err(invalid(
                file,
                format!("sharded_tables[{i}].column"),
                "must not be empty".into(),
            ));
        }
        let table = t.name.clone().unwrap_or_else(|| "*".into());
        build_sharder(t, &table, shards.len())
            .map_err(|m| invalid(file, format!("sharded_tables[{i}]"), m))?;
    }

    // Users refer to a cluster.
    for (i, u) in config.users.iter().enumerate() {
        if !clusters.contains_key(u.database.as_str()) {
            return Err(invalid(
                &config.users_path,
                format!("users[{i}].database"),
                format!(
                    "user \"{}\" is for database \"{}\", which is not a cluster in {}; clusters: {}",
                    u.name,
                    u.database,
                    config.path.display(),
                    super::quoted_list(&clusters.keys().copied().collect::<Vec<_>>())
                ),
            ));
        }
    }

    Ok(())
}

/// Limits and sizes in [general], and the admin console.
fn general(config: &Config, file: &Path) -> Result<(), ConfigError> {
    // A row of one column can be 1 GB; below 64 kB ordinary messages fail.
    if !(64 * 1024..=pgdog_protocol::frame::DEFAULT_MAX_FRAME + 1024)
        .contains(&config.general.max_message_size)
    {
        return Err(invalid(
            file,
            "general.max_message_size".into(),
            format!(
                "must be between 65536 and {} bytes",
                pgdog_protocol::frame::DEFAULT_MAX_FRAME + 1024
            ),
        ));
    }

    if config.general.schema_sync_parallel == Some(0) {
        return Err(invalid(
            file,
            "general.schema_sync_parallel".into(),
            "must be at least 1 (index builds at once per destination shard)".into(),
        ));
    }
    let mwm = config.general.schema_sync_maintenance_work_mem.trim();
    let digits = mwm
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .trim();
    let unit = mwm[digits.len()..].trim();
    if digits.parse::<u64>().is_err() || !["", "kB", "MB", "GB", "TB"].contains(&unit) {
        return Err(invalid(
            file,
            "general.schema_sync_maintenance_work_mem".into(),
            format!("\"{mwm}\" is not a PostgreSQL memory size: write it like 256MB or 1GB"),
        ));
    }

    // Admin console.
    if config.general.max_admin_connections == 0 {
        return Err(invalid(
            file,
            "general.max_admin_connections".into(),
            "must be at least 1 (0 would refuse every admin connection)".into(),
        ));
    }
    if config.admin.name.is_empty() {
        return Err(invalid(
            file,
            "admin.name".into(),
            "must not be empty".into(),
        ));
    }

    Ok(())
}

/// TLS towards Postgres, and our own listener's certificate.
fn tls(config: &Config, file: &Path) -> Result<Option<TlsConnector>, ConfigError> {
    // TLS towards Postgres.
    let Some(mode) = TlsMode::parse(&config.general.tls_verify) else {
        return Err(invalid(
            file,
            "general.tls_verify".into(),
            format!(
                "\"{}\" is not a TLS mode; use disabled, prefer, require, verify_ca or verify_full",
                config.general.tls_verify
            ),
        ));
    };
    let tls = TlsConnector::new(&TlsOptions {
        mode,
        ca_file: config.general.tls_server_ca_certificate.clone(),
        client_cert: None,
    })
    .map_err(|m| invalid(file, "general.tls_server_ca_certificate".into(), m))?;

    // Our own listener's certificate.
    match (
        &config.general.tls_certificate,
        &config.general.tls_private_key,
    ) {
        (Some(cert), Some(key)) => {
            crate::net::tls::check_server_identity(cert, key)
                .map_err(|m| invalid(file, "general.tls_certificate".into(), m))?;
        }
        (Some(_), None) => {
            return Err(invalid(
                file,
                "general.tls_private_key".into(),
                "tls_certificate is set but tls_private_key is not; set both or neither".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                file,
                "general.tls_certificate".into(),
                "tls_private_key is set but tls_certificate is not; set both or neither".into(),
            ))
        }
        (None, None) => {
            if config.general.tls_client_required {
                return Err(invalid(
                    file,
                    "general.tls_client_required".into(),
                    "TLS for clients is required but no tls_certificate/tls_private_key is set"
                        .into(),
                ));
            }
        }
    }
    Ok(tls)
}
