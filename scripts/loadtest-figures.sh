#!/usr/bin/env bash
# Runs the load test's standard figures against hubs it starts itself, one run per
# figure, and keeps each report (table and JSON) in an output directory.
#
#   scripts/loadtest-figures.sh                 # every figure
#   scripts/loadtest-figures.sh hot-10k idle-10k # only these
#   scripts/loadtest-figures.sh --list           # the figures and their flags
#
# Environment:
#   HUB_BIN   the scorehub binary (default: target/release/scorehub, built first)
#   OUT       output directory (default: target/loadtest/<date-time>)
#   QUIET_MAX seconds to wait for an idle machine before each run (default 120);
#             the hub and the load share the cores, so another program running
#             spoils the figures (each report says how much CPU others used).
#   RETRIES   runs again, up to this many times, a figure whose report says other
#             processes ran during its window (default 2).
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# name|flags (after --hub-bin): one line per figure.
FIGURES=(
    "smoke|--smoke"
    "hot-1k|--scenario hot-game --fans 1000 --rate 20 --duration 10s"
    "hot-2k|--scenario hot-game --fans 2000 --rate 20 --duration 10s"
    "hot-5k|--scenario hot-game --fans 5000 --rate 20 --duration 10s"
    "hot-10k|--scenario hot-game --fans 10000 --rate 20 --duration 10s"
    "hot-19k|--scenario hot-game --fans 19000 --rate 20 --duration 10s"
    "many-10k|--scenario many-games --games 500 --fans 10000 --subs-per-fan 20 --rate 2000 --duration 10s"
    "idle-10k|--idle --fans 10000 --duration 5s"
    "idle-19k|--idle --fans 19000 --duration 5s"
    "churn-2k|--scenario churn --games 10 --fans 2000 --subs-per-fan 2 --rate 200 --churn-rate 100 --duration 10s"
    "two-nodes-2k|--scenario two-nodes --fans 2000 --rate 200 --duration 10s"
    "two-nodes-10k|--scenario two-nodes --games 500 --fans 10000 --subs-per-fan 20 --rate 2000 --duration 10s"
    # Three hubs on a 3-shard Redis Cluster, events posted to every hub.
    "cluster-2k|--scenario cluster --fans 2000 --rate 200 --duration 20s"
    # A primary killed 5 s into the window; 2 replicas per primary, since with
    # min_replicas_acked=1 the promoted replica needs one left to confirm to.
    "cluster-failover-2k|--scenario cluster --replicas 2 --fans 2000 --rate 200 --duration 20s --kill-primary-at 5s --posters 64 --settle 10s --hub-env SCOREHUB_REDIS__MIN_REPLICAS_ACKED=1"
    # One fan that never reads, against the same run without it. A 16 KiB
    # kernel send buffer (both runs) makes it reach conflation and the
    # 1008 within the window instead of after minutes of kernel buffering.
    "unstalled-1k|--scenario hot-game --fans 1000 --rate 100 --duration 60s --hub-env SCOREHUB_WS__SEND_BUFFER_BYTES=16384"
    "stalled-1k|--scenario hot-game --fans 1000 --rate 100 --duration 60s --stalled 1 --hub-env SCOREHUB_WS__SEND_BUFFER_BYTES=16384"
)

if [[ ${1:-} == --list ]]; then
    for figure in "${FIGURES[@]}"; do
        printf '%-20s loadtest --hub-bin $HUB_BIN %s\n' "${figure%%|*}" "${figure#*|}"
    done
    exit 0
fi

if [[ -z ${HUB_BIN:-} ]]; then
    cargo build --release -p scorehub -p loadtest
    HUB_BIN=$ROOT/target/release/scorehub
else
    cargo build --release -p loadtest
fi
LOADTEST=${CARGO_TARGET_DIR:-$ROOT/target}/release/loadtest
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/loadtest/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
# A copy, so that a rebuild during the runs does not change the hub under test.
cp "$HUB_BIN" "$OUT/scorehub"
echo "hub: $HUB_BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ', with local changes')); reports in $OUT"

# busy_ticks: CPU ticks (all cores) spent by anything over the last 2 s.
busy_ticks() {
    local a b
    read -r _ u n s _ _ q sq st _ </proc/stat
    a=$((u + n + s + q + sq + st))
    sleep 2
    read -r _ u n s _ _ q sq st _ </proc/stat
    b=$((u + n + s + q + sq + st))
    echo $((b - a))
}

# wait_quiet: waits until the machine is idle (under 0.15 cores), at most QUIET_MAX s.
wait_quiet() {
    local start=$SECONDS busy
    while :; do
        busy=$(busy_ticks)
        ((busy < 30)) && return 0
        if ((SECONDS - start > ${QUIET_MAX:-120})); then
            echo "warning: the machine is still busy ($busy ticks in 2 s); measuring anyway" >&2
            return 0
        fi
    done
}

selected=("$@")
status=0
for figure in "${FIGURES[@]}"; do
    name=${figure%%|*}
    flags=${figure#*|}
    if ((${#selected[@]})) && [[ " ${selected[*]} " != *" $name "* ]]; then
        continue
    fi
    for attempt in $(seq 1 $((${RETRIES:-2} + 1))); do
        wait_quiet
        echo
        echo "== $name: loadtest --hub-bin $HUB_BIN $flags"
        # shellcheck disable=SC2086 # the flags are words on purpose
        rc=0
        "$LOADTEST" --hub-bin "$OUT/scorehub" $flags --json-out "$OUT/$name.json" \
            >"$OUT/$name.txt" 2>"$OUT/$name.log" || rc=$?
        cat "$OUT/$name.txt"
        if ((rc != 0)); then
            echo "   exit $rc (progress and errors: $OUT/$name.log)"
            tail -n 5 "$OUT/$name.log"
            status=1
        fi
        echo "loadtest --hub-bin \$HUB_BIN $flags" >"$OUT/$name.cmd"
        # Another program took CPU during the window: measure again.
        grep -q 'WARNING: something else ran' "$OUT/$name.txt" || break
        echo "   (disturbed by other processes; attempt $attempt)"
    done
done
echo
echo "reports: $OUT/<figure>.txt (table), .json, .cmd (command line), .log (progress)"
exit "$status"
