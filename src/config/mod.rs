//! Configuration: `pgdog.toml` (clusters, sharded tables, listener, admin)
//! and `users.toml` (logins), loaded, cross-checked and turned into
//! connection options and sharders.

mod error;
pub mod files;
mod validate;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use files::{
    Admin, Database, General, MappingRule, PgdogToml, Role, ShardedTable, User, UsersToml,
};

use crate::names::TableName;
use crate::net::{ConnectOptions, TlsConnector, TlsMode};
use crate::sharding::{DataType, Function, Mapping, Rule, Sharder, Value};

/// Both files, loaded and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub users_path: PathBuf,
    pub general: General,
    pub admin: Admin,
    pub databases: Vec<Database>,
    pub sharded_tables: Vec<ShardedTable>,
    pub users: Vec<User>,
    /// TLS towards Postgres, built once from `[general]`.
    pub tls: Option<TlsConnector>,
}

/// The servers of one shard.
#[derive(Debug, Clone)]
pub struct Shard {
    pub number: usize,
    pub primary: Database,
    pub replicas: Vec<Database>,
}

/// One cluster: every `[[databases]]` entry sharing a name, by shard.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub shards: Vec<Shard>,
}

impl Config {
    /// Read and check both files.
    pub fn load(path: &Path, users_path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let users_text = match std::fs::read_to_string(users_path) {
            Ok(t) => t,
            // A config without users is fine for `configcheck` of a proxy
            // with only an admin console.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    file: users_path.to_path_buf(),
                    source,
                })
            }
        };
        Self::from_strs(path, &text, users_path, &users_text)
    }

    /// Parse and check the two files' contents (paths are for messages and
    /// for resolving relative certificate paths).
    pub fn from_strs(
        path: &Path,
        text: &str,
        users_path: &Path,
        users_text: &str,
    ) -> Result<Config, ConfigError> {
        let pgdog: PgdogToml =
            toml::from_str(text).map_err(|e| ConfigError::parse(path, text, &e))?;
        let users: UsersToml = toml::from_str(users_text)
            .map_err(|e| ConfigError::parse(users_path, users_text, &e))?;
        let mut general = pgdog.general;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut general.tls_server_ca_certificate,
            &mut general.tls_certificate,
            &mut general.tls_private_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let mut config = Config {
            path: path.to_path_buf(),
            users_path: users_path.to_path_buf(),
            general,
            admin: pgdog.admin,
            databases: pgdog.databases,
            sharded_tables: pgdog.sharded_tables,
            users: users.users,
            tls: None,
        };
        config.tls = validate::check(&config)?;
        Ok(config)
    }

    pub fn tls_mode(&self) -> TlsMode {
        TlsMode::parse(&self.general.tls_verify).unwrap_or_default()
    }

    /// Cluster names in the order they first appear.
    pub fn cluster_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for d in &self.databases {
            if !names.contains(&d.name.as_str()) {
                names.push(&d.name);
            }
        }
        names
    }

    /// The servers of cluster `name`, by shard.
    pub fn cluster(&self, name: &str) -> Result<Topology, ConfigError> {
        let members: Vec<&Database> = self.databases.iter().filter(|d| d.name == name).collect();
        if members.is_empty() {
            return Err(ConfigError::Invalid {
                file: self.path.clone(),
                field: "databases".into(),
                message: format!(
                    "no [[databases]] entry has name = \"{name}\"; clusters configured: {}",
                    quoted_list(&self.cluster_names())
                ),
            });
        }
        let count = members.iter().map(|d| d.shard).max().unwrap_or(0) + 1;
        let mut shards = Vec::with_capacity(count);
        for number in 0..count {
            // Validation guarantees exactly one primary per shard.
            let Some(primary) = members
                .iter()
                .find(|d| d.shard == number && d.role == Role::Primary)
            else {
                return Err(ConfigError::Invalid {
                    file: self.path.clone(),
                    field: "databases".into(),
                    message: format!("cluster \"{name}\" has no primary for shard {number}"),
                });
            };
            shards.push(Shard {
                number,
                primary: (*primary).clone(),
                replicas: members
                    .iter()
                    .filter(|d| d.shard == number && d.role == Role::Replica)
                    .map(|d| (*d).clone())
                    .collect(),
            });
        }
        Ok(Topology {
            name: name.to_string(),
            shards,
        })
    }

    /// The `users.toml` entry `name` for cluster `database`.
    pub fn user(&self, name: &str, database: &str) -> Result<&User, ConfigError> {
        self.users
            .iter()
            .find(|u| u.name == name && u.database == database)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .users
                    .iter()
                    .filter(|u| u.database == database)
                    .map(|u| u.name.as_str())
                    .collect();
                ConfigError::Invalid {
                    file: self.users_path.clone(),
                    field: "users".into(),
                    message: format!(
                        "no [[users]] entry with name = \"{name}\" and database = \"{database}\"; users of \"{database}\": {}",
                        quoted_list(&known)
                    ),
                }
            })
    }

    /// Options to connect to `server` as `user`.
    pub fn connect_options(&self, server: &Database, user: &User) -> ConnectOptions {
        ConnectOptions::new(
            &server.host,
            server.port,
            user.server_user(),
            server.database_name(),
        )
        .password(user.server_password())
        .tls(self.tls.clone())
        .max_message_size(self.general.max_message_size)
    }

    /// How `table` (with these columns) is sharded in cluster `database`
    /// of `shards` shards. The most specific rule wins: one naming the
    /// table itself, then one naming its nearest partitioned ancestor
    /// (`ancestors`, nearest first), and so on up to the root, then a rule
    /// without a name whose column the table has. `None`: not sharded, so
    /// every shard gets every row (an omnisharded table).
    pub fn sharder_for(
        &self,
        database: &str,
        table: &TableName,
        ancestors: &[TableName],
        columns: &[&str],
        shards: usize,
    ) -> Result<Option<RuleMatch>, ConfigError> {
        let rules: Vec<(usize, &ShardedTable)> = self
            .sharded_tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.database == database)
            .collect();
        let named = |name: &TableName| {
            rules.iter().copied().find(|(_, t)| {
                t.name.as_deref() == Some(name.name.as_str())
                    && t.schema.as_deref().is_none_or(|s| s == name.schema)
            })
        };
        let found = named(table)
            .map(|r| (r, RuleOrigin::Table))
            .or_else(|| {
                ancestors
                    .iter()
                    .find_map(|a| named(a).map(|r| (r, RuleOrigin::Ancestor(a.clone()))))
            })
            .or_else(|| {
                rules
                    .iter()
                    .copied()
                    .find(|(_, t)| {
                        t.name.is_none()
                            && t.schema.as_deref().is_none_or(|s| s == table.schema)
                            && columns.contains(&t.column.as_str())
                    })
                    .map(|r| (r, RuleOrigin::Column))
            });
        let Some(((index, rule), origin)) = found else {
            return Ok(None);
        };
        let sharder = build_sharder(rule, &table.to_string(), shards).map_err(|message| {
            ConfigError::Invalid {
                file: self.path.clone(),
                field: format!("sharded_tables[{index}]"),
                message,
            }
        })?;
        Ok(Some(RuleMatch {
            sharder,
            column: rule.column.clone(),
            origin,
            index,
        }))
    }
}

