// The package @scorehub/client (web/client/) against the module it ships: its hand-written
// declarations web/client/index.d.ts must describe what web/src/scorehub.js exports.
// Run with `node --test web/tests/` (after `npm ci` in web/). scripts/npm-pack-check.sh
// checks the packed tarball itself.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

import * as runtime from '../src/scorehub.js';

const DTS = fileURLToPath(new URL('../client/index.d.ts', import.meta.url));
const PKG = JSON.parse(readFileSync(new URL('../client/package.json', import.meta.url), 'utf8'));
const WEB_PKG = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

/**
 * Members declared in index.d.ts ahead of the work that brings them (marked "coming"
 * there). When one lands in web/src/scorehub.js, the test below says so: drop it from
 * this list, and the "(coming: ...)" notes from index.d.ts and web/client/README.md.
 */
const COMING = {};

/** Client's methods in web/src/scorehub.js that are internals, not API (not declared). */
const INTERNAL = new Set(['emit', 'setState', 'send', 'clearTimers', 'open', 'checkAlive', 'drop', 'retry', 'onFrame', 'fallBack', 'openSse', 'opened', 'reopen']);

function declarations() {
  const program = ts.createProgram([DTS], { strict: true, noEmit: true, types: [], lib: ['lib.es2020.d.ts'] });
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(DTS));
  const exports = checker.getExportsOfModule(module);
  const values = exports.filter((s) => s.flags & ts.SymbolFlags.Value).map((s) => s.name).sort();
  const members = (name) => {
    const sym = exports.find((s) => s.name === name);
    return checker
      .getDeclaredTypeOfSymbol(sym)
      .getProperties()
      .filter((p) => p.flags & ts.SymbolFlags.Method)
      .map((p) => p.name)
      .sort();
  };
  return { diagnostics, values, members };
}

const decl = declarations();

test('index.d.ts compiles on its own (strict, no DOM lib)', () => {
  assert.deepEqual(decl.diagnostics, []);
});

test('index.d.ts declares every value web/src/scorehub.js exports, and no other', () => {
  assert.deepEqual(
    decl.values,
    Object.keys(runtime).sort(),
    'web/client/index.d.ts and web/src/scorehub.js export different values: declare what the module exports',
  );
});

for (const cls of ['Client', 'GameStore']) {
  test(`index.d.ts declares ${cls}'s public methods as the module has them`, () => {
    const coming = COMING[cls] ?? [];
    const actual = Object.getOwnPropertyNames(runtime[cls].prototype)
      .filter((m) => m !== 'constructor' && !INTERNAL.has(m))
      .sort();
    for (const m of coming) {
      assert.ok(!actual.includes(m), `${cls}#${m} has landed: remove it from COMING in web/tests/package.test.mjs and its "(coming: ...)" notes`);
    }
    assert.deepEqual(
      decl.members(cls).filter((m) => !coming.includes(m)),
      actual,
      `web/client/index.d.ts declares other methods of ${cls} than web/src/scorehub.js has`,
    );
  });
}

test('the package ships the bundle under the right names, with the repository license', () => {
  assert.equal(PKG.name, '@scorehub/client');
  assert.equal(PKG.type, 'module');
  assert.equal(PKG.license, WEB_PKG.license);
  assert.equal(PKG.exports['.'].types, './index.d.ts');
  assert.equal(PKG.exports['.'].import, './scorehub.js');
  assert.equal(PKG.dependencies, undefined, 'the package ships the self-contained bundle: no dependencies');
  assert.deepEqual([...PKG.files].sort(), ['index.d.ts', 'scorehub.js']);
  assert.match(PKG.scripts.prepack, /\.\.\/dist\/scorehub\.js/, 'prepack copies the bundle the hub embeds');
});
