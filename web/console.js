// The scorekeeper console at `/console`.
//
// Every click makes one event with a fresh `event_id` and appends it to an
// outbox persisted in localStorage. The outbox is sent in order, one event at
// a time, until the hub acknowledges each: network errors, 429 and 5xx keep
// the event and retry with jittered backoff (the hub's idempotency by
// `event_id` makes a retry of an event that did arrive harmless); any other
// 4xx drops that event and says why. The token stays in localStorage and is
// never logged or shown.
//
// `/console?game=nba:x` opens a game at once.

import { connect, backoffDelay } from '/scorehub.js';

const $ = (sel) => document.querySelector(sel);
const KEY = {
  token: 'scorehub.console.token',
  queue: 'scorehub.console.queue',
  game: 'scorehub.console.game',
  undo: 'scorehub.console.undo',
};
const GAME_ID = /^[a-z0-9][a-z0-9_-]{0,31}:[A-Za-z0-9_.-]{1,64}$/;
const pathId = (id) => encodeURIComponent(id).replaceAll('%3A', ':');

// --- storage ----------------------------------------------------------------------

function load(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    say('error', 'This browser refused to store the outbox (storage full or disabled); events may be lost on reload.');
    return false;
  }
}

const token = () => load(KEY.token, '');

// --- messages ---------------------------------------------------------------------

function say(kind, text) {
  const el = $('#message');
  el.dataset.kind = kind;
  el.textContent = text;
}

function logAck(item, body) {
  const li = document.createElement('li');
  const e = item.event;
  const what =
    e.kind === 'score'
      ? `${e.team} ${e.points > 0 ? '+' : ''}${e.points}`
      : e.kind === 'clock'
        ? `clock ${formatClock(e.ms)} ${e.running ? 'running' : 'stopped'}`
        : e.kind === 'status'
          ? `status ${e.status}`
          : `set ${JSON.stringify(e.patch)}`;
  li.textContent = `${item.game} · seq ${body.seq} · ${what}${body.duplicate ? ' (already applied)' : ''}`;
  const log = $('#log');
  log.prepend(li);
  while (log.children.length > 8) log.lastChild.remove();
}

// --- token --------------------------------------------------------------------------

/** What a token says about itself (its payload is not secret, only its signature is). */
function describeToken(t) {
  if (!t) return 'No token yet: events wait in the outbox until you paste one. It is kept in this browser only.';
  try {
    const part = t.split('.')[1].replaceAll('-', '+').replaceAll('_', '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    const left = claims.exp ? Math.round((claims.exp * 1000 - Date.now()) / 60000) : null;
    const exp = left === null ? '' : left > 0 ? `, expires in ${left} min` : ', EXPIRED';
    const games = Array.isArray(claims.games) ? claims.games.join(', ') : '?';
    return `Token for ${claims.sub ?? '?'} (${claims.scope ?? '?'}), games: ${games}${exp}. Kept in this browser only.`;
  } catch {
    return 'This does not look like a scorehub token (expected three dot-separated parts).';
  }
}

function showToken() {
  const t = token();
  $('#token').value = t ? '••••••••' : '';
  $('#token').dataset.saved = t ? 'yes' : 'no';
  $('#token-info').textContent = describeToken(t);
}

$('#token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const v = $('#token').value.trim().replace(/^Bearer\s+/i, '');
  if (v && v !== '••••••••') {
    save(KEY.token, v);
    say('ok', 'Token saved in this browser.');
  }
  showToken();
  showHint();
  pump();
});
$('#token').addEventListener('focus', () => {
  if ($('#token').value === '••••••••') $('#token').value = '';
});
$('#token').addEventListener('blur', () => {
  if (!$('#token').value) showToken();
});
$('#token-forget').addEventListener('click', () => {
  localStorage.removeItem(KEY.token);
  showToken();
  showHint();
  say('info', 'Token forgotten.');
});

// --- the open game, live ------------------------------------------------------------------

let game = null;
const hub = connect(undefined, {});

const CONN_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  offline: 'offline',
  closed: 'offline',
};
hub.on('connection', ({ state }) => {
  $('#conn').dataset.connState = state;
  $('#conn-text').textContent = CONN_TEXT[state] ?? state;
  // The live connection is back, so the hub is: send the outbox now rather
  // than at the end of the current backoff.
  if (state === 'live' && retryTimer !== null) pump();
});

