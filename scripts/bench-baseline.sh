#!/usr/bin/env bash
# The committed criterion baseline of the hot-path benches (benches/codec.rs,
# benches/fanout.rs), so that a regression shows as a change against it.
#
#   scripts/bench-baseline.sh            # run the benches, save them as baseline "main",
#                                        # and copy it into benches/baseline/ (commit that)
#   scripts/bench-baseline.sh --compare  # put benches/baseline/ back as baseline "main"
#                                        # and run the benches against it: criterion prints
#                                        # "Performance has regressed" / "improved" per bench
#
# Extra arguments after the mode go to criterion, e.g. a filter or --quick:
#   scripts/bench-baseline.sh --compare hot_path
#
# Environment:
#   BASELINE       the criterion baseline name (default: main)
#   CRITERION_HOME where criterion keeps its data (default: $CARGO_TARGET_DIR/criterion,
#                  i.e. target/criterion)
#   NOTE           a line about the conditions, kept in benches/baseline/README.txt
#                  (e.g. NOTE="a fuzzer ran on one core")
#
# Criterion compares against a baseline's sample.json and estimates.json (it also
# keeps benchmark.json and tukey.json there): all four, a few KB per bench, are
# what benches/baseline/<group>/<bench>/ holds. The figures are of the machine
# they were taken on; compare on the same machine, at rest (not while a build or
# a load test runs), or the differences are the machine's, not the code's.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

BASELINE=${BASELINE:-main}
CRITERION_DIR=${CRITERION_HOME:-${CARGO_TARGET_DIR:-$ROOT/target}/criterion}
STORE=$ROOT/benches/baseline
BENCHES=(--bench codec --bench fanout)
FILES=(estimates.json sample.json benchmark.json tukey.json)

mode=save
case ${1:-} in
--compare)
    mode=compare
    shift
    ;;
--save)
    shift
    ;;
-h | --help)
    sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac

# The benchmark directories of a criterion tree holding baseline $BASELINE:
# <group>/<bench>/$BASELINE/estimates.json → <group>/<bench>.
bench_dirs() {
    (cd "$1" && find . -path "*/$BASELINE/estimates.json" -printf '%h\n' | sed "s|^\./||; s|/$BASELINE\$||" | sort)
}

# summary DIR: per bench of DIR/<group>/<bench>/estimates.json, the time per
# iteration criterion prints (the slope of the linear fit when it has one, else
# the mean) with its 95% confidence interval.
summary() {
    python3 - "$1" <<'PY'
import json, os, sys
root = sys.argv[1]
def unit(ns):
    for div, u in ((1e6, "ms"), (1e3, "µs"), (1, "ns")):
        if ns >= div:
            return f"{ns / div:.4g} {u}"
    return f"{ns:.4g} ns"
rows = []
for d, _, files in os.walk(root):
    if "estimates.json" in files:
        with open(os.path.join(d, "estimates.json")) as f:
            e = json.load(f)
        est = e.get("slope") or e["mean"]
        ci = est["confidence_interval"]
        rows.append((os.path.relpath(d, root), est["point_estimate"], ci["lower_bound"], ci["upper_bound"]))
print("# bench                      time per iteration [95% confidence interval]")
for name, p, lo, hi in sorted(rows):
    print(f"{name:<28} {unit(p):>10}   [{unit(lo)} .. {unit(hi)}]")
PY
}

if [[ $mode == save ]]; then
    cargo bench "${BENCHES[@]}" -- --save-baseline "$BASELINE" "$@"
    [[ -d $CRITERION_DIR ]] || {
        echo "no criterion output in $CRITERION_DIR" >&2
        exit 1
    }
    mapfile -t dirs < <(bench_dirs "$CRITERION_DIR")
    ((${#dirs[@]})) || {
        echo "no baseline '$BASELINE' in $CRITERION_DIR" >&2
        exit 1
    }
    rm -rf "$STORE"
    for d in "${dirs[@]}"; do
        mkdir -p "$STORE/$d"
        for f in "${FILES[@]}"; do
            if [[ -f $CRITERION_DIR/$d/$BASELINE/$f ]]; then cp "$CRITERION_DIR/$d/$BASELINE/$f" "$STORE/$d/$f"; fi
        done
    done
    {
        echo "# criterion baseline '$BASELINE' of scripts/bench-baseline.sh"
        echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
        echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
        echo "rustc:   $(rustc --version)"
        if [[ -n ${NOTE:-} ]]; then echo "note:    $NOTE"; fi
        echo
        summary "$STORE"
    } >"$STORE/README.txt"
    echo
    echo "baseline '$BASELINE' of ${#dirs[@]} benches copied to $STORE:"
    cat "$STORE/README.txt"
else
    [[ -d $STORE ]] || {
        echo "no committed baseline in $STORE: run scripts/bench-baseline.sh first" >&2
        exit 1
    }
    mapfile -t dirs < <(cd "$STORE" && find . -name estimates.json -printf '%h\n' | sed 's|^\./||' | sort)
    for d in "${dirs[@]}"; do
        mkdir -p "$CRITERION_DIR/$d/$BASELINE"
        for f in "${FILES[@]}"; do
            if [[ -f $STORE/$d/$f ]]; then cp "$STORE/$d/$f" "$CRITERION_DIR/$d/$BASELINE/$f"; fi
        done
    done
    echo "restored baseline '$BASELINE' of ${#dirs[@]} benches into $CRITERION_DIR"
    cargo bench "${BENCHES[@]}" -- --baseline "$BASELINE" "$@"
fi
