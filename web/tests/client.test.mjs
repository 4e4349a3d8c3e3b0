// Unit tests of the pure parts of the browser client: merge patch, seq
// tracking and gap detection, backoff, frame decoding, URL handling.
// Run with `node --test web/tests/` from the repo root (after `npm ci` in web/).

import test from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';

import {
  mergePatch,
  GameStore,
  backoffDelay,
  decodeFrame,
  wsUrl,
  sseUrl,
  sseStreamUrl,
  Client,
} from '../src/scorehub.js';

test('mergePatch follows the RFC 7386 examples', () => {
  // Appendix A of RFC 7386: [original, patch, result].
  const cases = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, want] of cases) {
    assert.deepEqual(mergePatch(target, patch), want, `${JSON.stringify(target)} + ${JSON.stringify(patch)}`);
  }
});

test('mergePatch does not modify its inputs and shares untouched branches', () => {
  const state = { home: { name: 'H', score: 1 }, away: { name: 'A', score: 2 }, extra: { x: 1 } };
  const frozen = JSON.stringify(state);
  const patch = { home: { score: 3 }, extra: { x: null } };
  const next = mergePatch(state, patch);
  assert.equal(JSON.stringify(state), frozen);
  assert.deepEqual(next, { home: { name: 'H', score: 3 }, away: { name: 'A', score: 2 }, extra: {} });
  assert.equal(next.away, state.away, 'unchanged branch is shared');
  assert.notEqual(next.home, state.home);
});

const snap = (g, q, d, n) => ({ t: 's', g, q, d: { game: g, seq: q, ...d }, ...(n === undefined ? {} : { n }) });
const diff = (g, q, d) => ({ t: 'd', g, q, d: { seq: q, ...d }, ts: 1 });

test('GameStore applies a snapshot, then consecutive diffs', () => {
  const s = new GameStore();
  let r = s.apply(snap('nba:a', 3, { home: { name: 'H', score: 10 } }));
  assert.equal(r.type, 'snapshot');
  assert.equal(s.seq('nba:a'), 3);
  r = s.apply(diff('nba:a', 4, { home: { score: 12 } }));
  assert.equal(r.type, 'diff');
  assert.equal(r.prev.home.score, 10);
  assert.equal(r.state.home.score, 12);
  assert.equal(s.get('nba:a').home.name, 'H');
  assert.equal(s.get('nba:a').seq, 4);
  assert.deepEqual(s.since(), { 'nba:a': 4 });
});

test('GameStore ignores stale diffs and detects gaps', () => {
  const s = new GameStore();
  s.apply(snap('nba:a', 5, { home: { score: 1 } }));
  assert.equal(s.apply(diff('nba:a', 5, { home: { score: 99 } })).type, 'stale');
  assert.equal(s.apply(diff('nba:a', 2, { home: { score: 99 } })).type, 'stale');
  assert.equal(s.get('nba:a').home.score, 1);

  const gap = s.apply(diff('nba:a', 7, { home: { score: 3 } }));
  assert.equal(gap.type, 'gap');
  assert.equal(gap.expected, 6);
  assert.deepEqual(s.since(), {}, 'a resyncing game is not resumed: it needs a snapshot');
  // Diffs wait for the snapshot, whatever their seq.
  assert.equal(s.apply(diff('nba:a', 6, { home: { score: 2 } })).type, 'resyncing');
  assert.equal(s.apply(diff('nba:a', 8, { home: { score: 4 } })).type, 'resyncing');
  assert.equal(s.get('nba:a').home.score, 1);

  assert.equal(s.apply(snap('nba:a', 8, { home: { score: 4 } })).type, 'snapshot');
  assert.equal(s.apply(diff('nba:a', 8, { home: { score: 4 } })).type, 'stale');
  assert.equal(s.apply(diff('nba:a', 9, { home: { score: 6 } })).type, 'diff');
  assert.equal(s.get('nba:a').home.score, 6);
  assert.deepEqual(s.since(), { 'nba:a': 9 });
});

