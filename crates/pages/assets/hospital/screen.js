// The waiting-room screen (叫号屏): opened on a TV as
//   /screen.html#token=<screen token>&schedules=12,13[&lang=en]
// (in the hash, so the token never reaches a server log). It listens to the board's
// server-sent events and shows who is called to which room, newest call big at the top, and
// who waits. Patient names arrive masked (surname + "**"). EventSource reconnects by itself;
// when the server refuses outright, the page retries on its own with a growing delay.

import { t, getLang, setLang } from './i18n.js';
import { clockSeconds as hms } from '/dom.js';

const root = document.getElementById('screen');
const params = new URLSearchParams(location.hash.replace(/^#/, ''));
const token = params.get('token') || '';
const schedules = (params.get('schedules') || '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => /^\d+$/.test(s));
if (params.get('lang') === 'en' || params.get('lang') === 'zh') setLang(params.get('lang'));

const FRESH_MS = 15000;

const view = {
  connection: 'connecting',
  retryIn: 0,
  board: null,
  updated: null,
  /** ticket ids in the order they were seen called (newest last) */
  callOrder: [],
  /** ticket id -> time it was first seen called (only calls seen after the first event) */
  freshSince: new Map(),
  seenFirst: false,
  previousCalled: new Set(),
  latestFlashUntil: 0,
};

function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ---- the page's fixed parts ----------------------------------------------------------------

const title = el('h1', 'scr-title');
const stateBadge = el('span', 'scr-state');
stateBadge.setAttribute('role', 'status');
stateBadge.dataset.testid = 'screen-connection';
const updated = el('span', 'scr-updated');
updated.dataset.testid = 'screen-updated';
const clockEl = el('span', 'scr-clock');
const langButton = el('button', 'scr-lang');
langButton.type = 'button';
langButton.dataset.testid = 'screen-lang';
langButton.addEventListener('click', () => {
  setLang(getLang() === 'zh' ? 'en' : 'zh');
  render();
});
const top = el('div', 'scr-top', title, stateBadge, updated, clockEl, langButton);
const call = el('section', 'scr-call');
call.dataset.testid = 'screen-latest';
call.setAttribute('aria-live', 'assertive');
const grid = el('div', 'scr-grid');
grid.dataset.testid = 'screen-board';

function tick() {
  clockEl.textContent = hms(new Date());
}

// ---- rendering ------------------------------------------------------------------------------

function renderConnection() {
  stateBadge.className = `scr-state ${view.connection}`;
  stateBadge.dataset.state = view.connection;
  stateBadge.textContent = view.connection === 'offline'
    ? `${view.reason ? `${t(view.reason)} · ` : ''}${t('screen.offline', { s: view.retryIn })}`
    : t(`screen.${view.connection}`);
  updated.hidden = !view.updated;
  if (view.updated) updated.textContent = t('screen.updated', { time: hms(view.updated) });
}

/** Every called entry now on the board, by ticket id. */
function calledNow() {
  const map = new Map();
  if (!view.board) return map;
  for (const item of view.board.items || []) {
    for (const c of item.called || []) map.set(c.ticket_id, { ...c, item });
  }
  return map;
}

function renderLatest() {
  const now = calledNow();
  let latest = null;
  for (let i = view.callOrder.length - 1; i >= 0; i -= 1) {
    const c = now.get(view.callOrder[i]);
    if (c) {
      latest = c;
      break;
    }
  }
  call.replaceChildren();
  if (!latest) {
    call.className = 'scr-call idle';
    call.append(el('div', 'scr-call-text', t('screen.noCalls')));
    delete call.dataset.ticketId;
    return;
  }
  const fresh = view.freshSince.has(latest.ticket_id) && Date.now() - view.freshSince.get(latest.ticket_id) < FRESH_MS;
  call.className = `scr-call${fresh ? ' fresh' : ''}`;
  call.dataset.ticketId = String(latest.ticket_id);
  const room = latest.room || latest.item.room;
  const text = el('div', 'scr-call-text');
  // "请 {patient} 到 {room} 就诊" with the name and room highlighted
  const template = room ? t('screen.calling', { patient: '\u0001', room: '\u0002' }) : t('screen.callingNoRoom', { patient: '\u0001' });
  for (const part of template.split(/(\u0001|\u0002)/)) {
    if (part === '\u0001') {
      const name = el('span', 'scr-patient', latest.patient);
      name.dataset.testid = 'screen-latest-patient';
      text.append(name);
    } else if (part === '\u0002') {
      const r = el('span', 'scr-room', room);
      r.dataset.testid = 'screen-latest-room';
      text.append(r);
    } else if (part) text.append(part);
  }
  const sub = el('div', 'scr-call-sub', `${latest.item.department} · ${latest.item.practitioner} · ${t(`period.${latest.item.period}`)}`);
  call.append(el('div', null, text, sub));
}

function renderBoard() {
  grid.replaceChildren();
  const items = view.board ? view.board.items || [] : [];
  const n = items.length;
  grid.className = `scr-grid ${n <= 1 ? 'n1' : n === 2 ? 'n2' : n === 3 ? 'n3' : n === 4 ? 'n4' : 'nmany'}`;
  if (!view.board) return;
  if (!n) {
    grid.append(el('p', 'scr-message', t('screen.noSessions')));
    return;
  }
  // How many waiting names fit: fewer when the columns are many.
  const maxWaiting = n <= 2 ? 18 : n <= 4 ? 10 : 6;
  for (const item of items) {
    const inactive = item.status && item.status !== 'active';
    const col = el('article', `scr-col${inactive ? ' inactive' : ''}`);
    col.dataset.testid = `screen-session-${item.schedule_id}`;
    col.dataset.status = item.status || '';
    const head = el('header', 'scr-doc',
      el('span', 'scr-doc-name', item.practitioner),
      el('span', 'scr-doc-meta', `${item.department} · ${t(`period.${item.period}`)}`),
      inactive ? el('span', 'scr-badge', t(item.status === 'stopped' ? 'screen.stopped' : 'screen.cancelled')) : null,
      item.room ? el('span', 'scr-doc-room', item.room) : null);
    col.append(head);

    col.append(el('div', 'scr-section', t('screen.called')));
    const called = item.called || [];
    if (called.length) {
      const list = el('ul', 'scr-called');
      // newest first
      const order = new Map(view.callOrder.map((id, i) => [id, i]));
      const sorted = [...called].sort((a, b) => (order.get(b.ticket_id) ?? -1) - (order.get(a.ticket_id) ?? -1));
      for (const c of sorted) {
        const since = view.freshSince.get(c.ticket_id);
        const li = el('li', since && Date.now() - since < FRESH_MS ? 'fresh' : null,
          el('span', 'scr-patient', c.patient), el('span', 'scr-room', c.room || item.room || ''));
        li.dataset.testid = 'screen-called';
        li.dataset.ticketId = String(c.ticket_id);
        list.append(li);
      }
      col.append(list);
    } else {
      col.append(el('p', 'scr-empty', '—'));
    }

    col.append(el('div', 'scr-section', t('screen.waiting')));
    const waiting = item.waiting || [];
    if (waiting.length) {
      const list = el('ul', 'scr-waiting');
      for (const w of waiting.slice(0, maxWaiting)) {
        const li = el('li', null, w.patient);
        li.dataset.testid = 'screen-waiting';
        li.dataset.ticketId = String(w.ticket_id);
        list.append(li);
      }
      col.append(list);
    } else {
      col.append(el('p', 'scr-empty', t('screen.nobodyWaiting')));
    }
    const total = typeof item.waiting_total === 'number' ? item.waiting_total : waiting.length;
    const totalEl = el('div', 'scr-total', t('screen.waitingTotal', { n: total }));
    totalEl.dataset.testid = 'screen-waiting-total';
    col.append(totalEl);
    grid.append(col);
  }
}

function render() {
  document.title = `${t('screen.title')}`;
  title.textContent = t('screen.title');
  langButton.textContent = t('lang.switch');
  renderConnection();
  renderLatest();
  renderBoard();
}

// ---- data ---------------------------------------------------------------------------------

function onBoard(data) {
  let board;
  try {
    board = JSON.parse(data);
  } catch {
    return;
  }
  if (!board || !Array.isArray(board.items)) return;
  view.board = board;
  view.updated = new Date();
  const now = calledNow();
  const ids = new Set(now.keys());
  for (const [id] of now) {
    if (!view.previousCalled.has(id)) {
      // newly called (or called again after a miss): newest last
      view.callOrder = view.callOrder.filter((x) => x !== id);
      view.callOrder.push(id);
      if (view.seenFirst) view.freshSince.set(id, Date.now());
    }
  }
  view.callOrder = view.callOrder.filter((id) => ids.has(id));
  for (const id of [...view.freshSince.keys()]) if (!ids.has(id)) view.freshSince.delete(id);
  view.previousCalled = ids;
  view.seenFirst = true;
  render();
}

/** Why the server refused the stream: EventSource does not tell, so ask once with fetch. */
async function probe() {
  const controller = new AbortController();
  try {
    const q = new URLSearchParams({ token, schedules: schedules.join(',') });
    const res = await fetch(`/api/v1/board/events?${q}`, { signal: controller.signal, cache: 'no-store', credentials: 'omit' });
    view.reason = res.status === 401 || res.status === 403 ? 'screen.badToken'
      : res.status === 404 ? 'screen.noEndpoint'
        : res.ok ? null : 'screen.serverError';
  } catch {
    view.reason = null;
  } finally {
    controller.abort();
  }
  renderConnection();
}

let source = null;
let retryTimer = null;
let countdown = null;
let failures = 0;

function setConnection(state) {
  view.connection = state;
  renderConnection();
}

function connect() {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  setConnection('connecting');
  const q = new URLSearchParams({ token, schedules: schedules.join(',') });
  source = new EventSource(`/api/v1/board/events?${q}`);
  source.addEventListener('open', () => {
    failures = 0;
    view.reason = null;
    setConnection('live');
  });
  source.addEventListener('board', (e) => {
    failures = 0;
    if (view.connection !== 'live') setConnection('live');
    onBoard(e.data);
  });
  // a server that sends unnamed events is understood too
  source.addEventListener('message', (e) => onBoard(e.data));
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      // refused (e.g. a bad token or a server without the endpoint): retry ourselves
      source.close();
      failures += 1;
      const delay = Math.min(60, 5 * 2 ** Math.min(failures - 1, 4));
      view.retryIn = delay;
      setConnection('offline');
      countdown = setInterval(() => {
        view.retryIn = Math.max(0, view.retryIn - 1);
        renderConnection();
      }, 1000);
      retryTimer = setTimeout(connect, delay * 1000);
      probe();
    } else {
      setConnection('reconnecting');
    }
  });
}

