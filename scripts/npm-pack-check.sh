#!/usr/bin/env bash
# Proves the npm package @scorehub/client (web/client/) is whole, as a user gets it:
#
#   1. `npm pack` in web/client (its prepack copies web/dist/scorehub.js in), into a temp dir;
#      the tarball holds exactly package.json, README.md, index.d.ts and scorehub.js, none empty;
#   2. installs the tarball into a fresh temp project, offline (the package has no
#      dependencies: the module is the self-contained bundle);
#   3. the installed module is byte-identical to web/dist/scorehub.js, the file the hub
#      embeds, and with HUB_BIN set (scripts/test sets it), to what a running hub serves at
#      /scorehub.js;
#   4. Node imports it by name: every export is there, and a fake socket gets a connection
#      through to a state (MessagePack decoding included);
#   5. `tsc --noEmit` of web/client/example/ (strict) against the installed declarations,
#      which must resolve into the temp project's node_modules.
#
# Needs web/node_modules (`cd web && npm ci`) for tsc. Takes a few seconds.
# Usage: scripts/npm-pack-check.sh        (KEEP_TMP=1 keeps the temp dir)
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PKG=$ROOT/web/client
TSC=$ROOT/web/node_modules/typescript/bin/tsc
EXPECTED_FILES="README.md index.d.ts package.json scorehub.js"

fail() {
    printf 'npm-pack-check: FAILED: %s\n' "$*" >&2
    exit 1
}

