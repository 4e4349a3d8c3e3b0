/**
 * scorehub.js - the browser client of a scorehub live-score hub.
 *
 * An ES module with no global side effects. The hub serves the bundled build at
 * `/scorehub.js` (with CORS, so any page may import it):
 *
 * ```js
 * import { connect } from 'https://hub.example/scorehub.js';
 *
 * const hub = connect('https://hub.example', { leagues: ['nba'] });
 * hub.on('state', ({ game, state, kind }) => render(game, state));
 * hub.on('connection', ({ state }) => showIndicator(state)); // connecting | live | reconnecting | offline | closed
 * hub.on('error', ({ code, msg, game }) => console.warn(code, msg, game));
 * hub.on('occupancy', ({ game, watching }) => showWatching(game, watching)); // or hub.watching(game)
 * hub.subscribe({ games: ['nhl:2026-11-22-tor-mtl'] });
 * // later: hub.unsubscribe({ leagues: ['nba'] }); hub.close();
 * ```
 *
 * What it does for you:
 *
 * - decodes the hub's MessagePack frames (`{t:"s"|"d"|"o"|"e"|"p", ...}`);
 * - keeps how many fans watch each game (occupancy frames `{t:"o", g, n}`
 *   and the `n` of snapshots), for `watching(game)` and the `occupancy` event;
 * - keeps each game's state: a snapshot replaces it, a diff (a JSON Merge
 *   Patch, RFC 7386) is applied on top;
 * - tracks each game's `seq`: a diff whose `q` is not `last + 1` is a gap, so the
 *   game is resubscribed to get a fresh snapshot (diffs are ignored meanwhile);
 * - reconnects after a lost connection with jittered exponential backoff (so a
 *   restarting hub is not hit by every fan at the same instant), then
 *   resubscribes with `since` = the last seq it holds per game: the hub sends
 *   exactly the missed diffs, or a snapshot when they are no longer in its
 *   history (the snapshot fallback);
 * - pings a quiet connection and abandons it when the hub stops answering;
 * - falls back to Server-Sent Events (`/v1/sse`, JSON frames) when a WebSocket
 *   cannot open (`WebSocket` missing or throwing, or an error before it opened:
 *   a network that blocks WebSocket), with the same subscriptions, positions
 *   and events (`transport: 'auto'`, the default; `'websocket'` or `'sse'` pin
 *   one). When SSE cannot open either, the hub itself is away: the next attempt
 *   tries the WebSocket again.
 *
 * The pure parts (`mergePatch`, `GameStore`, `backoffDelay`, `decodeFrame`) are
 * exported too, for tests and for programs that bring their own transport.
 *
 * @module scorehub
 */

import { decode } from '@msgpack/msgpack';

/**
 * Applies a JSON Merge Patch (RFC 7386) to `target` and returns the result.
 * Neither argument is modified: changed objects are copied, unchanged
 * branches are shared.
 *
 * @param {unknown} target the current document
 * @param {unknown} patch the merge patch
 * @returns {unknown} the patched document
 */
export function mergePatch(target, patch) {
  if (!isPlainObject(patch)) {
    return patch;
  }
  const out = isPlainObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else {
      out[key] = mergePatch(out[key], value);
    }
  }
  return out;
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * The delay before reconnect attempt number `attempt` (0-based): exponential
 * growth from `baseMs`, capped at `maxMs`, with "equal jitter" - a random
 * point in the upper half of the window, so fans that lost the same hub at
 * the same instant come back spread out, yet none retries at once.
 *
 * @param {number} attempt how many attempts failed in a row
 * @param {{baseMs?: number, maxMs?: number, random?: () => number}} [opts]
 * @returns {number} milliseconds to wait
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 15000, random = Math.random } = {}) {
  const window = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(window / 2 + random() * (window / 2));
}

/**
 * Decodes one server frame (MessagePack bytes, or JSON text from tools and
 * tests) into a plain object.
 *
 * @param {ArrayBuffer | Uint8Array | string} data
 * @returns {{t: string, g?: string, q?: number, d?: unknown, ts?: number, n?: number, code?: string, msg?: string}}
 */
export function decodeFrame(data) {
  if (typeof data === 'string') {
    return JSON.parse(data);
  }
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return decode(bytes);
}

