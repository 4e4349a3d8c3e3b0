// Type declarations of @scorehub/client: the browser client of the scorehub hub,
// the module the hub also serves at /scorehub.js. Hand-written to match
// web/src/scorehub.js (which stays plain JavaScript); web/tests/package.test.mjs fails when
// the module exports a value not declared here, and scripts/npm-pack-check.sh type-checks
// web/client/example/ against the packed tarball.

// ---- the hub's data ---------------------------------------------------------------

/** A game id, `league:game` (league `[a-z0-9][a-z0-9_-]{0,31}`, game `[A-Za-z0-9_.-]{1,64}`). */
export type GameId = string;

/** Where a game stands. */
export type GameStatus = 'scheduled' | 'live' | 'paused' | 'final' | 'postponed' | 'cancelled';

/** The game clock: `ms` was true at server time `at`; while `running`, now it reads `ms - (serverNow - at)`. */
export interface Clock {
  /** Milliseconds on the clock at `at`. */
  ms: number;
  /** Whether the clock runs. */
  running: boolean;
  /** The hub's Unix time in ms when `ms` was true. */
  at: number;
}

/** One side of a game. */
export interface Team {
  name: string;
  score: number;
}

/** A sport-specific value in `extra`. */
export type Scalar = string | number | boolean;

/** A game's full state, as the hub sends it in snapshots. */
export interface GameState {
  game: GameId;
  /** Events applied to this game so far, from 1, with no gaps (0 right after creation). */
  seq: number;
  status: GameStatus;
  /** The current period (0 before the first). */
  period: number;
  clock: Clock;
  home: Team;
  away: Team;
  /** Sport-specific scalars, at most 32 keys. */
  extra: Record<string, Scalar>;
}

/**
 * A JSON Merge Patch (RFC 7386) of `T`: only the changed fields, `null` removes a key.
 * A diff carries one of these from `seq - 1` to `seq`.
 */
export type MergePatch<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: MergePatch<T[K]> | null }
    : T;

/** A diff's patch of a game's state. */
export type StatePatch = MergePatch<GameState>;

// ---- frames (what the hub sends, decoded) ---------------------------------------------

/** A game's full state: on subscribe, on a resume too old for the hub's history, after conflation. */
export interface SnapshotFrame {
  t: 's';
  g: GameId;
  q: number;
  d: GameState;
  /** Fans watching the game, over every node of the hub (absent from older hubs). */
  n?: number;
}

/** One applied event: the patch from `q - 1` to `q`, and the hub's ingest time. */
export interface DiffFrame {
  t: 'd';
  g: GameId;
  q: number;
  d: StatePatch;
  /** The hub's ingest time, Unix ms. */
  ts: number;
}

/** The hub refused something the client sent. */
export interface ErrorFrame {
  t: 'e';
  code: string;
  msg: string;
  g?: GameId;
}

/** How many fans watch a game changed: at most one a second per game. */
export interface OccupancyFrame {
  t: 'o';
  g: GameId;
  /** Fans watching the game, over every node of the hub. */
  n: number;
}

/** The answer to `{"op":"ping"}`. */
export interface PongFrame {
  t: 'p';
}

/** A decoded server frame. */
export type Frame = SnapshotFrame | DiffFrame | OccupancyFrame | ErrorFrame | PongFrame;

// ---- events -------------------------------------------------------------------------

/** Where the connection stands. */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'offline' | 'closed';

/** A transport the client may use: WebSocket, or Server-Sent Events (`/v1/sse`). */
export type Transport = 'websocket' | 'sse';

/** `snapshot`: a game's full state arrived and replaced what was held. */
export interface SnapshotEvent {
  type: 'snapshot';
  game: GameId;
  seq: number;
  state: GameState;
  /** The state held before, if any. */
  prev: GameState | undefined;
  /** Fans watching, when the snapshot's count changed what was held. */
  watching?: number;
}

/** `diff`: one event was applied to a held state. */
export interface DiffEvent {
  type: 'diff';
  game: GameId;
  seq: number;
  /** The state after the patch. */
  state: GameState;
  /** The state before it. */
  prev: GameState;
  patch: StatePatch;
  /** The hub's ingest time of the event, Unix ms. */
  ts: number;
}

/** `state`: after every `snapshot` and every `diff`, the same detail plus `kind`. */
export type StateEvent = (SnapshotEvent & { kind: 'snapshot' }) | (DiffEvent & { kind: 'diff' });

