#!/usr/bin/env bash
# The test command: install what is missing, then run every test against
# real PostgreSQL 15 and 17 clusters that the tests start themselves.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo test --workspace --all-targets --locked
