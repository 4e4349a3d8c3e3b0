#!/usr/bin/env node
// Browser tests of the scoreboard (/) and the scorekeeper console (/console)
// against the real hub binary, in Debian's headless Chromium driven by
// playwright-core.
//
//   node web/tests/run.mjs            (from the repo root, after `npm ci` in web/
//                                      and `cargo build -p scorehub`)
//
// Environment:
//   HUB_BIN   the hub binary (default: target/debug/scorehub)
//   CHROMIUM       the browser (default: /usr/bin/chromium)
//   KEEP_TMP=1     keep the temp dir (hub storage, browser profile, logs)
//
// Builds nothing. Starts the hub on 127.0.0.1:0 with a temp storage dir and a
// random secret, mints an admin token with `scorehub token`, runs each test
// with a time limit, saves screenshots to web/tests/screenshots/, and exits
// non-zero when any test fails. The last line reads "N passed, N failed".

import { spawn, execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BIN = resolve(process.env.HUB_BIN ?? join(ROOT, 'target/debug/scorehub'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = join(HERE, 'screenshots');
const TEST_TIMEOUT_MS = 90_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fail(msg) {
  console.error(`run.mjs: ${msg}`);
  process.exit(2);
}

if (!existsSync(BIN)) {
  fail(`no hub binary at ${BIN}: run \`cargo build -p scorehub\` first, or set HUB_BIN`);
}
if (!existsSync(CHROMIUM)) {
  fail(`no browser at ${CHROMIUM}: install Debian's chromium (apt-get install -y --no-install-recommends chromium) or set CHROMIUM`);
}

const TMP = mkdtempSync(join(tmpdir(), 'scorehub-web-'));
// The hub's environment: ours, minus every inherited SCOREHUB_* variable (the
// hub refuses unknown ones, and a stray config key would
// change what is tested).
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SCOREHUB_')));
Object.assign(ENV, {
  SCOREHUB_STORAGE__DIR: join(TMP, 'data'),
  SCOREHUB_AUTH__SECRET: randomBytes(32).toString('hex'),
  NO_COLOR: '1',
});

// --- the hub process ------------------------------------------------------------------

/** The real hub binary, started and stopped by the tests. */
class Hub {
  constructor() {
    this.proc = null;
    this.addr = null;
    this.log = [];
    this.runs = 0;
  }

  /** Starts `scorehub serve` on `listen`; resolves with the address it logged. */
  async start(listen = '127.0.0.1:0') {
    this.runs += 1;
    const proc = spawn(BIN, ['serve'], {
      env: { ...ENV, SCOREHUB_HTTP__LISTEN: listen },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    this.exit = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
    const run = this.runs;
    const addr = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`the hub did not log "listening addr=" within 20 s`)), 20_000);
      let buf = '';
      const onData = (chunk) => {
        buf += chunk.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          // eslint-disable-next-line no-control-regex
          const line = buf.slice(0, nl).replace(/\x1b\[[0-9;]*m/g, '');
          buf = buf.slice(nl + 1);
          this.log.push(`[hub#${run}] ${line}`);
          if (this.log.length > 400) this.log.shift();
          const m = /listening addr=(\S+)/.exec(line);
          if (m) {
            clearTimeout(timer);
            res(m[1].replace(/[",}]+$/, ''));
          }
        }
      };
      proc.stderr.on('data', onData);
      proc.stdout.on('data', onData);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        rej(new Error(`the hub exited with ${code} before listening`));
      });
    });
    this.addr = addr;
    return addr;
  }

  get base() {
    return `http://${this.addr}`;
  }

  /** SIGTERM, and the exit code (SIGKILL after 15 s). */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return this.proc?.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    const { code, signal } = await this.exit;
    clearTimeout(timer);
    return signal ? `signal ${signal}` : code;
  }
}

const hub = new Hub();
let TOKEN = '';

