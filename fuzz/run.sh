#!/usr/bin/env bash
# Fuzz the topology loader for SECONDS (default 60): cargo fuzz, installed
# if missing, on nightly. New inputs go to fuzz/work/load (the committed
# seed corpus fuzz/corpus/load is only read); a crash, hang or OOM leaves
# its input in fuzz/artifacts/load and makes this script fail.
#   fuzz/run.sh 120
# `fuzz/run.sh --build` only builds the fuzz target (./lab test builds
# everything before it starts the tests).
set -euo pipefail

seconds="${1:-60}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi

if [ "$seconds" = --build ]; then
    exec cargo +nightly fuzz build load
fi

mkdir -p work/load
# -timeout: a run that uses up the template fuel (16M steps, the seed
# runaway-loops.yaml) takes about 17 s under ASan on a 2-core machine; 60 s
# still catches a loader that does not stop.
exec cargo +nightly fuzz run load work/load corpus/load -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1
