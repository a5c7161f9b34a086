#!/usr/bin/env bash
# The demo: install what is missing, build, and run `pgdog demo` (a move
# from one throwaway PostgreSQL server to two destination shards, with
# writes during the copy and the stream, then a row-by-row verification).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet
exec target/release/pgdog demo "$@"