/** `m:ss` from a minute up, `s.t` below (as arenas show it). */
function formatClock(ms) {
  const total = Math.max(0, ms ?? 0);
  if (total < 60000) {
    return `${Math.floor(total / 1000)}.${Math.floor((total % 1000) / 100)}`;
  }
  const s = Math.floor(total / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** Parses `mm:ss`, `mm:ss.t` or plain minutes into ms; `null` when it is neither. */
function parseClock(text) {
  const m = /^\s*(\d{1,3})(?::([0-5]?\d)(?:\.(\d))?)?\s*$/.exec(text);
  if (!m) return null;
  return (Number(m[1]) * 60 + Number(m[2] ?? 0)) * 1000 + Number(m[3] ?? 0) * 100;
}

function clockNow(clock) {
  if (!clock) return null;
  if (!clock.running) return clock.ms;
  return Math.max(0, clock.ms - Math.max(0, hub.serverNow() - clock.at));
}

function renderLive() {
  const s = game ? hub.get(game) : undefined;
  $('#live').dataset.seq = s ? String(s.seq) : '';
  $('#live-home-name').textContent = s?.home?.name ?? 'Home';
  $('#live-away-name').textContent = s?.away?.name ?? 'Away';
  $('#live-home').textContent = s ? String(s.home.score) : '–';
  $('#live-away').textContent = s ? String(s.away.score) : '–';
  $('#live-status').textContent = s ? s.status : game ? 'waiting for the hub…' : '–';
  $('#live-period').textContent = s?.period ? `Period ${s.period}` : '';
  tickClock();
}

function tickClock() {
  const s = game ? hub.get(game) : undefined;
  const ms = clockNow(s?.clock);
  const el = $('#live-clock');
  el.textContent = ms === null ? '' : formatClock(ms);
  el.classList.toggle('running', Boolean(s?.clock?.running) && ms > 0);
}
setInterval(tickClock, 100);

hub.on('state', (e) => {
  if (e.game === game) renderLive();
});
hub.on('error', ({ code, msg, game: g }) => {
  if (g === game && code === 'game_not_found') {
    say('error', `Game ${g} does not exist yet: create it below.`);
    $('#create').open = true;
    $('#new-game').value = g;
  } else if (g === game || !g) {
    say('error', msg || code);
  }
});

function openGame(id) {
  id = id.trim();
  if (!GAME_ID.test(id)) {
    say('error', `"${id}" is not a game id: use league:game, e.g. nba:2026-11-22-lal-bos.`);
    return false;
  }
  if (game && game !== id) hub.unsubscribe({ games: [game] });
  game = id;
  hub.subscribe({ games: [id] });
  save(KEY.game, id);
  $('#game').value = id;
  $('#keeper-game').textContent = id;
  for (const b of document.querySelectorAll('#keeper button, #clock-start, #clock-stop')) b.disabled = false;
  const url = new URL(location.href);
  url.searchParams.set('game', id);
  history.replaceState(null, '', url.pathname + url.search.replaceAll('%3A', ':'));
  renderLive();
  showHint();
  return true;
}

$('#game-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (openGame($('#game').value)) say('info', `Opened ${game}.`);
});

async function loadGameList() {
  try {
    const res = await fetch('/v1/games?limit=500', { headers: { accept: 'application/json' } });
    if (!res.ok) return;
    const body = await res.json();
    const list = $('#game-list');
    list.replaceChildren();
    for (const g of body.games ?? []) {
      const opt = document.createElement('option');
      opt.value = g.game;
      opt.label = `${g.home?.name ?? '?'} – ${g.away?.name ?? '?'} (${g.status})`;
      list.append(opt);
    }
  } catch {
    // The list is a convenience; typing an id works without it.
  }
}

// --- creating a game (direct, not queued: the answer matters now) -------------------------------

function errorText(status, body, id) {
  const msg = body?.error?.message ?? '';
  const code = body?.error?.code ?? '';
  switch (status) {
    case 400:
      return `The hub found the request malformed (400 ${code}): ${msg}`;
    case 401:
      return `The hub refused the token (401 ${code}): ${msg || 'missing, invalid or expired'}. Paste a fresh token.`;
    case 403:
      return `This token may not write ${id} (403 ${code}): ${msg}`;
    case 404:
      return `Game ${id} does not exist (404): create it first.`;
    case 409:
      return `Conflict (409 ${code}): ${msg}`;
    case 412:
      return `The game changed before this event arrived (412 ${code}): ${msg}`;
    case 413:
      return `Too large for the hub (413): ${msg}`;
    case 422:
      return `The hub refused the event (422 ${code}): ${msg}`;
    default:
      return `The hub answered ${status} ${code}: ${msg}`;
  }
}

async function readJson(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

$('#create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const id = $('#new-game').value.trim();
  if (!GAME_ID.test(id)) {
    say('error', `"${id}" is not a game id: use league:game, e.g. nba:2026-11-22-lal-bos.`);
    return;
  }
  if (!token()) {
    say('error', 'Paste a token first: creating a game needs one.');
    return;
  }
  const body = { home: { name: $('#new-home').value.trim() }, away: { name: $('#new-away').value.trim() } };
  try {
    const res = await fetch(`/v1/games/${pathId(id)}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` },
      body: JSON.stringify(body),
    });
    if (res.status === 201 || res.status === 200) {
      say('ok', res.status === 201 ? `Created ${id}.` : `${id} already exists with these teams.`);
      $('#create').open = false;
      openGame(id);
      loadGameList();
    } else {
      say('error', errorText(res.status, await readJson(res), id));
    }
  } catch {
    say('error', 'The hub is unreachable: the game was not created. Try again when it is back.');
  }
});

