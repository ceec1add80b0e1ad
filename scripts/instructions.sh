#!/usr/bin/env bash
# Instructions executed by one seed of each scenario (valgrind's callgrind), a measure of speed
# that does not depend on the machine's load: compare two builds with it where wall time is
# noisy. Needs valgrind (Debian: apt-get install valgrind).
#
#   scripts/instructions.sh [BINARY] [SCENARIO...]
#
# BINARY defaults to target/release/shopsim; the scenarios to catalog-reads,
# multi-tenant-mixed and checkout-concurrency. Each runs seeds 0-3 under pg_rc on one thread;
# only instructions inside the runs count (not argument parsing or the scenario registry),
# given per seed.
set -euo pipefail
binary="${1:-target/release/shopsim}"
shift || true
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(catalog-reads multi-tenant-mixed checkout-concurrency)
fi
if ! command -v valgrind >/dev/null; then
    echo "error: valgrind not found (Debian: apt-get install valgrind)" >&2
    exit 2
fi
if [ ! -x "$binary" ]; then
    echo "error: binary not found: $binary (cargo build --release first)" >&2
    exit 2
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
seeds=4
printf '%-24s %22s\n' scenario 'instructions per seed'
for scenario in "${scenarios[@]}"; do
    valgrind --tool=callgrind --toggle-collect='shopsim_sim::runner::run*' \
        --callgrind-out-file="$out/$scenario.cg" \
        "$binary" run "$scenario" --seeds "$seeds" --profile pg_rc --jobs 1 >/dev/null 2>"$out/$scenario.err" || {
        echo "error: $scenario failed; valgrind said:" >&2
        tail -5 "$out/$scenario.err" >&2
        exit 1
    }
    instructions="$(grep -o 'Collected : [0-9]*' "$out/$scenario.err" | grep -o '[0-9]*$')"
    printf '%-24s %22s\n' "$scenario" "$((instructions / seeds))"
done
