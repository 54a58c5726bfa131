// The update server's console: sign-in, fleet, releases, rollouts and audit, on hash routes
// (#/fleet, #/releases, #/releases/3, #/rollouts, #/rollouts/7, #/audit). Plain ES module, no
// build step, no dependencies; served under a strict CSP, so no inline scripts, handlers or
// styles: every listener is added here and every look is a class in console.css.
//
// Data from the server is only ever put into the page as text (textContent), never as HTML.
// The helpers (h, tx, errorBox, notify, confirmDialog, api) come from /dom.js, shared with the
// hospital pages, so the two look and behave as one product.
//
// Live updates: one EventSource on /api/v1/events; every `change` event re-fetches what the
// current view shows, at most once a second. Without the stream (it failed for good), the view
// is polled every 5 s instead.

import { t, getLang, setLang } from './i18n.js';
import {
  L, tr, setT, h, tx, fill, applyI18n, field, keepFocus, enumText, clockSeconds, dateTime,
  ApiError, apiClient, query, errorBox, notify, confirmDialog, certificateLine,
} from '/dom.js';

// ---------------------------------------------------------------------------------------------
// DOM helpers (the shared ones, from h() to confirmDialog(), are in /dom.js)

/** A coloured badge for a state, carrying the raw state in data-state. */
function badge(prefix, value, testid) {
  return h('span', { class: ['badge', `badge-${value}`], testid, dataset: { state: value } }, enumText(prefix, value));
}

// ---------------------------------------------------------------------------------------------
// Formatting

/** "5 秒前" / "3 min ago": a span that keeps its absolute time in its title. */
function ago(ms, testid) {
  if (typeof ms !== 'number') return h('span', { class: 'muted', testid, t: 'common.never' });
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  let spec;
  if (s < 60) spec = ['time.seconds', { n: s }];
  else if (s < 3600) spec = ['time.minutes', { n: Math.floor(s / 60) }];
  else if (s < 86400) spec = ['time.hours', { n: Math.floor(s / 3600) }];
  else spec = ['time.days', { n: Math.floor(s / 86400) }];
  return h('span', { testid, title: dateTime(ms), dataset: { at: String(ms) }, t: spec });
}