// --- events and the outbox ------------------------------------------------------------------------

/** A fresh event id; crypto.randomUUID needs a secure context, so fall back. */
function eventId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const queue = () => load(KEY.queue, []);

function showPending(q = queue()) {
  for (const el of [$('#pending'), $('#pending-badge')]) {
    el.textContent = String(q.length);
    el.dataset.pending = String(q.length);
  }
}

function showHint() {
  $('#keeper-hint').textContent = !token()
    ? 'Paste a token (right, or below on a phone) to start keeping score.'
    : !game
      ? 'Open or create a game to start keeping score.'
      : 'Every click is queued and sent in order; the outbox survives a reload or a hub restart.';
}

/** Appends one event for the open game and starts sending. */
function post(event) {
  if (!game) {
    say('error', 'Open a game first.');
    return null;
  }
  const item = { game, event: { event_id: eventId(), ...event }, queued_at: Date.now() };
  // Re-read before writing: another tab may share the outbox.
  const q = queue();
  q.push(item);
  save(KEY.queue, q);
  showPending(q);
  pump();
  return item;
}

function removeFromQueue(eventIdToDrop) {
  const q = queue().filter((i) => i.event.event_id !== eventIdToDrop);
  save(KEY.queue, q);
  showPending(q);
}

let pumping = false;
let failures = 0;
let retryTimer = null;
/** The token the hub last refused (401): nothing is sent with it again. */
let refusedToken = null;

function retryIn(ms) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    pump();
  }, ms);
}

/** Sends the outbox in order until it is empty or the hub cannot take more now. */
async function pump() {
  if (pumping) return;
  pumping = true;
  clearTimeout(retryTimer);
  retryTimer = null;
  try {
    for (;;) {
      const q = queue();
      showPending(q);
      if (!q.length) return;
      const t = token();
      if (!t) {
        say('error', `Paste a token: ${q.length} event(s) are waiting to be sent.`);
        return;
      }
      if (t === refusedToken) {
        say('error', `The hub refused the token (401: expired or wrong?). Paste a new one: ${q.length} event(s) wait in the outbox.`);
        return;
      }
      const item = q[0];
      let res;
      try {
        res = await fetch(`/v1/games/${pathId(item.game)}/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${t}` },
          body: JSON.stringify(item.event),
          signal: AbortSignal.timeout(10000),
        });
      } catch {
        const delay = backoffDelay(failures++, { baseMs: 500, maxMs: 8000 });
        say('error', `The hub is unreachable: ${q.length} event(s) wait in the outbox; retrying in ${Math.ceil(delay / 1000)} s.`);
        retryIn(delay);
        return;
      }
      if (res.ok) {
        failures = 0;
        const body = (await readJson(res)) ?? {};
        removeFromQueue(item.event.event_id);
        logAck(item, body);
        say('ok', `Sent: ${item.game} is at seq ${body.seq}.`);
        continue;
      }
      const body = await readJson(res);
      if (res.status === 429 || res.status >= 500) {
        const after = Number(res.headers.get('retry-after'));
        const delay =
          res.status === 429 && after > 0
            ? after * 1000
            : backoffDelay(failures++, { baseMs: 500, maxMs: 8000 });
        const why = res.status === 429 ? 'The hub asks us to slow down (429)' : `The hub is not ready (${res.status}: ${body?.error?.message ?? 'try later'})`;
        say('error', `${why}: ${q.length} event(s) wait; retrying in ${Math.ceil(delay / 1000)} s.`);
        retryIn(delay);
        return;
      }
      if (res.status === 401) {
        // The token, not the event, is the problem: keep every event and wait
        // for a new token (other tabs see the same outbox and do the same).
        refusedToken = t;
        say('error', `${errorText(res.status, body, item.game)} Paste a new token: ${q.length} event(s) wait in the outbox.`);
        return;
      }
      // Any other 4xx: this event can never succeed as it is; drop it, say why, go on.
      failures = 0;
      removeFromQueue(item.event.event_id);
      forgetUndo(item.game, item.event.event_id);
      say('error', `${errorText(res.status, body, item.game)} (The event was dropped.)`);
    }
  } finally {
    pumping = false;
  }
}

