#!/usr/bin/env bash
# Issue 14's side-by-side figures: the hot game (and many games) against two hub
# binaries in one run, with the hub on one core and on both, and the write floor
# measured in the same run.
#
#   OLD_BIN=/path/to/old/scorehub scripts/loadtest-cores.sh            # every figure
#   OLD_BIN=... scripts/loadtest-cores.sh hot-10k hot-10k-5            # only these
#
# NEW_BIN defaults to target/release/scorehub (built first). "1c": the hub is
# pinned to CPU 0 (`taskset -c 0`, so it starts one worker thread and one fan
# shard) and the load generator to CPU 1; "2c": neither is pinned, the hub
# and the load share both cores. NEW_ENV (KEY=VALUE words) is passed to the new
# hub only (e.g. NEW_ENV=SCOREHUB_GAMES__FAN_SHARDS=1). Reports (table, JSON) land
# in OUT, with summary.tsv: one line per run of the figures compared.
#
# The hot-10k-5 figure posts 5 events/s instead of 20 and runs "hub first"
# (1c-first, 2c-first): the load generator at nice 19, the hub back at the
# priority of this shell (`nice -n -19`, which needs root or CAP_SYS_NICE; the
# figure is skipped otherwise). The hub then gets the cores it wants while it
# fans an event out, as it would with its fans on other machines, and the
# generator reads in the idle time between events; the hub-side fan-out time
# (its mean, exact, from scorehub_fanout_seconds) shows what a second core
# buys. At 20 events/s both cores are busy in every mode (the generator needs
# about as much CPU to read a frame as the hub to write it), and latency is
# mostly queueing.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
: "${OLD_BIN:?set OLD_BIN to the scorehub binary to compare with}"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${NEW_BIN:-} ]]; then
    cargo build --release -p scorehub -p loadtest
    NEW_BIN=$TARGET/release/scorehub