function bytes(n) {
  if (typeof n !== 'number') return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function shortDigest(d) {
  if (typeof d !== 'string') return '—';
  const hex = d.replace(/^sha256:/, '');
  return `${hex.slice(0, 12)}…`;
}

function json(v) {
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

/** A digest shown short, whole in its title, selectable. */
function digestEl(d, testid) {
  return h('span', { class: 'mono', title: d || '', testid, text: shortDigest(d) });
}

// ---------------------------------------------------------------------------------------------
// The API

const TOKEN_KEY = 'nonstop.console.token';
const ME_KEY = 'nonstop.console.me';

function storedMe() {
  try {
    return JSON.parse(sessionStorage.getItem(ME_KEY) || 'null');
  } catch {
    return null;
  }
}

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: storedMe(),
  cleanup: null,
  refresh: null,
  loginNotice: null,
  events: null,
  eventsState: 'off',
  eventsRetry: null,
  poll: null,
  nodes: null,
};

const api = apiClient({ token: () => state.token, onUnauthorized: () => sessionEnded() });

// ---------------------------------------------------------------------------------------------
// Roles: what each may do (the API stays the authority; this only hides what would be refused).

const ROLES = ['admin', 'publisher', 'operator', 'auditor'];
const can = {
  publish: (r) => r === 'admin' || r === 'publisher',
  rollout: (r) => r === 'admin' || r === 'operator',
  audit: (r) => r === 'admin' || r === 'auditor',
};

function may(what) {
  return !!(state.me && can[what](state.me.role));
}

/**
 * The signed-in operator's role. The sign-in answer names it when the server says so; otherwise
 * it is learnt from two harmless requests the API answers by role (403 or not): reading the audit
 * chain's check (admin, auditor) and publishing an empty body (admin, publisher; refused as a
 * bundle, so nothing is stored).
 */
async function learnRole(session) {
  if (session && ROLES.includes(session.role)) return session.role;
  const status = async (method, path, body) => {
    try {
      await api(method, path, body, { quiet401: true });
      return 200;
    } catch (e) {
      return e.status;
    }
  };
  const [audit, publish] = await Promise.all([
    status('GET', '/audit/verify'),
    status('POST', '/releases', new Blob([])),
  ]);
  if (audit === 401 || publish === 401) throw new ApiError(401, { code: 'unauthorized', message: t('login.expired') });
  const mayAudit = audit !== 403;
  const mayPublish = publish !== 403;
  if (mayAudit && mayPublish) return 'admin';
  if (mayPublish) return 'publisher';
  if (mayAudit) return 'auditor';
  return 'operator';
}

// ---------------------------------------------------------------------------------------------
// Live updates: server-sent events, one `change` per change in the fleet.

function setEventsState(s) {
  state.eventsState = s;
  const el = document.querySelector('[data-testid="events-state"]');
  if (el) {
    el.dataset.state = s;
    el.className = `events-state events-${s}`;
    setT(el.querySelector('.events-text'), `events.${s}`);
  }
  // Without the stream, poll what the view shows.
  if (s === 'offline' && state.token) startPolling();
  else stopPolling();
}

function startEvents() {
  stopEvents();
  if (!state.token || typeof EventSource === 'undefined') {
    setEventsState('offline');
    return;
  }
  setEventsState('connecting');
  const source = new EventSource(`/api/v1/events?token=${encodeURIComponent(state.token)}`);
  state.events = source;
  source.addEventListener('open', () => {
    if (state.events !== source) return;
    const wasDown = state.eventsState === 'reconnecting' || state.eventsState === 'offline';
    setEventsState('live');
    // Whatever happened while the stream was down is fetched now.
    if (wasDown) scheduleRefresh();
  });
  source.addEventListener('change', () => {
    if (state.events !== source) return;
    if (state.eventsState !== 'live') setEventsState('live');
    scheduleRefresh();
  });
  source.addEventListener('error', () => {
    if (state.events !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused for good (a 401, a 404, not an event stream): try again in a while; meanwhile poll.
      setEventsState('offline');
      source.close();
      state.events = null;
      state.eventsRetry = setTimeout(() => {
        state.eventsRetry = null;
        if (!state.token) return;
        // An expired token shows up here: a 401 signs out.
        api('GET', '/releases').then(() => startEvents(), () => {
          if (state.token) state.eventsRetry = setTimeout(startEvents, 15000);
        });
      }, 15000);
    } else {
      setEventsState('reconnecting');
    }
  });
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
  if (state.eventsRetry) clearTimeout(state.eventsRetry);
  state.eventsRetry = null;
  stopPolling();
}

function startPolling() {
  if (state.poll) return;
  state.poll = setInterval(() => scheduleRefresh(), 5000);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

// At most one refresh a second; one running at a time; a change during one runs another after.
const refresher = { last: 0, timer: null, running: false, again: false };

function scheduleRefresh() {
  if (!state.refresh) return;
  if (refresher.running) {
    refresher.again = true;
    return;
  }
  if (refresher.timer) return;
  const wait = Math.max(0, refresher.last + 1000 - Date.now());
  refresher.timer = setTimeout(runRefresh, wait);
}

async function runRefresh() {
  refresher.timer = null;
  const fn = state.refresh;
  if (!fn) return;
  refresher.running = true;
  refresher.last = Date.now();
  try {
    await fn();
  } catch {
    // each view shows its own errors
  } finally {
    refresher.running = false;
    if (refresher.again) {
      refresher.again = false;
      scheduleRefresh();
    }
  }
}

/** Registers the current view's refresh function and runs it once now. */
function live(fn) {
  state.refresh = fn;
  refresher.last = Date.now();
  return fn();
}

// ---------------------------------------------------------------------------------------------
// Routing

const ROUTES = {
  fleet: { render: renderFleet, may: () => true },
  releases: { render: renderReleases, may: () => true },
  release: { render: renderRelease, may: () => true, nav: 'releases' },
  rollouts: { render: renderRollouts, may: () => true },
  rollout: { render: renderRollout, may: () => true, nav: 'rollouts' },
  node: { render: renderNode, may: () => true, nav: 'fleet' },
  audit: { render: renderAudit, may: () => may('audit') },
};
const NAV = ['fleet', 'releases', 'rollouts', 'audit'];

/** The route: [name, id]. #/releases/3 is the release page, #/rollouts/7 the rollout page. */
function currentRoute() {
  const m = /^#\/([a-z-]*)(?:\/([^/?#]+))?/.exec(location.hash);
  if (!m) return ['', null];
  const [, name, id] = m;
  if (id && name === 'releases') return ['release', decodeURIComponent(id)];
  if (id && name === 'rollouts') return ['rollout', decodeURIComponent(id)];
  if (id && name === 'nodes') return ['node', decodeURIComponent(id)];
  return [name, null];
}

function go(path) {
  if (location.hash === `#/${path}`) route();
  else location.hash = `#/${path}`;
}

function forget() {
  stopEvents();
  state.token = null;
  state.me = null;
  state.nodes = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ME_KEY);
  setEventsState('off');
}

function sessionEnded() {
  if (!state.token) return;
  forget();
  state.loginNotice = 'login.expired';
  route();
}

function signOut() {
  forget();
  state.loginNotice = 'login.signedOut';
  go('login');
}

let routing = 0;

async function route() {
  const seq = ++routing;
  state.refresh = null;
  if (state.cleanup) {
    try {
      state.cleanup();
    } catch {
      // a page's cleanup must not stop the next page
    }
    state.cleanup = null;
  }
  let [name, id] = currentRoute();
  const main = document.getElementById('main');
  document.body.dataset.page = '';
  if (!state.token) {
    renderHeader(null);
    document.title = `${t('nav.login')} · ${t('app.title')}`;
    renderLogin(main, name && name !== 'login' ? location.hash.slice(2) : null);
    return;
  }
  if (!state.me) {
    fill(main, h('p', { class: 'muted', t: 'common.loading' }));
    try {
      const role = await learnRole(null);
      state.me = { username: state.me?.username || '', role };
      sessionStorage.setItem(ME_KEY, JSON.stringify(state.me));
    } catch (e) {
      if (seq !== routing || !state.token) return;
      const box = errorBox('load-error');
      fill(main, h('div', { class: 'panel narrow' }, h('h1', { t: 'login.loadFailed' }), box.el,
        h('button', { type: 'button', class: 'btn', t: 'common.retry', onclick: () => route() })));
      box.show(e);
      return;
    }
    if (seq !== routing) return;
  }
  if (!state.events && !state.eventsRetry) startEvents();
  if (!name || name === 'login') {
    history.replaceState(null, '', '#/fleet');
    name = 'fleet';
  }
  const r = ROUTES[name];
  renderHeader(r ? r.nav || name : null);
  if (!r) {
    document.title = t('app.title');
    fill(main, h('section', { class: 'panel narrow', testid: 'not-found' },
      h('h1', { t: 'page.notFound', tabindex: '-1' }), yourPages()));
    main.querySelector('h1').focus();
    return;
  }
  document.title = `${t(`nav.${r.nav || name}`)} · ${t('app.title')}`;
  if (!r.may()) {
    fill(main, h('section', { class: 'panel narrow', testid: 'not-for-role' },
      h('h1', { t: 'page.notForRole', tabindex: '-1' }), yourPages()));
    main.querySelector('h1').focus();
    return;
  }
  main.replaceChildren();
  document.body.dataset.page = name;
  state.cleanup = r.render(main, id) || null;
  const auto = main.querySelector('[data-autofocus]');
  if (auto) auto.focus();
}

function navFor() {
  return NAV.filter((p) => ROUTES[p].may());
}

function yourPages() {
  return [
    h('p', { t: ['page.yourPages', { role: L(`role.${state.me.role}`) }] }),
    h('ul', { class: 'link-list' }, navFor().map((p) =>
      h('li', null, h('a', { href: `#/${p}`, testid: `link-${p}`, t: `nav.${p}` })))),
  ];
}

function renderHeader(current) {
  const header = document.getElementById('top');
  const me = state.me && state.token ? state.me : null;
  const langButton = h('button', {
    type: 'button',
    class: 'btn btn-quiet',
    testid: 'lang-switch',
    t: 'lang.switch',
    tLabel: 'lang.switchLabel',
    lang: getLang() === 'zh' ? 'en' : 'zh-CN',
    onclick: () => {
      setLang(getLang() === 'zh' ? 'en' : 'zh');
      applyI18n(document.body);
      langButton.lang = getLang() === 'zh' ? 'en' : 'zh-CN';
      const [name] = currentRoute();
      const r = ROUTES[name];
      document.title = `${t(r ? `nav.${r.nav || name}` : 'nav.login')} · ${t('app.title')}`;
    },
  });
  const nav = me
    ? h('nav', { class: 'nav', tLabel: 'nav.label' },
      h('ul', null, navFor().map((p) => h('li', null,
        h('a', {
          href: `#/${p}`,
          testid: `nav-${p}`,
          t: `nav.${p}`,
          'aria-current': p === current ? 'page' : null,
        })))))
    : null;
  const events = me
    ? h('span', {
      class: `events-state events-${state.eventsState}`,
      testid: 'events-state',
      role: 'status',
      dataset: { state: state.eventsState },
      tTitle: 'events.title',
    }, h('span', { class: 'events-dot', 'aria-hidden': 'true' }), h('span', { class: 'events-text', t: `events.${state.eventsState}` }))
    : null;
  const who = me
    ? h('span', { class: 'who', testid: 'who', dataset: { role: me.role } },
      me.username ? tx('user.as', { username: me.username, role: L(`role.${me.role}`) }) : tx(`role.${me.role}`))
    : null;
  fill(header,
    h('a', { class: 'brand', href: me ? '#/fleet' : '#/login', t: 'app.title' }),
    nav,
    h('span', { class: 'spacer' }),
    events,
    who,
    langButton,
    me ? h('button', { type: 'button', class: 'btn btn-quiet', testid: 'sign-out', t: 'signout', onclick: signOut }) : null);
}

// ---------------------------------------------------------------------------------------------
// Sign in

function renderLogin(main, wanted) {
  const box = errorBox('login-error');
  const user = h('input', { name: 'username', autocomplete: 'username', testid: 'login-username', required: true, 'data-autofocus': true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', testid: 'login-password', required: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'login-submit', t: 'login.submit' });
  const notice = state.loginNotice;
  state.loginNotice = null;
  const form = h('form', { class: 'stack', testid: 'login-form', novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      box.clear();
      for (const [control, empty] of [[user, !user.value.trim()], [pass, !pass.value]]) {
        if (empty) {
          box.show('common.required');
          box.mark(control);
          control.focus();
          return;
        }
      }
      submit.disabled = true;
      setT(submit, 'login.busy');
      try {
        const username = user.value.trim();
        const s = await api('POST', '/sessions', { username, password: pass.value });
        state.token = s.token;
        sessionStorage.setItem(TOKEN_KEY, s.token);
        pass.value = '';
        const role = await learnRole(s);
        state.me = { username: s.username || username, role };
        sessionStorage.setItem(ME_KEY, JSON.stringify(state.me));
        startEvents();
        const [name] = wanted ? currentRoute() : ['fleet'];
        const r = ROUTES[name];
        go(wanted && r && r.may() ? wanted : 'fleet');
      } catch (err) {
        if (state.token && err.status !== 401) {
          // signed in, but the role could not be learnt: the route retries
          go('fleet');
          return;
        }
        submit.disabled = false;
        setT(submit, 'login.submit');
        box.show(err, form);
        if (!err.field) pass.select();
      }
    } },
  field('login.username', user),
  field('login.password', pass),
  box.el,
  submit);
  fill(main, h('section', { class: 'panel login', testid: 'login' },
    h('h1', { t: 'login.title' }),
    h('p', { class: 'muted', t: 'login.subtitle' }),
    notice ? h('p', { class: 'info-box', role: 'status', testid: 'login-notice', t: notice }) : null,
    form,
    certificateLine()));
  user.focus();
}

// ---------------------------------------------------------------------------------------------
// Shared bits of views

/** A panel's "updated at" line, replaced on each refresh. */
function updatedLine(testid) {
  const el = h('p', { class: 'muted small updated', testid, role: 'status' });
  return {
    el,
    ok() {
      el.classList.remove('stale');
      setT(el, ['common.updatedAt', { time: clockSeconds(Date.now()) }]);
    },
    stale() {
      el.classList.add('stale');
      setT(el, ['common.stale', { time: clockSeconds(Date.now()) }]);
    },
  };
}

/** Loads, then keeps loading on every change; shows the first load's error in `box`. */
function loadInto(slot, box, updated, fetcher, render) {
  let loaded = false;
  return live(async () => {
    try {
      const data = await fetcher();
      box.clear();
      keepFocus(slot, () => render(data));
      updated.ok();
      loaded = true;
    } catch (e) {
      if (e.status === 401) return;
      if (!loaded) {
        slot.replaceChildren();
        box.show(e);
      } else updated.stale();
    }
  });
}

function tableWrap(table) {
  return h('div', { class: 'table-wrap' }, table);
}

function th(key, cls) {
  return h('th', { scope: 'col', class: cls, t: key });
}

/** The components a node reported: an array of {component, live, candidate, standby}. */
function componentsOf(node) {
  const c = node.components;
  if (Array.isArray(c)) return c;
  if (c && typeof c === 'object') {
    return Object.entries(c).map(([component, v]) => ({ component, ...(v || {}) }));
  }
  return [];
}

function versionOf(slot) {
  if (!slot) return null;
  if (typeof slot === 'string') return slot;
  return slot.version || null;
}

// ---------------------------------------------------------------------------------------------
// Fleet

function renderFleet(main) {
  const box = errorBox('fleet-error');
  const updated = updatedLine('fleet-updated');
  const filter = h('input', { type: 'search', name: 'q', testid: 'fleet-filter', autocomplete: 'off', tPlaceholder: 'fleet.filterPlaceholder', tLabel: 'fleet.filter' });
  const group = h('select', { name: 'group', testid: 'fleet-group', tLabel: 'fleet.group' });
  const summary = h('div', { class: 'summary', testid: 'fleet-summary' });
  const slot = h('div', { testid: 'fleet-nodes' }, h('p', { class: 'muted', t: 'common.loading' }));
  const rolloutsSlot = h('div', { testid: 'fleet-rollouts' });
  let data = null;

  function groups() {
    const seen = [...new Set((data?.nodes || []).map((n) => n.group))].sort();
    const chosen = group.value;
    fill(group, h('option', { value: '', t: 'fleet.allGroups' }), seen.map((g) => h('option', { value: g, text: g })));
    group.value = seen.includes(chosen) ? chosen : '';
  }

  function render() {
    if (!data) return;
    const nodes = data.nodes || [];
    state.nodes = nodes;
    groups();
    const q = filter.value.trim().toLowerCase();
    const shown = nodes.filter((n) => (!group.value || n.group === group.value)
      && (!q || n.name.toLowerCase().includes(q) || n.group.toLowerCase().includes(q)
        || componentsOf(n).some((c) => `${c.component}`.toLowerCase().includes(q))));
    const connected = nodes.filter((n) => n.connected).length;
    fill(summary,
      h('span', { class: 'stat', testid: 'fleet-count', dataset: { n: String(nodes.length) } }, tx('fleet.count', { n: nodes.length })),
      h('span', { class: 'stat stat-ok', testid: 'fleet-connected', dataset: { n: String(connected) } }, tx('fleet.connectedCount', { n: connected })),
      h('span', { class: ['stat', nodes.length - connected ? 'stat-bad' : null], testid: 'fleet-disconnected' }, tx('fleet.disconnectedCount', { n: nodes.length - connected })));
    if (!nodes.length) {
      fill(slot, h('p', { class: 'info-box', testid: 'fleet-empty', t: 'fleet.empty' }));
    } else if (!shown.length) {
      fill(slot, h('p', { class: 'muted', testid: 'fleet-none-match', t: 'fleet.noneMatch' }));
    } else {
      fill(slot, tableWrap(h('table', { class: 'table fleet-table' },
        h('thead', null, h('tr', null, th('fleet.node'), th('fleet.group'), th('fleet.connection'), th('fleet.lastSeen'), th('fleet.components'))),
        h('tbody', null, shown.map(nodeRow)))));
    }
    const active = (data.rollouts || []).filter((r) => ['running', 'paused', 'halted', 'rolling-back'].includes(r.state));
    fill(rolloutsSlot, active.length
      ? h('ul', { class: 'link-list' }, active.map((r) => h('li', null,
        h('a', { href: `#/rollouts/${r.id}`, testid: `fleet-rollout-${r.id}`, 'data-key': `fr-${r.id}` }, `#${r.id} ${r.component}@${r.version} `),
        badge('rollout.state', r.state), ' ', progressText(r))))
      : h('p', { class: 'muted small', t: 'fleet.noActiveRollouts' }));
  }

  function nodeRow(n) {
    const comps = componentsOf(n);
    return h('tr', { testid: `node-${n.name}`, dataset: { connected: String(!!n.connected), group: n.group } },
      h('th', { scope: 'row', class: 'node-name' }, h('a', { href: `#/nodes/${encodeURIComponent(n.name)}`, testid: `node-${n.name}-link`, 'data-key': `node-${n.name}`, text: n.name }),
        n.enrolled ? null : h('span', { class: 'badge badge-pending', testid: `node-${n.name}-not-enrolled`, t: 'fleet.notEnrolled' })),
      h('td', { testid: `node-${n.name}-group`, text: n.group }),
      h('td', null, h('span', {
        class: ['badge', n.connected ? 'badge-connected' : 'badge-disconnected'],
        testid: `node-${n.name}-connected`,
        dataset: { state: n.connected ? 'connected' : 'disconnected' },
        t: n.connected ? 'fleet.connected' : 'fleet.disconnected',
      })),
      h('td', null, ago(n.last_seen, `node-${n.name}-last-seen`)),
      h('td', null, comps.length
        ? h('table', { class: 'table compact versions' },
          h('thead', null, h('tr', null, th('fleet.component'), th('fleet.live'), th('fleet.candidate'), th('fleet.standby'))),
          h('tbody', null, comps.map((c) => {
            const id = `node-${n.name}-${c.component}`;
            const cell = (slotName) => {
              const v = versionOf(c[slotName]);
              return h('td', { class: ['mono', `v-${slotName}`, v ? null : 'muted'], testid: `${id}-${slotName}`, title: c[slotName]?.digest || null, text: v || '—' });
            };
            return h('tr', { testid: id, dataset: { live: versionOf(c.live) || '', candidate: versionOf(c.candidate) || '', standby: versionOf(c.standby) || '' } },
              h('td', { text: c.component }), cell('live'), cell('candidate'), cell('standby'));
          })))
        : h('span', { class: 'muted', t: 'fleet.noComponents' })));
  }

  filter.addEventListener('input', render);
  group.addEventListener('change', render);
  main.append(
    h('section', { class: 'panel', testid: 'fleet', 'aria-labelledby': 'fleet-title' },
      h('div', { class: 'panel-head' },
        h('h1', { id: 'fleet-title', class: 'panel-title', t: 'fleet.title' }),
        updated.el),
      summary,
      h('div', { class: 'toolbar' }, filter, group),
      box.el,
      slot),
    h('section', { class: 'panel', 'aria-labelledby': 'fleet-rollouts-title' },
      h('h2', { id: 'fleet-rollouts-title', class: 'panel-title', t: 'fleet.activeRollouts' }),
      rolloutsSlot));
  // Ages ("5 s ago") move on between changes too.
  const tick = setInterval(() => {
    for (const el of slot.querySelectorAll('[data-at]')) {
      const fresh = ago(Number(el.dataset.at), el.dataset.testid);
      el.replaceWith(fresh);
    }
  }, 5000);
  loadInto(slot, box, updated, () => api('GET', '/status'), (d) => {
    data = d;
    render();
  });
  return () => clearInterval(tick);
}

// ---------------------------------------------------------------------------------------------
// One node: its versions, and its traffic around its updates

const SPANS = [15, 60, 360, 1440]; // minutes

function renderNode(main, name) {
  const box = errorBox('node-error');
  const updated = updatedLine('node-updated');
  const span = h('select', { name: 'span', testid: 'traffic-span', tLabel: 'node.span' },
    SPANS.map((m) => h('option', { value: String(m), t: [`node.span${m}`] })));
  span.value = '15';
  const versions = h('div', { testid: 'node-versions' }, h('p', { class: 'muted', t: 'common.loading' }));
  const charts = h('div', { class: 'charts', testid: 'traffic-charts' });
  const impacts = h('div', { testid: 'traffic-updates' });
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/fleet', testid: 'back-fleet', t: 'node.back' })),
    h('section', { class: 'panel', testid: 'node', 'aria-labelledby': 'node-title' },
      h('div', { class: 'panel-head' },
        h('h1', { id: 'node-title', class: 'panel-title', testid: 'node-title', text: name }),
        updated.el),
      box.el, versions),
    h('section', { class: 'panel', 'aria-labelledby': 'traffic-title' },
      h('div', { class: 'panel-head' },
        h('h2', { id: 'traffic-title', class: 'panel-title', t: 'node.traffic' }),
        field('node.span', span)),
      h('p', { class: 'muted small', t: 'node.trafficHint' }),
      charts),
    h('section', { class: 'panel', 'aria-labelledby': 'impact-title' },
      h('h2', { id: 'impact-title', class: 'panel-title', t: 'node.updates' }),
      h('p', { class: 'muted small', t: 'node.updatesHint' }),
      impacts));

  function render([status, chart]) {
    const n = (status.nodes || []).find((x) => x.name === name);
    fill(versions, n ? nodeVersions(n) : h('p', { class: 'muted', t: 'node.unknown' }));
    // Drawn at the size shown (no scaling of text), over the span the data covers when that is
    // shorter than the span asked for (a node that joined five minutes ago fills the chart).
    const width = Math.max(320, Math.floor(charts.clientWidth || 640));
    const firsts = [...(chart.samples || []), ...(chart.updates || [])].map((p) => p.at);
    const start = firsts.length ? Math.max(chart.since, Math.min(...firsts) - 30000) : chart.since;
    const shown = { ...chart, since: start };
    fill(charts,
      lineChart(shown, width, 'rps', 'node.rps', (v) => v.toFixed(0)),
      lineChart(shown, width, 'error_rate', 'node.errorRate', (v) => `${(v * 100).toFixed(2)}%`),
      lineChart(shown, width, 'p99_ms', 'node.p99', (v) => `${v.toFixed(1)} ms`));
    fill(impacts, impactTable(chart));
  }

  span.addEventListener('change', () => scheduleRefresh());
  loadInto(charts, box, updated, () => {
    const until = Date.now();
    const since = until - Number(span.value) * 60000;
    return Promise.all([
      api('GET', '/status'),
      api('GET', `/nodes/${encodeURIComponent(name)}/traffic${query({ since, until })}`),
    ]);
  }, render);
  // Samples arrive every few seconds without a change event: the chart moves on by itself.
  const tick = setInterval(() => scheduleRefresh(), 5000);
  return () => clearInterval(tick);
}

function nodeVersions(n) {
  const comps = componentsOf(n);
  return h('div', { class: 'stack' },
    h('p', null,
      h('span', { class: ['badge', n.connected ? 'badge-connected' : 'badge-disconnected'], testid: 'node-connected', t: n.connected ? 'fleet.connected' : 'fleet.disconnected' }),
      ' ', tx('fleet.group'), ': ', h('span', { text: n.group }), ' · ', tx('fleet.lastSeen'), ': ', ago(n.last_seen, 'node-last-seen'),
      ' · ', tx('fleet.root'), ': ', h('span', { class: 'mono', testid: 'node-root-version', text: `v${n.root_version ?? 0}` })),
    comps.length
      ? tableWrap(h('table', { class: 'table compact versions' },
        h('thead', null, h('tr', null, th('fleet.component'), th('fleet.live'), th('fleet.candidate'), th('fleet.standby'))),
        h('tbody', null, comps.map((c) => h('tr', { testid: `node-version-${c.component}` },
          h('td', { text: c.component }),
          ...['live', 'candidate', 'standby'].map((slot) => h('td', { class: 'mono', title: c[slot]?.digest || null, text: versionOf(c[slot]) || '—' })))))))
      : h('p', { class: 'muted', t: 'fleet.noComponents' }));
}

// A line chart in SVG, drawn here rather than with a charting library: three small charts of
// one series each do not justify shipping a library in every binary, and the pages have no
// build step. Vertical lines mark the node's update steps; a hover title gives each value.
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
  for (const c of children.flat(2)) if (c != null) el.append(c);
  return el;
}

