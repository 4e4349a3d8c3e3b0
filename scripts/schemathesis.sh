#!/usr/bin/env bash
# Fuzzes the live HTTP API against its own OpenAPI document with schemathesis
# (a fuzzer nobody here wrote) with all its checks: no 5xx; every status, content
# type, header and body must match GET /v1/openapi.json; schema-valid requests are
# accepted and schema-violating ones refused.
#
#   1. installs schemathesis (major 4, pinned) and msgpack into a venv under target/,
#      and registers a MessagePack serializer so bodies are fuzzed in both encodings
#   2. starts the debug hub on 127.0.0.1:0 with a temp storage dir and a fixed secret
#   3. mints an admin token (admin tokens skip the per-token event rate)
#   4. runs schemathesis against http://ADDR/v1/openapi.json, bounded in examples and time
#   5. stops the hub with SIGTERM and fails if it logged a panic
#
# Knobs (environment): SCHEMATHESIS_MAX_EXAMPLES (default 50 per operation),
# SCHEMATHESIS_SEED (default fixed, for a reproducible run; "random" for a new one),
# SCHEMATHESIS_TIMEOUT (default 300 s, a hard stop). Needs python3 with venv, and cargo.
# Run it from anywhere: ./scripts/schemathesis.sh
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$TARGET/schemathesis-venv
SPEC='schemathesis>=4,<5'
MSGPACK='msgpack>=1,<2'
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
SEED=${SCHEMATHESIS_SEED:-20261122}
TIMEOUT=${SCHEMATHESIS_TIMEOUT:-300}
# A fixed test-only secret (64 hex chars); it protects nothing beyond this run.
SECRET=7d1e0c9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918070605f

HUB_PID=""
WORK=""
cleanup() {
    local status=$?
    if [[ -n $HUB_PID ]] && kill -0 "$HUB_PID" 2>/dev/null; then
        kill -KILL "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    echo "schemathesis.sh: $*" >&2
    exit 1
}

# ---- 1. schemathesis, in its own venv --------------------------------------

command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3 python3-venv)"
if ! "$VENV/bin/python" -c 'import msgpack, schemathesis, sys; sys.exit(int(schemathesis.__version__.split(".")[0]) != 4)' 2>/dev/null; then
    echo "installing $SPEC and $MSGPACK into $VENV"
    rm -rf -- "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC" "$MSGPACK" ||
        die "pip install $SPEC $MSGPACK failed"
fi
"$VENV/bin/schemathesis" --version

# ---- 2. the hub -------------------------------------------------------------

cargo build --quiet -p scorehub || die "cargo build -p scorehub failed"
HUB=$TARGET/debug/scorehub
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scorehub-schemathesis.XXXXXX")
LOG=$WORK/hub.log
# The hub takes application/msgpack bodies too; schemathesis has no serializer
# for it, so a hooks module gives it one.
cat >"$WORK/scorehub_hooks.py" <<'PY'
import msgpack
import schemathesis


@schemathesis.serializer("application/msgpack", "application/x-msgpack")
def to_msgpack(ctx, value):
    return msgpack.packb(value, use_bin_type=True, default=str)
PY
# What the document cannot say: the event routes answer a schema-valid event
# with 412 (`expected_seq` is not the game's seq) or 422 (the event does not fit
# the game's state, e.g. a score below 0), as README and the operation texts
# document, so those count as accepted for valid data there.
cat >"$WORK/schemathesis.toml" <<'TOML'
[[operations]]
include-operation-id = "postEvent"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "412", "422", "429"]

# A valid upgrade is answered 101 Switching Protocols (then the socket is the fan's).
[[operations]]
include-operation-id = "websocket"
checks.not_a_server_error.expected-statuses = ["101", "2xx", "3xx", "4xx"]
checks.positive_data_acceptance.expected-statuses = ["101", "429", "503"]

# A 200 from /v1/sse is an event stream that never ends by design: every call
# would run into --request-timeout. Its statuses and bodies are tested by
# tests/hub/sse.rs against the real hub instead.
[[operations]]
include-operation-id = "sse"
enabled = false
TOML
# From the temp dir, with no inherited config, so nothing touches the repo or a real Redis.
(cd "$WORK" && exec env -u SCOREHUB_CONFIG -u SCOREHUB_REDIS__URL \
    SCOREHUB_AUTH__SECRET="$SECRET" \
    SCOREHUB_STORAGE__DIR="$WORK/data" \
    SCOREHUB_STORAGE__FSYNC=false \
    SCOREHUB_HTTP__LISTEN=127.0.0.1:0 \
    SCOREHUB_LOG__FORMAT=pretty \
    "$HUB" serve) >"$LOG" 2>&1 &
HUB_PID=$!
ADDR=""
for _ in $(seq 1 300); do
    if ! kill -0 "$HUB_PID" 2>/dev/null; then
        cat "$LOG" >&2
        die "the hub exited during start-up (log above)"
    fi
    # Strip colour codes, then take the first `listening addr=IP:PORT`.
    ADDR=$(sed -e 's/\x1b\[[0-9;]*m//g' "$LOG" |
        sed -n -e 's/.*listening addr=\([0-9.]*:[0-9][0-9]*\).*/\1/p' | head -n 1)
    [[ -n $ADDR ]] && break
    sleep 0.1
done
[[ -n $ADDR ]] || {
    cat "$LOG" >&2
    die "no 'listening addr=...' line within 30 s (log above)"
}
echo "hub pid $HUB_PID listening on $ADDR"

# ---- 3. an admin token -------------------------------------------------------

TOKEN=$(env -u SCOREHUB_CONFIG SCOREHUB_AUTH__SECRET="$SECRET" \
    "$HUB" token --sub schemathesis --games '*' --scope admin --ttl 1h) ||
    die "scorehub token failed"

# ---- 4. the fuzzer ----------------------------------------------------------

seed_args=()
[[ $SEED == random ]] || seed_args=(--seed "$SEED")
status=0
(cd "$WORK" && PYTHONPATH=$WORK SCHEMATHESIS_HOOKS=scorehub_hooks \
    timeout --signal=INT --kill-after=10 "$TIMEOUT" \
    "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "http://$ADDR/v1/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$MAX_EXAMPLES" \
    "${seed_args[@]}" \
    --request-timeout 10 \
    --wait-for-schema 10 \
    --no-color) || status=$?

# ---- 5. the hub must have stayed healthy -----------------------------------

kill -TERM "$HUB_PID" 2>/dev/null || true
for _ in $(seq 1 120); do
    kill -0 "$HUB_PID" 2>/dev/null || break
    sleep 0.1
done
hub_status=0
wait "$HUB_PID" || hub_status=$?
HUB_PID=""
if grep -q "panicked" "$LOG"; then
    grep -n -A5 "panicked" "$LOG" >&2
    die "the hub panicked during the run (above)"
fi
((hub_status == 0)) || {
    tail -n 40 "$LOG" >&2
    die "the hub exited with $hub_status on SIGTERM"
}
if ((status == 124)); then
    die "schemathesis did not finish within ${TIMEOUT} s"
fi
((status == 0)) || die "schemathesis found problems (exit $status; report above)"
echo "schemathesis: no failures"
