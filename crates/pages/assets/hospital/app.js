// The hospital's single-page app: sign-in, registration desk, cashier, doctor's workstation,
// administration, kiosk and the read audit, on hash routes (#/desk, #/cashier, ...). Plain ES module, no build
// step, no dependencies; served under a strict CSP, so no inline scripts, handlers or styles:
// every listener is added here and every look is a class in app.css.
//
// Data from the server is only ever put into the page as text (textContent), never as HTML.

import { t, getLang, setLang, has } from './i18n.js';
import {
  L, tr, setT, h, tx, fill, applyI18n, field, keepFocus, enumText, p2, clockSeconds, dateTime, uid,
  ApiError, apiClient, query, errorBox, notify, confirmDialog, certificateLine,
} from '/dom.js';

// ---------------------------------------------------------------------------------------------
// DOM helpers (the shared ones, from h() to confirmDialog(), are in /dom.js)

/** Up/Down (and Home/End) move focus among the enabled buttons of a list. */
function arrowNav(container, selector, { onEscape } = {}) {
  container.addEventListener('keydown', (e) => {
    if (!['ArrowDown', 'ArrowUp', 'Home', 'End', 'Escape'].includes(e.key)) return;
    if (e.key === 'Escape') {
      if (onEscape) {
        e.preventDefault();
        onEscape();
      }
      return;
    }
    const items = [...container.querySelectorAll(selector)].filter((b) => !b.disabled && !b.hidden);
    if (!items.length) return;
    const i = items.indexOf(document.activeElement);
    let next;
    if (e.key === 'Home') next = 0;
    else if (e.key === 'End') next = items.length - 1;
    else if (e.key === 'ArrowDown') next = i < 0 ? 0 : Math.min(i + 1, items.length - 1);
    else next = i < 0 ? 0 : Math.max(i - 1, 0);
    e.preventDefault();
    items[next].focus();
  });
}

/**
 * A form's keys beyond the browser's: Enter on a select or a checkbox submits it too (as Enter
 * in a text field does), and Escape calls onEscape (cancel).
 */
function formKeys(form, onEscape) {
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && onEscape) {
      e.preventDefault();
      e.stopPropagation();
      onEscape();
    } else if (e.key === 'Enter' && !e.isComposing && (e.target.tagName === 'SELECT' || e.target.type === 'checkbox')) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
}

/**
 * Messages beside the fields of a form (made with field()): show(control, ...content) puts one
 * under the control, marks the control invalid and links the message to it by
 * aria-describedby; its testid is the control's followed by "-error". clear() removes them all.
 */
function fieldMessages() {
  let shown = [];
  const clear = () => {
    for (const { control, message } of shown) {
      message.remove();
      control.removeAttribute('aria-invalid');
      control.classList.remove('invalid');
      const rest = (control.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && x !== message.id);
      if (rest.length) control.setAttribute('aria-describedby', rest.join(' '));
      else control.removeAttribute('aria-describedby');
    }
    shown = [];
  };
  const show = (control, ...content) => {
    const message = h('p', { class: 'field-error', id: uid('field-error'), testid: `${control.dataset.testid}-error`, dataset: { field: control.name } }, content);
    (control.closest('.field') || control.parentElement).append(message);
    control.setAttribute('aria-invalid', 'true');
    control.classList.add('invalid');
    control.setAttribute('aria-describedby', [control.getAttribute('aria-describedby'), message.id].filter(Boolean).join(' '));
    shown.push({ control, message });
  };
  return { show, clear };
}

/** An API error as a line of text: the translated kind of error, then the server's message. */
function apiErrorText(err) {
  const headline = err.code && has(`error.code.${err.code}`) ? h('strong', null, tx(`error.code.${err.code}`), tx('common.colon')) : null;
  return [headline, h('span', { class: 'error-message', text: err.message })];
}

// ---------------------------------------------------------------------------------------------
// Formatting: money is integer fen throughout; only the display turns it into yuan.

/** "¥1,234.05" from 123405 fen, with integer arithmetic only. */
export function yuan(fen) {
  if (typeof fen !== 'number' || !Number.isInteger(fen)) return '—';
  const neg = fen < 0;
  const abs = neg ? -fen : fen;
  const cents = abs % 100;
  const whole = (abs - cents) / 100;
  const grouped = String(whole).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${neg ? '-' : ''}¥${grouped}.${p2(cents)}`;
}

/**
 * The time `ms` on the hospital's wall clock, as a Date whose UTC fields read it: the hospital's
 * offset from UTC (`GET /today`), so that a desk whose computer is set to another time zone still
 * works on the hospital's day; the browser's own offset until it is known.
 */
function hospitalTime(ms) {
  const offset = state.today ? state.today.utc_offset_minutes : -new Date(ms).getTimezoneOffset();
  return new Date(ms + offset * 60000);
}

/** The hospital's day today, YYYY-MM-DD. */
function today() {
  const d = hospitalTime(Date.now());
  return `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}`;
}

function clock(ms) {
  const d = hospitalTime(ms);
  return `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}`;
}

/** Who is signed in, and the hospital's day and offset from UTC (kept if it cannot be read). */
async function loadMe() {
  const me = await api('GET', '/me');
  state.today = await api('GET', '/today').catch(() => state.today);
  return me;
}

/** A random UUID; crypto.randomUUID needs a secure context, which a LAN http:// page is not. */
function newKey() {
  if (crypto.randomUUID) {
    try {
      return crypto.randomUUID();
    } catch {
      // fall through
    }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------
// GB 11643 resident ID numbers: 17 digits and an ISO 7064 MOD 11-2 check character.

const ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK = '10X98765432';

export function idCheckCharacter(first17) {
  let sum = 0;
  for (let i = 0; i < 17; i += 1) sum += (first17.charCodeAt(i) - 48) * ID_WEIGHTS[i];
  return ID_CHECK[sum % 11];
}

/** The birth date at positions 7–14, if it is a real date not in the future. */
function idBirthDate(id) {
  if (id.length < 14 || !/^\d{14}/.test(id)) return null;
  const y = Number(id.slice(6, 10));
  const m = Number(id.slice(10, 12));
  const d = Number(id.slice(12, 14));
  const date = new Date(y, m - 1, d);
  if (y < 1880 || date.getFullYear() !== y || date.getMonth() !== m - 1 || date.getDate() !== d) return null;
  const iso = `${y}-${p2(m)}-${p2(d)}`;
  if (iso > today()) return null;
  return iso;
}

/** Checks an ID number as typed: {state, expected?, birth?, gender?}. */
export function checkIdNumber(raw) {
  const id = raw.trim().toUpperCase();
  if (!id) return { state: 'empty' };
  if (id.length > 18) return { state: 'tooLong' };
  const head = id.slice(0, 17);
  if (!/^\d*$/.test(head) || (id.length === 18 && !/[0-9X]/.test(id[17]))) return { state: 'format' };
  const birth = idBirthDate(id);
  if (id.length < 18) return { state: 'typing', n: id.length, birth };
  const expected = idCheckCharacter(head);
  if (id[17] !== expected) return { state: 'bad', expected, birth };
  if (!birth) return { state: 'birth' };
  return { state: 'ok', birth, gender: Number(id[16]) % 2 === 1 ? 'male' : 'female' };
}

// ---------------------------------------------------------------------------------------------
// The API

const TOKEN_KEY = 'nonstop.token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  today: null,
  cleanup: null,
  rules: null,
  rulesTimer: null,
  rulesStale: false,
  loginNotice: null,
};

/** The node answers a path it does not know with 404 "no such endpoint". */
class NodeApiError extends ApiError {
  get missingEndpoint() {
    return (this.status === 404 && this.message === 'no such endpoint') || this.status === 405;
  }
}

const api = apiClient({ token: () => state.token, onUnauthorized: () => sessionEnded(), Error: NodeApiError });

// ---------------------------------------------------------------------------------------------
// Live rule versions: shown in the footer, polled every 10 s; a change is announced, nothing
// else is touched (pages that show rule-derived numbers listen for "rules-changed").

function ruleName(component) {
  const key = `rules.component.${component}`;
  return has(key) ? [key] : ['rules.component.other', { component }];
}

function renderRules() {
  const footer = document.getElementById('rules');
  if (!footer) return;
  if (!state.rules) {
    footer.hidden = true;
    return;
  }
  footer.hidden = false;
  const list = h('ul', { class: 'rule-list', testid: 'rule-versions' });
  for (const r of state.rules.values()) {
    const [key, args] = ruleName(r.component);
    list.append(h('li', { testid: `rule-${r.component}`, title: r.digest, dataset: { version: r.version } },
      tx(key, args), ' ', h('span', { class: 'rule-version', text: r.version })));
  }
  fill(footer, h('span', { class: 'rule-label', t: 'rules.label' }), list,
    state.rulesStale ? tx('rules.stale') : null);
}

async function pollRules() {
  if (!state.token) return;
  try {
    const data = await api('GET', '/rules');
    const next = new Map(data.items.map((r) => [r.component, r]));
    if (state.rules) {
      const changed = [];
      for (const r of next.values()) {
        const before = state.rules.get(r.component);
        if (!before || before.version !== r.version || before.digest !== r.digest) {
          changed.push(r.component);
          const [key, args] = ruleName(r.component);
          notify('rules.updated', { component: args ? t(key, args) : L(key), version: r.version }, { sticky: true, testid: 'rule-notice' });
        }
      }
      if (changed.length) {
        state.rules = next;
        document.dispatchEvent(new CustomEvent('rules-changed', { detail: { components: changed } }));
      }
    }
    state.rules = next;
    state.rulesStale = false;
    renderRules();
  } catch (e) {
    if (e.status === 403 || e.status === 401) {
      // this role may not read the rules (a kiosk): no footer
      stopRules();
      state.rules = null;
      renderRules();
      return;
    }
    state.rulesStale = true;
    renderRules();
  }
}

function startRules() {
  stopRules();
  // the rules are for staff; a kiosk or an auditor may not read them (and has no footer)
  if (state.me && ['kiosk', 'auditor'].includes(state.me.role)) return;
  pollRules();
  state.rulesTimer = setInterval(pollRules, 10000);
}

function stopRules() {
  if (state.rulesTimer) clearInterval(state.rulesTimer);
  state.rulesTimer = null;
}

/** Calls `fn` whenever one of `components` changes; returns the unsubscribe function. */
function onRulesChanged(components, fn) {
  const listener = (e) => {
    if (e.detail.components.some((c) => components.includes(c))) fn();
  };
  document.addEventListener('rules-changed', listener);
  return () => document.removeEventListener('rules-changed', listener);
}

// ---------------------------------------------------------------------------------------------
// Routing

const ROUTES = {
  desk: { roles: ['clerk', 'admin'], render: renderDesk },
  cashier: { roles: ['cashier', 'admin'], render: renderCashier },
  doctor: { roles: ['doctor', 'admin'], render: renderDoctor },
  admin: { roles: ['admin'], render: renderAdmin },
  kiosk: { roles: ['kiosk', 'admin'], render: renderKiosk },
  audit: { roles: ['auditor', 'admin'], render: renderReadAudit },
};
const HOME = { clerk: 'desk', cashier: 'cashier', doctor: 'doctor', admin: 'admin', kiosk: 'kiosk', auditor: 'audit' };
const NAV = {
  clerk: ['desk'],
  cashier: ['cashier'],
  doctor: ['doctor'],
  kiosk: ['kiosk'],
  auditor: ['audit'],
  admin: ['admin', 'desk', 'cashier', 'doctor', 'kiosk', 'audit'],
};

function currentRoute() {
  const m = /^#\/([a-z-]*)/.exec(location.hash);
  return m ? m[1] : '';
}

function go(name) {
  if (location.hash === `#/${name}`) route();
  else location.hash = `#/${name}`;
}

function sessionEnded() {
  if (!state.token) return;
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopRules();
  state.rules = null;
  state.loginNotice = 'login.expired';
  route();
}

async function signOut() {
  try {
    await api('DELETE', '/sessions/current');
  } catch {
    // signed out locally either way
  }
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopRules();
  state.rules = null;
  state.loginNotice = 'login.signedOut';
  go('login');
}

let routing = 0;

async function route() {
  const seq = ++routing;
  if (state.cleanup) {
    try {
      state.cleanup();
    } catch {
      // a page's cleanup must not stop the next page
    }
    state.cleanup = null;
  }
  let name = currentRoute();
  const main = document.getElementById('main');
  document.body.dataset.page = '';
  if (!state.token) {
    renderHeader(null);
    renderRules();
    document.title = `${t('nav.login')} · ${t('app.title')}`;
    renderLogin(main, name && name !== 'login' ? name : null);
    return;
  }
  if (!state.me) {
    fill(main, h('p', { class: 'muted', t: 'common.loading' }));
    try {
      state.me = await loadMe();
    } catch (e) {
      if (seq !== routing || !state.token) return;
      const box = errorBox('load-error');
      fill(main, h('div', { class: 'panel narrow' }, h('h1', { t: 'login.loadFailed' }), box.el,
        h('button', { type: 'button', class: 'btn', t: 'common.retry', onclick: () => route() })));
      box.show(e);
      return;
    }
    if (seq !== routing) return;
    startRules();
  }
  const role = state.me.role;
  if (!name || name === 'login') {
    // to the role's own page, without a second hashchange
    history.replaceState(null, '', `#/${HOME[role]}`);
    name = HOME[role];
  }
  renderHeader(name);
  renderRules();
  const r = ROUTES[name];
  if (!r) {
    document.title = t('app.title');
    fill(main, h('section', { class: 'panel narrow', testid: 'not-found' },
      h('h1', { t: 'page.notFound', tabindex: '-1' }), yourPages(role)));
    main.querySelector('h1').focus();
    return;
  }
  document.title = `${t(`nav.${name}`)} · ${t('app.title')}`;
  if (!r.roles.includes(role)) {
    fill(main, h('section', { class: 'panel narrow', testid: 'not-for-role' },
      h('h1', { t: 'page.notForRole', tabindex: '-1' }), yourPages(role)));
    main.querySelector('h1').focus();
    return;
  }
  main.replaceChildren();
  document.body.dataset.page = name;
  state.cleanup = r.render(main) || null;
  const auto = main.querySelector('[data-autofocus]');
  if (auto) auto.focus();
}