function lineChart(chart, W, key, titleKey, format) {
  const H = 130;
  const PAD = { l: 56, r: 8, t: 8, b: 20 };
  const pts = chart.samples || [];
  const max = Math.max(...pts.map((p) => p[key]), key === 'error_rate' ? 0.01 : 1);
  const x = (at) => PAD.l + ((at - chart.since) / (chart.until - chart.since)) * (W - PAD.l - PAD.r);
  const y = (v) => PAD.t + (1 - v / max) * (H - PAD.t - PAD.b);
  const title = svg('title', null);
  title.textContent = t(titleKey);
  const axis = [0, 0.5, 1].map((f) => {
    const label = svg('text', { x: PAD.l - 6, y: y(max * f) + 4, 'text-anchor': 'end', class: 'chart-label' });
    label.textContent = format(max * f);
    return [svg('line', { x1: PAD.l, x2: W - PAD.r, y1: y(max * f), y2: y(max * f), class: 'chart-grid' }), label];
  });
  const timeLabels = [chart.since, chart.until].map((at, i) => {
    const label = svg('text', { x: i ? W - PAD.r : PAD.l, y: H - 4, 'text-anchor': i ? 'end' : 'start', class: 'chart-label' });
    label.textContent = clockSeconds(at);
    return label;
  });
  // A gap of more than three intervals (the node was offline) breaks the line.
  const segments = [];
  let current = [];
  pts.forEach((p, i) => {
    if (i > 0 && p.at - pts[i - 1].at > 3 * Math.max(1000, medianStep(pts))) {
      segments.push(current);
      current = [];
    }
    current.push(`${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`);
  });
  segments.push(current);
  const lines = segments.filter((seg) => seg.length).map((seg) => svg('polyline', { points: seg.join(' '), class: `chart-line chart-${key}` }));
  const dots = pts.length <= 400 ? pts.map((p) => {
    const tip = svg('title', null);
    tip.textContent = `${clockSeconds(p.at)} · ${format(p[key])}`;
    return svg('circle', { cx: x(p.at), cy: y(p[key]), r: 2, class: 'chart-dot' }, tip);
  }) : [];
  const marks = (chart.updates || []).map((u) => {
    const tip = svg('title', null);
    tip.textContent = `${clockSeconds(u.at)} ${u.component}@${u.version}: ${t(`target.state.${u.step}`)}${u.reason ? ` (${u.reason})` : ''}`;
    return svg('line', { x1: x(u.at), x2: x(u.at), y1: PAD.t, y2: H - PAD.b, class: `chart-mark mark-${u.step}`, 'data-step': u.step }, tip);
  });
  const last = pts.length ? pts[pts.length - 1][key] : null;
  return h('figure', { class: 'chart', testid: `chart-${key}`, dataset: { samples: String(pts.length), updates: String((chart.updates || []).length) } },
    h('figcaption', null, h('strong', { t: titleKey }), ' ', h('span', { class: 'muted', testid: `chart-${key}-last`, text: last == null ? t('node.noSamples') : format(last) })),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg', role: 'img', 'aria-label': t(titleKey) }, title, axis, timeLabels, lines, dots, marks));
}

function medianStep(pts) {
  if (pts.length < 2) return 5000;
  const steps = pts.slice(1).map((p, i) => p.at - pts[i].at).sort((a, b) => a - b);
  return steps[Math.floor(steps.length / 2)];
}

function impactTable(chart) {
  const ups = (chart.updates || []).slice().reverse();
  if (!ups.length) return h('p', { class: 'muted', testid: 'traffic-no-updates', t: 'node.noUpdates' });
  const fig = (s, k, f) => (s ? f(s[k]) : '—');
  const cells = (s) => [
    h('td', { class: 'num', text: fig(s, 'rps', (v) => v.toFixed(0)) }),
    h('td', { class: 'num', text: fig(s, 'error_rate', (v) => `${(v * 100).toFixed(2)}%`) }),
    h('td', { class: 'num', text: fig(s, 'p99_ms', (v) => `${v.toFixed(1)} ms`) }),
  ];
  return tableWrap(h('table', { class: 'table compact' },
    h('thead', null,
      h('tr', null, h('th', { scope: 'col', rowspan: '2', t: 'node.when' }), h('th', { scope: 'col', rowspan: '2', t: 'node.update' }),
        h('th', { scope: 'col', rowspan: '2', t: 'node.step' }),
        h('th', { scope: 'colgroup', colspan: '3', t: ['node.before', { s: chart.impact_secs }] }),
        h('th', { scope: 'colgroup', colspan: '3', t: ['node.after', { s: chart.impact_secs }] })),
      h('tr', null, ['node.rps', 'node.errorRate', 'node.p99', 'node.rps', 'node.errorRate', 'node.p99'].map((k) => th(k, 'num')))),
    h('tbody', null, ups.map((u, i) => h('tr', { testid: `traffic-update-${i}`, dataset: { step: u.step, component: u.component, version: u.version } },
      h('td', { text: dateTime(u.at) }),
      h('td', { class: 'mono', text: `${u.component}@${u.version}` }),
      h('td', null, badge('target.state', u.step), u.reason ? h('div', { class: 'small muted', text: u.reason }) : null),
      ...(u.step === 'live' ? [...cells(u.before), ...cells(u.after)] : [h('td', { colspan: '6', class: 'muted small', t: 'node.noImpact' })]))))));
}

// ---------------------------------------------------------------------------------------------
// Releases

function renderReleases(main) {
  const box = errorBox('releases-error');
  const updated = updatedLine('releases-updated');
  const slot = h('div', { testid: 'release-list' }, h('p', { class: 'muted', t: 'common.loading' }));

  const upload = may('publish') ? uploadPanel(() => scheduleRefresh()) : null;
  main.append(h('div', { class: ['releases-grid', upload ? null : 'single'] },
    h('section', { class: 'panel', testid: 'releases', 'aria-labelledby': 'releases-title' },
      h('div', { class: 'panel-head' },
        h('h1', { id: 'releases-title', class: 'panel-title', t: 'releases.title' }),
        updated.el),
      box.el,
      slot),
    upload));

  loadInto(slot, box, updated, () => api('GET', '/releases'), (data) => {
    const items = data.items || [];
    if (!items.length) {
      fill(slot, h('p', { class: 'info-box', testid: 'releases-empty', t: 'releases.empty' }));
      return;
    }
    fill(slot, tableWrap(h('table', { class: 'table' },
      h('thead', null, h('tr', null, th('releases.id'), th('releases.release'), th('releases.notes'), th('releases.signer'), th('releases.size', 'num'), th('releases.published'))),
      h('tbody', null, items.map((r) => h('tr', { testid: `release-${r.id}`, dataset: { component: r.component, version: r.version } },
        h('td', { class: 'mono', text: r.id }),
        h('td', null, h('a', { href: `#/releases/${r.id}`, testid: `release-${r.id}-link`, 'data-key': `rel-${r.id}`, class: 'strong' }, `${r.component}@${r.version}`)),
        h('td', { class: 'notes-cell', text: r.manifest?.notes || '' }),
        h('td', { class: 'mono', text: r.signer }),
        h('td', { class: 'num', text: bytes(r.size) }),
        h('td', { class: 'small' }, h('div', { text: dateTime(r.published_at) }), h('div', { class: 'muted', text: r.published_by }))))))));
  });
}

function uploadPanel(onPublished) {
  const box = errorBox('upload-error', { big: true });
  const file = h('input', { type: 'file', name: 'bundle', accept: '.nsb,application/octet-stream', testid: 'upload-file', required: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'upload-submit', t: 'upload.submit' });
  const done = h('div', { class: 'success-box', testid: 'upload-success', role: 'status', hidden: true });
  const form = h('form', { class: 'stack', testid: 'upload-form', novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      box.clear();
      done.hidden = true;
      const f = file.files && file.files[0];
      if (!f) {
        box.show('upload.chooseFile');
        box.mark(file);
        file.focus();
        return;
      }
      submit.disabled = true;
      setT(submit, 'upload.busy');
      try {
        const r = await api('POST', '/releases', f);
        fill(done, tx('upload.done', { release: `${r.component}@${r.version}` }), ' ',
          h('a', { href: `#/releases/${r.id}`, testid: 'upload-success-link', t: 'upload.open' }));
        done.hidden = false;
        done.dataset.release = String(r.id);
        file.value = '';
        notify('upload.done', { release: `${r.component}@${r.version}` }, { kind: 'success' });
        onPublished(r);
      } catch (err) {
        const why = err.code === 'bundle-refused' ? 'upload.refused' : err.code === 'conflict' ? 'upload.conflict' : null;
        box.show(err, null, why ? h('p', { class: 'small', t: why }) : null);
        box.el.focus?.();
      } finally {
        submit.disabled = false;
        setT(submit, 'upload.submit');
      }
    } },
  field('upload.file', file, { hint: h('p', { class: 'hint', t: 'upload.hint' }) }),
  box.el,
  done,
  h('div', { class: 'button-row' }, submit));
  box.el.tabIndex = -1;
  file.addEventListener('change', () => {
    box.clear();
    done.hidden = true;
  });
  return h('section', { class: 'panel', testid: 'upload', 'aria-labelledby': 'upload-title' },
    h('h2', { id: 'upload-title', class: 'panel-title', t: 'upload.title' }), form);
}