test('GameStore treats a diff for a game it has no snapshot of as a gap', () => {
  const s = new GameStore();
  const r = s.apply(diff('nhl:x', 1, { home: { score: 1 } }));
  assert.equal(r.type, 'gap');
  assert.equal(s.get('nhl:x'), undefined);
  assert.equal(s.apply(diff('nhl:x', 2, {})).type, 'resyncing');
  s.apply(snap('nhl:x', 2, { home: { score: 1 } }));
  assert.equal(s.apply(diff('nhl:x', 3, { home: { score: 2 } })).type, 'diff');
});

test('GameStore tracks each game separately', () => {
  const s = new GameStore();
  s.apply(snap('nba:a', 1, {}));
  s.apply(snap('nba:b', 10, {}));
  assert.equal(s.apply(diff('nba:b', 11, {})).type, 'diff');
  assert.equal(s.apply(diff('nba:a', 2, {})).type, 'diff');
  assert.equal(s.apply(diff('nba:a', 4, {})).type, 'gap');
  assert.equal(s.apply(diff('nba:b', 12, {})).type, 'diff');
  assert.deepEqual(s.since(), { 'nba:b': 12 });
});

test('GameStore passes errors and pongs through', () => {
  const s = new GameStore();
  assert.deepEqual(s.apply({ t: 'e', code: 'unknown_game', msg: 'no such game', g: 'nba:z' }), {
    type: 'error',
    game: 'nba:z',
    code: 'unknown_game',
    msg: 'no such game',
  });
  assert.equal(s.apply({ t: 'p' }).type, 'pong');
});

test('GameStore keeps how many fans watch, from occupancy frames and snapshots', () => {
  const s = new GameStore();
  assert.equal(s.watching('nba:a'), undefined);
  assert.deepEqual(s.apply({ t: 's', g: 'nba:a', q: 1, d: { seq: 1 }, n: 3 }).watching, 3);
  assert.equal(s.watching('nba:a'), 3);
  assert.deepEqual(s.apply({ t: 'o', g: 'nba:a', n: 1234 }), {
    type: 'occupancy',
    game: 'nba:a',
    watching: 1234,
  });
  assert.equal(s.watching('nba:a'), 1234);
  // The same count again, or a snapshot without `n`, changes nothing.
  assert.equal(s.apply({ t: 'o', g: 'nba:a', n: 1234 }).type, 'unchanged');
  assert.equal(s.apply({ t: 's', g: 'nba:a', q: 2, d: { seq: 2 } }).watching, undefined);
  assert.equal(s.watching('nba:a'), 1234);
  assert.equal(s.apply({ t: 'o', g: 'nba:a', n: 'many' }).type, 'unchanged');
  s.delete('nba:a');
  assert.equal(s.watching('nba:a'), undefined);
});

test('backoffDelay grows exponentially, is capped and jittered', () => {
  const lo = { random: () => 0 };
  const hi = { random: () => 1 };
  assert.equal(backoffDelay(0, { ...lo, baseMs: 500 }), 250);
  assert.equal(backoffDelay(0, { ...hi, baseMs: 500 }), 500);
  assert.equal(backoffDelay(3, { ...hi, baseMs: 500 }), 4000);
  assert.equal(backoffDelay(20, { ...hi, baseMs: 500, maxMs: 15000 }), 15000);
  assert.equal(backoffDelay(1000, { ...lo, baseMs: 500, maxMs: 15000 }), 7500);
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(2)));
  assert.ok(spread.size > 10, 'random jitter spreads reconnects');
  for (const d of spread) assert.ok(d >= 1000 && d <= 2000, `${d} within [1000, 2000]`);
});

test('decodeFrame reads MessagePack and JSON frames', () => {
  const frame = { t: 'd', g: 'nba:a', q: 7, d: { home: { score: 3 }, extra: { x: null } }, ts: 1763770000000 };
  assert.deepEqual(decodeFrame(encode(frame)), frame);
  assert.deepEqual(decodeFrame(encode(frame).slice().buffer), frame);
  assert.deepEqual(decodeFrame(JSON.stringify({ t: 'p' })), { t: 'p' });
});

