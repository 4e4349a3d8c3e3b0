// A small program against @scorehub/client, type-checked (not run) by
// `tsc --noEmit -p web/client/example` and by scripts/npm-pack-check.sh against the packed
// tarball. The lines marked @ts-expect-error must NOT type-check: if the declarations go
// loose (an `any` somewhere), tsc reports the unused directive and the check fails.

import {
  connect,
  mergePatch,
  backoffDelay,
  wsUrl,
  GameStore,
  type Client,
  type ConnectionState,
  type GameState,
  type StateEvent,
} from '@scorehub/client';

const hub: Client = connect('https://hub.example', {
  leagues: ['nba'],
  games: ['nhl:2026-11-22-tor-mtl'],
  baseDelayMs: 250,
  maxDelayMs: 10_000,
  pingMs: 15_000,
  WebSocket, // the browser's; Node's `ws` fits too
  transport: 'auto', // (coming: the SSE fallback)
});

function render(game: string, state: GameState): string {
  const { home, away, clock } = state;
  const left = clock.running ? clock.ms - (hub.serverNow() - clock.at) : clock.ms;
  const extra = Object.entries(state.extra).map(([k, v]) => `${k}=${String(v)}`).join(' ');
  return `${game} [${state.status} P${state.period} ${Math.max(0, left)}ms] ` +
    `${home.name} ${home.score} - ${away.score} ${away.name} ${extra}`;
}

const off = hub.on('state', (ev: StateEvent) => {
  if (ev.kind === 'diff') {
    // Narrowed: a diff carries the patch and the hub's ingest time.
    const scored = ev.patch.home?.score ?? ev.patch.away?.score;
    console.log(ev.seq, ev.ts - ev.prev.seq, scored);
  } else {
    console.log('snapshot', ev.prev === undefined ? 'first' : 'replaced');
  }
  console.log(render(ev.game, ev.state));
});

hub.on('snapshot', ({ game, seq, state }) => console.log(game, seq, state.home.name));
hub.on('diff', ({ patch }) => console.log(patch.clock?.running, patch.extra?.['possession']));
hub.on('gap', ({ game, seq, expected }) => console.log(game, seq, expected ?? 'no snapshot yet'));
hub.on('error', ({ code, msg, game }) => {
  if (code === 'too_many_subscriptions') console.warn(msg);
  console.warn(code, msg, game);
});
hub.on('connection', ({ state, attempt, delayMs, transport }) => {
  const s: ConnectionState = state;
  console.log(s, attempt, delayMs, transport ?? 'websocket');
});
hub.on('occupancy', ({ game, watching }) => console.log(game, watching)); // (coming)

hub.subscribe({ games: ['nba:2026-11-22-lal-bos'] });
hub.unsubscribe({ leagues: ['nba'] });
const held: GameState | undefined = hub.get('nba:2026-11-22-lal-bos');
console.log(held?.home.score, hub.all().size, hub.wants('nba:x'), hub.state, hub.url);
console.log(hub.watching('nba:2026-11-22-lal-bos') ?? 0); // (coming)

// The pure parts, for programs that bring their own transport.
const store = new GameStore();
const r = store.apply({ t: 'p' });
if (r.type === 'gap') console.log(r.expected);
const sameHub = connect(new URL('wss://hub.example/v1/ws')); // a URL object fits too
sameHub.close();
console.log(store.since(), mergePatch({ a: 1 }, { a: null }), backoffDelay(3), wsUrl('https://hub.example'));

off();
hub.close();

// ---- what must not compile ------------------------------------------------------------

// @ts-expect-error: no such event
hub.on('scroe', () => {});
// @ts-expect-error: a diff's state is a GameState, its score a number
hub.on('diff', ({ state }) => state.home.score.toUpperCase());
// @ts-expect-error: the state held may be undefined
hub.get('nba:a').home;
// @ts-expect-error: no such transport
connect(undefined, { transport: 'carrier-pigeon' });
// @ts-expect-error: games are a list of ids
hub.subscribe({ games: 'nba:a' });