// ---------------------------------------------------------------------------------------------
// One release: manifest, checks, its rollouts, and starting a rollout

function renderRelease(main, id) {
  const box = errorBox('release-error');
  const head = h('div', { testid: 'release-detail' }, h('p', { class: 'muted', t: 'common.loading' }));
  const checks = h('div', { testid: 'release-checks' });
  const rolloutsSlot = h('div', { testid: 'release-rollouts' });
  const startSlot = h('div');
  let release = null;
  let startForm = null;

  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/releases', testid: 'back-releases', t: 'releases.back' })),
    h('div', { class: 'release-grid' },
      h('div', { class: 'stack' },
        h('section', { class: 'panel', 'aria-labelledby': 'release-title' },
          h('h1', { id: 'release-title', class: 'panel-title', t: ['release.title', { id }] }),
          box.el, head),
        h('section', { class: 'panel', 'aria-labelledby': 'checks-title' },
          h('h2', { id: 'checks-title', class: 'panel-title', t: 'release.checks' }), checks)),
      h('div', { class: 'stack' },
        startSlot,
        h('section', { class: 'panel', 'aria-labelledby': 'release-rollouts-title' },
          h('h2', { id: 'release-rollouts-title', class: 'panel-title', t: 'release.rollouts' }), rolloutsSlot))));

  function renderHead(r) {
    const m = r.manifest || {};
    setT(main.querySelector('#release-title'), ['release.titleFull', { release: `${r.component}@${r.version}` }]);
    document.title = `${r.component}@${r.version} · ${t('app.title')}`;
    fill(head,
      m.notes ? h('p', { class: 'notes', testid: 'release-notes', text: m.notes }) : null,
      h('dl', { class: 'meta' },
        meta('release.component', h('span', { testid: 'release-component', text: r.component })),
        meta('release.version', h('span', { class: 'mono', testid: 'release-version', text: r.version })),
        meta('release.kind', h('span', { text: m.kind || '—' })),
        meta('release.signer', h('span', { class: 'mono', testid: 'release-signer', text: r.signer })),
        meta('release.bundleDigest', h('span', { class: 'mono digest', testid: 'release-bundle-digest', text: r.bundle_digest })),
        meta('release.payloadDigest', h('span', { class: 'mono digest', testid: 'release-payload-digest', text: r.payload_digest })),
        meta('release.payload', h('span', { text: m.payload ? `${m.payload.file || ''} · ${bytes(m.payload.size)} · ${m.payload.encoding || ''}` : '—' })),
        meta('release.size', h('span', { text: bytes(r.size) })),
        meta('release.created', h('span', { text: m.created_at || '—' })),
        meta('release.published', h('span', { text: `${dateTime(r.published_at)} · ${r.published_by}` }))),
      h('details', { class: 'raw' }, h('summary', { t: 'release.manifest' }),
        h('pre', { class: 'json', testid: 'release-manifest', text: json(m) })));
    renderChecks(m.checks || {});
  }

  function renderChecks(c) {
    const vectors = c.test_vectors || [];
    const exportsList = c.exports || [];
    fill(checks,
      h('ol', { class: 'check-list' },
        h('li', { testid: 'check-exports' }, h('strong', { t: 'release.checkExports' }), ' ',
          exportsList.length ? h('span', { class: 'mono', text: exportsList.join(', ') }) : tx('release.checkExportsDefault')),
        h('li', { testid: 'check-vectors', dataset: { n: String(vectors.length) } }, h('strong', { t: 'release.checkVectors' }), ' ',
          tx('release.vectorCount', { n: vectors.length })),
        h('li', { testid: 'check-shadow' }, h('strong', { t: 'release.checkShadow' }), ' ',
          c.shadow ? tx('release.shadowSpec', { calls: c.shadow.calls, ratio: c.shadow.max_latency_ratio }) : tx('release.shadowDefault'))),
      vectors.length
        ? h('details', { class: 'raw', testid: 'vectors' }, h('summary', { t: ['release.showVectors', { n: vectors.length }] }),
          tableWrap(h('table', { class: 'table compact' },
            h('thead', null, h('tr', null, th('release.vectorFunction'), th('release.vectorInput'), th('release.vectorExpected'))),
            h('tbody', null, vectors.map((v, i) => h('tr', { testid: `vector-${i}` },
              h('td', { class: 'mono', text: v.function }),
              h('td', null, h('pre', { class: 'json small', text: json(v.input) })),
              h('td', null, h('pre', { class: 'json small', text: json(v.expected) }))))))))
        : null);
  }

  function renderRolloutsOf(all) {
    const mine = all.filter((r) => String(r.release) === String(release?.id ?? id));
    fill(rolloutsSlot, mine.length
      ? rolloutTable(mine)
      : h('p', { class: 'muted', testid: 'release-no-rollouts', t: 'release.noRollouts' }));
  }

  live(async () => {
    try {
      const [r, status] = await Promise.all([api('GET', `/releases/${encodeURIComponent(id)}`), api('GET', '/status')]);
      box.clear();
      release = r;
      state.nodes = status.nodes || [];
      renderHead(r);
      keepFocus(rolloutsSlot, () => renderRolloutsOf(status.rollouts || []));
      if (may('rollout')) {
        if (!startForm) {
          startForm = startRolloutPanel(r);
          fill(startSlot, startForm.el);
        }
        startForm.nodesChanged(state.nodes);
      }
    } catch (e) {
      if (e.status === 401) return;
      if (!release) {
        head.replaceChildren();
        box.show(e);
      }
    }
  });
}