test('wsUrl turns a hub address into its WebSocket URL', () => {
  assert.equal(wsUrl('http://127.0.0.1:8080'), 'ws://127.0.0.1:8080/v1/ws');
  assert.equal(wsUrl('https://hub.example/'), 'wss://hub.example/v1/ws');
  assert.equal(wsUrl('wss://hub.example/v1/ws'), 'wss://hub.example/v1/ws');
  assert.equal(wsUrl(undefined, 'http://localhost:9/console'), 'ws://localhost:9/v1/ws');
});

/** A scripted stand-in for WebSocket, to test the client's protocol logic. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // test helpers
  accept() {
    this.readyState = 1;
    this.onopen?.();
  }
  frame(f) {
    this.onmessage?.({ data: encode(f) });
  }
  lose() {
    this.readyState = 3;
    this.onclose?.({ code: 1006 });
  }
}

test('Client resumes with since after a reconnect and resyncs a gap', async () => {
  FakeSocket.all = [];
  const c = new Client('http://hub.test', {
    games: ['nba:a'],
    leagues: ['nhl'],
    baseDelayMs: 5,
    maxDelayMs: 10,
    WebSocket: FakeSocket,
  });
  const seen = [];
  const states = [];
  c.on('state', (e) => seen.push(`${e.kind}:${e.game}:${e.seq}`));
  c.on('connection', (e) => states.push(e.state));
  try {
    const ws1 = FakeSocket.all[0];
    assert.equal(ws1.url, 'ws://hub.test/v1/ws');
    ws1.accept();
    assert.deepEqual(ws1.sent[0], { op: 'sub', games: ['nba:a'], leagues: ['nhl'], since: {} });
    ws1.frame(snap('nba:a', 2, { home: { score: 0 } }));
    ws1.frame(snap('nhl:b', 1, {}));
    ws1.frame(diff('nba:a', 3, { home: { score: 2 } }));
    ws1.frame(snap('nfl:x', 1, {})); // not ours: ignored
    assert.deepEqual(seen, ['snapshot:nba:a:2', 'snapshot:nhl:b:1', 'diff:nba:a:3']);

    // A gap: unsub + sub without since, diffs ignored until the snapshot.
    ws1.frame(diff('nhl:b', 3, {}));
    assert.deepEqual(ws1.sent.slice(1), [
      { op: 'unsub', games: ['nhl:b'], leagues: [] },
      { op: 'sub', games: ['nhl:b'], leagues: [] },
    ]);
    ws1.frame(diff('nhl:b', 4, {}));
    ws1.frame(snap('nhl:b', 4, { home: { score: 9 } }));
    assert.equal(c.get('nhl:b').home.score, 9);

    ws1.lose();
    assert.equal(c.state, 'reconnecting');
    await new Promise((r) => setTimeout(r, 30));
    const ws2 = FakeSocket.all[1];
    assert.ok(ws2, 'reconnected after the backoff delay');
    ws2.accept();
    assert.deepEqual(ws2.sent[0], {
      op: 'sub',
      games: ['nba:a'],
      leagues: ['nhl'],
      since: { 'nba:a': 3, 'nhl:b': 4 },
    });
    ws2.frame(diff('nba:a', 4, { home: { score: 5 } }));
    assert.equal(c.get('nba:a').home.score, 5);
    assert.deepEqual(states, ['live', 'reconnecting', 'live']);

    // Who is watching: an event per change, and watching(game).
    const occupancy = [];
    c.on('occupancy', (e) => occupancy.push(e));
    ws2.frame({ t: 'o', g: 'nba:a', n: 12 });
    ws2.frame({ t: 'o', g: 'nba:a', n: 12 });
    ws2.frame({ t: 'o', g: 'nfl:x', n: 5 }); // not ours: ignored
    ws2.frame(snap('nhl:b', 4, {}, 7));
    assert.deepEqual(occupancy, [
      { game: 'nba:a', watching: 12 },
      { game: 'nhl:b', watching: 7 },
    ]);
    assert.equal(c.watching('nba:a'), 12);
    assert.equal(c.watching('nfl:x'), undefined);

    c.unsubscribe({ leagues: ['nhl'] });
    assert.deepEqual(ws2.sent.at(-1), { op: 'unsub', games: [], leagues: ['nhl'] });
    assert.equal(c.watching('nhl:b'), undefined);
    assert.deepEqual([...c.all().keys()], ['nba:a']);
  } finally {
    c.close();
  }
  assert.equal(c.state, 'closed');
});

/** A scripted stand-in for EventSource: JSON text frames with ids. */
class FakeEventSource {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    FakeEventSource.all.push(this);
  }
  close() {
    this.readyState = 2;
  }
  // test helpers
  accept() {
    this.readyState = 1;
    this.onopen?.();
  }
  frame(f) {
    this.onmessage?.({ data: JSON.stringify(f) });
  }
  fail() {
    this.readyState = 2;
    this.onerror?.({});
  }
}