/**
 * The state of every game a client follows, and the rules for applying
 * frames to it. Pure: no IO, no timers.
 *
 * `apply(frame)` returns what happened:
 *
 * | result `type` | meaning |
 * | --- | --- |
 * | `snapshot` | the state was replaced (`state`, `prev`) |
 * | `diff` | the patch was applied (`state`, `prev`, `patch`) |
 * | `stale` | a diff at or before the held seq: ignored |
 * | `gap` | a diff after a missing seq (or for a game without a snapshot): the game is now resyncing, the caller must ask for a snapshot |
 * | `resyncing` | a diff while waiting for that snapshot: ignored |
 * | `occupancy` | how many fans watch the game changed (`watching`), from an occupancy frame or a snapshot's `n` |
 * | `error` / `pong` / `unknown` | not about state |
 *
 * A snapshot whose `n` changes the count also sets `watching` on its result.
 */
export class GameStore {
  constructor() {
    /** @type {Map<string, {seq: number, state: object, resyncing: boolean}>} */
    this.games = new Map();
    /** @type {Map<string, number>} fans watching each game, as last heard */
    this.watchers = new Map();
  }

  /** How many fans watch `game` (over every node of the hub), or `undefined`. */
  watching(game) {
    return this.watchers.get(game);
  }

  /** Records a count of fans for `game`; whether it changed. */
  setWatching(game, n) {
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) return false;
    if (this.watchers.get(game) === n) return false;
    this.watchers.set(game, n);
    return true;
  }

  /** The state held for `game`, or `undefined`. */
  get(game) {
    return this.games.get(game)?.state;
  }

  /** The last seq held for `game`, or `undefined`. */
  seq(game) {
    return this.games.get(game)?.seq;
  }

  /**
   * `{id: seq}` for every game with a usable state: what a resume sends as
   * `since`. Games waiting for a snapshot are left out, so they get one.
   */
  since() {
    const out = {};
    for (const [id, g] of this.games) {
      if (!g.resyncing && g.state !== undefined) {
        out[id] = g.seq;
      }
    }
    return out;
  }

  /** Forgets a game (after an unsubscribe). */
  delete(game) {
    this.games.delete(game);
    this.watchers.delete(game);
  }

  /** Applies one decoded frame; see the class doc for the result. */
  apply(frame) {
    switch (frame.t) {
      case 's': {
        const held = this.games.get(frame.g);
        const prev = held?.state;
        this.games.set(frame.g, { seq: frame.q, state: frame.d, resyncing: false });
        const out = { type: 'snapshot', game: frame.g, seq: frame.q, state: frame.d, prev };
        if (this.setWatching(frame.g, frame.n)) out.watching = frame.n;
        return out;
      }
      case 'o':
        if (!this.setWatching(frame.g, frame.n)) return { type: 'unchanged', game: frame.g };
        return { type: 'occupancy', game: frame.g, watching: frame.n };
      case 'd': {
        const held = this.games.get(frame.g);
        if (held === undefined) {
          this.games.set(frame.g, { seq: 0, state: undefined, resyncing: true });
          return { type: 'gap', game: frame.g, seq: frame.q, expected: undefined };
        }
        if (held.resyncing) {
          return { type: 'resyncing', game: frame.g, seq: frame.q };
        }
        if (frame.q <= held.seq) {
          return { type: 'stale', game: frame.g, seq: frame.q };
        }
        if (frame.q !== held.seq + 1) {
          held.resyncing = true;
          return { type: 'gap', game: frame.g, seq: frame.q, expected: held.seq + 1 };
        }
        const prev = held.state;
        held.state = mergePatch(prev, frame.d);
        held.seq = frame.q;
        return {
          type: 'diff',
          game: frame.g,
          seq: frame.q,
          state: held.state,
          prev,
          patch: frame.d,
          ts: frame.ts,
        };
      }
      case 'e':
        return { type: 'error', game: frame.g, code: frame.code, msg: frame.msg };
      case 'p':
        return { type: 'pong' };
      default:
        return { type: 'unknown', frame };
    }
  }
}