function meta(key, value) {
  return [h('dt', { t: key }), h('dd', null, value)];
}

/** Splits `total` targets into waves by `plan`, as the server does (rollouts.rs plan_waves). */
function planWaves(plan, total) {
  const sizes = [];
  let done = 0;
  for (const raw of plan.split(',')) {
    const item = raw.trim();
    let upto;
    if (item === 'rest' || item === 'all') upto = total;
    else if (item.endsWith('%')) {
      const p = Number(item.slice(0, -1));
      if (!item.slice(0, -1).trim() || !Number.isFinite(p) || p < 0 || p > 100) return { error: ['waves.badShare', { item }] };
      upto = Math.ceil((total * p) / 100);
    } else {
      if (!/^\d+$/.test(item)) return { error: ['waves.badItem', { item }] };
      upto = Number(item);
    }
    upto = Math.min(upto, total);
    if (upto > done) {
      sizes.push(upto - done);
      done = upto;
    }
  }
  if (done < total) sizes.push(total - done);
  return { sizes };
}

function startRolloutPanel(release) {
  const box = errorBox('rollout-error', { big: true });
  const radio = (value, key) => {
    const input = h('input', { type: 'radio', name: 'target', value, testid: `rollout-target-${value}`, checked: value === 'all' });
    return h('label', { class: 'method' }, input, tx(key));
  };
  const targetKinds = h('div', { class: 'methods', role: 'radiogroup', 'aria-labelledby': 'target-legend' },
    radio('all', 'start.all'), radio('group', 'start.group'), radio('nodes', 'start.nodes'));
  const group = h('select', { name: 'group', testid: 'rollout-group' });
  const groupField = field('start.groupName', group);
  const nodeList = h('div', { class: 'checks', testid: 'rollout-nodes' });
  const nodeField = h('fieldset', { class: 'plain' }, h('legend', { t: 'start.pickNodes' }), h('p', { class: 'hint', t: 'start.pickNodesHint' }), nodeList);
  const waves = h('input', { name: 'waves', testid: 'rollout-waves', value: '1,25%,rest', autocomplete: 'off', spellcheck: 'false', class: 'mono' });
  const preview = h('p', { class: 'hint', testid: 'rollout-waves-preview', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'rollout-start', t: 'start.submit' });
  let nodes = [];
  let picked = [];

  function kind() {
    return targetKinds.querySelector('input:checked').value;
  }

  function targetCount() {
    if (kind() === 'all') return nodes.length;
    if (kind() === 'group') return nodes.filter((n) => n.group === group.value).length;
    return picked.length;
  }

  function update() {
    groupField.hidden = kind() !== 'group';
    nodeField.hidden = kind() !== 'nodes';
    const n = targetCount();
    const plan = planWaves(waves.value || '1,25%,rest', n);
    if (plan.error) {
      preview.className = 'hint hint-bad';
      setT(preview, plan.error);
    } else if (!n) {
      preview.className = 'hint hint-bad';
      setT(preview, 'start.noTargets');
    } else {
      preview.className = 'hint';
      setT(preview, ['start.preview', { n, waves: plan.sizes.length, sizes: plan.sizes.join(' → ') }]);
    }
    for (const cb of nodeList.querySelectorAll('input')) {
      const i = picked.indexOf(cb.value);
      cb.checked = i >= 0;
      cb.closest('label').querySelector('.order').textContent = i >= 0 ? String(i + 1) : '';
    }
  }

  function nodesChanged(list) {
    nodes = list || [];
    const groups = [...new Set(nodes.map((n) => n.group))].sort();
    const chosen = group.value;
    fill(group, groups.map((g) => h('option', { value: g, text: g })));
    if (groups.includes(chosen)) group.value = chosen;
    picked = picked.filter((p) => nodes.some((n) => n.name === p));
    fill(nodeList, nodes.map((n) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: n.name, testid: `rollout-node-${n.name}` }),
      h('span', { class: 'order badge' }),
      h('span', { text: n.name }), h('span', { class: 'muted small', text: n.group }),
      h('span', { class: ['badge', n.connected ? 'badge-connected' : 'badge-disconnected'], t: n.connected ? 'fleet.connected' : 'fleet.disconnected' }))));
    update();
  }

  nodeList.addEventListener('change', (e) => {
    const cb = e.target;
    if (cb.checked && !picked.includes(cb.value)) picked.push(cb.value);
    if (!cb.checked) picked = picked.filter((p) => p !== cb.value);
    update();
  });
  targetKinds.addEventListener('change', update);
  group.addEventListener('change', update);
  waves.addEventListener('input', update);

  const form = h('form', { class: 'stack', testid: 'rollout-form', novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      box.clear();
      let targets;
      if (kind() === 'all') targets = 'all';
      else if (kind() === 'group') targets = { group: group.value };
      else targets = { nodes: picked };
      const plan = planWaves(waves.value || '1,25%,rest', targetCount());
      if (plan.error) {
        box.show(plan.error);
        box.mark(waves);
        waves.focus();
        return;
      }
      if (!targetCount()) {
        box.show('start.noTargets');
        return;
      }
      const ok = await confirmDialog({
        titleKey: 'start.confirmTitle',
        titleArgs: { release: `${release.component}@${release.version}` },
        body: h('p', { t: ['start.preview', { n: targetCount(), waves: plan.sizes.length, sizes: plan.sizes.join(' → ') }] }),
        okKey: 'start.submit',
      });
      if (!ok) return;
      submit.disabled = true;
      try {
        const body = { release: String(release.id), targets };
        if (waves.value.trim()) body.waves = waves.value.trim();
        const r = await api('POST', '/rollouts', body);
        notify('start.started', { id: r.id, release: `${r.component}@${r.version}` }, { kind: 'success' });
        go(`rollouts/${r.id}`);
      } catch (err) {
        box.show(err, form);
      } finally {
        submit.disabled = false;
      }
    } },
  h('fieldset', { class: 'plain' }, h('legend', { id: 'target-legend', t: 'start.targets' }), targetKinds),
  groupField,
  nodeField,
  field('start.waves', waves, { hint: h('div', null, h('p', { class: 'hint', t: 'start.wavesHint' }), preview) }),
  box.el,
  h('div', { class: 'button-row' }, submit));

  const el = h('section', { class: 'panel', testid: 'rollout-start-panel', 'aria-labelledby': 'start-title' },
    h('h2', { id: 'start-title', class: 'panel-title', t: 'start.title' }),
    h('p', { class: 'muted small', t: 'start.hint' }),
    form);
  update();
  return { el, nodesChanged };
}