test('sseUrl and sseStreamUrl address /v1/sse with the subscription and positions', () => {
  assert.equal(sseUrl('https://hub.test'), 'https://hub.test/v1/sse');
  assert.equal(sseUrl('wss://hub.test/v1/ws'), 'https://hub.test/v1/sse');
  assert.equal(sseUrl(undefined, 'http://page.test/console'), 'http://page.test/v1/sse');
  const u = new URL(
    sseStreamUrl('http://hub.test/v1/sse', { games: ['nba:a'], leagues: ['nhl'], since: { 'nba:a': 3, 'nhl:b': 4 } }),
  );
  assert.equal(u.searchParams.get('games'), 'nba:a');
  assert.equal(u.searchParams.get('leagues'), 'nhl');
  assert.equal(u.searchParams.get('last_event_id'), 'nba:a:3,nhl:b:4');
  assert.equal(new URL(sseStreamUrl('http://hub.test/v1/sse', { games: [], leagues: [], since: {} })).search, '');
});

test('Client falls back to SSE when a WebSocket cannot open, and keeps its positions', async () => {
  FakeSocket.all = [];
  FakeEventSource.all = [];
  const c = new Client('http://hub.test', {
    games: ['nba:a'],
    baseDelayMs: 2,
    maxDelayMs: 4,
    WebSocket: FakeSocket,
    EventSource: FakeEventSource,
  });
  const seen = [];
  const connections = [];
  c.on('state', (e) => seen.push(`${e.kind}:${e.game}:${e.seq}`));
  c.on('connection', (e) => connections.push(`${e.state}:${e.transport}`));
  try {
    // The WebSocket fails before it opens: a network that blocks it.
    FakeSocket.all[0].lose();
    const es1 = FakeEventSource.all[0];
    assert.ok(es1, 'fell back to SSE at once');
    assert.equal(es1.url, 'http://hub.test/v1/sse?games=nba%3Aa');
    es1.accept();
    es1.frame(snap('nba:a', 2, { home: { score: 0 } }));
    es1.frame(diff('nba:a', 3, { home: { score: 2 } }));
    assert.deepEqual(seen, ['snapshot:nba:a:2', 'diff:nba:a:3']);
    assert.equal(c.get('nba:a').home.score, 2);
    assert.equal(connections.at(-1), 'live:sse');

    // subscribe() reopens the stream with the new set, resuming where it was.
    c.subscribe({ leagues: ['nhl'] });
    assert.equal(es1.readyState, 2, 'the old stream is closed');
    const es2 = FakeEventSource.all[1];
    const u = new URL(es2.url);
    assert.equal(u.searchParams.get('games'), 'nba:a');
    assert.equal(u.searchParams.get('leagues'), 'nhl');
    assert.equal(u.searchParams.get('last_event_id'), 'nba:a:3');
    es2.accept();
    es2.frame(diff('nba:a', 4, { home: { score: 5 } }));
    assert.equal(c.get('nba:a').home.score, 5);

    // The hub refuses the stream (an HTTP error): retried with backoff, on SSE.
    es2.fail();
    assert.equal(c.state, 'reconnecting');
    await new Promise((r) => setTimeout(r, 30));
    const es3 = FakeEventSource.all[2];
    assert.ok(es3, 'reconnected over SSE');
    assert.equal(new URL(es3.url).searchParams.get('last_event_id'), 'nba:a:4');
    // Neither transport opens now: the hub is away, so WebSocket is tried again.
    es3.fail();
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(FakeSocket.all.length, 2, 'the WebSocket is tried again after both failed');
  } finally {
    c.close();
  }
  assert.equal(c.state, 'closed');
});