function yourPages(role) {
  return [
    h('p', { t: ['page.yourPages', { role: L(`role.${role}`) }] }),
    h('ul', { class: 'link-list' }, (NAV[role] || []).map((p) =>
      h('li', null, h('a', { href: `#/${p}`, testid: `link-${p}`, t: `nav.${p}` })))),
  ];
}

function renderHeader(current) {
  const header = document.getElementById('top');
  const me = state.me;
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
      const name = currentRoute();
      document.title = `${t(ROUTES[name] ? `nav.${name}` : 'nav.login')} · ${t('app.title')}`;
    },
  });
  const nav = me
    ? h('nav', { class: 'nav', tLabel: 'nav.label' },
      h('ul', null, (NAV[me.role] || []).map((p) => h('li', null,
        h('a', {
          href: `#/${p}`,
          testid: `nav-${p}`,
          t: `nav.${p}`,
          'aria-current': p === current ? 'page' : null,
        })))))
    : null;
  fill(header,
    h('span', { class: 'brand', t: 'app.title' }),
    nav,
    h('span', { class: 'spacer' }),
    me ? h('span', { class: 'who', testid: 'who', t: ['user.as', { username: me.username, role: L(`role.${me.role}`) }] }) : null,
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
      if (!user.value.trim()) {
        box.show('common.required');
        box.mark(user);
        user.focus();
        return;
      }
      if (!pass.value) {
        box.show('common.required');
        box.mark(pass);
        pass.focus();
        return;
      }
      submit.disabled = true;
      setT(submit, 'login.busy');
      try {
        const s = await api('POST', '/sessions', { username: user.value.trim(), password: pass.value });
        state.token = s.token;
        sessionStorage.setItem(TOKEN_KEY, s.token);
        state.me = null;
        pass.value = '';
        const me = await loadMe().catch(() => ({ id: null, username: s.username, role: s.role, practitioner_id: null }));
        state.me = me;
        startRules();
        const target = wanted && ROUTES[wanted] && ROUTES[wanted].roles.includes(me.role) ? wanted : HOME[me.role];
        go(target || 'login');
      } catch (err) {
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
// Shared: patient search and the chosen patient

/**
 * One search box (name prefix, phone, or full ID number) with a result list.
 * onSelect(patient) is called with the chosen PatientSummary.
 */
function patientSearch(onSelect) {
  const input = h('input', {
    type: 'search',
    id: 'patient-search',
    name: 'q',
    testid: 'patient-search',
    autocomplete: 'off',
    spellcheck: 'false',
    tPlaceholder: 'search.placeholder',
    'data-autofocus': true,
    'aria-controls': 'patient-results',
  });
  const status = h('p', { class: 'muted small', role: 'status', testid: 'patient-search-status' });
  const results = h('ul', { class: 'result-list', id: 'patient-results', testid: 'patient-results' });
  const box = errorBox('patient-search-error');
  let seq = 0;
  let timer = null;
  let lastQuery = '';

  const choose = (p) => {
    onSelect(p);
  };

  const show = (items, total) => {
    results.replaceChildren();
    if (!items.length) {
      setT(status, 'search.none');
      return;
    }
    setT(status, items.length < total ? ['search.countMore', { n: total, shown: items.length }] : ['search.count', { n: total }]);
    for (const p of items) {
      results.append(h('li', null, h('button', {
        type: 'button',
        class: 'result',
        testid: `patient-result-${p.id}`,
        dataset: { patientId: String(p.id), key: `patient-${p.id}` },
        onclick: () => choose(p),
      },
      h('span', { class: 'result-main' }, h('strong', { text: p.name }), ' ', enumText('gender', p.gender), ' · ', p.birth_date),
      h('span', { class: 'result-sub' }, tx('patient.summary', { id: p.id }), ' · ', p.id_number, ' · ', p.phone, ' · ',
        enumText('insurance', p.insurance_category)))));
    }
  };

  const run = async (chooseSingle) => {
    const q = input.value.trim();
    clearTimeout(timer);
    if (!q) {
      results.replaceChildren();
      status.textContent = '';
      delete status.dataset.i18n;
      box.clear();
      return;
    }
    const mine = ++seq;
    lastQuery = q;
    setT(status, 'search.busy');
    try {
      const page = await api('GET', `/patients${query({ q, limit: 20 })}`);
      if (mine !== seq) return;
      box.clear();
      show(page.items, page.total);
      if (chooseSingle && page.items.length === 1) choose(page.items[0]);
    } catch (e) {
      if (mine !== seq) return;
      results.replaceChildren();
      status.textContent = '';
      box.show(e);
    }
  };

  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (input.value.trim() !== lastQuery) run(false);
    }, 350);
  };
  // while an input method composes (pinyin), wait for the characters
  input.addEventListener('input', (e) => {
    if (!e.isComposing) later();
  });
  input.addEventListener('compositionend', later);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') {
      const first = results.querySelector('button');
      if (first) {
        e.preventDefault();
        first.focus();
      }
    }
  });
  arrowNav(results, 'button.result', { onEscape: () => input.focus() });
  results.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowUp' && document.activeElement === results.querySelector('button.result')) {
      e.preventDefault();
      e.stopImmediatePropagation();
      input.focus();
    }
  }, true);

  const form = h('form', { class: 'search-form', role: 'search', novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      run(true);
    } },
  h('label', { for: 'patient-search', class: 'block-label', t: 'search.label' }),
  h('div', { class: 'search-row' }, input,
    h('button', { type: 'submit', class: 'btn', testid: 'patient-search-submit', t: 'search.submit' })));
  const el = h('div', { class: 'patient-search' }, form, box.el, status, results);
  return {
    el,
    input,
    focus: () => input.focus(),
    clear: () => {
      input.value = '';
      lastQuery = '';
      results.replaceChildren();
      status.textContent = '';
      delete status.dataset.i18n;
      box.clear();
    },
    rerun: () => run(false),
  };
}

/** A phone number as the server's lists show it: first three and last four digits. */
function maskPhone(phone) {
  const p = String(phone || '');
  if (p.includes('*')) return p;
  if (p.length < 8) return '*'.repeat(p.length);
  return `${p.slice(0, 3)}${'*'.repeat(p.length - 7)}${p.slice(-4)}`;
}

/** A rule's "component version sha256:digest" with the digest shortened for display. */
function shortRule(rule) {
  return String(rule || '').replace(/(sha256:[0-9a-f]{12})[0-9a-f]+/g, '$1…');
}

/** The card of the chosen patient (PatientSummary or PatientDetail); `actions`: buttons under it. */
function patientCard(p, onClear, actions) {
  const more = (actions || []).filter(Boolean);
  return h('div', { class: 'patient-card', testid: 'selected-patient', dataset: { patientId: String(p.id) } },
    h('div', { class: 'patient-card-main' },
      h('strong', { class: 'patient-name', testid: 'selected-patient-name', text: p.name }), ' ',
      enumText('gender', p.gender), ' · ', p.birth_date, ' · ', enumText('insurance', p.insurance_category)),
    h('div', { class: 'muted small' }, tx('patient.summary', { id: p.id }), ' · ', p.id_number, ' · ',
      h('span', { testid: 'selected-patient-phone', text: maskPhone(p.phone) })),
    onClear ? h('button', { type: 'button', class: 'btn btn-small btn-quiet', testid: 'clear-patient', t: 'selected.clear', onclick: onClear }) : null,
    more.length ? h('div', { class: 'patient-card-actions' }, more) : null);
}

/** A list of charge lines with a total row; `split` adds fund and self-pay columns. */
function chargeTable(lines, total, { split = false, testid = 'charge-lines', totalTestid } = {}) {
  const head = h('tr', null, h('th', { scope: 'col', t: 'common.item' }), h('th', { scope: 'col', class: 'num', t: 'common.amount' }),
    split ? [h('th', { scope: 'col', class: 'num', t: 'split.fund' }), h('th', { scope: 'col', class: 'num', t: 'split.self' })] : null);
  const rows = lines.map((l) => h('tr', { testid: `${testid}-line`, dataset: { code: l.code } },
    h('td', null, h('span', { text: l.description }), ' ', h('span', { class: 'muted small', text: l.code })),
    h('td', { class: 'num', text: yuan(l.amount_fen) }),
    split ? [h('td', { class: 'num', text: yuan(l.fund_fen) }), h('td', { class: 'num', text: yuan(l.self_pay_fen) })] : null));
  const foot = h('tr', { class: 'total-row' }, h('th', { scope: 'row', t: 'quote.total' }),
    h('td', { class: 'num', testid: totalTestid || `${testid}-total`, dataset: { fen: String(total.amount) }, text: yuan(total.amount) }),
    split ? [h('td', { class: 'num', testid: `${testid}-fund`, text: yuan(total.fund) }),
      h('td', { class: 'num', testid: `${testid}-self`, text: yuan(total.self) })] : null);
  return h('table', { class: 'table lines', testid }, h('thead', null, head), h('tbody', null, rows), h('tfoot', null, foot));
}

// ---------------------------------------------------------------------------------------------
// Registration desk (挂号)

