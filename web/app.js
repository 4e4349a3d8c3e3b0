// The live scoreboard at `/`: pick a league or games, one card per game,
// updated live through the hub's browser client (/scorehub.js).
//
// Deep links subscribe at once: `/?league=nba`, `/?leagues=nba,nhl`,
// `/?games=nba:a,nhl:b` (both may be combined).

import { connect } from '/scorehub.js';

const $ = (sel) => document.querySelector(sel);
const splitList = (s) =>
  (s ?? '')
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);

/** What the page follows, from the URL. */
function selectionFromUrl() {
  const p = new URLSearchParams(location.search);
  return {
    leagues: [...new Set([...splitList(p.get('league')), ...splitList(p.get('leagues'))])],
    games: [...new Set(splitList(p.get('games')))],
  };
}

function urlFor({ leagues, games }) {
  const p = new URLSearchParams();
  if (leagues.length === 1) p.set('league', leagues[0]);
  if (leagues.length > 1) p.set('leagues', leagues.join(','));
  if (games.length) p.set('games', games.join(','));
  const q = p.toString().replaceAll('%3A', ':').replaceAll('%2C', ',');
  return q ? `/?${q}` : '/';
}

let selection = selectionFromUrl();
const cards = new Map(); // game id → card element
const hub = connect(undefined, selection);

// --- connection indicator ---------------------------------------------------

const CONN_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  offline: 'offline',
  closed: 'offline',
};

function showConnection(state, transport) {
  const el = $('#conn');
  el.dataset.connState = state;
  // `websocket`, or `sse` where the network blocks WebSocket (the client falls back by itself).
  if (transport) el.dataset.connTransport = transport;
  $('#conn-text').textContent = CONN_TEXT[state] ?? state;
}
hub.on('connection', ({ state, transport }) => showConnection(state, transport));
showConnection(hub.state, hub.transport);

// --- cards -------------------------------------------------------------------

function cardFor(game) {
  let card = cards.get(game);
  if (card) return card;
  card = $('#card-template').content.firstElementChild.cloneNode(true);
  card.dataset.game = game;
  card.querySelector('.game-id').textContent = game;
  card.querySelector('.game-id').title = game;
  // Keep cards sorted by id, so they never reshuffle as updates arrive.
  const after = [...cards.keys()].sort().find((id) => id > game);
  $('#cards').insertBefore(card, after ? cards.get(after) : null);
  cards.set(game, card);
  updateEmpty();
  return card;
}

