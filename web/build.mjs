// Bundles the browser client (src/scorehub.js + @msgpack/msgpack) into
// dist/scorehub.js, which the hub embeds and serves at /scorehub.js.
//
//   npm ci && npm run build        (in web/)
//
// The bundle is committed, so building the Rust crate never needs npm; run
// this whenever src/ or package-lock.json changes. `node --test web/tests/`
// fails while the committed bundle differs from what this would build.

import { build } from 'esbuild';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const OUT = join(HERE, 'dist', 'scorehub.js');

const BANNER =
  '// scorehub.js: the browser client of the scorehub hub, bundled from web/src/scorehub.js\n' +
  '// with @msgpack/msgpack (ISC license) by web/build.mjs. Do not edit: change the source and rebuild.';

/** The bundle's text, built in memory. */
export async function bundle() {
  const result = await build({
    absWorkingDir: HERE, // paths in the bundle's comments do not depend on the caller's cwd
    entryPoints: ['src/scorehub.js'],
    bundle: true,
    format: 'esm',
    target: 'es2020',
    charset: 'ascii',
    legalComments: 'inline',
    banner: { js: BANNER },
    write: false,
    logLevel: 'warning',
  });
  return result.outputFiles[0].text;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const text = await bundle();
  writeFileSync(OUT, text);
  console.log(`built web/dist/scorehub.js (${text.length} bytes)`);
}