// ---------------------------------------------------------------------------------------------
// Rollouts

const FINAL_OK = ['healthy'];
const FINAL_BAD = ['rejected', 'refused', 'failed', 'rolled-back'];

function counts(r) {
  const targets = r.targets || [];
  return {
    total: targets.length,
    healthy: targets.filter((x) => FINAL_OK.includes(x.state)).length,
    bad: targets.filter((x) => FINAL_BAD.includes(x.state)).length,
  };
}

function progressText(r) {
  const c = counts(r);
  return h('span', { class: 'small muted', testid: `rollout-${r.id}-progress`, dataset: { healthy: String(c.healthy), total: String(c.total) } },
    tx('rollout.progress', { healthy: c.healthy, total: c.total, wave: Math.min(r.current_wave + 1, r.waves), waves: r.waves }),
    c.bad ? h('span', { class: 'bad-count' }, ' · ', tx('rollout.badCount', { n: c.bad })) : null);
}

function rolloutTable(items) {
  return tableWrap(h('table', { class: 'table' },
    h('thead', null, h('tr', null, th('rollouts.id'), th('rollouts.release'), th('rollouts.state'), th('rollouts.progress'), th('rollouts.started'))),
    h('tbody', null, items.map((r) => h('tr', { testid: `rollout-${r.id}`, dataset: { state: r.state } },
      h('td', null, h('a', { href: `#/rollouts/${r.id}`, testid: `rollout-${r.id}-link`, 'data-key': `ro-${r.id}`, class: 'strong', text: `#${r.id}` })),
      h('td', null, h('a', { href: `#/releases/${r.release}`, text: `${r.component}@${r.version}` })),
      h('td', null, badge('rollout.state', r.state, `rollout-${r.id}-state`),
        r.reason ? h('div', { class: 'small reason', text: r.reason }) : null),
      h('td', null, progressText(r)),
      h('td', { class: 'small' }, h('div', { text: dateTime(r.created_at) }), h('div', { class: 'muted', text: r.created_by })))))));
}

function renderRollouts(main) {
  const box = errorBox('rollouts-error');
  const updated = updatedLine('rollouts-updated');
  const slot = h('div', { testid: 'rollout-list' }, h('p', { class: 'muted', t: 'common.loading' }));
  main.append(h('section', { class: 'panel', testid: 'rollouts', 'aria-labelledby': 'rollouts-title' },
    h('div', { class: 'panel-head' },
      h('h1', { id: 'rollouts-title', class: 'panel-title', t: 'rollouts.title' }),
      updated.el),
    may('rollout') ? h('p', { class: 'muted small' }, tx('rollouts.startHint'), ' ', h('a', { href: '#/releases', testid: 'rollouts-to-releases', t: 'nav.releases' })) : null,
    box.el,
    slot));
  loadInto(slot, box, updated, () => api('GET', '/rollouts'), (data) => {
    const items = data.items || [];
    fill(slot, items.length ? rolloutTable(items) : h('p', { class: 'info-box', testid: 'rollouts-empty', t: 'rollouts.empty' }));
  });
}

// The steps a node goes through, in order, for the progress strip.
const STEPS = ['sent', 'received', 'staged', 'testing', 'live', 'healthy'];

const ACTIONS = {
  pause: { from: ['running'], danger: false, reason: false },
  resume: { from: ['paused'], danger: false, reason: false },
  abort: { from: ['running', 'paused', 'halted'], danger: true, reason: true },
  rollback: { from: ['running', 'paused', 'halted', 'aborted', 'completed'], danger: true, reason: true },
};