function renderDesk(main) {
  const cleanups = [];
  const isAdmin = state.me.role === 'admin';
  const s = {
    patient: null,
    sessions: [],
    session: null,
    quote: null,
    quoteFor: null,
    quoteSeq: 0,
    busy: false,
    // the correction form while open (or {loading: true}), and whether the revisions are shown
    correcting: null,
    correctSeq: 0,
    revisionsOpen: false,
    revisionsSeq: 0,
    // the visits as last shown (to leave an unchanged list alone), and the check-in options
    // opened per appointment id: {emergency_level, disabled, military}
    visits: null,
    visitsShown: null,
    triage: new Map(),
  };

  // -- left: patient
  const search = patientSearch((p) => selectPatient(p));
  const patientSlot = h('div', { class: 'patient-slot', testid: 'patient-slot' }, h('p', { class: 'muted', t: 'selected.none' }));
  const correctSlot = h('div', { class: 'correct-slot', testid: 'correct-slot' });
  // corrections are read by an administrator only (the API's rule); a clerk is not offered them
  const revisionsSlot = h('div', { class: 'revisions', id: 'patient-revisions', testid: 'revisions-slot', hidden: true });
  const visitsSlot = h('div', { class: 'visits', testid: 'visits' });
  const visitsBox = errorBox('visits-error');
  const newToggle = h('button', {
    type: 'button', class: 'btn', testid: 'new-patient-toggle', 'aria-expanded': 'false', 'aria-controls': 'new-patient-form', t: 'newPatient.toggle',
    onclick: () => toggleNew(),
  });
  const newForm = newPatientForm({
    onCreated: (p) => {
      toggleNew(false);
      selectPatient(p);
    },
    onCancel: () => {
      toggleNew(false);
      newToggle.focus();
    },
  });
  newForm.el.hidden = true;

  function toggleNew(open) {
    const show = open === undefined ? newForm.el.hidden : open;
    newForm.el.hidden = !show;
    newToggle.setAttribute('aria-expanded', String(show));
    if (show) newForm.focus();
  }

  // -- middle: sessions
  const channel = h('select', { name: 'channel', testid: 'channel' },
    ['on-site', 'online', 'elderly-reserved'].map((c) => h('option', { value: c, t: `channel.${c}` })));
  channel.addEventListener('change', () => {
    renderSessions();
    requestQuote();
  });
  const sessionsList = h('div', { class: 'session-list', testid: 'sessions', role: 'group', 'aria-labelledby': 'sessions-title' });
  const sessionsBox = errorBox('sessions-error');
  arrowNav(sessionsList, 'button.session');

  // -- right: quote and register
  const quoteSlot = h('div', { class: 'quote', testid: 'quote', 'aria-live': 'polite' }, h('p', { class: 'muted', t: 'quote.choose' }));
  const registerBox = errorBox('register-error');
  const registerButton = h('button', {
    type: 'button', class: 'btn btn-primary btn-large', testid: 'register', t: 'register.button', 'aria-disabled': 'true',
    onclick: () => register(),
  });
  const resultSlot = h('div', { class: 'result-slot', testid: 'registration-result-slot' });

  const layout = h('div', { class: 'desk-grid' },
    h('section', { class: 'panel', 'aria-labelledby': 'desk-patient-title' },
      h('h1', { id: 'desk-patient-title', class: 'panel-title', t: 'nav.desk' }),
      search.el,
      h('div', { class: 'button-row' }, newToggle),
      newForm.el,
      h('h2', { class: 'section-title', t: 'selected.title' }),
      patientSlot,
      correctSlot,
      revisionsSlot,
      h('h2', { class: 'section-title', t: 'visits.title' }),
      visitsBox.el,
      visitsSlot),
    h('section', { class: 'panel', 'aria-labelledby': 'sessions-title' },
      h('div', { class: 'panel-head' },
        h('h2', { id: 'sessions-title', class: 'panel-title' }, tx('sessions.title'), ' ', h('span', { class: 'muted', testid: 'sessions-date', text: today() })),
        h('button', { type: 'button', class: 'btn btn-small btn-quiet', testid: 'sessions-refresh', t: 'common.refresh', onclick: () => loadSessions() })),
      field('channel.label', channel),
      h('p', { class: 'muted small', t: 'sessions.hint' }),
      sessionsBox.el,
      sessionsList),
    h('section', { class: 'panel', 'aria-labelledby': 'quote-title' },
      h('h2', { id: 'quote-title', class: 'panel-title', t: 'quote.title' }),
      quoteSlot,
      registerBox.el,
      registerButton,
      resultSlot));
  main.append(layout);

  // -- behaviour

  async function selectPatient(p) {
    s.patient = p;
    closePatientExtras();
    showPatient(p);
    resultSlot.replaceChildren();
    registerBox.clear();
    loadVisits();
    requestQuote();
    updateRegister();
    const target = sessionsList.querySelector('button.session[aria-pressed="true"]') || sessionsList.querySelector('button.session:not([disabled])');
    if (target) target.focus();
  }

  function clearPatient() {
    s.patient = null;
    closePatientExtras();
    fill(patientSlot, h('p', { class: 'muted', t: 'selected.none' }));
    visitsSlot.replaceChildren();
    visitsBox.clear();
    s.quote = null;
    renderQuote();
    updateRegister();
    search.focus();
  }

  /** The chosen patient's card, with its Correct (and, for an administrator, Revisions) button. */
  function showPatient(p) {
    const correct = h('button', {
      type: 'button', class: 'btn btn-small', testid: 'correct-patient', t: 'correct.open',
      'aria-expanded': String(Boolean(s.correcting)), 'aria-controls': 'correct-patient-form',
      onclick: () => (s.correcting ? closeCorrection(true) : openCorrection()),
    });
    const revisions = isAdmin ? h('button', {
      type: 'button', class: 'btn btn-small', testid: 'revisions-toggle', t: 'revisions.title',
      'aria-expanded': String(s.revisionsOpen), 'aria-controls': 'patient-revisions',
      onclick: () => toggleRevisions(),
    }) : null;
    fill(patientSlot, patientCard(p, () => clearPatient(), [correct, revisions]));
  }

  function cardButton(testid) {
    return patientSlot.querySelector(`[data-testid="${testid}"]`);
  }

  /** Closes the correction form and the revisions (another patient, or none). */
  function closePatientExtras() {
    closeCorrection(false);
    s.revisionsOpen = false;
    s.revisionsSeq += 1;
    revisionsSlot.hidden = true;
    revisionsSlot.replaceChildren();
    s.visitsShown = null;
    s.triage.clear();
  }

  async function openCorrection() {
    const p = s.patient;
    if (!p || s.correcting) return;
    const mine = ++s.correctSeq;
    s.correcting = { loading: true };
    cardButton('correct-patient').setAttribute('aria-expanded', 'true');
    fill(correctSlot, h('p', { class: 'muted', t: 'common.loading' }));
    let detail;
    try {
      // the summary a search found masks the phone: the form starts from the full details
      detail = await api('GET', `/patients/${p.id}`);
    } catch (e) {
      if (mine !== s.correctSeq) return;
      s.correcting = null;
      cardButton('correct-patient').setAttribute('aria-expanded', 'false');
      const box = errorBox('correct-load-error');
      fill(correctSlot, box.el);
      box.show(e);
      return;
    }
    if (mine !== s.correctSeq) return;
    s.correcting = patientCorrectionForm(detail, {
      onSaved: (after) => corrected(after),
      onCancel: () => closeCorrection(true),
    });
    fill(correctSlot, s.correcting.el);
    s.correcting.focus();
  }

  function closeCorrection(refocus) {
    s.correctSeq += 1;
    s.correcting = null;
    correctSlot.replaceChildren();
    const button = cardButton('correct-patient');
    if (button) {
      button.setAttribute('aria-expanded', 'false');
      if (refocus) button.focus();
    }
  }

  function corrected(after) {
    if (!s.patient || s.patient.id !== after.id) return;
    s.patient = after;
    closeCorrection(false);
    showPatient(after);
    notify('correct.done', { name: after.name, id: after.id }, { kind: 'success', testid: 'correct-result' });
    cardButton('correct-patient').focus();
    if (s.revisionsOpen) loadRevisions();
    // what was found, and the fee (which may follow the birth date or insurance), as they are now
    search.rerun();
    requestQuote();
  }

  function toggleRevisions(open = !s.revisionsOpen) {
    s.revisionsOpen = open;
    const button = cardButton('revisions-toggle');
    if (button) button.setAttribute('aria-expanded', String(open));
    revisionsSlot.hidden = !open;
    if (open) loadRevisions();
    else {
      s.revisionsSeq += 1;
      revisionsSlot.replaceChildren();
    }
  }

  async function loadRevisions() {
    const p = s.patient;
    if (!p) return;
    const mine = ++s.revisionsSeq;
    const title = h('h3', { class: 'section-title', t: 'revisions.title' });
    if (!revisionsSlot.childElementCount) fill(revisionsSlot, title, h('p', { class: 'muted', t: 'common.loading' }));
    try {
      // the details now, to show what each correction changed to
      const [now, data] = await Promise.all([api('GET', `/patients/${p.id}`), api('GET', `/patients/${p.id}/revisions`)]);
      if (mine !== s.revisionsSeq) return;
      fill(revisionsSlot, title, revisionList(now, data.items));
    } catch (e) {
      if (mine !== s.revisionsSeq) return;
      const box = errorBox('revisions-error');
      fill(revisionsSlot, title, box.el);
      box.show(e);
    }
  }

  async function loadVisits() {
    const p = s.patient;
    if (!p) return;
    try {
      const data = await api('GET', `/patients/${p.id}/visits`);
      if (s.patient !== p) return;
      visitsBox.clear();
      // unchanged: leave the list alone (a select being chosen from stays open)
      const shown = JSON.stringify(data.items);
      if (shown === s.visitsShown) return;
      s.visitsShown = shown;
      s.visits = data.items;
      keepFocus(visitsSlot, () => renderVisits(data.items));
    } catch (e) {
      if (s.patient !== p) return;
      visitsBox.show(e);
    }
  }

  function renderVisits(items) {
    if (!items.length) {
      fill(visitsSlot, h('p', { class: 'muted', t: 'visits.none' }));
      return;
    }
    const booked = new Set(items.filter((v) => v.status === 'booked').map((v) => v.appointment_id));
    for (const id of [...s.triage.keys()]) if (!booked.has(id)) s.triage.delete(id);
    const rows = items.slice(0, 20).map((v) => {
      const actions = [];
      const options = s.triage.get(v.appointment_id);
      if (v.status === 'booked') {
        actions.push(h('button', {
          type: 'button', class: 'btn btn-small btn-primary', testid: 'check-in', t: 'checkin.button',
          dataset: { appointmentId: String(v.appointment_id), key: `checkin-${v.appointment_id}` },
          onclick: (e) => checkIn(v, e.currentTarget),
        }), h('button', {
          type: 'button', class: 'btn btn-small', testid: 'check-in-options-toggle', t: 'checkin.options',
          'aria-expanded': String(Boolean(options)), 'aria-controls': `check-in-options-${v.appointment_id}`,
          dataset: { appointmentId: String(v.appointment_id), key: `checkin-options-${v.appointment_id}` },
          onclick: () => toggleTriage(v),
        }));
      }
      if (v.status === 'pending') {
        actions.push(h('button', {
          type: 'button', class: 'btn btn-small', testid: 'release', t: 'release.button',
          dataset: { appointmentId: String(v.appointment_id), key: `release-${v.appointment_id}` },
          onclick: (e) => release(v, e.currentTarget),
        }));
      }
      const row = h('tr', { testid: `visit-${v.appointment_id}`, dataset: { status: v.status, invoiceId: String(v.invoice_id) } },
        h('td', null, v.date, ' ', enumText('period', v.period)),
        h('td', null, h('span', { text: v.department }), h('br'), h('span', { class: 'small', text: v.practitioner })),
        h('td', { class: 'num', text: yuan(v.fee_fen) }),
        h('td', null, h('span', { class: ['badge', `badge-${v.status}`] }, enumText('visit.status', v.status)),
          h('br'), h('span', { class: 'small muted' }, '#', String(v.invoice_id), ' ', enumText('invoice.status', v.invoice_status))),
        h('td', { class: 'actions' }, actions));
      return v.status === 'booked' && options ? [row, triageRow(v, options)] : row;
    });
    fill(visitsSlot, h('table', { class: 'table compact' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', t: 'common.date' }), h('th', { scope: 'col', t: 'visits.department' }),
        h('th', { scope: 'col', class: 'num', t: 'visits.fee' }), h('th', { scope: 'col', t: 'common.status' }),
        h('th', { scope: 'col', t: 'common.actions' }))),
      h('tbody', null, rows)));
  }

  /**
   * The check-in options of one paid registration, under its row: what the triage rule weighs
   * besides the patient's age (which it reads from the birth date). None unless chosen.
   */
  function triageRow(v, options) {
    const id = v.appointment_id;
    const level = h('select', { name: 'emergency_level', testid: 'check-in-emergency', dataset: { key: `checkin-level-${id}` } },
      [0, 1, 2, 3, 4].map((n) => h('option', { value: String(n), t: `checkin.emergency.${n}` })));
    level.value = String(options.emergency_level);
    const flag = (name, key) => {
      const box = h('input', { type: 'checkbox', name, id: `checkin-${name}-${id}`, testid: `check-in-${name}`, checked: options[name], dataset: { key: `checkin-${name}-${id}` } });
      box.addEventListener('change', () => { options[name] = box.checked; });
      return h('label', { class: 'check', for: box.id }, box, tx(key));
    };
    level.addEventListener('change', () => { options.emergency_level = Number(level.value); });
    const submit = h('button', { type: 'submit', class: 'btn btn-small btn-primary', testid: 'check-in-submit', t: 'checkin.button', dataset: { key: `checkin-submit-${id}` } });
    const form = h('form', { class: 'checkin-options', id: `check-in-options-${id}`, testid: 'check-in-options', novalidate: true },
      h('fieldset', { class: 'plain' },
        h('legend', { t: 'checkin.optionsTitle' }),
        h('div', { class: 'checkin-option-row' },
          h('label', { class: 'inline-field' }, tx('checkin.emergency'), level),
          flag('disabled', 'checkin.disabled'),
          flag('military', 'checkin.military'),
          submit),
        h('p', { class: 'hint', t: 'checkin.ageHint' })));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      checkIn(v, submit, form);
    });
    formKeys(form, () => toggleTriage(v, false));
    return h('tr', { class: 'checkin-options-row', testid: `check-in-options-${id}` }, h('td', { colspan: '5' }, form));
  }

  /** Opens (with nothing chosen) or closes a registration's check-in options. */
  function toggleTriage(v, open = !s.triage.has(v.appointment_id)) {
    const id = v.appointment_id;
    if (open) s.triage.set(id, { emergency_level: 0, disabled: false, military: false });
    else s.triage.delete(id);
    if (s.visits) renderVisits(s.visits);
    const target = open
      ? visitsSlot.querySelector(`[data-key="checkin-level-${id}"]`)
      : visitsSlot.querySelector(`[data-key="checkin-options-${id}"]`);
    if (target) target.focus();
  }

  async function checkIn(v, button, form) {
    const options = s.triage.get(v.appointment_id);
    const body = { appointment_id: v.appointment_id };
    if (options && options.emergency_level) body.emergency_level = options.emergency_level;
    if (options && options.disabled) body.disabled = true;
    if (options && options.military) body.military = true;
    button.disabled = true;
    visitsBox.clear();
    try {
      const entry = await api('POST', '/check-ins', body);
      s.triage.delete(v.appointment_id);
      notify('checkin.done', { ticket: entry.ticket_id }, { kind: 'success', testid: 'check-in-result' });
      await loadVisits();
    } catch (e) {
      button.disabled = false;
      visitsBox.show(e, form || null);
    }
  }

  async function release(v, button) {
    button.disabled = true;
    visitsBox.clear();
    try {
      await api('POST', `/registrations/${v.appointment_id}/cancel`);
      notify('release.done', null, { kind: 'success', testid: 'release-result' });
      await Promise.all([loadVisits(), loadSessions()]);
    } catch (e) {
      button.disabled = false;
      visitsBox.show(e);
    }
  }

  async function loadSessions() {
    const date = today();
    try {
      const data = await api('GET', `/schedules${query({ date })}`);
      s.sessions = data.items;
      sessionsBox.clear();
      layout.querySelector('[data-testid="sessions-date"]').textContent = date;
      if (s.session) {
        const again = s.sessions.find((x) => x.id === s.session.id);
        s.session = again && again.status === 'active' ? again : null;
        if (!s.session) {
          s.quote = null;
          renderQuote();
        }
      }
      keepFocus(sessionsList, renderSessions);
      updateRegister();
    } catch (e) {
      sessionsBox.show(e);
    }
  }

  const POOL_INDEX = { 'on-site': 0, online: 1, 'elderly-reserved': 2 };

  function renderSessions() {
    sessionsList.replaceChildren();
    if (!s.sessions.length) {
      sessionsList.append(h('p', { class: 'muted', t: 'sessions.none' }));
      return;
    }
    const byDept = new Map();
    for (const x of s.sessions) {
      if (!byDept.has(x.department)) byDept.set(x.department, []);
      byDept.get(x.department).push(x);
    }
    const pool = POOL_INDEX[channel.value];
    for (const [dept, list] of byDept) {
      const group = h('div', { class: 'session-group' }, h('h3', { class: 'group-title', text: dept }));
      for (const x of list) {
        const inactive = x.status !== 'active';
        const full = !inactive && x.remaining[pool] <= 0;
        const chosen = s.session && s.session.id === x.id;
        group.append(h('button', {
          type: 'button',
          class: ['session', inactive && 'inactive', full && 'full'],
          testid: `session-${x.id}`,
          dataset: { scheduleId: String(x.id), status: x.status, key: `session-${x.id}` },
          'aria-pressed': chosen ? 'true' : 'false',
          disabled: inactive,
          onclick: () => chooseSession(x),
        },
        h('span', { class: 'session-main' },
          h('strong', { text: x.practitioner }), ' ', enumText('title', x.title), ' · ', enumText('period', x.period),
          ' · ', x.room ? h('span', { text: x.room }) : tx('sessions.roomUnset')),
        h('span', { class: 'session-sub' },
          enumText('clinic', x.clinic_type), ' · ', tx('sessions.remaining'), ' ',
          h('span', { class: ['pool', pool === 0 && 'pool-current'], testid: 'remaining-on-site' }, tx('pool.on-site'), ` ${x.remaining[0]}`), ' ',
          h('span', { class: ['pool', pool === 1 && 'pool-current'], testid: 'remaining-online' }, tx('pool.online'), ` ${x.remaining[1]}`), ' ',
          h('span', { class: ['pool', pool === 2 && 'pool-current'], testid: 'remaining-elderly' }, tx('pool.elderly'), ` ${x.remaining[2]}`), ' · ',
          h('span', { class: ['badge', `badge-${x.status}`], testid: 'session-status' }, enumText('session.status', x.status)),
          x.status_reason ? h('span', { class: 'muted', text: ` ${x.status_reason}` }) : null,
          full ? h('span', { class: 'warn' }, ' · ', tx('sessions.full')) : null)));
      }
      sessionsList.append(group);
    }
  }

  function chooseSession(x) {
    s.session = x;
    for (const b of sessionsList.querySelectorAll('button.session')) {
      b.setAttribute('aria-pressed', b.dataset.scheduleId === String(x.id) ? 'true' : 'false');
    }
    resultSlot.replaceChildren();
    registerBox.clear();
    requestQuote();
    updateRegister();
    registerButton.focus();
  }

  function updateRegister() {
    const ready = Boolean(s.patient && s.session) && !s.busy;
    registerButton.setAttribute('aria-disabled', ready ? 'false' : 'true');
  }

  async function requestQuote(recomputed) {
    const mine = ++s.quoteSeq;
    if (!s.patient || !s.session) {
      s.quote = null;
      renderQuote();
      return;
    }
    const body = { patient_id: s.patient.id, schedule_id: s.session.id, channel: channel.value };
    s.quote = { loading: true };
    renderQuote();
    try {
      const q = await api('POST', '/registrations/quote', body);
      if (mine !== s.quoteSeq) return;
      s.quote = { data: q, body, recomputed };
    } catch (e) {
      if (mine !== s.quoteSeq) return;
      s.quote = { error: e, body };
    }
    renderQuote();
  }

  function renderQuote() {
    const q = s.quote;
    if (!q) {
      fill(quoteSlot, h('p', { class: 'muted', t: 'quote.choose' }));
      return;
    }
    if (q.loading) {
      fill(quoteSlot, h('p', { class: 'muted', t: 'quote.busy' }));
      return;
    }
    if (q.error) {
      const e = q.error;
      if (!e.missingEndpoint && ['refused', 'quota-exhausted', 'invalid', 'not-found', 'forbidden'].includes(e.code)) {
        // the rules would refuse this registration: say so before the clerk confirms
        fill(quoteSlot, h('p', { class: 'error-box', role: 'alert', testid: 'quote-refused', dataset: { code: e.code } },
          h('strong', null, tx(`error.code.${e.code}`), '：'), h('span', { text: e.message })));
        return;
      }
      fill(quoteSlot, h('p', { class: 'warn-box', testid: 'quote-unavailable', t: ['quote.unavailable', { message: e.missingEndpoint ? L('error.missingEndpoint') : e.message }] }));
      return;
    }
    const d = q.data;
    fill(quoteSlot,
      q.recomputed ? h('p', { class: 'info-box', testid: 'quote-recomputed', t: 'quote.recomputed' }) : null,
      h('p', { class: 'small' }, h('strong', { text: s.patient.name }), ' → ', s.session.practitioner, ' · ', enumText('period', s.session.period),
        ' · ', h('span', { t: ['quote.pool', { pool: has(`channel.${d.pool}`) ? L(`channel.${d.pool}`) : d.pool }] })),
      chargeTable(d.lines || [], { amount: d.fee_fen }, { testid: 'quote-lines', totalTestid: 'quote-total' }),
      h('p', { class: 'muted small', testid: 'quote-rule', title: d.fee_rule, t: ['quote.rule', { rule: shortRule(d.fee_rule) }] }));
  }

  async function register() {
    if (s.busy) return;
    registerBox.clear();
    if (!s.patient) {
      registerBox.show('register.needPatient');
      search.focus();
      return;
    }
    if (!s.session) {
      registerBox.show('register.needSession');
      const first = sessionsList.querySelector('button.session:not([disabled])');
      if (first) first.focus();
      return;
    }
    s.busy = true;
    updateRegister();
    setT(registerButton, 'register.busy');
    const quoted = s.quote && s.quote.data ? s.quote.data : null;
    try {
      const r = await api('POST', '/registrations', { patient_id: s.patient.id, schedule_id: s.session.id, channel: channel.value });
      const next = h('button', { type: 'button', class: 'btn', testid: 'next-patient', t: 'register.next', onclick: () => nextPatient() });
      fill(resultSlot, h('div', { class: 'success-box', testid: 'registration-result', dataset: { registrationId: String(r.id), invoiceId: String(r.invoice_id) }, tabindex: '-1' },
        h('h3', { t: 'register.done' }),
        h('p', { t: ['register.detail', { id: r.id, invoice: r.invoice_id, fee: yuan(r.fee_fen) }] }),
        h('p', { class: 'small', t: ['register.holdUntil', { time: clock(r.hold_expires_at) }] }),
        quoted && quoted.fee_rule !== r.fee_rule ? h('p', { class: 'warn', testid: 'registration-rule-differs', title: r.fee_rule, t: ['register.ruleDiffers', { rule: shortRule(r.fee_rule) }] }) : null,
        next));
      s.session = null;
      s.quote = null;
      s.quoteSeq += 1;
      renderQuote();
      for (const b of sessionsList.querySelectorAll('button.session')) b.setAttribute('aria-pressed', 'false');
      next.focus();
      loadVisits();
      loadSessions();
    } catch (e) {
      registerBox.show(e);
      registerButton.focus();
      // slots may have gone meanwhile; and after a lost answer the visits tell whether it was kept
      loadSessions();
      loadVisits();
    } finally {
      s.busy = false;
      setT(registerButton, 'register.button');
      updateRegister();
    }
  }

  function nextPatient() {
    resultSlot.replaceChildren();
    s.patient = null;
    s.session = null;
    s.quote = null;
    closePatientExtras();
    fill(patientSlot, h('p', { class: 'muted', t: 'selected.none' }));
    visitsSlot.replaceChildren();
    renderQuote();
    updateRegister();
    search.clear();
    search.focus();
  }

  loadSessions();
  const timer = setInterval(loadSessions, 30000);
  cleanups.push(() => clearInterval(timer));
  // The selected patient's visits change at other desks (paid at the cashier: now they can
  // check in), so they are read again every few seconds while a patient is selected.
  const visitsTimer = setInterval(() => { if (s.patient) loadVisits(); }, 4000);
  cleanups.push(() => clearInterval(visitsTimer));
  cleanups.push(onRulesChanged(['fees'], () => {
    if (s.patient && s.session) requestQuote(true);
  }));
  return () => cleanups.forEach((f) => f());
}