test('Client pinned to one transport does not switch', async () => {
  FakeSocket.all = [];
  FakeEventSource.all = [];
  const ws = new Client('http://hub.test', { transport: 'websocket', baseDelayMs: 2, maxDelayMs: 4, WebSocket: FakeSocket, EventSource: FakeEventSource });
  FakeSocket.all[0].lose();
  assert.equal(FakeEventSource.all.length, 0);
  ws.close();
  const sse = new Client('http://hub.test', { transport: 'sse', games: ['nba:a'], WebSocket: FakeSocket, EventSource: FakeEventSource });
  assert.equal(FakeSocket.all.length, 1, 'no WebSocket for a client pinned to SSE');
  assert.equal(FakeEventSource.all.length, 1);
  sse.close();
  // Following nothing, an SSE client opens no stream until it subscribes.
  const idle = new Client('http://hub.test', { transport: 'sse', EventSource: FakeEventSource });
  assert.equal(FakeEventSource.all.length, 1, 'no stream for an empty subscription');
  assert.equal(idle.state, 'live');
  idle.subscribe({ games: ['nba:a'] });
  assert.equal(FakeEventSource.all.length, 2);
  assert.equal(new URL(FakeEventSource.all[1].url).searchParams.get('games'), 'nba:a');
  idle.close();
  FakeEventSource.all.pop();
  // No WebSocket at all in auto (an old or locked-down browser): SSE straight away.
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    const auto = new Client('http://hub.test', { games: ['nba:a'], EventSource: FakeEventSource });
    assert.equal(FakeEventSource.all.length, 2);
    assert.equal(auto.transport, 'sse');
    auto.close();
  } finally {
    if (saved !== undefined) globalThis.WebSocket = saved;
  }
});

test('the committed bundle web/dist/scorehub.js is built from the current source', async () => {
  const { readFileSync } = await import('node:fs');
  const { bundle, OUT } = await import('../build.mjs');
  const built = await bundle();
  assert.ok(
    readFileSync(OUT, 'utf8') === built,
    'web/dist/scorehub.js is stale: run `npm run build` in web/ and commit the result',
  );
});

test('resumed (replayed) diffs do not skew serverNow() by their age', async () => {
  // On resume the hub replays the missed diffs from its history with their
  // ORIGINAL ingest time `ts`. Taking `ts - Date.now()` of such a diff as clock
  // skew makes serverNow() lag by the diff's age, so every running clock on
  // the scoreboard shows too much time left and the console's "Stop clock"
  // posts a wrong `ms`.
  FakeSocket.all = [];
  const c = new Client('http://hub.test', { games: ['nba:a'], baseDelayMs: 2, maxDelayMs: 4, WebSocket: FakeSocket });
  try {
    const ws1 = FakeSocket.all[0];
    ws1.accept();
    const now = Date.now();
    ws1.frame({
      t: 's',
      g: 'nba:a',
      q: 1,
      d: { game: 'nba:a', seq: 1, clock: { ms: 600000, running: true, at: now }, home: { score: 0 }, away: { score: 0 } },
    });
    ws1.frame({ t: 'd', g: 'nba:a', q: 2, d: { seq: 2, home: { score: 2 } }, ts: Date.now() });
    assert.ok(Math.abs(c.serverNow() - Date.now()) < 1000, 'live diff: no skew');
    ws1.lose();
    await new Promise((r) => setTimeout(r, 30));
    const ws2 = FakeSocket.all[1];
    ws2.accept();
    assert.deepEqual(ws2.sent[0].since, { 'nba:a': 2 });
    // The missed diff was ingested 60 s ago, while we were offline; the hub's
    // clock and ours agree.
    ws2.frame({ t: 'd', g: 'nba:a', q: 3, d: { seq: 3, away: { score: 3 } }, ts: Date.now() - 60_000 });
    assert.equal(c.get('nba:a').seq, 3);
    const off = c.serverNow() - Date.now();
    assert.ok(Math.abs(off) < 1000, `serverNow() is off by ${off} ms after a resume (replayed diff's age taken as skew)`);
  } finally {
    c.close();
  }
});