async function mintToken(sub = 'web', games = '*', scope = 'admin') {
  const { stdout } = await promisify(execFile)(
    BIN,
    ['token', '--sub', sub, '--games', games, '--ttl', '1h', '--scope', scope],
    { env: { ...ENV, SCOREHUB_HTTP__LISTEN: '127.0.0.1:0' } },
  );
  const t = stdout.trim().split(/\s+/).pop();
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(t)) throw new Error(`\`scorehub token\` printed no token`);
  return t;
}

/** One API call with the admin token; resolves with {status, body}. */
async function api(method, path, body) {
  const res = await fetch(`${hub.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: json, text, headers: res.headers };
}

async function must(method, path, body, ok = [200, 201]) {
  const r = await api(method, path, body);
  if (!ok.includes(r.status)) throw new Error(`${method} ${path} → ${r.status} ${r.text}`);
  return r.body;
}

const createGame = (id, home, away) =>
  must('PUT', `/v1/games/${id}`, { home: { name: home }, away: { name: away } });
const score = (id, team, points) =>
  must('POST', `/v1/games/${id}/events`, { event_id: randomUUID(), kind: 'score', team, points });

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

// --- the browser ------------------------------------------------------------------------

let context;
const consoleLines = [];
const pageErrors = [];

async function newPage(name) {
  const page = await context.newPage();
  page.on('console', (m) => consoleLines.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageErrors.push(`[${name}] ${e.message}`));
  return page;
}

async function waitText(page, selector, text, timeout = 5000) {
  try {
    await page.waitForFunction(
      ([s, t]) => document.querySelector(s)?.textContent?.trim() === t,
      [selector, String(text)],
      { timeout, polling: 50 },
    );
  } catch {
    const got = await page.evaluate((s) => document.querySelector(s)?.textContent ?? '<missing>', selector);
    throw new Error(`${selector} should read "${text}" within ${timeout} ms; it reads "${got}"`);
  }
}

async function waitAttr(page, selector, attr, value, timeout = 5000) {
  try {
    await page.waitForFunction(
      ([s, a, v]) => document.querySelector(s)?.getAttribute(a) === v,
      [selector, attr, String(value)],
      { timeout, polling: 50 },
    );
  } catch {
    const got = await page.evaluate(([s, a]) => document.querySelector(s)?.getAttribute(a) ?? '<missing>', [selector, attr]);
    throw new Error(`${selector} [${attr}] should be "${value}" within ${timeout} ms; it is "${got}"`);
  }
}

const card = (id) => `.card[data-game="${id}"]`;
const conn = '#conn';

/** Saves `token` in the console page. */
async function setToken(page, token) {
  await page.fill('#token', token);
  await page.click('#token-form button[type=submit]');
  await waitAttr(page, '#token', 'data-saved', 'yes');
}

/** The console page with the admin token saved and `game` open. */
async function openConsole(page, game) {
  await page.goto(`${hub.base}/console${game ? `?game=${game}` : ''}`);
  await setToken(page, TOKEN);
}

const pad = (team, points) => `.pad button[data-team="${team}"][data-points="${points}"]`;

/** Waits until a scoreboard card shows exactly the hub's state (GET). */
async function cardMatchesHub(page, id, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    const s = await must('GET', `/v1/games/${id}`);
    const shown = await page.evaluate((sel) => {
      const c = document.querySelector(sel);
      if (!c) return null;
      const t = (q) => c.querySelector(q)?.textContent?.trim();
      return {
        seq: Number(c.dataset.seq),
        home: t('[data-testid=score-home]'),
        away: t('[data-testid=score-away]'),
        status: t('.status'),
        period: t('[data-testid=period]'),
      };
    }, card(id));
    const want = {
      seq: s.seq,
      home: String(s.home.score),
      away: String(s.away.score),
      status: s.status,
      period: s.period ? `Period ${s.period}` : '',
    };
    if (JSON.stringify(shown) === JSON.stringify(want)) return s;
    last = { shown, want };
    if (Date.now() > deadline) {
      throw new Error(`card ${id} does not match the hub: ${JSON.stringify(last)}`);
    }
    await sleep(100);
  }
}

// --- the tests ---------------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('pages are served with a strict CSP and no inline code', async () => {
  for (const [path, type] of [
    ['/', 'text/html'],
    ['/console', 'text/html'],
    ['/scorehub.js', 'application/javascript'],
    ['/assets/app.js', 'text/javascript'],
    ['/assets/style.css', 'text/css'],
  ]) {
    const r = await fetch(`${hub.base}${path}`);
    assert(r.status === 200, `${path} → ${r.status}`);
    assert(r.headers.get('content-type').startsWith(type), `${path} content-type ${r.headers.get('content-type')}`);
    const csp = r.headers.get('content-security-policy') ?? '';
    assert(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `${path} CSP: ${csp}`);
    assert(r.headers.get('x-content-type-options') === 'nosniff', `${path} nosniff`);
    assert(r.headers.get('referrer-policy') === 'no-referrer', `${path} referrer-policy`);
    assert(r.headers.get('cache-control') === 'no-cache', `${path} cache-control`);
  }
});

test('the scoreboard shows a game and updates within 2 s of a POST', async () => {
  const id = 't1:lal-bos';
  await createGame(id, 'Lakers', 'Celtics');
  const page = await newPage('scoreboard-1');
  await page.goto(`${hub.base}/?games=${id},t1:no-such-game`);
  await waitAttr(page, conn, 'data-conn-state', 'live');
  await waitText(page, `${card(id)} [data-testid=name-home]`, 'Lakers');
  await waitText(page, `${card('t1:no-such-game')} .status`, 'not found');
  await waitText(page, `${card(id)} [data-testid=score-home]`, '0');
  for (const [team, points, want] of [
    ['home', 3, '3'],
    ['away', 2, '2'],
    ['home', 2, '5'],
  ]) {
    const t0 = Date.now();
    await score(id, team, points);
    await waitText(page, `${card(id)} [data-testid=score-${team}]`, want, 2000);
    const ms = Date.now() - t0;
    assert(ms < 2000, `update took ${ms} ms`);
  }
  const flashing = await page.$(`${card(id)} .score.flash`);
  assert(flashing, 'a changed score is highlighted');
  await cardMatchesHub(page, id, 2000);

  // Who is watching: this page, then a second one, then the first alone again.
  const watching = `${card(id)} .watching`;
  await waitText(page, watching, '1 watching');
  await waitAttr(page, watching, 'data-watching', '1');
  const other = await newPage('scoreboard-1b');
  await other.goto(`${hub.base}/?games=${id}`);
  await waitText(other, watching, '2 watching');
  await waitText(page, watching, '2 watching');
  await waitAttr(page, watching, 'data-watching', '2');
  assert((await must('GET', `/v1/games/${id}`)).watching === 2, 'GET says 2 watching');
  const missing = await page.$(`${card('t1:no-such-game')} .watching:not([hidden])`);
  assert(!missing, 'a game that does not exist shows no count');
  await other.close();
  await waitText(page, watching, '1 watching');
  assert(
    await page.evaluate(() => (1234).toLocaleString('en-US') === '1,234'),
    'counts are grouped by thousands ("1,234 watching")',
  );
  await page.close();
});

test('the console posts events by clicking; a second page shows them', async () => {
  const id = 't2:den-phx';
  const keeper = await newPage('console-2');
  await openConsole(keeper);
  // Create the game from the console (PUT).
  await keeper.click('#create summary');
  await keeper.fill('#new-game', id);
  await keeper.fill('#new-home', 'Nuggets');
  await keeper.fill('#new-away', 'Suns');
  await keeper.click('#create-form button[type=submit]');
  await waitText(keeper, '#message', `Created ${id}.`);
  await waitText(keeper, '#live-home', '0');

  const fan = await newPage('scoreboard-2');
  await fan.goto(`${hub.base}/?games=${id}`);
  await waitText(fan, `${card(id)} [data-testid=name-away]`, 'Suns');
  // Background tabs get animation frames about once a second, which slows
  // Playwright's actionability checks; the scorekeeper's tab is in front.
  await keeper.bringToFront();

  for (const [team, points] of [
    ['home', 2],
    ['away', 3],
    ['home', 1],
    ['home', 3],
  ]) {
    await keeper.click(pad(team, points));
  }
  await keeper.click('#undo'); // takes back the home +3
  await keeper.selectOption('#status-value', 'live');
  await keeper.click('#status-form button[type=submit]');
  await keeper.fill('#period-value', '2');
  await keeper.click('#period-form button[type=submit]');
  await keeper.fill('#clock-value', '11:30');
  await keeper.click('#clock-form button[type=submit]');
  await keeper.click('#clock-start');

  await waitAttr(keeper, '#pending', 'data-pending', '0', 10_000);
  await waitText(fan, `${card(id)} [data-testid=score-home]`, '3');
  await waitText(fan, `${card(id)} [data-testid=score-away]`, '3');
  await waitText(fan, `${card(id)} .status`, 'live');
  await waitText(fan, `${card(id)} [data-testid=period]`, 'Period 2');
  const s = await cardMatchesHub(fan, id, 5000);
  assert(s.clock.running && s.clock.ms <= 690_000, `the clock runs from 11:30: ${JSON.stringify(s.clock)}`);
  // The fan's clock ticks locally.
  const c1 = await fan.textContent(`${card(id)} [data-testid=clock]`);
  await sleep(1200);
  const c2 = await fan.textContent(`${card(id)} [data-testid=clock]`);
  assert(c1 !== c2 && /^\d+:\d\d$/.test(c2), `the clock ticks: ${c1} then ${c2}`);
  await waitText(keeper, '#live-home', '3');
  await keeper.close();
  await fan.close();
});

test('the console queues clicks while the hub is down and drains them exactly once', async () => {
  const id = 't3:tor-mtl';
  await createGame(id, 'Maple Leafs', 'Canadiens');
  const keeper = await newPage('console-3');
  await openConsole(keeper, id);
  await waitText(keeper, '#live-home', '0');
  const addr = hub.addr;

  const code = await hub.stop();
  assert(code === 0, `the hub exits 0 on SIGTERM (got ${code})`);
  const clicks = [
    ['home', 1],
    ['away', 2],
    ['home', 1],
    ['away', 2],
    ['home', 1],
  ];
  for (const [team, points] of clicks) {
    await keeper.click(pad(team, points));
  }
  await waitAttr(keeper, '#pending', 'data-pending', String(clicks.length));
  await keeper.waitForFunction(() => /unreachable/.test(document.querySelector('#message').textContent), null, {
    timeout: 5000,
  });
  // The outbox survives a reload: it lives in localStorage.
  const stored = await keeper.evaluate(() => JSON.parse(localStorage.getItem('scorehub.console.queue')));
  assert(stored.length === clicks.length, `${clicks.length} events persisted, got ${stored.length}`);
  assert(!JSON.stringify(stored).includes(TOKEN), 'the outbox does not hold the token');
  await sleep(1500); // a few failed retries

  await hub.start(addr);
  await waitAttr(keeper, '#pending', 'data-pending', '0', 30_000);
  const s = await must('GET', `/v1/games/${id}`);
  assert(s.home.score === 3 && s.away.score === 4, `final score 3-4, got ${s.home.score}-${s.away.score}`);
  const log = await must('GET', `/v1/games/${id}/events?since=0&limit=100`);
  const scores = log.events.filter((e) => e.kind === 'score');
  assert(scores.length === clicks.length, `${clicks.length} score events in the log, got ${scores.length}`);
  assert(new Set(scores.map((e) => e.event_id)).size === clicks.length, 'distinct event ids');
  await waitText(keeper, '#live-home', '3', 15_000);
  await waitText(keeper, '#live-away', '4');
  await keeper.close();
});

test('the console drops an event the hub refuses (403), keeps it on a refused token (401), and says why', async () => {
  const id = 't5:ana-sjs';
  await createGame(id, 'Ducks', 'Sharks');
  const keeper = await newPage('console-refused');
  await keeper.goto(`${hub.base}/console?game=${id}`);
  await waitText(keeper, '#live-home', '0');
  const outsider = await mintToken('outsider', 'nhl:*', 'scorekeeper');
  await setToken(keeper, outsider);
  await keeper.click(pad('home', 2));
  await waitAttr(keeper, '#pending', 'data-pending', '0');
  let msg = await keeper.textContent('#message');
  assert(msg.includes('403') && /dropped/.test(msg), `a 403 is explained: "${msg}"`);
  assert(!msg.includes(outsider), 'the message does not show the token');

  // A refused token is the token's fault, not the event's: it waits for a new one.
  const bad = 'e30.e30.not-a-signature';
  await setToken(keeper, bad);
  await keeper.click(pad('home', 2));
  await keeper.waitForFunction(() => /401/.test(document.querySelector('#message')?.textContent ?? ''));
  msg = await keeper.textContent('#message');
  assert(/new token/.test(msg), `a 401 asks for a new token: "${msg}"`);
  assert(!msg.includes(bad), 'the message does not show the token');
  assert((await keeper.getAttribute('#pending', 'data-pending')) === '1', 'the event waits');
  assert((await must('GET', `/v1/games/${id}`)).home.score === 0, 'refused events changed nothing');
  await setToken(keeper, await mintToken('keeper', 't5:*', 'scorekeeper'));
  await waitAttr(keeper, '#pending', 'data-pending', '0');
  await waitText(keeper, '#live-home', '2');
  await keeper.close();
});

test('the scoreboard survives a hub restart and ends in the exact state', async () => {
  const [a, b, c] = ['t4:nyr-bos', 't4:chi-det', 't4:sea-van'];
  await createGame(a, 'Rangers', 'Bruins');
  await createGame(b, 'Blackhawks', 'Red Wings');
  const page = await newPage('scoreboard-4');
  await page.goto(`${hub.base}/?league=t4`);
  await waitAttr(page, conn, 'data-conn-state', 'live');
  await score(a, 'home', 1);
  await score(b, 'away', 1);
  await cardMatchesHub(page, a);
  await cardMatchesHub(page, b);
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  const addr = hub.addr;

  await hub.stop();
  await waitAttr(page, conn, 'data-conn-state', 'reconnecting', 5000);
  await waitText(page, '#conn-text', 'reconnecting…');
  await sleep(1000);

  await hub.start(addr);
  // Events right after the restart: the page gets them by resume (since) or snapshot.
  await score(a, 'home', 2);
  await score(a, 'away', 1);
  await score(b, 'home', 3);
  await must('POST', `/v1/games/${b}/events`, { event_id: randomUUID(), kind: 'status', status: 'final' });
  await createGame(c, 'Kraken', 'Canucks'); // a game created later in the league
  await score(c, 'away', 2);
  await waitAttr(page, conn, 'data-conn-state', 'live', 20_000);
  for (const id of [a, b, c]) await cardMatchesHub(page, id);
  assert(await page.evaluate(() => window.__sameDocument === true), 'the page resumed without reloading');
  await page.close();
});

// What a network that blocks WebSocket looks like to a page: no WebSocket at
// all (some locked-down browsers), or one that fails before it opens (a proxy
// refusing the upgrade). Either way the client falls back to /v1/sse.
const NO_WEBSOCKET = () => {
  delete window.WebSocket;
  window.WebSocket = undefined;
};
const FAILING_WEBSOCKET = () => {
  window.WebSocket = class BlockedWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      window.__blockedWebSockets = (window.__blockedWebSockets ?? 0) + 1;
      setTimeout(() => {
        this.readyState = 3;
        this.onerror?.(new Event('error'));
        this.onclose?.({ code: 1006, reason: '' });
      }, 10);
    }
    send() {
      throw new Error('not open');
    }
    close() {}
  };
};

test('with WebSocket missing, the scoreboard goes live over SSE, updates, and survives a restart', async () => {
  const id = 't6:lal-bos';
  await createGame(id, 'Lakers', 'Celtics');
  const page = await newPage('scoreboard-sse');
  await page.addInitScript(NO_WEBSOCKET);
  await page.goto(`${hub.base}/?games=${id}`);
  await waitAttr(page, conn, 'data-conn-state', 'live');
  await waitAttr(page, conn, 'data-conn-transport', 'sse');
  assert(await page.evaluate(() => typeof window.WebSocket === 'undefined'), 'the page has no WebSocket');
  await waitText(page, `${card(id)} [data-testid=name-home]`, 'Lakers');
  await score(id, 'home', 3);
  await waitText(page, `${card(id)} [data-testid=score-home]`, '3', 5000);
  await score(id, 'away', 2);
  await cardMatchesHub(page, id);

  // A restart: the stream ends, the client retries (SSE again) and resumes.
  const addr = hub.addr;
  await hub.stop();
  await waitAttr(page, conn, 'data-conn-state', 'reconnecting', 5000);
  await hub.start(addr);
  await score(id, 'home', 1);
  await waitAttr(page, conn, 'data-conn-state', 'live', 20_000);
  await waitAttr(page, conn, 'data-conn-transport', 'sse');
  await cardMatchesHub(page, id);
  await page.close();
});

test('with WebSocket blocked, the console posts by clicking and both pages follow over SSE', async () => {
  const id = 't7:den-phx';
  await createGame(id, 'Nuggets', 'Suns');
  const fan = await newPage('scoreboard-sse-2');
  await fan.addInitScript(FAILING_WEBSOCKET);
  await fan.goto(`${hub.base}/?league=t7`);
  await waitAttr(fan, conn, 'data-conn-transport', 'sse');
  await waitAttr(fan, conn, 'data-conn-state', 'live');
  assert((await fan.evaluate(() => window.__blockedWebSockets)) >= 1, 'the page tried the WebSocket first');
  await waitText(fan, `${card(id)} [data-testid=name-away]`, 'Suns');

  const keeper = await newPage('console-sse');
  await keeper.addInitScript(FAILING_WEBSOCKET);
  await openConsole(keeper, id);
  await waitText(keeper, '#live-home', '0');
  await keeper.bringToFront();
  await keeper.click(pad('home', 2));
  await keeper.click(pad('away', 3));
  await waitAttr(keeper, '#pending', 'data-pending', '0', 10_000);
  await waitText(keeper, '#live-home', '2');
  await waitText(fan, `${card(id)} [data-testid=score-home]`, '2');
  await waitText(fan, `${card(id)} [data-testid=score-away]`, '3');
  await cardMatchesHub(fan, id);
  await keeper.close();
  await fan.close();
});

test('screenshots of both pages', async () => {
  mkdirSync(SHOTS, { recursive: true });
  const games = [
    ['nba:2026-11-22-lal-bos', 'Lakers', 'Celtics', [['home', 3], ['away', 2], ['home', 2], ['away', 3], ['home', 2]], 'live', 3, true],
    ['nba:2026-11-22-gsw-mia', 'Warriors', 'Heat', [['home', 2], ['away', 2], ['away', 3]], 'paused', 2, false],
    ['nba:2026-11-22-nyk-chi', 'Knicks', 'Bulls', [['home', 3], ['home', 2], ['away', 2]], 'final', 4, false],
    ['nba:2026-11-22-den-phx', 'Nuggets', 'Suns', [], 'scheduled', 0, false],
  ];
  for (const [id, home, away, points, status, period, running] of games) {
    await createGame(id, home, away);
    for (const [team, p] of points) await score(id, team, p);
    const ev = (body) => must('POST', `/v1/games/${id}/events`, { event_id: randomUUID(), ...body });
    await ev({ kind: 'status', status });
    if (period) await ev({ kind: 'clock', period, ms: status === 'final' ? 0 : 431_000, running });
  }
  const fan = await newPage('scoreboard-5');
  await fan.setViewportSize({ width: 1000, height: 540 });
  await fan.goto(`${hub.base}/?league=nba`);
  await waitAttr(fan, conn, 'data-conn-state', 'live');
  for (const [id] of games) await cardMatchesHub(fan, id);
  await score(games[0][0], 'home', 3); // a fresh highlight
  await sleep(250);
  await fan.screenshot({ path: join(SHOTS, 'scoreboard.png') });

  const keeper = await newPage('console-5');
  await keeper.setViewportSize({ width: 1200, height: 760 });
  await openConsole(keeper, games[0][0]);
  await waitText(keeper, '#live-home-name', 'Lakers');
  await waitAttr(keeper, '#pending', 'data-pending', '0');
  await keeper.click(pad('away', 2));
  await waitAttr(keeper, '#pending', 'data-pending', '0');
  await keeper.screenshot({ path: join(SHOTS, 'console.png') });
  // Phone-sized views, kept with the temp dir (KEEP_TMP=1) for a look.
  await fan.setViewportSize({ width: 390, height: 844 });
  await keeper.setViewportSize({ width: 390, height: 844 });
  await fan.screenshot({ path: join(TMP, 'scoreboard-phone.png') });
  await keeper.screenshot({ path: join(TMP, 'console-phone.png'), fullPage: true });
  await fan.close();
  await keeper.close();
});

test('no page error, no CSP violation, and the token never reaches the browser console', async () => {
  assert(pageErrors.length === 0, `uncaught page errors:\n${pageErrors.join('\n')}`);
  const csp = consoleLines.filter((l) => /Content Security Policy/i.test(l));
  assert(csp.length === 0, `CSP violations:\n${csp.join('\n')}`);
  const leaks = consoleLines.filter((l) => l.includes(TOKEN) || l.includes(TOKEN.split('.')[2]));
  assert(leaks.length === 0, 'the token appeared in the browser console');
});

// --- runner -------------------------------------------------------------------------------------------

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`"${name}" took longer than ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function main() {
  let passed = 0;
  let failed = 0;
  try {
    await hub.start();
    TOKEN = await mintToken();
    context = await chromium.launchPersistentContext(join(TMP, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-quic',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
      viewport: { width: 1000, height: 800 },
      timeout: 60_000,
    });
    context.setDefaultTimeout(10_000);
    console.log(`hub ${hub.addr} · ${BIN}`);
    console.log(`browser ${CHROMIUM} ${context.browser()?.version() ?? ''}`);
    for (const t of tests) {
      const started = Date.now();
      try {
        if (hub.proc?.exitCode !== null) await hub.start(hub.addr ?? '127.0.0.1:0');
        await withTimeout(t.fn(), TEST_TIMEOUT_MS, t.name);
        passed += 1;
        console.log(`ok   ${t.name} (${Date.now() - started} ms)`);
      } catch (err) {
        failed += 1;
        console.log(`FAIL ${t.name} (${Date.now() - started} ms)\n     ${String(err?.stack ?? err).split('\n').join('\n     ')}`);
        for (const p of context.pages()) await p.close().catch(() => {});
      }
    }
  } catch (err) {
    failed += 1;
    console.log(`FAIL setup: ${err?.stack ?? err}`);
  } finally {
    await context?.close().catch(() => {});
    await hub.stop().catch(() => {});
    if (failed) {
      const logPath = join(TMP, 'hub.log');
      writeFileSync(logPath, `${hub.log.join('\n')}\n\n--- browser console ---\n${consoleLines.join('\n')}\n`);
      console.log(`--- last hub log lines (all in ${logPath}) ---`);
      console.log(hub.log.slice(-30).join('\n'));
    }
    if (!failed && !process.env.KEEP_TMP) rmSync(TMP, { recursive: true, force: true });
    else console.log(`kept ${TMP}`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