function removeCard(game) {
  cards.get(game)?.remove();
  cards.delete(game);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function flash(el) {
  el.classList.remove('flash');
  void el.offsetWidth; // restart the animation
  el.classList.add('flash');
}

function render({ game, state, prev, kind }) {
  const card = cardFor(game);
  card.classList.remove('missing');
  card.dataset.seq = String(state.seq);
  card.dataset.status = state.status;
  for (const side of ['home', 'away']) {
    const team = state[side] ?? {};
    const name = card.querySelector(`[data-testid="name-${side}"]`);
    setText(name, team.name ?? side);
    name.title = team.name ?? side;
    const score = card.querySelector(`[data-testid="score-${side}"]`);
    setText(score, String(team.score ?? 0));
    if (kind === 'diff' && prev && prev[side]?.score !== team.score) flash(score);
  }
  const status = card.querySelector('.status');
  setText(status, state.status ?? '');
  status.dataset.status = state.status ?? '';
  setText(card.querySelector('.period'), state.period ? `Period ${state.period}` : '');
  card.clock = state.clock ?? null;
  tickCard(card);
}

hub.on('state', render);

// "1,234 watching": fans of the game over every node of the hub, from its
// occupancy frames (at most one a second) and snapshots.
function renderWatching({ game, watching }) {
  const card = cards.get(game);
  const el = card?.querySelector('.watching');
  if (!el) return;
  el.dataset.watching = String(watching);
  setText(el, `${watching.toLocaleString('en-US')} watching`);
  el.hidden = false;
}

hub.on('occupancy', renderWatching);
// A card made again (after an unsubscribe) shows the count it had.
hub.on('state', ({ game, kind }) => {
  const watching = kind === 'snapshot' ? hub.watching(game) : undefined;
  if (watching !== undefined) renderWatching({ game, watching });
});

hub.on('error', ({ code, msg, game }) => {
  if (game && (code === 'game_not_found' || code === 'invalid_game_id')) {
    const card = cardFor(game);
    card.classList.add('missing');
    setText(card.querySelector('.status'), 'not found');
    card.querySelector('.status').dataset.status = 'missing';
    setText(card.querySelector('[data-testid="name-home"]'), code === 'invalid_game_id' ? 'invalid id' : 'no such game');
    card.querySelector('.status').title = msg;
    return;
  }
  showNotice(msg || code);
});

// --- the clock ticks locally while it runs ------------------------------------

function formatClock(ms) {
  const total = Math.max(0, ms);
  if (total < 60000) {
    return `${Math.floor(total / 1000)}.${Math.floor((total % 1000) / 100)}`;
  }
  const s = Math.floor(total / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** Milliseconds on a clock now: it counts down from `ms` since `at` while running. */
function clockNow(clock) {
  if (!clock) return null;
  if (!clock.running) return clock.ms;
  return Math.max(0, clock.ms - Math.max(0, hub.serverNow() - clock.at));
}

function tickCard(card) {
  const el = card.querySelector('.clock');
  const ms = clockNow(card.clock);
  // A stopped clock means nothing before or after the game.
  const shown = card.clock?.running || ['live', 'paused'].includes(card.dataset.status);
  setText(el, ms === null || !shown ? '' : formatClock(ms));
  el.classList.toggle('running', Boolean(card.clock?.running) && ms > 0);
}

setInterval(() => {
  for (const card of cards.values()) {
    if (card.clock?.running) tickCard(card);
  }
}, 100);

// --- picking what to follow ---------------------------------------------------

function showNotice(text) {
  const el = $('#notice');
  el.textContent = text;
  el.hidden = !text;
}

function updateEmpty() {
  const el = $('#empty');
  const following = selection.leagues.length + selection.games.length > 0;
  el.hidden = cards.size > 0;
  el.textContent = following
    ? 'Waiting for games…'
    : 'Choose a league or enter game ids to follow their scores live.';
}

function follow(next) {
  const gone = {
    games: selection.games.filter((g) => !next.games.includes(g)),
    leagues: selection.leagues.filter((l) => !next.leagues.includes(l)),
  };
  hub.unsubscribe(gone);
  hub.subscribe(next);
  selection = next;
  for (const game of [...cards.keys()]) {
    if (!hub.wants(game)) removeCard(game);
  }
  history.replaceState(null, '', urlFor(selection));
  syncForm();
  showNotice('');
  updateEmpty();
}

function syncForm() {
  $('#league').value = selection.leagues.length === 1 ? selection.leagues[0] : '';
  $('#games').value = selection.games.join(', ');
}

$('#pick').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const league = $('#league').value;
  follow({ leagues: league ? [league] : [], games: splitList($('#games').value) });
});
$('#league').addEventListener('change', () => $('#pick').requestSubmit());

/** Fills the league list from what the hub has (league = the part before `:`). */
async function loadLeagues() {
  const leagues = new Set(selection.leagues);
  let cursor = null;
  try {
    for (let page = 0; page < 20; page++) {
      const q = new URLSearchParams({ limit: '500' });
      if (cursor) q.set('cursor', cursor);
      const res = await fetch(`/v1/games?${q}`, { headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`the hub answered ${res.status}`);
      const body = await res.json();
      for (const g of body.games ?? []) leagues.add(String(g.game).split(':')[0]);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
  } catch (err) {
    showNotice(`Could not list the hub's games (${err.message}); you can still enter game ids.`);
  }
  const select = $('#league');
  for (const league of [...leagues].sort()) {
    const opt = document.createElement('option');
    opt.value = league;
    opt.textContent = league;
    select.append(opt);
  }
  // Nothing chosen and only one league: show it.
  if (!selection.leagues.length && !selection.games.length && leagues.size === 1) {
    follow({ leagues: [...leagues], games: [] });
  }
  syncForm();
}

syncForm();
updateEmpty();
loadLeagues();