window.addEventListener('online', () => pump());
window.addEventListener('storage', (ev) => {
  if (ev.key === KEY.queue) {
    showPending();
    pump();
  }
  if (ev.key === KEY.token) {
    showToken();
    pump(); // another tab saved a new token
  }
});

// --- buttons ------------------------------------------------------------------------------------------

const undoStacks = () => load(KEY.undo, {});

/** A dropped event was never applied: undoing it would change the score. */
function forgetUndo(gameId, eventIdDropped) {
  const stacks = undoStacks();
  const stack = stacks[gameId];
  if (!stack?.some((u) => u.event_id === eventIdDropped)) return;
  stacks[gameId] = stack.filter((u) => u.event_id !== eventIdDropped);
  save(KEY.undo, stacks);
}

for (const b of document.querySelectorAll('.pad button')) {
  b.addEventListener('click', () => {
    const team = b.dataset.team;
    const points = Number(b.dataset.points);
    const item = post({ kind: 'score', team, points });
    if (item) {
      const stacks = undoStacks();
      (stacks[game] ??= []).push({ team, points, event_id: item.event.event_id });
      stacks[game] = stacks[game].slice(-50);
      save(KEY.undo, stacks);
    }
  });
}

$('#undo').addEventListener('click', () => {
  const stacks = undoStacks();
  const last = stacks[game]?.pop();
  if (!last) {
    say('info', 'Nothing to undo: this console has posted no score for this game.');
    return;
  }
  if (post({ kind: 'score', team: last.team, points: -last.points })) {
    save(KEY.undo, stacks);
    say('info', `Undoing ${last.team} +${last.points}.`);
  }
});

function currentClock() {
  const s = game ? hub.get(game) : undefined;
  return { ms: clockNow(s?.clock), running: Boolean(s?.clock?.running) };
}

function clockInput() {
  const ms = parseClock($('#clock-value').value);
  if (ms === null) say('error', 'Clock: enter mm:ss, e.g. 12:00.');
  return ms;
}

$('#clock-start').addEventListener('click', () => {
  const now = currentClock().ms;
  const ms = now !== null && now > 0 ? now : clockInput();
  if (ms !== null) post({ kind: 'clock', ms, running: true });
});

$('#clock-stop').addEventListener('click', () => {
  const now = currentClock().ms;
  const ms = now ?? clockInput();
  if (ms !== null) post({ kind: 'clock', ms, running: false });
});

$('#clock-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const ms = clockInput();
  if (ms !== null) post({ kind: 'clock', ms, running: currentClock().running });
});

$('#period-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const raw = $('#period-value').value.trim();
  const period = Number(raw);
  // An empty field is no period (Number('') would post 0).
  if (raw === '' || !Number.isInteger(period) || period < 0) {
    say('error', 'Period: enter a whole number.');
    return;
  }
  post({ kind: 'set', patch: { period } });
});

$('#status-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  post({ kind: 'status', status: $('#status-value').value });
});

// --- start -----------------------------------------------------------------------------------------------

for (const b of document.querySelectorAll('#keeper button, #clock-start, #clock-stop')) b.disabled = true;
showToken();
showPending();
showHint();
const wanted = new URLSearchParams(location.search).get('game') ?? load(KEY.game, '');
if (wanted) openGame(wanted);
renderLive();
loadGameList();
pump();