/**
 * Turns what the caller gave into a WebSocket URL: `undefined` means this
 * page's hub; an `http(s)://host` base gets `ws(s)://` and `/v1/ws`.
 *
 * @param {string | URL | undefined} url
 * @param {string} [base] the page's location, for relative URLs
 * @returns {string}
 */
export function wsUrl(url, base = globalThis.location?.href) {
  const u = new URL(url ?? '/v1/ws', base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/v1/ws';
  return u.toString();
}

/**
 * Turns what the caller gave into the hub's Server-Sent Events URL:
 * `ws(s)://` becomes `http(s)://`, and a bare host or `/v1/ws` gets `/v1/sse`.
 *
 * @param {string | URL | undefined} url
 * @param {string} [base] the page's location, for relative URLs
 * @returns {string}
 */
export function sseUrl(url, base = globalThis.location?.href) {
  const u = new URL(url ?? '/v1/sse', base);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  if (u.protocol === 'wss:') u.protocol = 'https:';
  if (u.pathname === '/' || u.pathname === '' || u.pathname === '/v1/ws') u.pathname = '/v1/sse';
  return u.toString();
}

/**
 * The SSE URL that follows `games` and `leagues` and resumes at `since`
 * (`{id: seq}`) through `last_event_id` (`game:seq,...`, as the stream's ids).
 *
 * @param {string} base the SSE URL
 * @param {{games: string[], leagues: string[], since: Record<string, number>}} what
 * @returns {string}
 */
export function sseStreamUrl(base, { games, leagues, since }) {
  const u = new URL(base);
  if (games.length) u.searchParams.set('games', games.join(','));
  if (leagues.length) u.searchParams.set('leagues', leagues.join(','));
  const id = Object.entries(since)
    .map(([g, q]) => `${g}:${q}`)
    .join(',');
  if (id) u.searchParams.set('last_event_id', id);
  return u.toString();
}

const uniq = (xs) => [...new Set(xs ?? [])];

/**
 * Connects to a hub and subscribes to `games` and `leagues`. Reconnects by
 * itself until `close()` is called.
 *
 * @param {string | URL} [url] the hub (`https://hub.example`) or its WebSocket
 *   URL (`wss://hub.example/v1/ws`); defaults to the page's own hub
 * @param {object} [opts]
 * @param {string[]} [opts.games] game ids (`league:game`)
 * @param {string[]} [opts.leagues] league names: every game of the league,
 *   including ones created later
 * @param {number} [opts.baseDelayMs=500] first reconnect delay (before jitter)
 * @param {number} [opts.maxDelayMs=15000] longest reconnect delay
 * @param {number} [opts.pingMs=20000] ping the hub after this long without a frame;
 *   give the connection up after twice this long
 * @param {typeof WebSocket} [opts.WebSocket] a WebSocket implementation
 *   (defaults to the global one)
 * @param {'auto' | 'websocket' | 'sse'} [opts.transport='auto'] `auto`: the
 *   WebSocket, or Server-Sent Events when a WebSocket cannot open
 * @param {typeof EventSource} [opts.EventSource] an EventSource implementation
 *   (defaults to the global one)
 * @returns {Client}
 */
export function connect(url, opts = {}) {
  return new Client(url, opts);
}

/**
 * A live connection to a hub. Create it with {@link connect}.
 *
 * Events (`client.on(name, fn)` returns a function that removes `fn`):
 *
 * | event | detail |
 * | --- | --- |
 * | `snapshot` | `{game, seq, state, prev}`: a game's full state arrived |
 * | `diff` | `{game, seq, state, prev, patch, ts}`: one event was applied |
 * | `state` | `{game, seq, state, prev, kind}`: after either of the above (`kind` is `snapshot` or `diff`) |
 * | `gap` | `{game, seq, expected}`: a diff was missed; a snapshot was asked for |
 * | `occupancy` | `{game, watching}`: how many fans watch the game (over every node) changed; also {@link Client#watching} |
 * | `error` | `{code, msg, game}`: the hub refused something (e.g. `unknown_game`) |
 * | `connection` | `{state, attempt, delayMs, transport}`: `connecting`, `live`, `reconnecting`, `offline` or `closed`; `transport` is `websocket` or `sse` |
 */
export class Client {
  constructor(url, opts = {}) {
    this.url = wsUrl(url);
    this.opts = {
      baseDelayMs: opts.baseDelayMs ?? 500,
      maxDelayMs: opts.maxDelayMs ?? 15000,
      pingMs: opts.pingMs ?? 20000,
    };
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    this.EventSource = opts.EventSource ?? globalThis.EventSource;
    this.sseUrl = sseUrl(url);
    /** `auto`, `websocket` or `sse`: what the caller asked for. */
    this.mode = opts.transport ?? 'auto';
    /** `websocket` or `sse`: what the current (or next) connection uses. */
    this.transport = this.mode === 'sse' ? 'sse' : 'websocket';
    /** The EventSource while on SSE. */
    this.es = null;
    /** Game ids subscribed by id. */
    this.wantGames = new Set(uniq(opts.games));
    /** League names subscribed. */
    this.wantLeagues = new Set(uniq(opts.leagues));
    /** Every game's state. */
    this.store = new GameStore();
    /** `connecting`, `live`, `reconnecting`, `offline` or `closed`. */
    this.state = 'connecting';
    /** Estimated server clock minus local clock, in ms (from diff timestamps). */
    this.skewMs = 0;
    /** Recent `ts - Date.now()` of diffs; the largest is the best estimate. */
    this.skewSamples = [];
    /** Until then, diffs are taken for replayed ones (a resume): no clock samples. */
    this.replayUntil = 0;
    /**
     * Games the hub holds by id on this connection though they are no longer
     * wanted by id (still covered by a wanted league): released with their
     * league.
     */
    this.heldById = new Set();
    this.attempt = 0;
    this.ws = null;
    this.listeners = new Map();
    this.timers = { retry: null, ping: null, stable: null };
    this.lastHeard = 0;
    this.closed = false;
    this.onOnline = () => {
      if (this.timers.retry !== null) {
        clearTimeout(this.timers.retry);
        this.timers.retry = null;
        this.open();
      }
    };
    this.onOffline = () => {
      if (this.state !== 'live') this.setState('offline');
    };
    globalThis.addEventListener?.('online', this.onOnline);
    globalThis.addEventListener?.('offline', this.onOffline);
    this.open();
  }

  /**
   * Listens to an event (see the class doc).
   * @param {string} type
   * @param {(detail: object) => void} fn
   * @returns {() => void} removes the listener
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  /** Removes a listener added with {@link Client#on}. */
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  /** The state held for `game`, or `undefined`. */
  get(game) {
    return this.store.get(game);
  }

  /**
   * How many fans watch `game` over every node of the hub, as last heard
   * (occupancy frames, at most one a second, and snapshots), or `undefined`
   * before the hub said.
   * @param {string} game
   * @returns {number | undefined}
   */
  watching(game) {
    return this.store.watching(game);
  }

  /** A `Map` of game id -> state for every game held. */
  all() {
    const out = new Map();
    for (const [id, g] of this.store.games) {
      if (g.state !== undefined) out.set(id, g.state);
    }
    return out;
  }

  /** The hub's clock now, in Unix ms, as far as this client can tell. */
  serverNow() {
    return Date.now() + this.skewMs;
  }

  /**
   * Adds games and leagues to the subscription (kept across reconnects).
   * @param {{games?: string[], leagues?: string[]}} what
   */
  subscribe({ games = [], leagues = [] } = {}) {
    uniq(games).forEach((id) => this.heldById.delete(id));
    const g = uniq(games).filter((id) => !this.wantGames.has(id));
    const l = uniq(leagues).filter((id) => !this.wantLeagues.has(id));
    g.forEach((id) => this.wantGames.add(id));
    l.forEach((id) => this.wantLeagues.add(id));
    if (g.length || l.length) {
      if (this.transport === 'sse') this.reopen();
      else this.send({ op: 'sub', games: g, leagues: l });
    }
  }

  /**
   * Removes games and leagues from the subscription and forgets their state.
   * @param {{games?: string[], leagues?: string[]}} what
   */
  unsubscribe({ games = [], leagues = [] } = {}) {
    const dropped = uniq(games).filter((id) => this.wantGames.delete(id));
    const l = uniq(leagues).filter((id) => this.wantLeagues.delete(id));
    // A game still covered by a wanted league stays subscribed on the hub (an
    // `unsub` naming it would stop it for the whole connection); it is
    // released with its league.
    const g = dropped.filter((id) => {
      if (!this.wants(id)) return true;
      this.heldById.add(id);
      return false;
    });
    for (const id of [...this.heldById]) {
      if (!this.wants(id)) {
        this.heldById.delete(id);
        g.push(id);
      }
    }
    if (!g.length && !l.length) return;
    this.send({ op: 'unsub', games: g, leagues: l });
    for (const id of [...this.store.games.keys()]) {
      if (!this.wants(id)) this.store.delete(id);
    }
    if (this.transport === 'sse') this.reopen();
  }

  /** Whether `game` is covered by the current subscription. */
  wants(game) {
    return this.wantGames.has(game) || this.wantLeagues.has(game.split(':')[0]);
  }

  /** Closes the connection for good. */
  close() {
    this.closed = true;
    this.clearTimers();
    globalThis.removeEventListener?.('online', this.onOnline);
    globalThis.removeEventListener?.('offline', this.onOffline);
    this.drop(1000, 'client closed');
    this.setState('closed');
  }

  // --- internals -----------------------------------------------------------

  emit(type, detail) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (err) {
        // A listener's bug must not break the connection.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  setState(state, extra = {}) {
    if (this.state === state && !extra.delayMs) return;
    this.state = state;
    this.emit('connection', { state, attempt: this.attempt, transport: this.transport, ...extra });
  }

  send(msg) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  clearTimers() {
    for (const k of Object.keys(this.timers)) {
      clearTimeout(this.timers[k]);
      clearInterval(this.timers[k]);
      this.timers[k] = null;
    }
  }

  open() {
    if (this.closed) return;
    this.timers.retry = null;
    if (this.state !== 'reconnecting' && this.state !== 'offline') this.setState('connecting');
    if (this.transport === 'sse' || (this.mode === 'auto' && typeof this.WebSocket !== 'function')) {
      this.openSse();
      return;
    }
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      if (this.fallBack()) return;
      this.emit('error', { code: 'connect_failed', msg: String(err?.message ?? err) });
      this.retry();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.opened();
      // Resume: everything wanted, and the last seq held for each game, so
      // the hub sends only what was missed (or a snapshot when it cannot).
      this.send({
        op: 'sub',
        games: [...this.wantGames],
        leagues: [...this.wantLeagues],
        since: this.store.since(),
      });
      // Only a connection that stays up resets the backoff: a hub that
      // accepts and drops at once must not be hammered.
      this.timers.stable = setTimeout(() => {
        this.attempt = 0;
      }, 5000);
      this.timers.ping = setInterval(() => this.checkAlive(), Math.max(1000, this.opts.pingMs / 2));
    };
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      // Closed before it opened: maybe a network that blocks WebSocket.
      if (!opened && this.fallBack()) return;
      this.retry();
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
  }

  /** What every new connection does first, on either transport. */
  opened() {
    this.lastHeard = Date.now();
    this.setState('live');
    // A new connection holds only what this sub names.
    this.heldById.clear();
    // What comes first answers the resume: diffs missed while away, with
    // their original (old) timestamps.
    this.replayUntil = Date.now() + 2000;
  }

  /** In `auto`, switches to SSE after a WebSocket failed to open; whether it did. */
  fallBack() {
    if (this.mode !== 'auto' || typeof this.EventSource !== 'function' || this.closed) return false;
    this.transport = 'sse';
    this.openSse();
    return true;
  }

  /**
   * Opens the SSE stream for everything wanted, resuming at the seqs held.
   * The browser reconnects a dropped stream by itself (its `Last-Event-ID`
   * resumes every game); a stream it gave up on (an HTTP error) is retried
   * with backoff, over the WebSocket again in `auto` when it never opened.
   */
  openSse() {
    this.transport = 'sse';
    if (!this.wantGames.size && !this.wantLeagues.size) {
      // A stream follows a fixed set: with nothing to follow there is none
      // (the hub refuses it); `subscribe` opens one.
      this.opened();
      return;
    }
    let es;
    try {
      es = new this.EventSource(
        sseStreamUrl(this.sseUrl, {
          games: [...this.wantGames],
          leagues: [...this.wantLeagues],
          since: this.store.since(),
        }),
      );
    } catch (err) {
      this.emit('error', { code: 'connect_failed', msg: String(err?.message ?? err) });
      this.retry();
      return;
    }
    this.es = es;
    let opened = false;
    es.onopen = () => {
      opened = true;
      this.opened();
      this.timers.stable = setTimeout(() => {
        this.attempt = 0;
      }, 5000);
    };
    es.onmessage = (ev) => this.onFrame(ev.data);
    es.onerror = () => {
      if (this.es !== es) return;
      if (opened && es.readyState !== 2) {
        this.setState('reconnecting'); // the browser reconnects and resumes
        return;
      }
      this.drop();
      // Neither transport opens: the hub is away, not just WebSocket.
      if (!opened && this.mode === 'auto') this.transport = 'websocket';
      this.retry();
    };
  }

  /** Reopens the SSE stream (its subscriptions are fixed), resuming. */
  reopen() {
    this.drop();
    this.clearTimers();
    this.openSse();
  }

  checkAlive() {
    const quiet = Date.now() - this.lastHeard;
    if (quiet >= 2 * this.opts.pingMs) {
      this.drop(4000, 'no answer from the hub');
      this.retry();
    } else if (quiet >= this.opts.pingMs) {
      this.send({ op: 'ping' });
    }
  }

  /** Abandons the current socket without waiting for its close event. */
  drop(code, reason) {
    const es = this.es;
    this.es = null;
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
    }
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing: nothing to do.
    }
  }

  retry() {
    this.clearTimers();
    if (this.closed) return;
    const delayMs = backoffDelay(this.attempt, {
      baseMs: this.opts.baseDelayMs,
      maxMs: this.opts.maxDelayMs,
    });
    this.attempt += 1;
    const offline = globalThis.navigator?.onLine === false;
    this.setState(offline ? 'offline' : 'reconnecting', { delayMs });
    this.timers.retry = setTimeout(() => this.open(), delayMs);
  }

  onFrame(data) {
    this.lastHeard = Date.now();
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      this.emit('error', { code: 'bad_frame', msg: String(err?.message ?? err) });
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    if (frame.t === 'd' && typeof frame.ts === 'number' && Date.now() >= this.replayUntil) {
      // Diffs carry the hub's ingest time, so `ts - now` is the skew minus
      // how long the diff took to arrive: the largest of recent samples is
      // the best estimate. Diffs replayed after a resume are old: those that
      // come right after a (re)connect are not sampled, later ones give small
      // samples and are outweighed. Small skews are just latency.
      this.skewSamples.push(frame.ts - Date.now());
      if (this.skewSamples.length > 16) this.skewSamples.shift();
      const skew = Math.max(...this.skewSamples);
      this.skewMs = Math.abs(skew) > 1000 ? skew : 0;
    }
    if ((frame.t === 's' || frame.t === 'd' || frame.t === 'o') && !this.wants(frame.g)) {
      return; // in flight when we unsubscribed
    }
    const r = this.store.apply(frame);
    switch (r.type) {
      case 'snapshot':
      case 'diff':
        this.emit(r.type, r);
        this.emit('state', { ...r, kind: r.type });
        if (r.watching !== undefined) this.emit('occupancy', { game: r.game, watching: r.watching });
        break;
      case 'occupancy':
        this.emit('occupancy', { game: r.game, watching: r.watching });
        break;
      case 'gap':
        this.emit('gap', r);
        if (this.es) {
          // The stream resumes every other game; this one, without a seq, gets a snapshot.
          this.reopen();
          break;
        }
        // A sub without `since` is a no-op for a game already subscribed on
        // this connection, so unsubscribe first: the sub then brings a snapshot.
        this.send({ op: 'unsub', games: [r.game], leagues: [] });
        this.send({ op: 'sub', games: [r.game], leagues: [] });
        // The hub now holds it by id; if only its league is wanted, it goes
        // with the league.
        if (!this.wantGames.has(r.game)) this.heldById.add(r.game);
        break;
      case 'error':
        this.emit('error', r);
        break;
      default:
        break;
    }
  }
}
