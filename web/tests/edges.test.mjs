// The browser client and pages at their edges: the clock estimate after a resume,
// games followed by id and through a league at once, a gap resync of a league game, a
// token form submitted before its script ran, a refused token with events queued (also
// with two tabs open), and a game no browser could decode. Each test failed before the
// fix it guards.
//
// (The clock estimate's unit test, with a scripted socket, is in client.test.mjs.)
//
// Run like the other JS tests: `node --test web/tests/*.test.mjs` (from the repo root,
// after `npm ci` in web/). They need the debug hub binary (HUB_BIN, default
// target/debug/scorehub) and Chromium (CHROMIUM, default /usr/bin/chromium), and are
// skipped when either is missing.

import test, { after, afterEach, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- browser tests

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BIN = resolve(process.env.HUB_BIN ?? join(ROOT, 'target/debug/scorehub'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const haveBrowser = existsSync(BIN) && existsSync(CHROMIUM);

describe('browser, real hub', { skip: haveBrowser ? false : `needs ${BIN} and ${CHROMIUM}` }, () => {
  let TMP;
  let ENV;
  let proc;
  let base;
  let TOKEN;
  let browser;
  let context;
  const pageErrors = [];
  const pages = [];

  async function startHub() {
    proc = spawn(BIN, ['serve'], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    const addr = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error('the hub did not log "listening addr=" within 20 s')), 20_000);
      let buf = '';
      const onData = (chunk) => {
        buf += chunk.toString();
        // eslint-disable-next-line no-control-regex
        const m = /listening addr=(\S+)/.exec(buf.replace(/\x1b\[[0-9;]*m/g, ''));
        if (m) {
          clearTimeout(timer);
          res(m[1].replace(/[",}]+$/, ''));
        }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', onData);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        rej(new Error(`the hub exited with ${code} before listening`));
      });
    });
    base = `http://${addr}`;
  }

  async function api(method, path, body, token = TOKEN) {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body: json, text };
  }
  async function must(method, path, body) {
    const r = await api(method, path, body);
    if (![200, 201].includes(r.status)) throw new Error(`${method} ${path} -> ${r.status} ${r.text}`);
    return r.body;
  }
  const createGame = (id, extra) =>
    must('PUT', `/v1/games/${id}`, { home: { name: 'Home' }, away: { name: 'Away' }, ...(extra ? { extra } : {}) });
  const score = (id, team, points) =>
    must('POST', `/v1/games/${id}/events`, { event_id: randomUUID(), kind: 'score', team, points });

  async function newPage(name) {
    const page = await context.newPage();
    pages.push(page);
    page.on('pageerror', (e) => pageErrors.push(`[${name}] ${e.message}`));
    return page;
  }

  /** A blank page on the hub's origin with the client module loaded as window.SH. */
  async function clientPage(name) {
    const page = await newPage(name);
    await page.goto(`${base}/healthz`);
    await page.evaluate(async () => {
      window.SH = await import('/scorehub.js');
    });
    return page;
  }

  async function waitFor(page, fn, arg, timeout, what) {
    try {
      await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    } catch {
      throw new Error(`${what} (not within ${timeout} ms)`);
    }
  }

  before(async () => {
    const { chromium } = await import('playwright-core');
    TMP = mkdtempSync(join(tmpdir(), 'scorehub-edges-'));
    ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SCOREHUB_')));
    Object.assign(ENV, {
      SCOREHUB_STORAGE__DIR: join(TMP, 'data'),
      SCOREHUB_AUTH__SECRET: randomBytes(32).toString('hex'),
      SCOREHUB_HTTP__LISTEN: '127.0.0.1:0',
      NO_COLOR: '1',
    });
    await startHub();
    const { stdout } = await promisify(execFile)(
      BIN,
      ['token', '--sub', 'edges', '--games', '*', '--ttl', '1h', '--scope', 'admin'],
      { env: ENV },
    );
    TOKEN = stdout.trim().split(/\s+/).pop();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
      timeout: 60_000,
    });
    context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    context.setDefaultTimeout(10_000);
  });

  // Every test starts with no page of ours open (a failed test leaves its pages).
  afterEach(async () => {
    for (const p of pages.splice(0)) await p.close().catch(() => {});
  });

  after(async () => {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 12_000);
      await exited;
      clearTimeout(t);
    }
    if (TMP && !process.env.KEEP_TMP) rmSync(TMP, { recursive: true, force: true });
  });

  test('scoreboard keeps following a league game after its id is removed from "Games by id"', { timeout: 30_000 }, async () => {
    // `/?league=rva&games=rva:x`, then the user clears the games field (league kept).
    // The game is still wanted through its league, so the client must not send an
    // `unsub` naming it (the hub would drop it for the whole connection and the card
    // would freeze, as it did).
    const id = 'rva:x';
    await createGame(id);
    const page = await newPage('scoreboard-unsub');
    await page.goto(`${base}/?league=rva&games=${id}`);
    const card = `.card[data-game="${id}"]`;
    await waitFor(page, (s) => document.querySelector(s)?.dataset.seq === '0', `${card}`, 5000, 'card shown');
    await waitFor(page, () => document.querySelector('#league').value === 'rva', null, 5000, 'league selected');
    await page.fill('#games', '');
    await page.click('#pick button[type=submit]');
    await waitFor(page, () => location.search === '?league=rva', null, 5000, 'follows the league only');
    await score(id, 'home', 3);
    await waitFor(
      page,
      (s) => document.querySelector(`${s} [data-testid=score-home]`)?.textContent === '3',
      card,
      5000,
      `the card of ${id} (still in the followed league) should follow a POST to 3`,
    ).catch(async (err) => {
      const shown = await page.textContent(`${card} [data-testid=score-home]`);
      throw new Error(`${err.message}; it shows "${shown}"`);
    });
    await page.close();
  });

  test('a gap resync of a league game does not leave a by-id subscription behind after the league is unsubscribed', { timeout: 30_000 }, async () => {
    // A gap makes the client send {op:"unsub",games:[g]} + {op:"sub",games:[g]}: for a
    // game followed only through its league this turns it into a by-id subscription on
    // the hub, which must be released with the league (it used to stay, and the hub
    // kept streaming the game to a client that dropped it).
    const id = 'rvd:x';
    await createGame(id);
    const page = await clientPage('client-gap-leak');
    await page.evaluate((g) => {
      const c = window.SH.connect(undefined, { leagues: ['rvd'] });
      window.c = c;
      window.raw = [];
      const orig = c.onFrame.bind(c);
      c.onFrame = (data) => {
        window.raw.push(window.SH.decodeFrame(data));
        orig(data);
      };
      window.snaps = 0;
      c.on('snapshot', (e) => {
        if (e.game === g) window.snaps += 1;
      });
    }, id);
    await waitFor(page, () => window.snaps === 1, null, 5000, 'first snapshot');
    // A diff whose seq skips ahead (as after a lost frame): the client resyncs.
    await page.evaluate((g) => window.c.onFrame(JSON.stringify({ t: 'd', g, q: window.c.store.seq(g) + 5, d: {} })), id);
    await waitFor(page, () => window.snaps === 2, null, 5000, 'resync snapshot');
    await page.evaluate(() => {
      window.c.unsubscribe({ leagues: ['rvd'] });
      window.c.send({ op: 'ping' });
    });
    // The pong comes after the hub handled the unsub (messages are handled in order).
    await waitFor(page, () => window.raw.some((f) => f.t === 'p'), null, 5000, 'pong');
    await page.evaluate(() => {
      window.raw = [];
    });
    await score(id, 'home', 1);
    await sleep(1500);
    const leaked = await page.evaluate((g) => window.raw.filter((f) => f.g === g), id);
    assert.deepEqual(leaked, [], `the hub still sends ${id} after unsubscribe({leagues:['rvd']})`);
    await page.evaluate(() => window.c.close());
    await page.close();
  });

  test('after a resume from the real hub, serverNow() matches the (shared) clock', { timeout: 30_000 }, async () => {
    const id = 'rvc:x';
    await createGame(id);
    await must('POST', `/v1/games/${id}/events`, { event_id: randomUUID(), kind: 'clock', ms: 600_000, running: true });
    const page = await clientPage('client-skew');
    await page.evaluate((g) => {
      const c = window.SH.connect(undefined, { games: [g], baseDelayMs: 4000, maxDelayMs: 4000 });
      window.c = c;
      window.kinds = [];
      window.conn = [];
      c.on('state', (e) => window.kinds.push(`${e.kind}:${e.seq}`));
      c.on('connection', (e) => window.conn.push(e.state));
    }, id);
    await waitFor(page, () => window.kinds.length === 1, null, 5000, 'snapshot');
    // Lose the connection (as on a network blip); the client retries after 2-4 s.
    await page.evaluate(() => window.c.ws.close());
    await waitFor(page, () => window.conn.includes('reconnecting'), null, 5000, 'reconnecting');
    await score(id, 'home', 2); // missed while away: replayed on resume
    await waitFor(page, () => window.kinds.length === 2, null, 10_000, 'resumed');
    const { kinds, off } = await page.evaluate(() => ({ kinds: window.kinds, off: window.c.serverNow() - Date.now() }));
    assert.equal(kinds[1], 'diff:2', 'resumed by a replayed diff');
    assert.ok(Math.abs(off) < 1000, `serverNow() is off by ${off} ms: hub and browser share this machine's clock`);
    await page.evaluate(() => window.c.close());
    await page.close();
  });

  test('the hub refuses a game whose extra has a "__proto__" key (no browser could show it)', { timeout: 30_000 }, async () => {
    const r = await api('PUT', '/v1/games/rvb:p', {
      home: { name: 'Home' },
      away: { name: 'Away' },
      extra: JSON.parse('{"__proto__": 1}'),
    });
    assert.equal(r.status, 422, r.text);
    assert.ok(r.text.includes('__proto__'), r.text);
  });

  test('the token never lands in the URL when the token form is submitted before console.js ran', { timeout: 30_000 }, async () => {
    // console.js is a module (deferred): until it has run, pressing Enter in the
    // token field submits the form natively: GET /console?token=<JWT>, into the
    // address bar and history. Here its load is held back to widen that window.
    const page = await newPage('console-early-submit');
    let release;
    const held = new Promise((r) => {
      release = r;
    });
    await page.route('**/assets/console.js', async (route) => {
      await held;
      await route.continue().catch(() => {});
    });
    await page.goto(`${base}/console`, { waitUntil: 'commit' });
    await page.waitForSelector('#token');
    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForURL(/\?/, { timeout: 5000 }).catch(() => {}), page.press('#token', 'Enter')]);
    release();
    const url = page.url();
    assert.ok(!url.includes(TOKEN.split('.')[2]), `the token is in the URL: ${url.slice(0, 60)}…`);
    await page.close();
  });

  test('undo never takes back a score the hub refused (it used to apply the negative one)', { timeout: 30_000 }, async () => {
    const id = 'rvu:x';
    await createGame(id);
    await must('POST', `/v1/games/${id}/events`, { event_id: randomUUID(), kind: 'score', team: 'home', points: 5 });
    const { stdout } = await promisify(execFile)(
      BIN,
      ['token', '--sub', 'outsider', '--games', 'nhl:*', '--ttl', '1h', '--scope', 'scorekeeper'],
      { env: ENV },
    );
    const outsider = stdout.trim().split(/\s+/).pop();
    const page = await newPage('console-undo');
    await page.goto(`${base}/console?game=${id}`);
    await waitFor(page, () => document.querySelector('#live-home').textContent === '5', null, 5000, 'game open');
    // +2 with a token for another league: refused (403) and dropped.
    await page.fill('#token', outsider);
    await page.click('#token-form button[type=submit]');
    await page.click('.pad button[data-team="home"][data-points="2"]');
    await waitFor(page, () => /dropped/.test(document.querySelector('#message').textContent), null, 5000, '403 dropped');
    // With a good token, undo has nothing of this console's to take back.
    await page.fill('#token', TOKEN);
    await page.click('#token-form button[type=submit]');
    await page.click('#undo');
    await waitFor(page, () => /Nothing to undo/.test(document.querySelector('#message').textContent), null, 5000, 'nothing to undo');
    await sleep(300);
    const s = await must('GET', `/v1/games/${id}`);
    assert.equal(s.home.score, 5, 'the refused +2 was not taken back from the real score');
    await page.close();
  });

  test('an empty period field posts nothing (it used to post period 0)', { timeout: 30_000 }, async () => {
    const id = 'rvp:x';
    await createGame(id);
    const page = await newPage('console-period');
    await page.goto(`${base}/console?game=${id}`);
    await waitFor(page, () => document.querySelector('#live-home').textContent === '0', null, 5000, 'game open');
    await page.fill('#token', TOKEN);
    await page.click('#token-form button[type=submit]');
    await page.fill('#period-value', '');
    await page.click('#period-form button[type=submit]');
    await waitFor(page, () => /whole number/.test(document.querySelector('#message').textContent), null, 5000, 'asked for a number');
    const queued = await page.evaluate(() => JSON.parse(localStorage.getItem('scorehub.console.queue') ?? '[]').length);
    assert.equal(queued, 0, 'nothing queued');
    assert.equal((await must('GET', `/v1/games/${id}`)).seq, 0, 'nothing applied');
    await page.close();
  });

  test('a 401 (expired token) does not drop a queued event while later ones are kept and sent', { timeout: 30_000 }, async () => {
    // Outbox of three events (queued offline); the saved token has expired meanwhile.
    // A 401 is the token's fault: all three wait for a fresh token, then all three are
    // applied. (The head event used to be dropped: 2 of the 3 clicks applied.)
    const id = 'rve:x';
    await createGame(id);
    const page = await newPage('console-401');
    await page.goto(`${base}/console?game=${id}`);
    await waitFor(page, () => document.querySelector('#live-home').textContent === '0', null, 5000, 'game open');
    await page.evaluate(
      ({ g }) => {
        const ev = (points) => ({ game: g, event: { event_id: crypto.randomUUID(), kind: 'score', team: 'home', points }, queued_at: Date.now() });
        localStorage.setItem('scorehub.console.queue', JSON.stringify([ev(1), ev(2), ev(3)]));
        localStorage.setItem('scorehub.console.token', JSON.stringify('e30.e30.expired-or-bad'));
      },
      { g: id },
    );
    await page.reload();
    await waitFor(page, () => /401/.test(document.querySelector('#message').textContent), null, 5000, '401 seen');
    const left = await page.evaluate(() => JSON.parse(localStorage.getItem('scorehub.console.queue')).length);
    await page.fill('#token', TOKEN);
    await page.click('#token-form button[type=submit]');
    await waitFor(page, () => JSON.parse(localStorage.getItem('scorehub.console.queue')).length === 0, null, 10_000, 'outbox drained');
    await waitFor(page, () => /^Sent:/.test(document.querySelector('#message').textContent), null, 5000, 'last ack shown').catch(
      async (err) => {
        throw new Error(`${err.message}: "${await page.textContent('#message')}" log "${await page.textContent('#log')}" left ${left}`);
      },
    );
    const s = await must('GET', `/v1/games/${id}`);
    assert.equal(s.home.score, 6, `all three queued clicks (1+2+3) applied; the hub has ${s.home.score} (after the 401, ${left} of 3 were still queued)`);
    await page.close();
  });

  test('with two console tabs open, a 401 still keeps the events after the refused one', { timeout: 30_000 }, async () => {
    // Two tabs share the outbox. A 401 must not make them take turns dropping events
    // (each removal fired a `storage` event that made the other tab pump, until the
    // whole outbox was gone).
    const id = 'rvf:x';
    await createGame(id);
    const a = await newPage('console-401-a');
    await a.goto(`${base}/console?game=${id}`);
    await waitFor(a, () => document.querySelector('#live-home').textContent === '0', null, 5000, 'game open in tab a');
    const b = await newPage('console-401-b');
    await b.goto(`${base}/console?game=${id}`);
    await waitFor(b, () => document.querySelector('#live-home').textContent === '0', null, 5000, 'game open in tab b');
    await a.evaluate(() => localStorage.setItem('scorehub.console.token', JSON.stringify('e30.e30.expired-or-bad')));
    // Five events queued while offline, written by tab a in one go (as its post() does);
    // tab b sees the `storage` event and pumps.
    await a.evaluate(({ g }) => {
      const q = [1, 2, 3, 1, 2].map((points) => ({
        game: g,
        event: { event_id: crypto.randomUUID(), kind: 'score', team: 'home', points },
        queued_at: Date.now(),
      }));
      localStorage.setItem('scorehub.console.queue', JSON.stringify(q));
    }, { g: id });
    await waitFor(b, () => /401/.test(document.querySelector('#message').textContent), null, 5000, '401 seen in tab b');
    await sleep(1000);
    const left = await a.evaluate(() => JSON.parse(localStorage.getItem('scorehub.console.queue')).length);
    assert.ok(left >= 4, `after one 401, ${left} of 5 queued events are left (the refused one alone should be dropped)`);
  });

  test('no uncaught page errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});