function renderRollout(main, id) {
  const box = errorBox('rollout-load-error');
  const actionBox = errorBox('action-error', { big: true });
  const updated = updatedLine('rollout-updated');
  const head = h('div', { testid: 'rollout-detail' }, h('p', { class: 'muted', t: 'common.loading' }));
  const actions = h('div', { class: 'button-row actions', testid: 'rollout-actions' });
  const targetsSlot = h('div', { testid: 'rollout-targets' });
  let rollout = null;
  let busy = false;

  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/rollouts', testid: 'back-rollouts', t: 'rollouts.back' })),
    h('section', { class: 'panel', 'aria-labelledby': 'rollout-title' },
      h('div', { class: 'panel-head' },
        h('h1', { id: 'rollout-title', class: 'panel-title', t: ['rollout.title', { id }] }),
        updated.el),
      box.el, head, actions, actionBox.el),
    h('section', { class: 'panel', 'aria-labelledby': 'targets-title' },
      h('h2', { id: 'targets-title', class: 'panel-title', t: 'rollout.targets' }),
      targetsSlot));

  async function act(action) {
    const spec = ACTIONS[action];
    const reason = h('textarea', { name: 'reason', rows: '3', testid: 'action-reason', maxlength: '500' });
    const ok = await confirmDialog({
      titleKey: `action.${action}.confirm`,
      titleArgs: { id, release: `${rollout.component}@${rollout.version}` },
      body: [h('p', { t: `action.${action}.explain` }),
        spec.reason ? field('action.reason', reason) : null],
      okKey: `action.${action}`,
      danger: spec.danger,
      validate: () => (spec.reason && !reason.value.trim() ? { key: 'action.reasonRequired', control: reason } : null),
    });
    if (!ok) return;
    actionBox.clear();
    busy = true;
    renderActions();
    try {
      const body = spec.reason ? { reason: reason.value.trim() } : undefined;
      const r = await api('POST', `/rollouts/${encodeURIComponent(id)}/${action}`, body);
      notify(`action.${action}.done`, { id }, { kind: 'success' });
      rollout = r;
      renderAll();
    } catch (err) {
      actionBox.show(err);
    } finally {
      busy = false;
      renderActions();
      scheduleRefresh();
    }
  }

  function renderActions() {
    if (!rollout || !may('rollout')) {
      actions.replaceChildren();
      return;
    }
    keepFocus(actions, () => fill(actions, Object.entries(ACTIONS)
      .filter(([, spec]) => spec.from.includes(rollout.state))
      .map(([name, spec]) => h('button', {
        type: 'button',
        class: ['btn', spec.danger ? 'btn-danger' : null],
        testid: `action-${name}`,
        'data-key': `action-${name}`,
        disabled: busy,
        t: `action.${name}`,
        onclick: () => act(name),
      }))));
  }

  function renderHead(r) {
    const c = counts(r);
    document.title = `#${r.id} ${r.component}@${r.version} · ${t('app.title')}`;
    setT(main.querySelector('#rollout-title'), ['rollout.titleFull', { id: r.id, release: `${r.component}@${r.version}` }]);
    const reasonBox = r.reason
      ? h('div', {
        class: r.state === 'halted' ? 'error-box error-big' : 'warn-box',
        role: r.state === 'halted' ? 'alert' : null,
        testid: 'rollout-reason',
      }, h('strong', { t: r.state === 'halted' ? 'rollout.haltReason' : 'rollout.reason' }), t('common.colon'), h('span', { text: r.reason }))
      : null;
    fill(head,
      h('div', { class: 'rollout-status' },
        h('span', { class: ['badge', 'badge-big', `badge-${r.state}`], testid: 'rollout-state', dataset: { state: r.state } }, enumText('rollout.state', r.state)),
        h('span', { testid: 'rollout-wave', dataset: { wave: String(r.current_wave), waves: String(r.waves) } },
          tx('rollout.wave', { wave: Math.min(r.current_wave + 1, r.waves), waves: r.waves })),
        h('span', { testid: 'rollout-healthy', dataset: { healthy: String(c.healthy), total: String(c.total) } },
          tx('rollout.healthyCount', { healthy: c.healthy, total: c.total })),
        c.bad ? h('span', { class: 'bad-count', testid: 'rollout-bad' }, tx('rollout.badCount', { n: c.bad })) : null),
      h('progress', { class: 'progress', testid: 'rollout-progress', max: String(Math.max(c.total, 1)), value: String(c.healthy), 'aria-hidden': 'true' }),
      reasonBox,
      h('dl', { class: 'meta' },
        meta('rollout.release', h('a', { href: `#/releases/${r.release}`, testid: 'rollout-release' }, `${r.component}@${r.version}`)),
        meta('rollout.plan', h('span', { class: 'mono', testid: 'rollout-plan', text: r.wave_plan })),
        meta('rollout.started', h('span', { text: `${dateTime(r.created_at)} · ${r.created_by}` }))));
  }

  function renderTargets(r) {
    const byWave = new Map();
    for (const tg of r.targets || []) {
      if (!byWave.has(tg.wave)) byWave.set(tg.wave, []);
      byWave.get(tg.wave).push(tg);
    }
    fill(targetsSlot, [...byWave.entries()].sort((a, b) => a[0] - b[0]).map(([wave, list]) =>
      h('div', { class: ['wave', wave === r.current_wave ? 'wave-current' : null], testid: `wave-${wave}` },
        h('h3', { class: 'group-title' }, tx('rollout.waveN', { n: wave + 1 }),
          wave === r.current_wave && ['running', 'paused'].includes(r.state) ? h('span', { class: 'badge badge-running', t: 'rollout.currentWave' }) : null),
        tableWrap(h('table', { class: 'table targets' },
          h('thead', null, h('tr', null, th('target.node'), th('target.state'), th('target.steps'), th('target.detail'), th('target.updated'))),
          h('tbody', null, list.map(targetRow)))))));
  }

  function renderAll() {
    renderHead(rollout);
    renderActions();
    keepFocus(targetsSlot, () => renderTargets(rollout));
  }

  live(async () => {
    try {
      rollout = await api('GET', `/rollouts/${encodeURIComponent(id)}`);
      box.clear();
      renderAll();
      updated.ok();
    } catch (e) {
      if (e.status === 401) return;
      if (!rollout) {
        head.replaceChildren();
        box.show(e);
      } else updated.stale();
    }
  });
}

function targetRow(tg) {
  const id = `target-${tg.node}`;
  const d = tg.detail && typeof tg.detail === 'object' ? tg.detail : null;
  return h('tr', { testid: id, class: `row-${tg.state}`, dataset: { state: tg.state, wave: String(tg.wave) } },
    h('th', { scope: 'row', class: 'node-name' }, h('a', { href: '#/fleet', text: tg.node })),
    h('td', null, badge('target.state', tg.state, `${id}-state`)),
    h('td', null, stepStrip(tg.state)),
    h('td', { class: 'detail-cell' }, stepDetail(tg, d, id)),
    h('td', { class: 'small' }, ago(tg.updated_at, `${id}-updated`)));
}

/** received → staged → testing → live → healthy, the ones passed marked. */
function stepStrip(current) {
  let reached = STEPS.indexOf(current);
  if (current === 'healthy') reached = STEPS.length - 1;
  const failed = FINAL_BAD.includes(current);
  return h('ol', { class: 'steps', 'aria-hidden': 'true' }, STEPS.slice(1).map((s, i) => {
    const idx = i + 1;
    const cls = idx < reached || current === 'healthy' ? 'done' : idx === reached ? 'now' : '';
    return h('li', { class: ['step', cls, failed ? 'after-failure' : null], title: t(`target.state.${s}`), text: t(`step.short.${s}`), dataset: { i18n: `step.short.${s}` } });
  }));
}

function stepDetail(tg, d, id) {
  const out = [];
  if (!d) {
    if (tg.live_ms != null) out.push(h('div', { t: ['step.liveMs', { ms: tg.live_ms }] }));
    return out.length ? out : h('span', { class: 'muted', text: '—' });
  }
  switch (d.step) {
    case 'received':
      out.push(h('div', { t: ['step.received', { size: bytes(d.bytes), ms: d.ms }] }));
      break;
    case 'testing':
      out.push(h('div', { t: ['step.testing', { n: d.vectors }] }));
      break;
    case 'live':
      out.push(h('div', { t: ['step.liveMs', { ms: d.ms }] }));
      if (d.shadow) out.push(shadowReport(d.shadow, `${id}-shadow`));
      break;
    case 'healthy':
      out.push(h('div', { testid: `${id}-healthy`, t: ['step.healthy', { calls: d.calls, failures: d.failures }] }));
      break;
    default:
      if (d.reason) out.push(h('div', { class: 'reason bad', testid: `${id}-reason`, text: d.reason }));
  }
  if (d.step !== 'live' && tg.live_ms != null) out.push(h('div', { class: 'muted small', t: ['step.liveMs', { ms: tg.live_ms }] }));
  if (d.shadow && d.step !== 'live') out.push(shadowReport(d.shadow, `${id}-shadow`));
  return out;
}

/** What check 3 saw: shadow calls, answers that differed, new refusals, latency, examples. */
function shadowReport(s, testid) {
  if (typeof s !== 'object' || s === null) return h('pre', { class: 'json small', testid, text: json(s) });
  const differed = s.differences ?? s.differed ?? 0;
  const examples = Array.isArray(s.examples) ? s.examples : [];
  return h('div', { class: ['impact', differed ? 'impact-differs' : null], testid, dataset: { calls: String(s.calls ?? ''), differences: String(differed) } },
    h('div', { class: 'impact-figures' },
      h('span', { testid: `${testid}-calls`, t: ['impact.calls', { n: s.calls ?? '—' }] }),
      s.replayed ? h('span', { t: ['impact.replayed', { n: s.replayed }] }) : null,
      h('span', { class: differed ? 'bad' : 'ok', testid: `${testid}-differences`, t: ['impact.differences', { n: differed }] }),
      s.new_refusals ? h('span', { class: 'bad', t: ['impact.refusals', { n: s.new_refusals }] }) : null,
      typeof s.latency_ratio === 'number' ? h('span', { testid: `${testid}-latency`, t: ['impact.latency', { ratio: s.latency_ratio.toFixed(2) }] }) : null),
    examples.length
      ? h('details', { class: 'raw' }, h('summary', { t: ['impact.examples', { n: examples.length }] }),
        examples.map((ex, i) => {
          const [input, liveAnswer, candidate] = Array.isArray(ex) ? ex : [ex, null, null];
          return h('div', { class: 'example', testid: `${testid}-example-${i}` },
            h('div', { class: 'small strong', t: 'impact.input' }), h('pre', { class: 'json small', text: json(input) }),
            h('div', { class: 'example-pair' },
              h('div', null, h('div', { class: 'small strong', t: 'impact.liveAnswer' }), h('pre', { class: 'json small', text: json(liveAnswer) })),
              h('div', null, h('div', { class: 'small strong', t: 'impact.candidateAnswer' }), h('pre', { class: 'json small', text: json(candidate) }))));
        }))
      : null);
}

