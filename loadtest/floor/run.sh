#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md, "io_uring: batched submission (issue 14, item 3)":
# write-floor-batch 3 times pinned to one core (taskset -c 0) and 3 times unpinned, for
# each reader mode, JSON into docs/perf/uring-floor/, then the summary table (mean of the
# 3 runs, and the spread min..max of the per-run values).
# Usage: loadtest/floor/run.sh [extra write-floor-batch arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=docs/perf/uring-floor
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p floor
BIN=$TARGET/release/write-floor-batch
mkdir -p "$OUT"
"$BIN" --check | tee "$OUT/check.txt"
for reader in live after; do
    for run in 1 2 3; do
        taskset -c 0 "$BIN" --reader "$reader" --json "$@" >"$OUT/pinned-$reader-$run.json"
        "$BIN" --reader "$reader" --json "$@" >"$OUT/unpinned-$reader-$run.json"
    done
done
python3 loadtest/floor/summary.py "$OUT" | tee "$OUT/summary.md"