fi
LOADTEST=$TARGET/release/loadtest
WRITE_FLOOR=$TARGET/release/write-floor
[[ -x $WRITE_FLOOR ]] || cargo build --release -p loadtest --bin write-floor
OUT=${OUT:-$TARGET/loadtest/cores-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cp "$OLD_BIN" "$OUT/scorehub-old"
cp "$NEW_BIN" "$OUT/scorehub-new"
read -r -a new_env <<<"${NEW_ENV:-}"

# name|cores|flags
FIGURES=(
    "hot-10k|1c|--scenario hot-game --fans 10000 --rate 20 --duration 10s"
    "hot-10k|2c|--scenario hot-game --fans 10000 --rate 20 --duration 10s"
    "hot-10k-5|1c-first|--scenario hot-game --fans 10000 --rate 5 --duration 20s"
    "hot-10k-5|2c-first|--scenario hot-game --fans 10000 --rate 5 --duration 20s"
    "hot-19k|1c|--scenario hot-game --fans 19000 --rate 20 --duration 10s"
    "hot-19k|2c|--scenario hot-game --fans 19000 --rate 20 --duration 10s"
    "many-10k|2c|--scenario many-games --games 500 --fans 10000 --subs-per-fan 20 --rate 2000 --duration 10s"
    "many-10k-600|2c|--scenario many-games --games 500 --fans 10000 --subs-per-fan 20 --rate 600 --duration 10s"
)

floor() {
    echo
    echo "== write floor ($1): $WRITE_FLOOR"
    "$WRITE_FLOOR" >"$OUT/write-floor-$1.txt" 2>&1 || echo "   write-floor failed: $OUT/write-floor-$1.txt"
    tail -n 3 "$OUT/write-floor-$1.txt"
}

summary() {
    python3 - "$1" "$2" <<'EOF' >>"$OUT/summary.tsv"
import json, sys
tag, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
fan = r.get("hub_fanout_ms") or {}
post = r.get("hub_post_ms") or {}
sync = r.get("hub_log_sync_ms") or {}
cells = [
    tag,
    f"{r['events_accepted']}/{r['events_accepted'] + r['events_skipped'] + r['events_failed']}",
    f"{r['post_latency_ms']['p50']:.1f}/{r['post_latency_ms']['p99']:.1f}",
    f"<={post.get('p50_le')}/<={post.get('p99_le')}",
    f"{sync.get('mean')}/<={sync.get('p99_le')}",
    f"{r['latency_ms']['p50']:.0f}/{r['latency_ms']['p99']:.0f}",
    f"{fan.get('mean')}/<={fan.get('p99_le')}",
    f"{r['deliveries_per_hub_cpu_s']:.0f}",
    f"{r['hub_cores']:.2f}",
    f"{r['machine']['other_cores']:.2f}",
]
print("\t".join(cells))
EOF
}

printf 'run\taccepted/scheduled\tPOST p50/p99 ms (generator)\tPOST p50/p99 ms (hub)\tlog sync mean/p99 ms (hub)\tfans p50/p99 ms\thub fan-out mean/p99 ms\tdeliveries per hub CPU-s\thub cores\tother cores\n' >"$OUT/summary.tsv"
selected=("$@")
status=0
floor before
for figure in "${FIGURES[@]}"; do
    IFS='|' read -r name cores flags <<<"$figure"
    if ((${#selected[@]})) && [[ " ${selected[*]} " != *" $name "* ]]; then
        continue
    fi
    if [[ $cores == *-first ]] && [[ $(nice -n -1 nice 2>/dev/null) != $(($(nice) - 1)) ]]; then
        echo
        echo "== $name-$cores: skipped (hub first needs root or CAP_SYS_NICE to renice the hub)"
        continue
    fi
    for which in old new; do
        hub=$OUT/scorehub-$which
        pin=()
        wrap=()
        # The wrapper execs the hub: its pid (measured from /proc) is the hub's.
        case $cores in
            1c) wrap=(taskset -c 0) pin=(taskset -c 1) ;;
            1c-first) wrap=(nice -n -19 taskset -c 0) pin=(nice -n 19 taskset -c 1) ;;
            2c-first) wrap=(nice -n -19) pin=(nice -n 19) ;;
        esac
        if ((${#wrap[@]})); then
            printf '#!/bin/sh\nexec %s %q "$@"\n' "${wrap[*]}" "$hub" >"$OUT/hub-$which-$cores"
            chmod +x "$OUT/hub-$which-$cores"
            hub=$OUT/hub-$which-$cores
        fi
        env_flags=()
        if [[ $which == new ]]; then
            for kv in "${new_env[@]}"; do env_flags+=(--hub-env "$kv"); done
        fi
        tag=$name-$cores-$which
        echo
        echo "== $tag: ${pin[*]} loadtest --hub-bin $hub $flags ${env_flags[*]}"
        rc=0
        # shellcheck disable=SC2086 # the flags are words on purpose
        "${pin[@]}" "$LOADTEST" --hub-bin "$hub" $flags "${env_flags[@]}" --json-out "$OUT/$tag.json" \
            >"$OUT/$tag.txt" 2>"$OUT/$tag.log" || rc=$?
        cat "$OUT/$tag.txt"
        if ((rc != 0)); then
            echo "   exit $rc (progress and errors: $OUT/$tag.log)"
            tail -n 5 "$OUT/$tag.log"
            status=1
        fi
        if [[ -s $OUT/$tag.json ]]; then
            summary "$tag" "$OUT/$tag.json"
        else
            printf '%s\tfailed (exit %s)\n' "$tag" "$rc" >>"$OUT/summary.tsv"
        fi
    done
done
floor after
echo
column -t -s $'\t' "$OUT/summary.tsv"
echo
echo "reports: $OUT/<figure>-<cores>-<old|new>.txt and .json; summary: $OUT/summary.tsv"
exit "$status"