/**
 * Checks the ID number in `input` as typed (upper case, no spaces) and says so in `hint`
 * (emptyKey: what it says while the field is empty); returns checkIdNumber()'s answer.
 */
function idNumberHint(input, hint, emptyKey) {
  const upper = input.value.toUpperCase().replace(/\s/g, '');
  if (upper !== input.value) {
    const pos = input.selectionStart;
    input.value = upper;
    if (pos !== null) input.setSelectionRange(Math.min(pos, upper.length), Math.min(pos, upper.length));
  }
  const c = checkIdNumber(input.value);
  hint.className = 'hint';
  input.classList.remove('valid', 'invalid');
  input.removeAttribute('aria-invalid');
  switch (c.state) {
    case 'empty': setT(hint, emptyKey); break;
    case 'typing': setT(hint, ['idHint.typing', { n: c.n }]); break;
    case 'format': setT(hint, 'idHint.format'); break;
    case 'tooLong': setT(hint, 'idHint.tooLong'); break;
    case 'bad': setT(hint, ['idHint.bad', { expected: c.expected }]); break;
    case 'birth': setT(hint, 'idHint.birth'); break;
    default: setT(hint, ['idHint.ok', { birth: c.birth }]);
  }
  hint.dataset.state = c.state;
  if (['format', 'tooLong', 'bad', 'birth'].includes(c.state)) {
    hint.classList.add('hint-bad');
    input.classList.add('invalid');
    input.setAttribute('aria-invalid', 'true');
  } else if (c.state === 'ok') {
    hint.classList.add('hint-ok');
    input.classList.add('valid');
  }
  return c;
}

/** The new-patient form, with the ID number checked as typed. */
function newPatientForm({ onCreated, onCancel }) {
  const box = errorBox('new-patient-error');
  const name = h('input', { name: 'name', testid: 'new-patient-name', autocomplete: 'off', required: true, maxlength: '64' });
  const idNumber = h('input', { name: 'id_number', testid: 'new-patient-id-number', autocomplete: 'off', spellcheck: 'false', maxlength: '18', required: true, class: 'mono' });
  const idHint = h('p', { class: 'hint', testid: 'new-patient-id-hint', 'aria-live': 'polite', t: 'idHint.empty' });
  const gender = h('select', { name: 'gender', testid: 'new-patient-gender' },
    ['male', 'female', 'other', 'unknown'].map((g) => h('option', { value: g, t: `gender.${g}` })));
  gender.value = 'unknown';
  // a plain text field (one tab stop; a date input has three), filled from the ID number
  const birth = h('input', { name: 'birth_date', testid: 'new-patient-birth-date', required: true, inputmode: 'numeric', autocomplete: 'off', placeholder: 'YYYY-MM-DD', maxlength: '10', class: 'mono' });
  const phone = h('input', { name: 'phone', type: 'tel', testid: 'new-patient-phone', autocomplete: 'off', inputmode: 'tel', required: true, maxlength: '20' });
  const insurance = h('select', { name: 'insurance_category', testid: 'new-patient-insurance-category' },
    ['none', 'employee', 'resident'].map((c) => h('option', { value: c, t: `insurance.${c}` })));
  const insuranceNumber = h('input', { name: 'insurance_number', testid: 'new-patient-insurance-number', autocomplete: 'off', maxlength: '32' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'new-patient-submit', t: 'newPatient.submit' });
  const cancel = h('button', { type: 'button', class: 'btn', testid: 'new-patient-cancel', t: 'common.cancel', onclick: () => onCancel() });
  let genderTouched = false;
  gender.addEventListener('change', () => {
    genderTouched = true;
  });

  const checkId = () => {
    const c = idNumberHint(idNumber, idHint, 'idHint.empty');
    if (c.birth) birth.value = c.birth;
    if (c.state === 'ok' && !genderTouched) gender.value = c.gender;
    return c;
  };
  idNumber.addEventListener('input', checkId);

  const form = h('form', { id: 'new-patient-form', class: 'new-patient stack', testid: 'new-patient-form', novalidate: true, 'aria-labelledby': 'new-patient-title' },
    h('h2', { id: 'new-patient-title', class: 'section-title', t: 'newPatient.title' }),
    // name, ID number, phone first: gender and birth date follow from the ID number
    h('div', { class: 'form-grid' },
      field('patient.name', name),
      field('patient.idNumber', idNumber, { hint: idHint }),
      field('patient.phone', phone),
      field('patient.insurance', insurance),
      field('patient.insuranceNumber', insuranceNumber, { optional: true }),
      field('patient.gender', gender),
      field('patient.birthDate', birth)),
    box.el,
    h('div', { class: 'button-row' }, submit, cancel));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    box.clear();
    for (const control of [name, phone]) {
      if (!control.value.trim()) {
        box.show('common.required');
        box.mark(control);
        control.focus();
        return;
      }
    }
    const c = checkId();
    if (c.state !== 'ok') {
      box.show('newPatient.fixId');
      box.mark(idNumber);
      idNumber.focus();
      return;
    }
    if (!/^\d{4}-\d{2}-\d{2}$/.test(birth.value.trim())) {
      box.show('newPatient.birthFormat');
      box.mark(birth);
      birth.focus();
      return;
    }
    if (birth.value.trim() !== c.birth) {
      box.show('newPatient.birthMismatch');
      box.mark(birth);
      birth.focus();
      return;
    }
    const body = {
      name: name.value.trim(),
      gender: gender.value,
      birth_date: birth.value.trim(),
      id_number: idNumber.value.trim().toUpperCase(),
      phone: phone.value.trim(),
      insurance_category: insurance.value,
      insurance_number: insuranceNumber.value.trim() || null,
    };
    submit.disabled = true;
    try {
      const created = await api('POST', '/patients', body);
      let patient;
      try {
        patient = await api('GET', `/patients/${created.id}`);
      } catch {
        patient = { ...body, id: created.id, id_number: `${body.id_number.slice(0, 6)}********${body.id_number.slice(14)}` };
      }
      notify('newPatient.created', { name: patient.name, id: patient.id }, { kind: 'success', testid: 'new-patient-created' });
      reset();
      onCreated(patient);
    } catch (err) {
      let extra = null;
      if (err.existingId) {
        extra = h('div', null, h('button', {
          type: 'button', class: 'btn btn-small', testid: 'new-patient-use-existing', t: ['newPatient.useExisting', { id: err.existingId }],
          onclick: async () => {
            try {
              const p = await api('GET', `/patients/${err.existingId}`);
              reset();
              onCreated(p);
            } catch (e2) {
              box.show(e2);
            }
          },
        }));
      }
      box.show(err, form, extra);
    } finally {
      submit.disabled = false;
    }
  });

  function reset() {
    form.reset();
    gender.value = 'unknown';
    genderTouched = false;
    box.clear();
    checkId();
  }

  return { el: form, focus: () => name.focus() };
}

/**
 * The correction of a patient's details (`PATCH /patients/{id}`, with a reason), started from
 * `detail` (a PatientDetail). Only what changed is sent; the ID number (which the API masks) is
 * typed in full only to change it. An error the API pins on a field is shown beside that field.
 * Enter saves, Escape cancels.
 */