[[ -f $TSC ]] || fail "no $TSC: run 'npm ci' in web/ first"
[[ -f $ROOT/web/dist/scorehub.js ]] || fail "no web/dist/scorehub.js: run 'npm run build' in web/"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/scorehub-npm-pack.XXXXXX")
TMP=$(cd "$TMP" && pwd -P) # tsc reports real paths
HUB_PID=""
cleanup() {
    local status=$?
    if [[ -n $HUB_PID ]]; then
        kill -TERM "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [[ -n ${KEEP_TMP:-} ]]; then
        echo "npm-pack-check: kept $TMP"
    else
        rm -rf -- "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT

# ---- 1. pack ------------------------------------------------------------------------

(cd "$PKG" && npm pack --json --pack-destination "$TMP" --no-fund --no-audit) >"$TMP/pack.json" ||
    fail "npm pack in web/client"
# Older npm prints the prepack banner on stdout too: the JSON is from the first line that opens it.
node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const at = text.search(/^\[/m);
    if (at < 0) { console.error(text); process.exit(1); }
    require("fs").writeFileSync(process.argv[1], text.slice(at));
' "$TMP/pack.json" || fail "npm pack --json printed no JSON (above)"
TARBALL=$TMP/$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[0].filename)' "$TMP/pack.json")
[[ -f $TARBALL ]] || fail "npm pack made no $TARBALL"
node - "$TMP/pack.json" "$EXPECTED_FILES" <<'EOF' || fail "the tarball's contents (above)"
const [info] = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const want = process.argv[3].split(' ').sort();
const got = info.files.map((f) => f.path).sort();
const empty = info.files.filter((f) => f.size === 0).map((f) => f.path);
console.log(`packed ${info.filename}: ${info.files.map((f) => `${f.path} (${f.size} B)`).join(', ')}`);
if (JSON.stringify(got) !== JSON.stringify(want)) {
  console.error(`expected exactly [${want}], got [${got}]`);
  process.exit(1);
}
if (empty.length) {
  console.error(`empty files: ${empty}`);
  process.exit(1);
}
EOF

# ---- 2. install ---------------------------------------------------------------------

APP=$TMP/app
mkdir -p "$APP"
printf '{"name":"pack-check","version":"0.0.0","private":true,"type":"module"}\n' >"$APP/package.json"
(cd "$APP" && npm install --offline --no-audit --no-fund --loglevel=error "$TARBALL") ||
    fail "npm install --offline of the tarball (does the package need a dependency now?)"
INSTALLED=$APP/node_modules/@scorehub/client
for f in $EXPECTED_FILES; do
    [[ -s $INSTALLED/$f ]] || fail "installed package lacks $f"
done

# ---- 3. the same bytes as the hub's -------------------------------------------------

cmp "$INSTALLED/scorehub.js" "$ROOT/web/dist/scorehub.js" ||
    fail "the package's scorehub.js differs from web/dist/scorehub.js (the file the hub embeds)"
if [[ -n ${HUB_BIN:-} ]]; then
    [[ -x $HUB_BIN ]] || fail "HUB_BIN=$HUB_BIN is not an executable"
    mkdir -p "$TMP/hub"
    # A throwaway secret and storage, a free port, no inherited config or Redis.
    (cd "$TMP/hub" && exec env -u SCOREHUB_CONFIG -u SCOREHUB_REDIS__URL \
        SCOREHUB_AUTH__SECRET="$(node -p 'require("crypto").randomBytes(32).toString("hex")')" \
        SCOREHUB_STORAGE__DIR="$TMP/hub/data" SCOREHUB_HTTP__LISTEN=127.0.0.1:0 \
        SCOREHUB_LOG__FORMAT=pretty "$HUB_BIN" serve) >"$TMP/hub/log" 2>&1 &
    HUB_PID=$!
    port=""
    for _ in $(seq 1 300); do
        kill -0 "$HUB_PID" 2>/dev/null || { cat "$TMP/hub/log" >&2; fail "the hub exited during start-up"; }
        port=$(sed -e 's/\x1b\[[0-9;]*m//g' "$TMP/hub/log" |
            sed -n -e 's/.*listening addr=[^0-9]*[0-9.]*:\([0-9][0-9]*\).*/\1/p' | head -n 1)
        [[ -n $port ]] && break
        sleep 0.1
    done
    [[ -n $port ]] || { cat "$TMP/hub/log" >&2; fail "no 'listening addr=' from the hub within 30 s"; }
    node -e '
        fetch(process.argv[1]).then(async (res) => {
          if (!res.ok) throw new Error(`GET /scorehub.js: ${res.status}`);
          require("fs").writeFileSync(process.argv[2], Buffer.from(await res.arrayBuffer()));
        }).catch((e) => { console.error(e.message); process.exit(1); });
    ' "http://127.0.0.1:$port/scorehub.js" "$TMP/served.js" || fail "fetching /scorehub.js from the hub"
    cmp "$INSTALLED/scorehub.js" "$TMP/served.js" ||
        fail "the package's scorehub.js differs from what $HUB_BIN serves at /scorehub.js"
    kill -TERM "$HUB_PID" 2>/dev/null || true
    wait "$HUB_PID" 2>/dev/null || true
    HUB_PID=""
    echo "the package's scorehub.js = web/dist/scorehub.js = GET /scorehub.js of $HUB_BIN"
else
    echo "the package's scorehub.js = web/dist/scorehub.js (HUB_BIN unset: the served copy not fetched)"
fi

# ---- 4. Node imports it by name -----------------------------------------------------

(cd "$APP" && node --input-type=module - "$ROOT/web/src/scorehub.js" <<'EOF') || fail "importing @scorehub/client from the installed tarball"
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';
import * as m from '@scorehub/client';
import { createRequire } from 'node:module';

const pkg = createRequire(`${process.cwd()}/`)('@scorehub/client/package.json');

const source = await import(pathToFileURL(process.argv[2]).href);
assert.deepEqual(Object.keys(m).sort(), Object.keys(source).sort(), 'the package exports what web/src/scorehub.js does');
for (const [name, value] of Object.entries(m)) assert.equal(typeof value, 'function', name);
assert.equal(pkg.dependencies, undefined, 'the bundle needs no dependency');
// The bundled MessagePack decoder: {t: "p"} as a fixmap.
assert.deepEqual(m.decodeFrame(Uint8Array.of(0x81, 0xa1, 0x74, 0xa1, 0x70)), { t: 'p' });

// A connection through a fake socket: open, subscribe, a snapshot, a diff.
class FakeSocket {
  static last;
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; FakeSocket.last = this; }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.readyState = 3; }
}
const hub = m.connect('https://hub.example', { games: ['nba:a'], WebSocket: FakeSocket });
const seen = [];
hub.on('state', ({ kind, state }) => seen.push(`${kind}:${state.home.score}`));
const ws = FakeSocket.last;
assert.equal(ws.url, 'wss://hub.example/v1/ws');
ws.readyState = 1;
ws.onopen();
assert.deepEqual(ws.sent[0], { op: 'sub', games: ['nba:a'], leagues: [], since: {} });
ws.onmessage({ data: JSON.stringify({ t: 's', g: 'nba:a', q: 1, d: { game: 'nba:a', seq: 1, home: { name: 'H', score: 0 } } }) });
ws.onmessage({ data: JSON.stringify({ t: 'd', g: 'nba:a', q: 2, d: { seq: 2, home: { score: 3 } }, ts: Date.now() }) });
assert.deepEqual(seen, ['snapshot:0', 'diff:3']);
assert.equal(hub.get('nba:a').home.score, 3);
hub.close();
assert.equal(hub.state, 'closed');
console.log(`node imports @scorehub/client@${pkg.version}: ${Object.keys(m).length} exports, a fake connection reaches a state`);
EOF

# ---- 5. the example type-checks against the installed declarations ------------------

mkdir -p "$APP/example"
cp "$PKG/example/example.ts" "$PKG/example/tsconfig.json" "$APP/example/"
node "$TSC" --noEmit -p "$APP/example" ||
    fail "tsc --noEmit of web/client/example against the installed package"
# Where the types came from: the installed tarball, not a copy elsewhere.
node "$TSC" --noEmit -p "$APP/example" --traceResolution >"$TMP/tsc.log" 2>&1 || true
grep -qF "'@scorehub/client' was successfully resolved to '$INSTALLED/index.d.ts'" "$TMP/tsc.log" ||
    fail "tsc did not resolve '@scorehub/client' to the installed $INSTALLED/index.d.ts"
echo "tsc --noEmit (strict) of web/client/example against the installed index.d.ts: ok"
echo "npm-pack-check: ok ($(basename "$TARBALL"), $(wc -c <"$TARBALL") bytes)"
