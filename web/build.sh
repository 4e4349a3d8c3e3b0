#!/bin/sh
# Bundles the browser client (src/scorehub.js + @msgpack/msgpack) into
# dist/scorehub.js, which the hub embeds and serves at /scorehub.js.
# The bundle is committed, so building the Rust crate never needs npm;
# run this (after `npm ci`) whenever src/ or the lockfile changes.
set -eu
cd "$(dirname "$0")"
[ -x node_modules/.bin/esbuild ] || { echo "build.sh: run 'npm ci' in web/ first" >&2; exit 1; }
node_modules/.bin/esbuild src/scorehub.js \
  --bundle --format=esm --target=es2020 --charset=ascii --legal-comments=inline \
  --banner:js="// scorehub.js: browser client of the scorehub hub (bundled from web/src/scorehub.js with @msgpack/msgpack, ISC). Built by web/build.sh; do not edit." \
  --outfile=dist/scorehub.js --log-level=warning
echo "built web/dist/scorehub.js ($(wc -c < dist/scorehub.js) bytes)"