function patientCorrectionForm(detail, { onSaved, onCancel }) {
  const box = errorBox('correct-error');
  const messages = fieldMessages();
  const name = h('input', { name: 'name', testid: 'correct-name', autocomplete: 'off', maxlength: '64', value: detail.name });
  const idNumber = h('input', { name: 'id_number', testid: 'correct-id-number', autocomplete: 'off', spellcheck: 'false', maxlength: '18', class: 'mono', placeholder: detail.id_number });
  const idHint = h('p', { class: 'hint', testid: 'correct-id-hint', 'aria-live': 'polite', t: 'correct.idKeep' });
  const phone = h('input', { name: 'phone', type: 'tel', testid: 'correct-phone', autocomplete: 'off', inputmode: 'tel', maxlength: '20', value: detail.phone });
  const insurance = h('select', { name: 'insurance_category', testid: 'correct-insurance-category' },
    ['none', 'employee', 'resident'].map((c) => h('option', { value: c, t: `insurance.${c}` })));
  insurance.value = detail.insurance_category;
  const insuranceNumber = h('input', { name: 'insurance_number', testid: 'correct-insurance-number', autocomplete: 'off', maxlength: '32', value: detail.insurance_number || '' });
  const gender = h('select', { name: 'gender', testid: 'correct-gender' },
    ['male', 'female', 'other', 'unknown'].map((g) => h('option', { value: g, t: `gender.${g}` })));
  gender.value = detail.gender;
  const birth = h('input', { name: 'birth_date', testid: 'correct-birth-date', inputmode: 'numeric', autocomplete: 'off', placeholder: 'YYYY-MM-DD', maxlength: '10', class: 'mono', value: detail.birth_date });
  const reason = h('input', { name: 'reason', testid: 'correct-reason', autocomplete: 'off', maxlength: '200', tPlaceholder: 'correct.reasonPlaceholder' });
  const reasonHint = h('p', { class: 'hint', t: 'correct.reasonHint' });
  const reasonField = field('correct.reason', reason, { hint: reasonHint });
  reasonField.classList.add('field-wide');
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'correct-submit', t: 'correct.submit' });
  const cancel = h('button', { type: 'button', class: 'btn', testid: 'correct-cancel', t: 'common.cancel', onclick: () => onCancel() });
  let genderTouched = false;
  gender.addEventListener('change', () => {
    genderTouched = true;
  });

  // a new ID number brings its birth date (and gender); cleared again, the stored ones return
  let birthFromId = null;
  let genderFromId = null;
  const checkId = () => {
    const c = idNumberHint(idNumber, idHint, 'correct.idKeep');
    if (c.birth) {
      birth.value = c.birth;
      birthFromId = c.birth;
    }
    if (c.state === 'ok' && !genderTouched) {
      gender.value = c.gender;
      genderFromId = c.gender;
    }
    if (c.state === 'empty') {
      if (birthFromId !== null && birth.value === birthFromId) birth.value = detail.birth_date;
      if (genderFromId !== null && !genderTouched && gender.value === genderFromId) gender.value = detail.gender;
      birthFromId = null;
      genderFromId = null;
    }
    return c;
  };
  idNumber.addEventListener('input', checkId);

  const form = h('form', { id: 'correct-patient-form', class: 'correct-patient stack', testid: 'correct-patient-form', novalidate: true, 'aria-labelledby': 'correct-patient-title' },
    h('h2', { id: 'correct-patient-title', class: 'section-title' }, tx('correct.title'), ' ',
      h('span', { class: 'muted small', t: ['patient.summary', { id: detail.id }] })),
    h('div', { class: 'form-grid' },
      field('patient.name', name),
      field('patient.phone', phone),
      field('patient.idNumber', idNumber, { hint: idHint }),
      field('patient.birthDate', birth),
      field('patient.gender', gender),
      field('patient.insurance', insurance),
      field('patient.insuranceNumber', insuranceNumber, { optional: true }),
      reasonField),
    box.el,
    h('div', { class: 'button-row' }, submit, cancel, h('span', { class: 'muted small', t: 'correct.keys' })));
  formKeys(form, () => onCancel());

  /** Stops the submission at `control`, with the message beside it. */
  const stop = (control, key) => {
    messages.show(control, tx(key));
    control.focus();
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    box.clear();
    messages.clear();
    for (const control of [name, phone]) {
      if (!control.value.trim()) return stop(control, 'common.required');
    }
    const typedId = idNumber.value.trim().toUpperCase();
    const c = typedId ? checkId() : null;
    if (c && c.state !== 'ok') return stop(idNumber, 'newPatient.fixId');
    if (!/^\d{4}-\d{2}-\d{2}$/.test(birth.value.trim())) return stop(birth, 'newPatient.birthFormat');
    if (c && birth.value.trim() !== c.birth) return stop(birth, 'newPatient.birthMismatch');
    const body = {};
    const changed = (key, value, before) => {
      if (value !== before) body[key] = value;
    };
    changed('name', name.value.trim(), detail.name);
    changed('gender', gender.value, detail.gender);
    changed('birth_date', birth.value.trim(), detail.birth_date);
    if (typedId) body.id_number = typedId;
    changed('phone', phone.value.trim(), detail.phone);
    changed('insurance_category', insurance.value, detail.insurance_category);
    changed('insurance_number', insuranceNumber.value.trim() || null, detail.insurance_number ?? null);
    if (!Object.keys(body).length) {
      box.show('correct.nothing');
      name.focus();
      return;
    }
    if (!reason.value.trim()) return stop(reason, 'correct.needReason');
    body.reason = reason.value.trim();
    submit.disabled = true;
    setT(submit, 'correct.busy');
    try {
      const after = await api('PATCH', `/patients/${detail.id}`, body);
      onSaved(after);
    } catch (err) {
      submit.disabled = false;
      setT(submit, 'correct.submit');
      const control = err.field ? form.querySelector(`[name="${CSS.escape(err.field)}"]`) : null;
      if (control) {
        messages.show(control, apiErrorText(err), err.existingId ? [' ', tx('correct.duplicate', { id: err.existingId })] : null);
        control.focus();
      } else {
        box.show(err, form);
        submit.focus();
      }
    }
  });

  return { el: form, focus: () => name.focus() };
}

/** The fields a revision keeps, in the order the desk shows them, with their labels. */
const REVISION_FIELDS = [
  ['name', 'patient.name'],
  ['phone', 'patient.phone'],
  ['id_number', 'patient.idNumber'],
  ['birth_date', 'patient.birthDate'],
  ['gender', 'patient.gender'],
  ['insurance_category', 'patient.insurance'],
  ['insurance_number', 'patient.insuranceNumber'],
];

function revisionValue(name, value) {
  if (value === null || value === undefined || value === '') return tx('revisions.empty');
  if (name === 'gender') return enumText('gender', value);
  if (name === 'insurance_category') return enumText('insurance', value);
  return h('span', { class: ['id_number', 'phone', 'insurance_number', 'birth_date'].includes(name) ? 'mono' : null, text: String(value) });
}

/**
 * A patient's corrections, newest first (as the API lists them): when, who, why, and what each
 * changed, from its previous values to the next newer ones (for the newest: `now`, the details
 * as they are). ID numbers are masked by the API on both sides.
 */
function revisionList(now, items) {
  if (!items.length) return h('p', { class: 'muted', testid: 'revisions-none', t: 'revisions.none' });
  let after = now;
  return h('ol', { class: 'revision-list', testid: 'revisions' }, items.map((r) => {
    const before = r.previous || {};
    const changes = REVISION_FIELDS.filter(([name]) => name in before && String(before[name] ?? '') !== String(after[name] ?? ''));
    const item = h('li', { class: 'revision', testid: `revision-${r.id}`, dataset: { revisionId: String(r.id) } },
      h('div', { class: 'revision-head' }, h('strong', { text: dateTime(r.at) }), ' · ', h('span', { testid: 'revision-actor', text: r.actor })),
      h('p', { class: 'revision-reason' }, tx('revisions.reason'), h('span', { testid: 'revision-reason', text: r.reason })),
      changes.length ? h('ul', { class: 'revision-changes' }, changes.map(([name, key]) => h('li', { testid: `revision-change-${name}`, dataset: { field: name } },
        tx(key), tx('common.colon'),
        h('del', { testid: 'revision-before' }, revisionValue(name, before[name])), ' → ',
        h('ins', { testid: 'revision-after' }, revisionValue(name, after[name]))))) : null);
    after = { ...after, ...before };
    return item;
  }));
}

// ---------------------------------------------------------------------------------------------
// Cashier (收费)

const PAY_ATTEMPTS_KEY = 'nonstop.payAttempts';

/** Idempotency keys of payment attempts whose outcome is unknown, kept across a reload. */
const attempts = {
  load() {
    try {
      return JSON.parse(sessionStorage.getItem(PAY_ATTEMPTS_KEY) || '{}');
    } catch {
      return {};
    }
  },
  /** The key for paying `invoiceId` by `method`: the pending attempt's, or a fresh one. */
  key(kind, invoiceId, method) {
    const all = this.load();
    const id = `${kind}:${invoiceId}`;
    const a = all[id];
    if (a && a.method === method) return a.key;
    all[id] = { key: newKey(), method };
    sessionStorage.setItem(PAY_ATTEMPTS_KEY, JSON.stringify(all));
    return all[id].key;
  },
  done(kind, invoiceId) {
    const all = this.load();
    delete all[`${kind}:${invoiceId}`];
    sessionStorage.setItem(PAY_ATTEMPTS_KEY, JSON.stringify(all));
  },
  pending(kind, invoiceId) {
    return this.load()[`${kind}:${invoiceId}`] || null;
  },
};

/** Sends a payment or refund with an attempt's idempotency key; keeps the key if the outcome is unknown. */
async function sendWithKey(kind, invoiceId, method, path, body) {
  const key = attempts.key(kind, invoiceId, method);
  try {
    const r = await api('POST', path, { ...body, idempotency_key: key });
    attempts.done(kind, invoiceId);
    return r;
  } catch (e) {
    if (!e.uncertain) attempts.done(kind, invoiceId);
    throw e;
  }
}

const METHODS = ['cash', 'card', 'wechat', 'alipay'];

