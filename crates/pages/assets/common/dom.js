// What the hospital's pages (hospital/) and the update server's console (console/) share:
// the i18n machinery, the DOM helpers, date formatting, the API wrapper, error boxes, notices
// and the confirm dialog. Served at /dom.js by both the node and the update server; a plain ES
// module with no dependencies. Each page's own i18n.js holds its strings and registers them
// with useStrings(), so h() and friends translate with that page's table.
//
// Data from a server is only ever put into the page as text (textContent), never as HTML.

// ---------------------------------------------------------------------------------------------
// Languages: the strings are the page's; the choice (zh or en) is kept in localStorage, so it
// survives a reload and a sign-out, and is shared by every page of the origin.

const STORAGE_KEY = 'nonstop.lang';

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

let current = stored() === 'en' ? 'en' : 'zh';
let STRINGS = { zh: {}, en: {} };

/** Registers the page's strings ({zh: {...}, en: {...}}); its i18n.js calls this once. */
export function useStrings(strings) {
  STRINGS = strings;
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
}

/** The current language: "zh" or "en". */
export function getLang() {
  return current;
}

/** Switches the language and remembers the choice. */
export function setLang(lang) {
  current = lang === 'en' ? 'en' : 'zh';
  try {
    localStorage.setItem(STORAGE_KEY, current);
  } catch {
    // private mode: the choice lasts this page only
  }
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
}

/** Whether a key is known. */
export function has(key) {
  return key in STRINGS.zh;
}

/** The text of `key` in the current language, "{name}" replaced by `args.name`. */
export function t(key, args) {
  const text = STRINGS[current][key] ?? STRINGS.zh[key] ?? key;
  if (!args) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in args ? String(args[name]) : whole));
}

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** An argument that is itself translated (so it follows a language switch too). */
export function L(key) {
  return { $t: key };
}

/** Translates `key` with arguments, resolving arguments made by L(). */
export function tr(key, args) {
  if (!args) return t(key);
  const resolved = {};
  for (const [k, v] of Object.entries(args)) resolved[k] = v && typeof v === 'object' && v.$t ? t(v.$t) : v;
  return t(key, resolved);
}

/** Sets an element's text from a string key (and arguments), remembered for a language switch. */
export function setT(el, spec) {
  const [key, args] = Array.isArray(spec) ? spec : [spec, undefined];
  el.dataset.i18n = key;
  if (args) el.dataset.i18nArgs = JSON.stringify(args);
  else delete el.dataset.i18nArgs;
  el.textContent = tr(key, args);
}

const BOOLEAN_ATTRS = new Set(['disabled', 'hidden', 'checked', 'required', 'selected', 'readonly', 'multiple', 'open']);

/**
 * Builds an element. props: class, text, t (i18n key or [key, args]), tPlaceholder, tLabel
 * (aria-label), tTitle, testid, on<event> (listeners), value, dataset, and any attribute.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 't') setT(el, v);
      else if (k === 'tPlaceholder') {
        el.dataset.i18nPlaceholder = v;
        el.placeholder = t(v);
      } else if (k === 'tLabel') {
        el.dataset.i18nLabel = v;
        el.setAttribute('aria-label', t(v));
      } else if (k === 'tTitle') {
        el.dataset.i18nTitle = v;
        el.title = t(v);
      } else if (k === 'testid') el.setAttribute('data-testid', v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else if (BOOLEAN_ATTRS.has(k)) {
        if (v) el.setAttribute(k, '');
      } else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A span whose text follows the language. */
export function tx(key, args) {
  return h('span', { t: args ? [key, args] : key });
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Re-translates every element under `root` that carries an i18n key. */
export function applyI18n(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) {
    const args = el.dataset.i18nArgs ? JSON.parse(el.dataset.i18nArgs) : undefined;
    el.textContent = tr(el.dataset.i18n, args);
  }
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
}

