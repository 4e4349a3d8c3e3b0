#!/usr/bin/env bash
# Issue 14's side-by-side figures: the hot game (and many games) against two hub
# binaries in one run, with the hub on one core and on both.
#
#   OLD_BIN=/path/to/old/scorehub scripts/loadtest-cores.sh            # every figure
#   OLD_BIN=... scripts/loadtest-cores.sh hot-10k                      # only these
#
# NEW_BIN defaults to target/release/scorehub (built first). "1c": the hub is
# pinned to CPU 0 (`taskset -c 0`, so it starts one worker thread and one fan
# shard) and the load generator to CPU 1; "2c": neither is pinned, the hub
# and the load share both cores. Reports (table, JSON) land in OUT.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
: "${OLD_BIN:?set OLD_BIN to the scorehub binary to compare with}"
if [[ -z ${NEW_BIN:-} ]]; then
    cargo build --release -p scorehub -p loadtest
    NEW_BIN=$ROOT/target/release/scorehub
fi
LOADTEST=${CARGO_TARGET_DIR:-$ROOT/target}/release/loadtest
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/loadtest/cores-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cp "$OLD_BIN" "$OUT/scorehub-old"
cp "$NEW_BIN" "$OUT/scorehub-new"

# name|cores|flags
FIGURES=(
    "hot-10k|1c|--scenario hot-game --fans 10000 --rate 20 --duration 10s"
    "hot-10k|2c|--scenario hot-game --fans 10000 --rate 20 --duration 10s"
    "hot-19k|1c|--scenario hot-game --fans 19000 --rate 20 --duration 10s"
    "hot-19k|2c|--scenario hot-game --fans 19000 --rate 20 --duration 10s"
    "many-10k|2c|--scenario many-games --games 500 --fans 10000 --subs-per-fan 20 --rate 2000 --duration 10s"
)

selected=("$@")
status=0
for figure in "${FIGURES[@]}"; do
    IFS='|' read -r name cores flags <<<"$figure"
    if ((${#selected[@]})) && [[ " ${selected[*]} " != *" $name "* ]]; then
        continue
    fi
    for which in old new; do
        hub=$OUT/scorehub-$which
        pin=()
        if [[ $cores == 1c ]]; then
            # taskset execs the hub: its pid (measured from /proc) is the hub's.
            printf '#!/bin/sh\nexec taskset -c 0 %q "$@"\n' "$hub" >"$OUT/hub-$which-1c"
            chmod +x "$OUT/hub-$which-1c"
            hub=$OUT/hub-$which-1c
            pin=(taskset -c 1)
        fi
        tag=$name-$cores-$which
        echo
        echo "== $tag: ${pin[*]} loadtest --hub-bin $hub $flags"
        rc=0
        # shellcheck disable=SC2086 # the flags are words on purpose
        "${pin[@]}" "$LOADTEST" --hub-bin "$hub" $flags --json-out "$OUT/$tag.json" \
            >"$OUT/$tag.txt" 2>"$OUT/$tag.log" || rc=$?
        cat "$OUT/$tag.txt"
        if ((rc != 0)); then
            echo "   exit $rc (progress and errors: $OUT/$tag.log)"
            tail -n 5 "$OUT/$tag.log"
            status=1
        fi
    done
done
echo
echo "reports: $OUT/<figure>-<cores>-<old|new>.txt and .json"
exit "$status"