/// Where the rule that routes a table comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOrigin {
    /// A rule naming the table itself.
    Table,
    /// A rule naming this partitioned table above it.
    Ancestor(TableName),
    /// A rule without a name, for every table with its column.
    Column,
}

/// The rule that routes a table.
#[derive(Debug, Clone)]
pub struct RuleMatch {
    pub sharder: Sharder,
    /// The key column, by name.
    pub column: String,
    pub origin: RuleOrigin,
    /// Its position in `[[sharded_tables]]`.
    pub index: usize,
}

/// A sharder for one rule; errors as text for the caller to place.
pub(crate) fn build_sharder(
    rule: &ShardedTable,
    table: &str,
    shards: usize,
) -> Result<Sharder, String> {
    let function = match &rule.mapping {
        None => Function::Hash,
        Some(entries) => {
            let mut rules = Vec::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                let value = |v: &toml::Value| {
                    mapping_value(rule.data_type, v).map_err(|m| format!("mapping[{i}]: {m}"))
                };
                let r = match (&e.values, &e.start, &e.end) {
                    (Some(values), None, None) => Rule::List {
                        values: values.iter().map(value).collect::<Result<_, _>>()?,
                        shard: e.shard,
                    },
                    (None, start, end) if start.is_some() || end.is_some() => Rule::Range {
                        start: start.as_ref().map(value).transpose()?,
                        end: end.as_ref().map(value).transpose()?,
                        shard: e.shard,
                    },
                    (None, None, None) => Rule::Default { shard: e.shard },
                    _ => {
                        return Err(format!(
                            "mapping[{i}]: use either values = [...] or start/end, not both"
                        ))
                    }
                };
                rules.push(r);
            }
            Function::Mapping(Mapping::new(rules).map_err(|e| e.to_string())?)
        }
    };
    Sharder::new(table, &rule.column, rule.data_type, function, shards).map_err(|e| e.to_string())
}

fn mapping_value(data_type: DataType, v: &toml::Value) -> Result<Value, String> {
    let text = match v {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::String(s) => s.clone(),
        other => return Err(format!("{other} is not a {data_type} value")),
    };
    data_type
        .parse_text(&text)
        .map_err(|e| format!("{text:?}: {e}"))
}

fn quoted_list(items: &[&str]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