function renderCashier(main) {
  const cleanups = [];
  const me = state.me;
  const isAdmin = me.role === 'admin';
  const s = { patient: null, cards: new Map() };

  const search = patientSearch((p) => selectPatient(p));
  const patientSlot = h('div', { class: 'patient-slot' }, h('p', { class: 'muted', t: 'cashier.choosePatient' }));
  const unpaidSlot = h('div', { class: 'invoices', testid: 'unpaid-invoices' });
  const paidSlot = h('div', { class: 'invoices', testid: 'paid-invoices' });
  const listBox = errorBox('invoices-error');
  const receiptSlot = h('div', { class: 'receipt-slot', testid: 'receipt-slot' });

  // totals
  const totalsSlot = h('div', { testid: 'totals', 'aria-live': 'polite' });
  const totalsBox = errorBox('totals-error');
  const cashierInput = isAdmin ? h('input', { name: 'cashier', testid: 'totals-cashier', autocomplete: 'off', tPlaceholder: 'totals.cashierAll' }) : null;
  if (cashierInput) cashierInput.addEventListener('change', () => loadTotals());
  const closeButton = h('button', { type: 'button', class: 'btn btn-danger', testid: 'close-day', t: 'close.button', onclick: () => closeDay() });
  const closeSlot = h('div', { testid: 'closing-slot' });

  main.append(h('div', { class: 'cashier-grid' },
    h('section', { class: 'panel', 'aria-labelledby': 'cashier-title' },
      h('h1', { id: 'cashier-title', class: 'panel-title', t: 'cashier.title' }),
      search.el,
      h('h2', { class: 'section-title', t: 'selected.title' }),
      patientSlot,
      listBox.el,
      h('h2', { class: 'section-title', t: 'cashier.unpaid' }),
      unpaidSlot,
      h('h2', { class: 'section-title', t: 'cashier.paid' }),
      paidSlot),
    h('div', { class: 'stack' },
      receiptSlot,
      h('section', { class: 'panel', 'aria-labelledby': 'totals-title' },
        h('div', { class: 'panel-head' },
          h('h2', { id: 'totals-title', class: 'panel-title' }, tx('totals.title'), ' ', h('span', { class: 'muted', testid: 'totals-date', text: today() })),
          h('button', { type: 'button', class: 'btn btn-small btn-quiet', testid: 'totals-refresh', t: 'common.refresh', onclick: () => loadTotals() })),
        cashierInput ? field('totals.cashier', cashierInput) : null,
        totalsBox.el,
        totalsSlot,
        h('div', { class: 'button-row' }, closeButton),
        closeSlot))));

  function selectPatient(p) {
    s.patient = p;
    fill(patientSlot, patientCard(p, () => {
      s.patient = null;
      fill(patientSlot, h('p', { class: 'muted', t: 'cashier.choosePatient' }));
      unpaidSlot.replaceChildren();
      paidSlot.replaceChildren();
      s.cards.clear();
      search.focus();
    }));
    loadInvoices().then(() => {
      const first = unpaidSlot.querySelector('input[type="radio"]:checked');
      if (first) first.focus();
    });
  }

  async function loadInvoices() {
    const p = s.patient;
    if (!p) return;
    try {
      const [unpaid, paid] = await Promise.all([
        api('GET', `/patients/${p.id}/invoices?status=issued`),
        api('GET', `/patients/${p.id}/invoices?status=balanced`),
      ]);
      if (s.patient !== p) return;
      listBox.clear();
      renderUnpaid(unpaid.items);
      renderPaid(paid.items);
    } catch (e) {
      if (s.patient !== p) return;
      listBox.show(e);
    }
  }

  function renderUnpaid(items) {
    const keep = new Set(items.map((i) => i.id));
    for (const id of [...s.cards.keys()]) if (!keep.has(id)) s.cards.delete(id);
    unpaidSlot.replaceChildren();
    if (!items.length) {
      unpaidSlot.append(h('p', { class: 'muted', testid: 'no-unpaid', t: 'cashier.noneUnpaid' }));
      return;
    }
    for (const inv of items) {
      let card = s.cards.get(inv.id);
      if (!card) {
        card = invoiceCard(inv);
        s.cards.set(inv.id, card);
      }
      unpaidSlot.append(card.el);
    }
  }

  /** One unpaid invoice: its split by the live insurance rule, the method and the Pay button. */
  function invoiceCard(inv) {
    const splitSlot = h('div', { class: 'split', testid: 'split', 'aria-live': 'polite' }, h('p', { class: 'muted', t: 'common.loading' }));
    const box = errorBox('pay-error');
    const group = `method-${inv.id}`;
    const pending = attempts.pending('pay', inv.id);
    const radios = METHODS.map((m) => h('input', { type: 'radio', name: group, value: m, testid: `method-${m}`, id: `${group}-${m}` }));
    const chosen = pending && METHODS.includes(pending.method) ? pending.method : 'cash';
    radios.find((r) => r.value === chosen).checked = true;
    const methods = h('fieldset', { class: 'methods' },
      h('legend', { t: 'method.label' }),
      radios.map((r) => h('label', { class: 'method', for: r.id }, r, tx(`method.${r.value}`))));
    const pay = h('button', { type: 'submit', class: 'btn btn-primary btn-large', testid: 'pay', dataset: { invoiceId: String(inv.id) }, t: 'pay.buttonPlain' });
    const form = h('form', { class: 'pay-form', novalidate: true }, methods, box.el, pay);
    const el = h('article', { class: 'invoice-card', testid: `invoice-${inv.id}`, dataset: { invoiceId: String(inv.id), status: inv.status } },
      h('header', { class: 'invoice-head' },
        h('h3', { t: ['invoice.title', { id: inv.id }] }),
        h('span', { class: 'amount', testid: 'invoice-total', text: yuan(inv.total_fen) }),
        h('span', { class: 'muted small', t: ['invoice.created', { time: dateTime(inv.created_at) }] })),
      splitSlot,
      form);
    if (pending) box.show('pay.uncertain');
    let quoteSeq = 0;
    let selfPay = null;

    async function loadSplit(recomputed) {
      const mine = ++quoteSeq;
      try {
        const q = await api('POST', '/payments/quote', { invoice_id: inv.id, patient_id: inv.patient_id ?? s.patient.id });
        if (mine !== quoteSeq) return;
        selfPay = q.self_pay_fen;
        setT(pay, ['pay.button', { amount: yuan(q.self_pay_fen) }]);
        fill(splitSlot,
          recomputed ? h('p', { class: 'info-box', testid: 'split-recomputed', t: 'split.recomputed' }) : null,
          chargeTable(q.lines || [], { amount: q.total_fen, fund: q.fund_fen, self: q.self_pay_fen }, { split: true, testid: 'split-lines' }),
          h('p', { class: 'muted small', testid: 'split-rule', title: q.insurance_rule, t: ['split.rule', { rule: shortRule(q.insurance_rule) }] }));
      } catch (e) {
        if (mine !== quoteSeq) return;
        selfPay = null;
        setT(pay, 'pay.buttonPlain');
        let lines = null;
        try {
          const full = await api('GET', `/invoices/${inv.id}`);
          lines = full.lines;
        } catch {
          lines = null;
        }
        if (mine !== quoteSeq) return;
        fill(splitSlot,
          lines ? chargeTable(lines, { amount: inv.total_fen }, { testid: 'invoice-lines' }) : null,
          h('p', { class: 'warn-box', testid: 'split-unavailable', t: ['split.unavailable', { message: e.missingEndpoint ? L('error.missingEndpoint') : e.message }] }));
      }
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const method = radios.find((r) => r.checked).value;
      box.clear();
      pay.disabled = true;
      setT(pay, 'pay.busy');
      try {
        const payment = await sendWithKey('pay', inv.id, method, '/payments', { invoice_id: inv.id, patient_id: s.patient.id, method });
        notify('pay.done', { invoice: inv.id, amount: yuan(payment.self_pay_fen) }, { kind: 'success', testid: 'pay-result' });
        s.cards.delete(inv.id);
        showReceipt(inv.id, payment, method);
        loadInvoices();
        loadTotals();
      } catch (err) {
        box.show(err, form, err.uncertain ? h('p', { t: 'pay.uncertain' }) : null);
        pay.disabled = false;
        setT(pay, selfPay === null ? 'pay.buttonPlain' : ['pay.button', { amount: yuan(selfPay) }]);
        pay.focus();
        // refused (e.g. paid meanwhile elsewhere): show what the server holds now
        if (!err.uncertain) loadInvoices();
      }
    });

    loadSplit(false);
    return { el, loadSplit };
  }

  function renderPaid(items) {
    paidSlot.replaceChildren();
    if (!items.length) {
      paidSlot.append(h('p', { class: 'muted', t: 'cashier.nonePaid' }));
      return;
    }
    paidSlot.append(h('table', { class: 'table compact' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', t: 'receipt.invoice' }), h('th', { scope: 'col', class: 'num', t: 'split.total' }),
        h('th', { scope: 'col', class: 'num', t: 'split.fund' }), h('th', { scope: 'col', class: 'num', t: 'split.self' }),
        h('th', { scope: 'col', t: 'common.actions' }))),
      h('tbody', null, items.map((inv) => h('tr', { testid: `paid-invoice-${inv.id}`, dataset: { invoiceId: String(inv.id) } },
        h('td', null, `#${inv.id}`, h('br'), h('span', { class: 'small muted', text: dateTime(inv.created_at) })),
        h('td', { class: 'num', text: yuan(inv.total_fen) }),
        h('td', { class: 'num', text: yuan(inv.fund_fen) }),
        h('td', { class: 'num', text: yuan(inv.self_pay_fen) }),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'btn btn-small', testid: 'reprint', t: 'receipt.print', onclick: () => showReceipt(inv.id, null, null, true) }),
          h('button', { type: 'button', class: 'btn btn-small btn-danger', testid: 'refund', dataset: { invoiceId: String(inv.id) }, t: 'refund.button', onclick: () => refund(inv) })))))));
  }

  async function refund(inv) {
    const reason = h('textarea', { name: 'reason', testid: 'refund-reason', rows: '2', maxlength: '200', required: true });
    const ok = await confirmDialog({
      titleKey: 'refund.title',
      titleArgs: { invoice: inv.id },
      body: [h('p', { class: 'amount', text: yuan(inv.self_pay_fen) }), field('refund.reason', reason)],
      okKey: 'refund.confirm',
      danger: true,
      validate: () => (reason.value.trim() ? null : { key: 'refund.needReason', control: reason }),
    });
    if (!ok) return;
    listBox.clear();
    try {
      const r = await sendWithKey('refund', inv.id, 'refund', '/refunds', { invoice_id: inv.id, reason: reason.value.trim() });
      notify('refund.done', { invoice: inv.id, amount: yuan(r.self_pay_fen) }, { kind: 'success', testid: 'refund-result' });
      loadInvoices();
      loadTotals();
    } catch (e) {
      listBox.show(e, null, e.uncertain ? h('p', { t: 'pay.uncertain' }) : null);
    }
  }

  async function showReceipt(invoiceId, payment, method, print) {
    let inv;
    try {
      inv = await api('GET', `/invoices/${invoiceId}`);
    } catch (e) {
      listBox.show(e);
      return;
    }
    const p = s.patient;
    const pay = payment || [...(inv.payments || [])].reverse().find((x) => x.kind === 'payment') || null;
    const printButton = h('button', { type: 'button', class: 'btn btn-primary no-print', testid: 'print-receipt', t: 'receipt.print', onclick: () => window.print() });
    fill(receiptSlot, h('section', { class: 'panel receipt', testid: 'receipt', dataset: { invoiceId: String(inv.id) }, 'aria-labelledby': 'receipt-title' },
      h('h2', { id: 'receipt-title', class: 'receipt-title', t: 'receipt.title' }),
      h('dl', { class: 'receipt-meta' },
        h('dt', { t: 'receipt.patient' }), h('dd', null, p ? `${p.name}（${p.id}）` : String(inv.patient_id)),
        h('dt', { t: 'receipt.invoice' }), h('dd', { text: String(inv.id) }),
        pay ? [h('dt', { t: 'receipt.payment' }), h('dd', { text: String(pay.id) })] : null,
        method ? [h('dt', { t: 'receipt.method' }), h('dd', null, tx(`method.${method}`))] : null,
        h('dt', { t: 'receipt.time' }), h('dd', { text: dateTime(Date.now()) }),
        h('dt', { t: 'receipt.cashier' }), h('dd', { text: me.username })),
      chargeTable(inv.lines || [], { amount: inv.total_fen, fund: inv.fund_fen, self: inv.self_pay_fen }, { split: true, testid: 'receipt-lines' }),
      inv.insurance_rule ? h('p', { class: 'small muted', t: ['split.rule', { rule: shortRule(inv.insurance_rule) }] }) : null,
      printButton));
    if (print) window.print();
    else printButton.focus();
  }

  async function loadTotals() {
    const date = today();
    const cashier = isAdmin ? cashierInput.value.trim() : me.username;
    try {
      const d = await api('GET', `/cashier/totals${query({ date, cashier })}`);
      totalsBox.clear();
      main.querySelector('[data-testid="totals-date"]').textContent = date;
      renderTotals(d);
    } catch (e) {
      totalsBox.show(e);
    }
  }

  function renderTotals(d) {
    const row = (key, value, testid) => h('tr', { testid }, h('th', { scope: 'row', t: key }), h('td', { class: 'num', text: value }));
    const sum = d.by_method.reduce((acc, [, fen]) => acc + fen, 0);
    fill(totalsSlot,
      h('table', { class: 'table totals' }, h('tbody', null,
        row('totals.payments', String(d.payments), 'totals-payments'),
        row('totals.refunds', String(d.refunds), 'totals-refunds'),
        row('totals.paid', yuan(d.paid_fen), 'totals-paid'),
        row('totals.refunded', yuan(d.refunded_fen), 'totals-refunded'),
        h('tr', { class: 'total-row', testid: 'totals-net' }, h('th', { scope: 'row', t: 'totals.net' }), h('td', { class: 'num', text: yuan(d.net_fen) })),
        row('totals.fundPaid', yuan(d.fund_paid_fen), 'totals-fund-paid'),
        row('totals.fundRefunded', yuan(d.fund_refunded_fen), 'totals-fund-refunded'),
        row('totals.fundNet', yuan(d.fund_net_fen), 'totals-fund-net'))),
      h('h3', { class: 'section-title', t: 'totals.byMethod' }),
      d.by_method.length
        ? h('table', { class: 'table totals', testid: 'totals-by-method' }, h('tbody', null,
          d.by_method.map(([m, fen]) => h('tr', { testid: `totals-method-${m}` }, h('th', { scope: 'row' }, enumText('method', m)), h('td', { class: 'num', text: yuan(fen) })))))
        : h('p', { class: 'muted', t: 'totals.noMethods' }),
      d.by_method.length
        ? h('p', { class: sum === d.net_fen ? 'ok small' : 'warn small', testid: 'totals-balance' },
          sum === d.net_fen ? tx('totals.balanced') : tx('totals.unbalanced', { sum: yuan(sum), net: yuan(d.net_fen) }))
        : null);
  }

  async function closeDay() {
    const date = today();
    const body = {};
    if (isAdmin) {
      const who = cashierInput.value.trim();
      if (!who) {
        totalsBox.show('close.needCashier');
        totalsBox.mark(cashierInput);
        cashierInput.focus();
        return;
      }
      body.cashier = who;
    }
    const ok = await confirmDialog({ titleKey: 'close.title', body: h('p', { t: ['close.confirm', { date }] }), okKey: 'close.button', danger: true });
    if (!ok) {
      closeButton.focus();
      return;
    }
    closeButton.disabled = true;
    try {
      const c = await api('POST', '/cashier/closings', body);
      fill(closeSlot, h('p', { class: 'success-box', testid: 'closing-result', dataset: { closingId: String(c.id) },
        t: ['close.done', { date: c.business_date, time: dateTime(c.closed_at), net: yuan(c.totals.net_fen) }] }));
      renderTotals(c.totals);
    } catch (e) {
      totalsBox.show(e);
    } finally {
      closeButton.disabled = false;
    }
  }

  loadTotals();
  const timer = setInterval(loadTotals, 60000);
  cleanups.push(() => clearInterval(timer));
  cleanups.push(onRulesChanged(['insurance'], () => {
    for (const card of s.cards.values()) card.loadSplit(true);
  }));
  return () => cleanups.forEach((f) => f());
}

// ---------------------------------------------------------------------------------------------
// Doctor's workstation (医生工作站)

const ACTIONS = {
  waiting: [],
  called: ['start', 'miss'],
  'in-service': ['finish', 'suspend'],
  suspended: ['resume'],
  done: [],
  expired: [],
};