let idCounter = 0;
export function uid(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form control: label above the control, hint and error slot below. */
export function field(labelKey, control, { hint, optional } = {}) {
  if (!control.id) control.id = uid('f');
  const label = h('label', { for: control.id }, tx(labelKey), optional ? tx('common.optional') : null);
  const wrap = h('div', { class: 'field' }, label, control);
  if (hint) {
    if (!hint.id) hint.id = uid('hint');
    control.setAttribute('aria-describedby', hint.id);
    wrap.append(hint);
  }
  return wrap;
}

/** Keeps keyboard focus on "the same" element across a re-render (matched by data-key). */
export function keepFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : null;
  render();
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again && !again.disabled) again.focus();
  }
}

/** A key for an enum value, falling back to the raw value when it is not translated. */
export function enumText(prefix, value) {
  const key = `${prefix}.${value}`;
  return has(key) ? tx(key) : h('span', { text: value ?? '—' });
}

// ---------------------------------------------------------------------------------------------
// Formatting

export function p2(n) {
  return String(n).padStart(2, '0');
}

export function clockSeconds(ms) {
  const d = new Date(ms);
  return `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

export function dateTime(ms) {
  if (typeof ms !== 'number') return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${clockSeconds(ms)}`;
}

// ---------------------------------------------------------------------------------------------
// The API

/**
 * An API failure. The servers answer {"error": {"code", "field", "message"}}; a bare
 * {"code", "field", "message"} at the top level is read too. status 0: the network failed.
 * A page whose server marks a missing endpoint differently overrides `missingEndpoint`.
 */
export class ApiError extends Error {
  constructor(status, body) {
    const e = body && typeof body === 'object' ? (body.error && typeof body.error === 'object' ? body.error : body) : null;
    const message = e && typeof e.message === 'string' ? e.message : null;
    super(message || (status === 0 ? t('error.network') : `HTTP ${status}`));
    this.status = status;
    this.code = e && e.code ? e.code : status === 0 ? 'network' : 'http';
    this.field = e ? e.field || null : null;
    this.existingId = e ? e.existing_id : undefined;
  }

  /** The server has no such endpoint (yet). */
  get missingEndpoint() {
    return this.status === 405 || (this.status === 404 && this.code === 'http');
  }

  /** A network failure or a server error: the outcome of a write is unknown. */
  get uncertain() {
    return this.status === 0 || this.status >= 500;
  }
}

/**
 * Makes the page's API caller: `api(method, path, body, { quiet401 })` on /api/v1. body: a JS
 * value (sent as JSON) or a Blob/File (sent as raw bytes). token(): the bearer token or null;
 * onUnauthorized(): called on a 401 (except from /sessions, or with quiet401); Error: the
 * ApiError (sub)class thrown.
 */