/**
 * `gap`: a diff arrived after a missing seq (or for a game with no snapshot yet). The
 * client has asked the hub for a fresh snapshot and ignores the game's diffs meanwhile.
 */
export interface GapEvent {
  type: 'gap';
  game: GameId;
  /** The seq of the diff that revealed the gap. */
  seq: number;
  /** The seq that was due, or `undefined` when no snapshot was held. */
  expected: number | undefined;
}

/**
 * Codes of `error` events: from the hub (`invalid_game_id`, `too_many_subscriptions`,
 * `bad_message`, …) or from the client itself (`connect_failed`: the transport could not be
 * created; `bad_frame`: a frame did not decode). Other strings may come from newer hubs.
 */
export type ErrorCode =
  | 'invalid_game_id'
  | 'too_many_subscriptions'
  | 'bad_message'
  | 'connect_failed'
  | 'bad_frame'
  | (string & {});

/** `error`: the hub refused something, or a frame or connection attempt failed. */
export interface ClientErrorEvent {
  /** `'error'` for errors the hub sent; absent for the client's own. */
  type?: 'error';
  code: ErrorCode;
  msg: string;
  /** The game concerned, when the hub named one. */
  game?: GameId;
}

/** `connection`: the connection's state changed (or a new retry was scheduled). */
export interface ConnectionEvent {
  state: ConnectionState;
  /** Failed attempts in a row so far (reset once a connection stays up for 5 s). */
  attempt: number;
  /** When a retry was scheduled (`reconnecting`, `offline`): how long until it, in ms. */
  delayMs?: number;
  /** The transport in use. */
  transport?: Transport;
}

/** `occupancy`: how many fans watch a game (over every node) changed. */
export interface OccupancyEvent {
  game: GameId;
  watching: number;
}

/** Every event `Client#on` accepts, with its detail. */
export interface ClientEventMap {
  snapshot: SnapshotEvent;
  diff: DiffEvent;
  state: StateEvent;
  gap: GapEvent;
  error: ClientErrorEvent;
  connection: ConnectionEvent;
  occupancy: OccupancyEvent;
}

// ---- the client ---------------------------------------------------------------------

/** What the client needs of a WebSocket; the browser's, Node 22's and the `ws` package's fit. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A `URL` (the browser's or Node's); declared structurally, so no DOM or Node types are needed. */
export interface URLLike {
  readonly href: string;
}

/** What the client needs of an EventSource (the browser's fits). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  close(): void;
}

/** An EventSource constructor, e.g. the browser's global `EventSource`. */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** A WebSocket constructor, e.g. the global `WebSocket` or `ws`'s. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What to subscribe to (or unsubscribe from). */
export interface Subscription {
  /** Game ids (`league:game`). */
  games?: readonly GameId[];
  /** League names: every game of the league, including games created later. */
  leagues?: readonly string[];
}

/** The options of `connect`. */
export interface ConnectOptions extends Subscription {
  /** First reconnect delay before jitter, in ms (default 500). */
  baseDelayMs?: number;
  /** Longest reconnect delay, in ms (default 15000). */
  maxDelayMs?: number;
  /** Ping the hub after this long without a frame, give up after twice this long, in ms (default 20000). */
  pingMs?: number;
  /** The WebSocket implementation (default: the global `WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /**
   * Which transport to use: `'auto'` (WebSocket, falling back to Server-Sent Events where
   * WebSockets do not get through), `'websocket'` or `'sse'`. Default `'auto'`.
   */
  transport?: 'auto' | Transport;
  /** The EventSource implementation (default: the global `EventSource`). */
  EventSource?: EventSourceConstructor;
}

/** `{game id: seq}`: what a resume sends as `since`. */
export type Since = Record<GameId, number>;

/**
 * A live connection to a hub, created by {@link connect}. It reconnects by itself (jittered
 * exponential backoff) and resumes from the last seq held per game, until {@link close}.
 */
export class Client {
  /** Equivalent to `connect(url, opts)`. */
  constructor(url?: string | URLLike, opts?: ConnectOptions);

  /** The WebSocket URL the client connects to. */
  readonly url: string;
  /** Where the connection stands now. */
  readonly state: ConnectionState;
  /** Every game's state and seq. */
  readonly store: GameStore;
  /** Estimated hub clock minus local clock, in ms (0 while under a second: just latency). */
  readonly skewMs: number;