// ---------------------------------------------------------------------------------------------
// Audit

const AUDIT_PAGE = 5000;
const AUDIT_MAX = 50000;
const AUDIT_SHOW = 500;

function renderAudit(main) {
  const verifyBox = h('div', { testid: 'audit-verify', class: 'verify', role: 'status', dataset: { state: 'checking' } }, tx('audit.verifying'));
  const reverify = h('button', { type: 'button', class: 'btn btn-small', testid: 'audit-reverify', t: 'audit.reverify' });
  const box = errorBox('audit-error');
  const updated = updatedLine('audit-updated');
  const contains = h('input', { type: 'search', name: 'contains', testid: 'audit-contains', autocomplete: 'off', tPlaceholder: 'audit.containsPlaceholder' });
  const actionSel = h('select', { name: 'action', testid: 'audit-action' }, h('option', { value: '', t: 'audit.anyAction' }));
  const from = h('input', { type: 'datetime-local', name: 'from', testid: 'audit-from', step: '1' });
  const to = h('input', { type: 'datetime-local', name: 'to', testid: 'audit-to', step: '1' });
  const search = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'audit-search', t: 'audit.search' });
  const clear = h('button', { type: 'button', class: 'btn', testid: 'audit-clear', t: 'audit.clear' });
  const count = h('p', { class: 'muted small', testid: 'audit-count', role: 'status' });
  const slot = h('div', { testid: 'audit-entries' }, h('p', { class: 'muted', t: 'common.loading' }));
  let entries = [];
  let loadedFor = null;
  let generation = 0;

  const form = h('form', { class: 'audit-filters', testid: 'audit-form', novalidate: true },
    field('audit.contains', contains, { hint: h('p', { class: 'hint', t: 'audit.containsHint' }) }),
    field('audit.action', actionSel),
    field('audit.from', from),
    field('audit.to', to),
    h('div', { class: 'button-row' }, search, clear));

  main.append(
    h('section', { class: 'panel', 'aria-labelledby': 'verify-title' },
      h('div', { class: 'panel-head' }, h('h1', { id: 'verify-title', class: 'panel-title', t: 'audit.chain' }), reverify),
      verifyBox),
    h('section', { class: 'panel', testid: 'audit', 'aria-labelledby': 'audit-title' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'audit-title', class: 'panel-title', t: 'audit.title' }), updated.el),
      form, box.el, count, slot));

  async function verify() {
    try {
      const v = await api('GET', '/audit/verify');
      if (v.first_bad == null) {
        verifyBox.className = 'verify success-box';
        verifyBox.dataset.state = 'verified';
        verifyBox.dataset.entries = String(v.entries);
        delete verifyBox.dataset.firstBad;
        fill(verifyBox, h('strong', { class: 'verify-headline', t: ['audit.verified', { n: v.entries }] }),
          h('div', { class: 'small', t: ['audit.verifiedAt', { time: clockSeconds(Date.now()) }] }));
      } else {
        verifyBox.className = 'verify error-box error-big';
        verifyBox.dataset.state = 'broken';
        verifyBox.dataset.entries = String(v.entries);
        verifyBox.dataset.firstBad = String(v.first_bad);
        verifyBox.setAttribute('role', 'alert');
        fill(verifyBox, h('strong', { class: 'verify-headline', t: ['audit.broken', { seq: v.first_bad }] }),
          h('div', { testid: 'audit-verify-problem', text: v.problem || '' }),
          h('div', { class: 'small', t: ['audit.brokenHint', { n: v.first_bad - 1 }] }));
      }
    } catch (e) {
      if (e.status === 401) return;
      verifyBox.className = 'verify warn-box';
      verifyBox.dataset.state = 'unknown';
      fill(verifyBox, tx('audit.verifyFailed'), ' ', h('span', { text: e.message }));
    }
  }

  function localMs(input) {
    if (!input.value) return null;
    const ms = new Date(input.value).getTime();
    return Number.isFinite(ms) ? ms : null;
  }

  // The text and the time span are searched by the server (the whole log, not only what was
  // fetched); the action is chosen among what came back.
  async function fetchAfter(after, filters, gen) {
    const got = [];
    let cursor = after;
    for (;;) {
      const page = await api('GET', `/audit${query({ ...filters, after: cursor, limit: AUDIT_PAGE })}`);
      if (gen !== generation) return null;
      const items = page.items || [];
      got.push(...items);
      if (items.length < AUDIT_PAGE || entries.length + got.length >= AUDIT_MAX) break;
      cursor = items[items.length - 1].seq;
    }
    return got;
  }

  async function load({ fresh }) {
    const filters = { contains: contains.value.trim(), since: localMs(from), until: localMs(to) };
    const key = JSON.stringify(filters);
    const gen = fresh ? ++generation : generation;
    if (fresh || loadedFor !== key) {
      entries = [];
      loadedFor = key;
    }
    const after = entries.length ? entries[entries.length - 1].seq : 0;
    try {
      const got = await fetchAfter(after, filters, gen);
      if (got === null) return;
      entries.push(...got);
      if (entries.length > AUDIT_MAX) entries = entries.slice(entries.length - AUDIT_MAX);
      box.clear();
      render();
      updated.ok();
    } catch (e) {
      if (e.status === 401) return;
      box.show(e);
      updated.stale();
    }
  }

  function render() {
    const actions = [...new Set(entries.map((e) => e.action))].sort();
    const chosen = actionSel.value;
    fill(actionSel, h('option', { value: '', t: 'audit.anyAction' }), actions.map((a) => h('option', { value: a, text: a })));
    actionSel.value = actions.includes(chosen) ? chosen : '';
    const fromMs = localMs(from);
    const toMs = localMs(to);
    const shown = entries.filter((e) => (!actionSel.value || e.action === actionSel.value)
      && (fromMs == null || e.at >= fromMs) && (toMs == null || e.at <= toMs)).reverse();
    setT(count, shown.length > AUDIT_SHOW
      ? ['audit.countMore', { n: shown.length, shown: AUDIT_SHOW }]
      : ['audit.count', { n: shown.length }]);
    count.dataset.n = String(shown.length);
    if (!shown.length) {
      fill(slot, h('p', { class: 'muted', testid: 'audit-empty', t: 'audit.empty' }));
      return;
    }
    fill(slot, tableWrap(h('table', { class: 'table compact audit-table' },
      h('thead', null, h('tr', null, th('audit.seq', 'num'), th('audit.at'), th('audit.actor'), th('audit.actionCol'), th('audit.subject'), th('audit.detail'), th('audit.hash'))),
      h('tbody', null, shown.slice(0, AUDIT_SHOW).map((e) => {
        let detail = e.detail;
        try {
          detail = JSON.stringify(JSON.parse(e.detail));
        } catch {
          // shown as stored
        }
        const bad = verifyBox.dataset.firstBad && e.seq >= Number(verifyBox.dataset.firstBad);
        return h('tr', { testid: `audit-entry-${e.seq}`, class: bad ? 'row-unverified' : null, dataset: { action: e.action } },
          h('td', { class: 'num mono', text: e.seq }),
          h('td', { class: 'nowrap', text: dateTime(e.at) }),
          h('td', { class: 'mono small', text: e.actor }),
          h('td', null, h('span', { class: 'badge', text: e.action })),
          h('td', { text: e.subject }),
          h('td', { class: 'detail-cell' }, h('code', { class: 'small detail-text', title: detail, text: detail.length > 160 ? `${detail.slice(0, 160)}…` : detail })),
          h('td', { class: 'mono small', title: `${e.hash}\n← ${e.prev_hash}`, text: e.hash.slice(0, 10) }));
      })))));
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (loadedFor !== contains.value.trim()) load({ fresh: true });
    else render();
  });
  clear.addEventListener('click', () => {
    contains.value = '';
    from.value = '';
    to.value = '';
    actionSel.value = '';
    load({ fresh: true });
  });
  actionSel.addEventListener('change', render);
  from.addEventListener('change', render);
  to.addEventListener('change', render);
  reverify.addEventListener('click', () => verify().then(render));

  // On each change: the chain is checked again and only the new entries are fetched.
  live(async () => {
    await verify();
    await load({ fresh: false });
  });
}

// ---------------------------------------------------------------------------------------------
// Start

window.addEventListener('hashchange', route);
document.documentElement.lang = getLang() === 'zh' ? 'zh-CN' : 'en';
route();
