# Sourced by the fetch scripts: sets $root (the project) and $pg_dir, where
# PostgreSQL binaries are installed: $PGDOG_PG_DIR, else /opt/pgdog-pg when
# root (so the `postgres` OS user can run them), else .pg/ in the project.
# The test harness looks in both default places.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" = 0 ]; then pg_dir="${PGDOG_PG_DIR:-/opt/pgdog-pg}"; else pg_dir="${PGDOG_PG_DIR:-$root/.pg}"; fi