  /** Listens to an event; returns a function that removes the listener. */
  on<K extends keyof ClientEventMap>(type: K, fn: (detail: ClientEventMap[K]) => void): () => void;
  /** Removes a listener added with `on`. */
  off<K extends keyof ClientEventMap>(type: K, fn: (detail: ClientEventMap[K]) => void): void;

  /** The state held for `game`, or `undefined`. */
  get(game: GameId): GameState | undefined;
  /** Every game held, id → state. */
  all(): Map<GameId, GameState>;
  /** The hub's clock now, in Unix ms, as far as this client can tell. */
  serverNow(): number;
  /** Whether `game` is covered by the subscription (by id or by its league). */
  wants(game: GameId): boolean;

  /** Adds games and leagues to the subscription (kept across reconnects). */
  subscribe(what?: Subscription): void;
  /** Removes games and leagues from the subscription and forgets their state. */
  unsubscribe(what?: Subscription): void;

  /**
   * How many fans watch `game`, as last reported by the hub, or `undefined` before any
   * report.
   */
  watching(game: GameId): number | undefined;

  /** Closes the connection for good. */
  close(): void;
}

/**
 * Connects to a hub and subscribes to `opts.games` and `opts.leagues`.
 *
 * @param url the hub (`https://hub.example`, given `/v1/ws`) or its WebSocket URL
 *   (`wss://hub.example/v1/ws`); `undefined`: the page's own hub
 */
export function connect(url?: string | URLLike, opts?: ConnectOptions): Client;

// ---- the pure parts ------------------------------------------------------------------

/** The result of `GameStore#apply`. */
export type ApplyResult =
  | SnapshotEvent
  | Omit<DiffEvent, 'ts'> & { ts: number | undefined }
  | GapEvent
  | { type: 'occupancy'; game: GameId; watching: number }
  | { type: 'unchanged'; game: GameId }
  | { type: 'stale'; game: GameId; seq: number }
  | { type: 'resyncing'; game: GameId; seq: number }
  | { type: 'error'; game: GameId | undefined; code: string; msg: string }
  | { type: 'pong' }
  | { type: 'unknown'; frame: unknown };

/** What `GameStore` holds per game. */
export interface HeldGame {
  seq: number;
  /** `undefined` while waiting for a first snapshot. */
  state: GameState | undefined;
  /** Waiting for a snapshot after a gap: diffs are ignored. */
  resyncing: boolean;
}

/** The state of every game a client follows and the rules for applying frames. Pure: no IO, no timers. */
export class GameStore {
  constructor();
  readonly games: Map<GameId, HeldGame>;
  /** The state held for `game`, or `undefined`. */
  get(game: GameId): GameState | undefined;
  /** The last seq held for `game`, or `undefined`. */
  seq(game: GameId): number | undefined;
  /** `{id: seq}` for every game with a usable state (games waiting for a snapshot are left out). */
  since(): Since;
  /** Forgets a game. */
  delete(game: GameId): void;
  /** How many fans watch `game` (over every node of the hub), or `undefined`. */
  watching(game: GameId): number | undefined;
  /** Records a count of fans for `game`; whether it changed. */
  setWatching(game: GameId, n: number): boolean;
  /** Applies one decoded frame. */
  apply(frame: Frame): ApplyResult;
}

/** Applies a JSON Merge Patch (RFC 7386); modifies neither argument, shares unchanged branches. */
export function mergePatch(target: unknown, patch: unknown): unknown;

/** The reconnect delay before attempt `attempt` (0-based): capped exponential growth, "equal jitter". */
export function backoffDelay(
  attempt: number,
  opts?: { baseMs?: number; maxMs?: number; random?: () => number },
): number;

/**
 * Decodes one server frame: MessagePack bytes, or JSON text. The result is not validated
 * beyond decoding.
 */
export function decodeFrame(data: ArrayBuffer | Uint8Array | string): Frame;

/** The WebSocket URL for `url` (`http(s)` → `ws(s)`, a bare host gets `/v1/ws`), relative to `base`. */
export function wsUrl(url?: string | URLLike, base?: string): string;

/** The Server-Sent Events URL for `url` (`ws(s)` → `http(s)`, a bare host or `/v1/ws` gets `/v1/sse`), relative to `base`. */
export function sseUrl(url?: string | URLLike, base?: string): string;

/** The SSE URL following `games` and `leagues`, resuming at `since` (as `last_event_id`). */
export function sseStreamUrl(
  base: string,
  what: { games: readonly GameId[]; leagues: readonly string[]; since: Since },
): string;
