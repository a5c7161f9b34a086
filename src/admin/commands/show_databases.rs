//! `SHOW DATABASES`: every server of every cluster, and whether pgdog can
//! log in to it right now (one short connection attempt each, in
//! parallel, as the first users.toml login of that cluster).

use std::time::Duration;

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::{text, Cell};
use crate::admin::reply::Reply;
use crate::config::{Config, Database, Role};
use crate::net::Connection;

/// How long a reachability check may take: the console answers within it
/// even when a server black-holes packets.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowDatabases;

impl AdminCommand for ShowDatabases {
    const USAGE: Usage = Usage {
        syntax: "SHOW DATABASES",
        description: "servers of every cluster and whether pgdog can log in to them now",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowDatabases)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let config = &ctx.config;
        // By cluster, then shard, primary first.
        let mut servers: Vec<&Database> = Vec::new();
        for name in config.cluster_names() {
            let mut members: Vec<&Database> =
                config.databases.iter().filter(|d| d.name == name).collect();
            members.sort_by_key(|d| (d.shard, d.role != Role::Primary));
            servers.extend(members);
        }
        let probes = futures::future::join_all(servers.iter().map(|d| probe(config, d))).await;
        let mut reply = Reply::new(
            "SHOW",
            &[
                "cluster",
                "shard",
                "role",
                "host",
                "port",
                "database",
                "reachable",
                "detail",
            ],
        );
        for (d, (reachable, detail)) in servers.iter().zip(probes) {
            reply.push(vec![
                text(&d.name),
                text(d.shard),
                text(d.role),
                text(&d.host),
                text(d.port),
                text(d.database_name()),
                text(reachable),
                detail,
            ]);
        }
        Ok(reply)
    }
}

/// `yes`, `no` or `unknown` (no login configured), and why.
async fn probe(config: &Config, server: &Database) -> (&'static str, Cell) {
    let Some(user) = config.users.iter().find(|u| u.database == server.name) else {
        return (
            "unknown",
            text(format!(
                "no [[users]] entry for \"{}\" in users.toml to log in with",
                server.name
            )),
        );
    };
    let mut options = config.connect_options(server, user);
    options.connect_timeout = PROBE_TIMEOUT;
    options.application_name = "pgdog admin".into();
    match Connection::connect(&options).await {
        Ok(conn) => {
            let version = conn.param("server_version").unwrap_or("?").to_string();
            conn.close().await;
            (
                "yes",
                text(format!(
                    "logged in as \"{}\", PostgreSQL {version}",
                    user.server_user()
                )),
            )
        }
        Err(e) => ("no", text(e)),
    }
}