function renderDoctor(main) {
  const me = state.me;
  const cleanups = [];
  const box = errorBox('doctor-error');
  const heading = h('h1', { class: 'panel-title', testid: 'doctor-heading', t: 'doctor.title' });
  const updated = h('span', { class: 'muted small', testid: 'doctor-updated' });
  const sessionsSlot = h('div', { class: 'doctor-sessions', testid: 'doctor-sessions' });
  const sections = new Map();
  let practitionerId = me.practitioner_id;
  let timer = null;
  let loading = false;
  let rooms = new Map();

  const top = h('div', { class: 'panel-head' }, heading, updated);
  const wrap = h('section', { class: 'panel doctor' }, top, box.el, sessionsSlot);
  main.append(wrap);

  if (me.role === 'doctor' && !practitionerId) {
    sessionsSlot.append(h('p', { class: 'warn-box', testid: 'no-practitioner', role: 'alert', t: 'doctor.noPractitioner' }));
    return null;
  }

  if (me.role === 'admin') {
    const pick = h('select', { name: 'practitioner', testid: 'doctor-pick' });
    top.append(field('doctor.pick', pick));
    api('GET', '/practitioners').then((data) => {
      for (const p of data.items) pick.append(h('option', { value: String(p.id), text: `${p.name} · ${p.department}` }));
      const saved = sessionStorage.getItem('nonstop.adminPractitioner');
      if (saved && data.items.some((p) => String(p.id) === saved)) pick.value = saved;
      practitionerId = Number(pick.value) || null;
      load();
    }).catch((e) => box.show(e));
    pick.addEventListener('change', () => {
      sessionStorage.setItem('nonstop.adminPractitioner', pick.value);
      practitionerId = Number(pick.value);
      for (const sec of sections.values()) sec.el.remove();
      sections.clear();
      load();
    });
  }

  function roomKey(scheduleId) {
    return `nonstop.room.${scheduleId}`;
  }

  async function load() {
    if (!practitionerId || loading) return;
    loading = true;
    const date = today();
    try {
      const [day, sched] = await Promise.all([
        api('GET', `/practitioners/${practitionerId}/day${query({ date })}`),
        api('GET', `/schedules${query({ date })}`).catch(() => ({ items: [] })),
      ]);
      rooms = new Map(sched.items.map((x) => [x.id, x]));
      box.clear();
      setT(heading, ['doctor.heading', { name: day.name, title: has(`title.${day.title}`) ? L(`title.${day.title}`) : day.title, date: day.date }]);
      setT(updated, ['common.updatedAt', { time: clockSeconds(Date.now()) }]);
      renderDay(day);
    } catch (e) {
      box.show(e);
    } finally {
      loading = false;
    }
  }

  function renderDay(day) {
    const ids = new Set(day.sessions.map((x) => x.schedule_id));
    for (const [id, sec] of sections) {
      if (!ids.has(id)) {
        sec.el.remove();
        sections.delete(id);
      }
    }
    const empty = sessionsSlot.querySelector('[data-testid="doctor-no-sessions"]');
    if (!day.sessions.length) {
      if (!empty) sessionsSlot.append(h('p', { class: 'muted', testid: 'doctor-no-sessions', t: 'doctor.noSessions' }));
      return;
    }
    if (empty) empty.remove();
    for (const x of day.sessions) {
      let sec = sections.get(x.schedule_id);
      if (!sec) {
        sec = sessionSection(x);
        sections.set(x.schedule_id, sec);
        sessionsSlot.append(sec.el);
      }
      sec.update(x);
    }
  }

  function sessionSection(x) {
    const sched = rooms.get(x.schedule_id);
    const room = h('input', {
      name: 'room', testid: 'room', autocomplete: 'off', maxlength: '32', class: 'room-input',
      // this session's room as last used here, else the session's own, else the last room used
      value: localStorage.getItem(roomKey(x.schedule_id)) || (sched && sched.room) || localStorage.getItem('nonstop.room.last') || '',
    });
    const remember = () => {
      localStorage.setItem(roomKey(x.schedule_id), room.value.trim());
      if (room.value.trim()) localStorage.setItem('nonstop.room.last', room.value.trim());
    };
    room.addEventListener('change', remember);
    const sbox = errorBox('session-error');
    const counts = h('p', { class: 'muted', testid: 'session-counts' });
    const current = h('div', { class: 'current', testid: 'current-patient', 'aria-live': 'polite' });
    const tbody = h('tbody');
    const call = h('button', { type: 'submit', class: 'btn btn-primary btn-large', testid: 'call-next', dataset: { scheduleId: String(x.schedule_id) }, t: 'doctor.callNext' });
    const callForm = h('form', { class: 'call-form', novalidate: true }, field('doctor.room', room), call);
    const title = h('h2', { class: 'section-title' });
    const el = h('section', { class: 'doctor-session', testid: `doctor-session-${x.schedule_id}`, dataset: { scheduleId: String(x.schedule_id) } },
      h('div', { class: 'panel-head' }, title, counts),
      callForm,
      sbox.el,
      current,
      h('table', { class: 'table queue', testid: 'queue' },
        h('thead', null, h('tr', null,
          h('th', { scope: 'col', t: 'doctor.ticket' }), h('th', { scope: 'col', t: 'doctor.patient' }),
          h('th', { scope: 'col', t: 'common.status' }), h('th', { scope: 'col', t: 'doctor.paid' }),
          h('th', { scope: 'col', t: 'doctor.room' }), h('th', { scope: 'col', class: 'num', t: 'doctor.missed' }),
          h('th', { scope: 'col', t: 'common.actions' }))),
        tbody));

    callForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      sbox.clear();
      const r = room.value.trim();
      if (!r) {
        sbox.show('doctor.roomRequired');
        sbox.mark(room);
        room.focus();
        return;
      }
      remember();
      call.disabled = true;
      try {
        const entry = await api('POST', `/schedules/${x.schedule_id}/call-next`, { room: r });
        if (entry) notify('doctor.called', { name: entry.patient_name, room: entry.room || r }, { kind: 'success', testid: 'called-notice' });
        else notify('doctor.nobody', null, { testid: 'nobody-notice' });
      } catch (err) {
        sbox.show(err, callForm);
      } finally {
        call.disabled = false;
      }
      await load();
      call.focus();
    });

    async function act(entry, action, button) {
      sbox.clear();
      button.disabled = true;
      try {
        const after = await api('POST', `/tickets/${entry.ticket_id}/${action}`);
        notify('ticket.done', { name: after.patient_name, status: L(`ticket.status.${after.status}`) }, { kind: 'success', testid: 'ticket-notice' });
      } catch (err) {
        sbox.show(err);
        button.disabled = false;
      }
      await load();
    }

    function update(d) {
      setT(title, ['doctor.session', { department: d.department, period: L(`period.${d.period}`) }]);
      setT(counts, ['doctor.counts', { registered: d.registered, paid: d.paid, queue: d.queue_total }]);
      const now = d.queue.find((q) => q.status === 'in-service') || d.queue.find((q) => q.status === 'called');
      fill(current, h('span', { class: 'current-label', t: 'doctor.current' }), ' ',
        now
          ? [h('strong', { class: 'current-name', testid: 'current-name', text: now.patient_name }), ' ',
            h('span', { class: ['badge', `badge-${now.status}`] }, enumText('ticket.status', now.status)), ' ',
            h('span', { class: 'muted', text: now.room || '' })]
          : h('span', { class: 'muted', t: 'doctor.noCurrent' }));
      keepFocus(tbody, () => {
        tbody.replaceChildren();
        if (!d.queue.length) {
          tbody.append(h('tr', null, h('td', { colspan: '7', class: 'muted', t: 'doctor.queueEmpty' })));
          return;
        }
        for (const q of d.queue) {
          tbody.append(h('tr', {
            testid: `ticket-${q.ticket_id}`,
            class: [`row-${q.status}`, !q.paid && 'row-unpaid'],
            dataset: { status: q.status, ticketId: String(q.ticket_id), paid: String(q.paid) },
          },
          h('td', { text: String(q.ticket_id) }),
          h('td', null, h('strong', { text: q.patient_name }), h('br'), h('span', { class: 'small muted mono', text: q.id_number })),
          h('td', null, h('span', { class: ['badge', `badge-${q.status}`] }, enumText('ticket.status', q.status))),
          h('td', null, q.paid ? h('span', { class: 'ok', t: 'doctor.paidYes' }) : h('span', { class: 'badge badge-unpaid', t: 'doctor.unpaid' })),
          h('td', { text: q.room || '' }),
          h('td', { class: 'num', text: String(q.missed_calls) }),
          h('td', { class: 'actions' }, (ACTIONS[q.status] || []).map((a) => h('button', {
            type: 'button',
            class: ['btn', 'btn-small', a === 'start' || a === 'finish' ? 'btn-primary' : null],
            testid: `ticket-${a}`,
            dataset: { key: `${a}-${q.ticket_id}`, ticketId: String(q.ticket_id) },
            t: `ticket.${a}`,
            onclick: (e) => act(q, a, e.currentTarget),
          })))));
        }
      });
    }

    return { el, update };
  }

  if (practitionerId) load();
  timer = setInterval(load, 5000);
  cleanups.push(() => clearInterval(timer));
  return () => cleanups.forEach((f) => f());
}

// ---------------------------------------------------------------------------------------------
// Administration

/** The most sessions one screen shows (the server refuses more). */
const MAX_SCREEN_SESSIONS = 12;

function renderAdmin(main) {
  const box = errorBox('screen-error');
  const name = h('input', { name: 'name', testid: 'screen-name', autocomplete: 'off', maxlength: '64', tPlaceholder: 'screens.namePlaceholder', 'data-autofocus': true });
  const create = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'screen-create', t: 'screens.create' });
  const sessionsSlot = h('div', { class: 'checks', testid: 'screen-sessions' }, h('p', { class: 'muted', t: 'common.loading' }));
  const urlInput = h('input', { name: 'url', testid: 'screen-url', readonly: true, class: 'mono' });
  const copy = h('button', { type: 'button', class: 'btn', testid: 'screen-copy', t: 'screens.copy' });
  const open = h('a', { class: 'btn', testid: 'screen-open', target: '_blank', rel: 'noopener noreferrer', t: 'screens.open' });
  const urlStatus = h('p', { class: 'small', role: 'status', testid: 'screen-url-status' });
  const urlBlock = h('div', { class: 'stack', testid: 'screen-result', hidden: true },
    h('p', { class: 'success-box', testid: 'screen-created' }),
    field('screens.url', urlInput),
    h('div', { class: 'button-row' }, copy, open),
    urlStatus,
    h('p', { class: 'muted small', t: 'screens.secret' }));
  let screen = null;
  const listBox = errorBox('screens-list-error');
  const listSlot = h('div', { class: 'screens-list', testid: 'screens-list' }, h('p', { class: 'muted', t: 'common.loading' }));
  const listTitle = h('h2', { id: 'screens-list-title', class: 'section-title', tabindex: '-1', t: 'screens.listTitle' });

  const form = h('form', { class: 'stack', novalidate: true, testid: 'screen-form' },
    field('screens.name', name),
    h('fieldset', { class: 'plain' }, h('legend', { t: 'screens.sessions' }), sessionsSlot),
    box.el,
    create);

  const pages = ['desk', 'cashier', 'doctor', 'kiosk', 'audit'];
  main.append(h('div', { class: 'admin-grid' },
    h('section', { class: 'panel', 'aria-labelledby': 'admin-title' },
      h('h1', { id: 'admin-title', class: 'panel-title', t: 'admin.title' }),
      h('h2', { class: 'section-title', t: 'admin.pages' }),
      h('p', { class: 'muted small', t: 'admin.pagesHint' }),
      h('ul', { class: 'link-list big' },
        pages.map((p) => h('li', null, h('a', { href: `#/${p}`, testid: `admin-link-${p}`, t: `nav.${p}` }))),
        h('li', null, h('a', { href: '/screen.html', testid: 'admin-link-screen', target: '_blank', rel: 'noopener', t: 'admin.screenLink' })))),
    h('section', { class: 'panel', 'aria-labelledby': 'screens-title' },
      h('h2', { id: 'screens-title', class: 'panel-title', t: 'screens.title' }),
      h('p', { class: 'muted small', t: 'screens.hint' }),
      form,
      urlBlock,
      h('div', { class: 'panel-head' }, listTitle,
        h('button', { type: 'button', class: 'btn btn-small btn-quiet', testid: 'screens-refresh', t: 'common.refresh', onclick: () => loadScreens() })),
      listBox.el,
      listSlot)));

  // -- the screens there are: each may be revoked (its token stops at once; the TV says so)
  let listSeq = 0;
  async function loadScreens() {
    const mine = ++listSeq;
    try {
      const data = await api('GET', '/screens');
      if (mine !== listSeq) return;
      listBox.clear();
      keepFocus(listSlot, () => renderScreens(data.items));
    } catch (err) {
      if (mine !== listSeq) return;
      listSlot.replaceChildren();
      listBox.show(err);
    }
  }

  function renderScreens(items) {
    if (!items.length) {
      fill(listSlot, h('p', { class: 'muted', testid: 'screens-none', t: 'screens.none' }));
      return;
    }
    fill(listSlot, h('table', { class: 'table compact screens-table' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', t: 'screens.name' }), h('th', { scope: 'col', t: 'screens.createdCol' }),
        h('th', { scope: 'col', t: 'common.status' }), h('th', { scope: 'col', t: 'common.actions' }))),
      h('tbody', null, items.map((x) => {
        const revoked = typeof x.revoked_at === 'number';
        return h('tr', { testid: `screen-${x.id}`, class: revoked && 'row-revoked', dataset: { screenId: String(x.id), state: revoked ? 'revoked' : 'active' } },
          h('td', null, h('strong', { testid: 'screen-list-name', text: x.name })),
          h('td', { class: 'small' }, h('span', { text: dateTime(x.created_at) }), h('br'), h('span', { class: 'muted', text: x.created_by })),
          h('td', null, revoked
            ? [h('span', { class: 'badge badge-cancelled', t: 'screens.revokedBadge' }), h('br'), h('span', { class: 'small muted', text: dateTime(x.revoked_at) })]
            : h('span', { class: 'badge badge-active', t: 'screens.active' })),
          h('td', { class: 'actions' }, revoked ? null : h('button', {
            type: 'button', class: 'btn btn-small btn-danger', testid: 'screen-revoke', t: 'screens.revoke',
            dataset: { screenId: String(x.id), key: `revoke-${x.id}` },
            onclick: (e) => revoke(x, e.currentTarget),
          })));
      }))));
  }

  async function revoke(x, button) {
    const ok = await confirmDialog({
      titleKey: 'screens.revokeTitle',
      titleArgs: { name: x.name },
      body: h('p', { t: 'screens.revokeBody' }),
      okKey: 'screens.revoke',
      danger: true,
    });
    if (!ok) {
      if (button.isConnected) button.focus();
      return;
    }
    listBox.clear();
    button.disabled = true;
    try {
      await api('DELETE', `/screens/${x.id}`);
      notify('screens.revoked', { name: x.name }, { kind: 'success', testid: 'screen-revoked' });
      if (screen && screen.id === x.id) {
        // its address no longer works: not to be copied onto a TV now
        screen = null;
        urlBlock.hidden = true;
        urlInput.value = '';
        open.removeAttribute('href');
      }
    } catch (err) {
      listBox.show(err);
    }
    await loadScreens();
    listTitle.focus();
  }

  function chosen() {
    return [...sessionsSlot.querySelectorAll('input[type="checkbox"]:checked')].map((c) => c.value);
  }

  function updateUrl() {
    if (!screen) return;
    const ids = chosen();
    const url = `${location.origin}/screen.html#token=${encodeURIComponent(screen.token)}&schedules=${ids.join(',')}`;
    urlInput.value = url;
    open.href = url;
    urlStatus.textContent = '';
    delete urlStatus.dataset.i18n;
    if (!ids.length) setT(urlStatus, 'screens.needSession');
    else if (ids.length > MAX_SCREEN_SESSIONS) setT(urlStatus, ['screens.tooMany', { n: MAX_SCREEN_SESSIONS }]);
  }

  sessionsSlot.addEventListener('change', updateUrl);

  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(urlInput.value);
    } catch {
      urlInput.select();
      document.execCommand('copy');
    }
    setT(urlStatus, 'screens.copied');
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    box.clear();
    if (!name.value.trim()) {
      box.show('common.required');
      box.mark(name);
      name.focus();
      return;
    }
    if (chosen().length > MAX_SCREEN_SESSIONS) {
      box.show(['screens.tooMany', { n: MAX_SCREEN_SESSIONS }]);
      return;
    }
    if (!chosen().length) {
      box.show('screens.needSession');
      const first = sessionsSlot.querySelector('input');
      if (first) first.focus();
      return;
    }
    create.disabled = true;
    try {
      screen = await api('POST', '/screens', { name: name.value.trim() });
      setT(urlBlock.querySelector('[data-testid="screen-created"]'), ['screens.created', { name: screen.name }]);
      urlBlock.hidden = false;
      updateUrl();
      urlInput.focus();
      urlInput.select();
      loadScreens();
    } catch (err) {
      box.show(err, form);
    } finally {
      create.disabled = false;
    }
  });

  api('GET', `/schedules${query({ date: today() })}`).then((data) => {
    sessionsSlot.replaceChildren();
    if (!data.items.length) {
      sessionsSlot.append(h('p', { class: 'muted', t: 'screens.noSessions' }));
      return;
    }
    for (const x of data.items) {
      const id = `screen-session-${x.id}`;
      sessionsSlot.append(h('label', { class: ['check', x.status !== 'active' && 'inactive'], for: id },
        h('input', { type: 'checkbox', id, value: String(x.id), testid: id }),
        h('span', null, h('span', { text: x.department }), ' · ', h('strong', { text: x.practitioner }), ' · ', enumText('period', x.period),
          x.room ? ` · ${x.room}` : '', x.status !== 'active' ? [' · ', enumText('session.status', x.status)] : null)));
    }
  }).catch((err) => {
    sessionsSlot.replaceChildren();
    box.show(err);
  });
  loadScreens();
  return null;
}

