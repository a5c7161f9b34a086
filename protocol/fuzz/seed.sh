#!/usr/bin/env bash
# Fill protocol/fuzz/corpus/<target>/ with seeds:
#  1. captured bytes from fixtures/ (whatever exists there), given the
#     control bytes each target reads first;
#  2. seeds generated from pgdog-protocol's encoders (examples/seeds.rs), so
#     the corpus is never empty.
# Safe to run again: seed names are stable and files are overwritten.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fixtures=${FIXTURES:-$root/fixtures}
corpus=${CORPUS:-$here/corpus}
# Seeds larger than this are cut: libFuzzer mutates small inputs faster,
# and a prefix of a COPY stream is still rows.
max_seed=${MAX_SEED_BYTES:-65536}

mkdir -p "$corpus"/{frame,backend,copy_binary,pgoutput}

# Captured files, notes beside them skipped.
captured() {
    local dir=$1
    [ -d "$dir" ] || return 0
    find "$dir" -type f \
        ! -name '*.md' ! -name '*.txt' ! -name '*.sql' ! -name '*.toml' ! -name '*.json' \
        -print0 | sort -z
}

# A stable seed name from the path under fixtures/.
seed_name() {
    local rel=${1#"$fixtures"/}
    echo "fixture-${rel//\//-}"
}

copied=0

# fixtures/copy/*.bin: a binary COPY stream (the CopyData bodies
# concatenated). The copy_binary target reads a flags byte first: 0 means
# no cuts, no header prepended, default row limit.
while IFS= read -r -d '' f; do
    { printf '\000'; head -c "$max_seed" "$f"; } >"$corpus/copy_binary/$(seed_name "$f")"
    copied=$((copied + 1))
done < <(captured "$fixtures/copy")

# fixtures/pgoutput/session-*.bin are whole sessions (a u32 length before
# each message); examples/seeds.rs splits them into one seed per message,
# with the mode byte each needs (version, stream open or not).

echo "copied $copied fixture files from $fixtures"

# Generated seeds. Built in the fuzz crate's own target dir, like the
# targets themselves.
cargo run --quiet --manifest-path "$here/Cargo.toml" --example seeds -- "$corpus" "$fixtures"