export function apiClient({ token, onUnauthorized, Error: Failure = ApiError }) {
  return async function api(method, path, body, { quiet401 = false } = {}) {
    const headers = { Accept: 'application/json' };
    let payload;
    if (body instanceof Blob) {
      headers['Content-Type'] = 'application/octet-stream';
      payload = body;
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const bearer = token();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    let res;
    try {
      res = await fetch(`/api/v1${path}`, { method, headers, body: payload, cache: 'no-store', credentials: 'omit' });
    } catch {
      throw new Failure(0, null);
    }
    const text = await res.text().catch(() => '');
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = new Failure(res.status, data);
      if (res.status === 401 && path !== '/sessions' && !quiet401) onUnauthorized();
      throw err;
    }
    return res.status === 204 ? null : data;
  };
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * An error box (role=alert) that shows an API error and marks the field at fault in `form`.
 * show(err): an ApiError, an i18n key, or a [key, args] pair. big: the unmissable kind.
 */
export function errorBox(testid, { big = false } = {}) {
  const el = h('div', { class: ['error-box', big ? 'error-big' : null], role: 'alert', testid, hidden: true });
  let marked = [];
  const clear = () => {
    el.hidden = true;
    el.replaceChildren();
    delete el.dataset.code;
    delete el.dataset.status;
    for (const c of marked) {
      c.removeAttribute('aria-invalid');
      c.classList.remove('invalid');
    }
    marked = [];
  };
  const show = (err, form, extra) => {
    clear();
    let headline = null;
    if (err instanceof ApiError) {
      el.dataset.code = err.code;
      el.dataset.status = String(err.status);
      if (err.missingEndpoint) headline = tx('error.missingEndpoint');
      else if (err.code === 'network') headline = null;
      else if (has(`error.code.${err.code}`)) headline = tx(`error.code.${err.code}`);
    }
    // an i18n key, a [key, args] pair, or an error whose message the server wrote
    const message = typeof err === 'string' ? tx(err) : Array.isArray(err) ? tx(err[0], err[1]) : h('span', { class: 'error-message', testid: `${testid}-message`, text: err.message });
    append(el, [headline ? h('strong', null, headline, t('common.colon')) : null, message, extra || null]);
    el.hidden = false;
    const fieldName = err instanceof ApiError ? err.field : null;
    if (form && fieldName) {
      const control = form.querySelector(`[name="${CSS.escape(fieldName)}"]`);
      if (control) {
        control.setAttribute('aria-invalid', 'true');
        control.classList.add('invalid');
        marked.push(control);
        control.focus();
      }
    }
  };
  const mark = (control) => {
    control.setAttribute('aria-invalid', 'true');
    control.classList.add('invalid');
    marked.push(control);
  };
  return { el, show, clear, mark };
}

// ---------------------------------------------------------------------------------------------
// Notices: non-blocking, announced politely, never taking focus.

export function notify(key, args, { kind = 'info', sticky = false, testid = 'notice' } = {}) {
  const region = document.getElementById('notices');
  if (!region) return;
  const item = h('div', { class: ['notice', `notice-${kind}`], testid },
    h('span', { class: 'notice-text', t: args ? [key, args] : key }),
    h('button', {
      type: 'button',
      class: 'notice-close',
      tLabel: 'notice.dismiss',
      text: '×',
      onclick: () => item.remove(),
    }));
  region.append(item);
  while (region.children.length > 5) region.firstElementChild.remove();
  if (!sticky) setTimeout(() => item.remove(), 8000);
}

/** A modal confirmation; resolves true when confirmed. */
export function confirmDialog({ titleKey, titleArgs, body, okKey = 'common.confirm', danger = false, validate }) {
  return new Promise((resolve) => {
    const box = errorBox('confirm-error');
    const ok = h('button', { type: 'submit', class: ['btn', danger ? 'btn-danger' : 'btn-primary'], testid: 'confirm-ok', t: okKey });
    const cancel = h('button', { type: 'button', class: 'btn', testid: 'confirm-cancel', t: 'common.cancel' });
    const form = h('form', { method: 'dialog', class: 'stack', novalidate: true },
      h('h2', { t: titleArgs ? [titleKey, titleArgs] : titleKey }), body, box.el,
      h('div', { class: 'button-row' }, ok, cancel));
    const dialog = h('dialog', { class: 'dialog', testid: 'confirm-dialog' }, form);
    let result = false;
    form.addEventListener('submit', (e) => {
      if (validate) {
        const problem = validate();
        if (problem) {
          e.preventDefault();
          box.show(problem.key);
          if (problem.control) {
            box.mark(problem.control);
            problem.control.focus();
          }
          return;
        }
      }
      result = true;
    });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    const first = dialog.querySelector('input, textarea, select');
    (first || ok).focus();
  });
}

// ---------------------------------------------------------------------------------------------
// The certificate line of a sign-in page: whether the connection is encrypted, and the
// fingerprint of the certificate the server says it serves, to compare with the one it printed
// at start (and the browser's own certificate viewer) before typing a password.

/** A line that fills itself from GET /api/v1/certificate (strings cert.tls and cert.plain). */
export function certificateLine() {
  const el = h('p', { class: 'muted small certificate', testid: 'login-certificate' });
  fetch('/api/v1/certificate')
    .then((r) => (r.ok ? r.json() : null))
    .then((c) => {
      if (!c) return;
      el.dataset.tls = String(!!c.tls);
      if (c.tls && c.fingerprint) {
        fill(el, tx('cert.tls'), ' ', h('code', { class: 'fingerprint', testid: 'login-fingerprint', text: c.fingerprint }));
      } else {
        fill(el, tx('cert.plain'));
      }
    })
    .catch(() => {});
  return el;
}