// ---------------------------------------------------------------------------------------------
// Read audit (访问审计): who saw which patient's data, when, by which read and from where. For an
// auditor, whose only page it is, and an administrator. Newest first, a page at a time.

const READ_AUDIT_PAGE = 50;

function renderReadAudit(main) {
  const box = errorBox('read-audit-error');
  const patient = h('input', { name: 'patient_id', testid: 'read-audit-patient', inputmode: 'numeric', autocomplete: 'off', 'data-autofocus': true });
  const staff = h('input', { name: 'staff', testid: 'read-audit-staff', autocomplete: 'off', tPlaceholder: 'readAudit.staffPlaceholder' });
  const since = h('input', { type: 'datetime-local', name: 'since', testid: 'read-audit-since', step: '1' });
  const until = h('input', { type: 'datetime-local', name: 'until', testid: 'read-audit-until', step: '1' });
  const search = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'read-audit-search', t: 'readAudit.search' });
  const more = h('button', { type: 'button', class: 'btn', testid: 'read-audit-more', t: 'readAudit.more', hidden: true });
  const slot = h('div', { class: 'read-audit-list', testid: 'read-audit-entries' }, h('p', { class: 'muted', t: 'common.loading' }));
  const form = h('form', { class: 'read-audit-filters', testid: 'read-audit-form', novalidate: true },
    field('readAudit.patient', patient), field('readAudit.staff', staff),
    field('readAudit.since', since), field('readAudit.until', until),
    h('div', { class: 'button-row' }, search));
  main.append(h('section', { class: 'panel', testid: 'read-audit', 'aria-labelledby': 'read-audit-title' },
    h('h1', { id: 'read-audit-title', class: 'panel-title', t: 'readAudit.title' }),
    h('p', { class: 'muted small', t: 'readAudit.hint' }),
    form, box.el, slot, h('div', { class: 'button-row' }, more)));

  let filters = {};
  let entries = [];
  let next = null;
  let seq = 0;
  const ms = (input) => {
    const v = input.value ? new Date(input.value).getTime() : NaN;
    return Number.isFinite(v) ? v : undefined;
  };

  // aria-busy says the list is being replaced: assistive technology waits for it, and so does
  // anyone who must tell the previous search's rows from this one's.
  async function load(further) {
    const mine = ++seq;
    slot.setAttribute('aria-busy', 'true');
    try {
      const page = await api('GET', `/read-audit${query({ ...filters, limit: READ_AUDIT_PAGE, after: further ? next : undefined })}`);
      if (mine !== seq) return;
      entries = further ? entries.concat(page.items) : page.items;
      next = page.next;
      more.hidden = next == null;
      render();
    } catch (err) {
      if (mine !== seq) return;
      box.show(err, form);
    } finally {
      if (mine === seq) slot.setAttribute('aria-busy', 'false');
    }
  }

  function render() {
    if (!entries.length) {
      fill(slot, h('p', { class: 'muted', testid: 'read-audit-none', t: 'readAudit.none' }));
      return;
    }
    fill(slot, h('table', { class: 'table compact' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', t: 'readAudit.at' }), h('th', { scope: 'col', t: 'readAudit.who' }),
        h('th', { scope: 'col', t: 'readAudit.kind' }), h('th', { scope: 'col', class: 'num', t: 'readAudit.patientCol' }),
        h('th', { scope: 'col', t: 'readAudit.client' }))),
      h('tbody', null, entries.map((e) => h('tr', { testid: 'read-audit-entry', dataset: { patientId: String(e.patient_id), username: e.username, kind: e.kind } },
        h('td', { class: 'small', text: dateTime(e.at) }),
        h('td', null, h('strong', { text: e.username }), ' ', h('span', { class: 'muted small' }, enumText('role', e.role))),
        h('td', null, enumText('readAudit.kind', e.kind), e.target == null ? null : h('span', { class: 'muted small', text: ` #${e.target}` })),
        h('td', { class: 'num', text: String(e.patient_id) }),
        h('td', { class: 'mono small', text: e.client }))))));
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    box.clear();
    const id = patient.value.trim();
    if (id && !/^\d+$/.test(id)) {
      box.show('readAudit.badPatient');
      box.mark(patient);
      patient.focus();
      return;
    }
    filters = { patient_id: id, staff: staff.value.trim(), since: ms(since), until: ms(until) };
    load(false);
  });
  more.addEventListener('click', () => load(true));
  load(false);
  return null;
}

// ---------------------------------------------------------------------------------------------
// Kiosk (自助机)

function renderKiosk(main) {
  const cleanups = [];
  const box = errorBox('kiosk-error');
  const invoiceInput = h('input', { name: 'invoice_id', testid: 'kiosk-invoice', inputmode: 'numeric', autocomplete: 'off', class: 'big-input', 'data-autofocus': true });
  const patientInput = h('input', { name: 'patient_id', testid: 'kiosk-patient', inputmode: 'numeric', autocomplete: 'off', class: 'big-input' });
  const lookup = h('button', { type: 'submit', class: 'btn btn-primary btn-large', testid: 'kiosk-lookup', t: 'kiosk.lookup' });
  const detail = h('div', { class: 'kiosk-detail', testid: 'kiosk-detail', 'aria-live': 'polite' });
  let idle = null;
  let current = null;

  const form = h('form', { class: 'stack', novalidate: true, testid: 'kiosk-form' },
    h('div', { class: 'kiosk-fields' }, field('kiosk.invoice', invoiceInput), field('kiosk.patient', patientInput)),
    box.el,
    lookup);
  main.append(h('section', { class: 'panel kiosk', 'aria-labelledby': 'kiosk-title' },
    h('h1', { id: 'kiosk-title', class: 'kiosk-title', t: 'kiosk.title' }),
    h('p', { class: 'muted', t: 'kiosk.hint' }),
    form,
    detail));

  // a changed number makes the shown invoice stale
  for (const input of [invoiceInput, patientInput]) {
    input.addEventListener('input', () => {
      if (current) {
        current = null;
        detail.replaceChildren();
      }
    });
  }

  function number(input) {
    const v = input.value.trim();
    return /^\d{1,15}$/.test(v) ? Number(v) : null;
  }

  function reset() {
    clearTimeout(idle);
    current = null;
    form.reset();
    box.clear();
    detail.replaceChildren();
    form.hidden = false;
    invoiceInput.focus();
  }

  /** After a payment, or when walked away from, the kiosk returns to its first screen. */
  function armIdle(ms) {
    clearTimeout(idle);
    idle = setTimeout(reset, ms);
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    box.clear();
    detail.replaceChildren();
    const invoiceId = number(invoiceInput);
    const patientId = number(patientInput);
    for (const [input, v] of [[invoiceInput, invoiceId], [patientInput, patientId]]) {
      if (v === null) {
        box.show('kiosk.invalidNumber');
        box.mark(input);
        input.focus();
        return;
      }
    }
    lookup.disabled = true;
    try {
      const inv = await api('GET', `/invoices/${invoiceId}`);
      if (inv.patient_id !== patientId) {
        box.show('kiosk.mismatch');
        box.mark(patientInput);
        patientInput.focus();
        return;
      }
      current = { inv, patientId };
      await showInvoice();
      armIdle(120000);
    } catch (err) {
      box.show(err, form);
      if (err.status === 404) {
        box.mark(invoiceInput);
        invoiceInput.focus();
      }
    } finally {
      lookup.disabled = false;
    }
  });

  async function showInvoice() {
    const { inv, patientId } = current;
    const head = h('h2', { class: 'section-title', t: ['invoice.title', { id: inv.id }] });
    if (inv.status !== 'issued') {
      fill(detail, head, h('p', { class: 'info-box big-text', testid: 'kiosk-status', t: inv.status === 'balanced' ? 'kiosk.alreadyPaid' : 'kiosk.cancelled' }),
        h('button', { type: 'button', class: 'btn btn-large', testid: 'kiosk-next', t: 'kiosk.next', onclick: reset }));
      return;
    }
    const splitSlot = h('div', { testid: 'kiosk-split' }, h('p', { class: 'muted', t: 'common.loading' }));
    const pbox = errorBox('kiosk-pay-error');
    const pay = h('button', { type: 'button', class: 'btn btn-primary btn-huge', testid: 'kiosk-pay', t: ['kiosk.pay', { amount: yuan(inv.total_fen) }] });
    fill(detail, head, splitSlot, pbox.el, pay);
    pay.addEventListener('click', async () => {
      pbox.clear();
      pay.disabled = true;
      try {
        const payment = await sendWithKey('kiosk', inv.id, 'self-service', '/payments', { invoice_id: inv.id, patient_id: patientId, method: 'self-service' });
        form.hidden = true;
        const next = h('button', { type: 'button', class: 'btn btn-primary btn-huge', testid: 'kiosk-next', t: 'kiosk.next', onclick: reset });
        fill(detail, h('div', { class: 'success-box big-text', testid: 'kiosk-result', dataset: { paymentId: String(payment.id) } },
          h('p', { t: 'kiosk.done' }),
          h('p', null, tx('split.self'), ' ', h('strong', { text: yuan(payment.self_pay_fen) }), ' · ', tx('split.fund'), ' ', h('strong', { text: yuan(payment.fund_fen) }))),
        next);
        next.focus();
        armIdle(30000);
      } catch (err) {
        pbox.show(err, null, err.uncertain ? h('p', { t: 'pay.uncertain' }) : null);
        pay.disabled = false;
      }
    });
    pay.focus();
    try {
      const q = await api('POST', '/payments/quote', { invoice_id: inv.id, patient_id: patientId });
      fill(splitSlot, chargeTable(q.lines || [], { amount: q.total_fen, fund: q.fund_fen, self: q.self_pay_fen }, { split: true, testid: 'kiosk-lines' }),
        h('p', { class: 'big-text' }, tx('split.self'), ' ', h('strong', { testid: 'kiosk-self-pay', text: yuan(q.self_pay_fen) })));
      setT(pay, ['kiosk.pay', { amount: yuan(q.self_pay_fen) }]);
    } catch (e) {
      fill(splitSlot, chargeTable(inv.lines || [], { amount: inv.total_fen }, { testid: 'kiosk-lines' }),
        h('p', { class: 'warn-box', testid: 'split-unavailable', t: ['split.unavailable', { message: e.missingEndpoint ? L('error.missingEndpoint') : e.message }] }));
      setT(pay, ['kiosk.pay', { amount: '' }]);
    }
  }

  cleanups.push(() => clearTimeout(idle));
  return () => cleanups.forEach((f) => f());
}

// ---------------------------------------------------------------------------------------------
// Start

window.addEventListener('hashchange', () => route());
route();
