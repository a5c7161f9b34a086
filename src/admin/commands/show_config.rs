//! `SHOW CONFIG`: the settings in effect, the clusters and the sharding
//! rules, passwords masked.

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::text;
use crate::admin::reply::Reply;
use crate::config::Config;

/// What a set password shows as.
pub const MASK: &str = "********";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowConfig;

impl AdminCommand for ShowConfig {
    const USAGE: Usage = Usage {
        syntax: "SHOW CONFIG",
        description: "settings in effect, clusters and sharded tables (passwords masked)",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowConfig)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new("SHOW", &["section", "name", "value"]);
        for (section, name, value) in settings(&ctx.config) {
            reply.push(vec![text(section), text(name), value]);
        }
        Ok(reply)
    }
}

/// One line of SHOW CONFIG: section, name, value (`None`: unset).
type Setting = (&'static str, String, Option<String>);

/// Every (section, name, value) shown; `None` is an unset setting.
fn settings(c: &Config) -> Vec<Setting> {
    let g = &c.general;
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let mut out: Vec<Setting> = vec![
        (
            "files",
            "pgdog.toml".into(),
            Some(c.path.display().to_string()),
        ),
        (
            "files",
            "users.toml".into(),
            Some(c.users_path.display().to_string()),
        ),
        ("general", "host".into(), Some(g.host.clone())),
        ("general", "port".into(), Some(g.port.to_string())),
        ("general", "tls_verify".into(), Some(g.tls_verify.clone())),
        (
            "general",
            "tls_server_ca_certificate".into(),
            path(&g.tls_server_ca_certificate),
        ),
        (
            "general",
            "tls_certificate".into(),
            path(&g.tls_certificate),
        ),
        (
            "general",
            "tls_private_key".into(),
            path(&g.tls_private_key),
        ),
        (
            "general",
            "tls_client_required".into(),
            Some(g.tls_client_required.to_string()),
        ),
        (
            "general",
            "resharding_parallel_copies".into(),
            Some(match g.resharding_parallel_copies {
                Some(n) => n.to_string(),
                None => format!("{} (from the cores)", crate::data_sync::default_parallel()),
            }),
        ),
        (
            "general",
            "resharding_copy_chunk_size".into(),
            Some(g.resharding_copy_chunk_size.to_string()),
        ),
        (
            "general",
            "openmetrics_port".into(),
            g.openmetrics_port.map(|p| p.to_string()),
        ),
        (
            "general",
            "max_admin_connections".into(),
            Some(g.max_admin_connections.to_string()),
        ),
        ("admin", "name".into(), Some(c.admin.name.clone())),
        ("admin", "user".into(), Some(c.admin.user.clone())),
        (
            "admin",
            "password".into(),
            (!c.admin.password.is_empty()).then(|| MASK.to_string()),
        ),
    ];
    out.extend(databases(c));
    out.extend(sharded_tables(c));
    out
}

/// Each server of each cluster.
fn databases(c: &Config) -> Vec<Setting> {
    let mut out = Vec::new();
    for name in c.cluster_names() {
        let Ok(topology) = c.cluster(name) else {
            continue;
        };
        for shard in &topology.shards {
            let servers = std::iter::once(&shard.primary).chain(&shard.replicas);
            for d in servers {
                let mut value = format!("{}:{}/{}", d.host, d.port, d.database_name());
                if d.resharding_only {
                    value.push_str(" (resharding only)");
                }
                out.push((
                    "databases",
                    format!("{name} shard {} {}", shard.number, d.role),
                    Some(value),
                ));
            }
        }
    }
    out
}

/// Each sharding rule.
fn sharded_tables(c: &Config) -> Vec<Setting> {
    let mut out = Vec::new();
    for t in &c.sharded_tables {
        let table = match (&t.schema, &t.name) {
            (Some(s), Some(n)) => format!("{s}.{n}"),
            (None, Some(n)) => n.clone(),
            (Some(s), None) => format!("{s}.* with column {}", t.column),
            (None, None) => format!("* with column {}", t.column),
        };
        let function = match &t.mapping {
            None => "hash".to_string(),
            Some(rules) => format!("mapping ({} rules)", rules.len()),
        };
        out.push((
            "sharded_tables",
            format!("{}: {table}", t.database),
            Some(format!("{} {}, {function}", t.column, t.data_type)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::Registry;

    #[tokio::test]
    async fn masks_passwords() {
        let config = Config::from_strs(
            Path::new("pgdog.toml"),
            "[general]\nport = 7000\ntls_verify = \"disabled\"\n[admin]\npassword = \"hunter2\"\n\
             [[databases]]\nname = \"d\"\nhost = \"h\"\n[[databases]]\nname = \"d\"\nhost = \"r\"\nrole = \"replica\"\n\
             [[sharded_tables]]\ndatabase = \"d\"\nname = \"users\"\ncolumn = \"id\"\n",
            Path::new("users.toml"),
            "[[users]]\nname = \"u\"\ndatabase = \"d\"\npassword = \"secret-pw\"\n",
        )
        .unwrap();
        let ctx = Context::new(
            Arc::new(config),
            Arc::new(Registry::default()),
            Default::default(),
        );
        let reply = ShowConfig.execute(&ctx).await.unwrap();
        let all = format!("{:?}", reply.rows);
        assert!(
            !all.contains("hunter2") && !all.contains("secret-pw"),
            "{all}"
        );
        assert!(all.contains(MASK));
        assert!(all.contains("d shard 0 replica"), "{all}");
        assert!(all.contains("h:5432/d"), "{all}");
        assert!(all.contains("id bigint, hash"), "{all}");
        let port = reply
            .rows
            .iter()
            .find(|r| r[1].as_deref() == Some("port"))
            .unwrap();
        assert_eq!(port[2].as_deref(), Some("7000"));
    }
}