// ---- the TV: keep the screen awake, hide the pointer, full screen on F or double click ------

async function keepAwake() {
  try {
    if (navigator.wakeLock && document.visibilityState === 'visible') await navigator.wakeLock.request('screen');
  } catch {
    // not allowed here; the TV's own settings decide
  }
}

let pointerTimer = null;
document.addEventListener('mousemove', () => {
  document.body.classList.add('pointer');
  clearTimeout(pointerTimer);
  pointerTimer = setTimeout(() => document.body.classList.remove('pointer'), 3000);
});

function fullScreen() {
  if (!document.fullscreenElement && document.documentElement.requestFullscreen) {
    document.documentElement.requestFullscreen().catch(() => {});
  }
}
document.addEventListener('dblclick', fullScreen);
document.addEventListener('keydown', (e) => {
  if (e.key === 'f' || e.key === 'F') fullScreen();
});

// ---- start ------------------------------------------------------------------------------------

root.replaceChildren(top);
tick();
setInterval(tick, 1000);
// fresh highlights fade on time even without a new event
setInterval(() => {
  if (view.freshSince.size) {
    renderLatest();
    renderBoard();
  }
}, 5000);

if (!token) {
  root.append(el('p', 'scr-message', t('screen.noToken')));
  view.connection = 'offline';
  title.textContent = t('screen.title');
  langButton.textContent = t('lang.switch');
  stateBadge.hidden = true;
  updated.hidden = true;
  document.title = t('screen.title');
} else {
  root.append(call, grid);
  render();
  connect();
  keepAwake();
  document.addEventListener('visibilitychange', keepAwake);
  window.addEventListener('hashchange', () => location.reload());
}
