// The hospital's pages in Debian's Chromium, against a node the Rust test
// `crates/node/tests/it/browser.rs` started (it passes the node's address, an administrator's
// token, a session, a screen token and the fees 2.0.0 bundle in the environment).
//
// One visit end to end, each person on their own page: the clerk registers a new patient, the
// cashier takes payment, the clerk checks them in, the doctor sees them paid and calls them, and
// the waiting-room screen shows the call without a reload. Meanwhile an operator uploads fees
// 2.0.0 in the update server's console and rolls it out while the clerk types the next patient,
// whose fee then follows the new rule: no page error and no failed request anywhere.
// Screenshots of every page at 1366x768 go to SCREENSHOTS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const BASE = env.BASE_URL;
const SCHEDULE = env.SCHEDULE_ID;
const SHOTS = env.SCREENSHOTS;

let browser;
/** Every page's troubles: uncaught errors, console errors, failed or refused requests. */
const troubles = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // This machine has no network beyond loopback: Chromium's own background traffic is off.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
});

/** A page in a context of its own (its own sessionStorage: one person each), watched. */
async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'zh-CN' });
  const page = await context.newPage();
  page.on('pageerror', (e) => troubles.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') troubles.push(`${name}: console error: ${m.text()}`);
  });
  page.on('requestfailed', (r) => {
    // An EventSource closed by the page's own navigation or close is not a failure.
    if (!r.url().includes('/board/events')) troubles.push(`${name}: request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) troubles.push(`${name}: ${r.status()} from ${r.request().method()} ${r.url()}`);
  });
  return page;
}

const id = (testid) => `[data-testid="${testid}"]`;

async function signIn(page, username, route) {
  await page.goto(`${BASE}/`);
  await page.fill(id('login-username'), username);
  await page.fill(id('login-password'), `${username}-password-1`);
  await page.click(id('login-submit'));
  await page.waitForURL(`**/#/${route}`);
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

/** A valid resident ID number (GB 11643) for someone born on 1958-03-15, number `seq`. */
function idNumber(seq) {
  const body = `11010519580315${String(seq).padStart(3, '0')}`;
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((s, c, i) => s + Number(c) * weights[i], 0);
  return body + '10X98765432'[sum % 11];
}

/** The clerk registers a walk-in by keyboard: name, ID number, phone, Enter. */
async function newPatient(desk, name, seq) {
  await desk.click(id('new-patient-toggle'));
  await desk.fill(id('new-patient-name'), name);
  await desk.fill(id('new-patient-id-number'), idNumber(seq));
  await desk.fill(id('new-patient-phone'), `1390000${String(seq).padStart(4, '0')}`);
  await desk.press(id('new-patient-phone'), 'Enter');
  await desk.waitForSelector(id('selected-patient'));
}

/** The clerk picks the session; returns the quoted fee (fen) and the rule that priced it. */
async function quote(desk) {
  await desk.click(id(`session-${SCHEDULE}`));
  const total = desk.locator(id('quote-total'));
  await total.waitFor();
  return {
    fen: Number(await total.getAttribute('data-fen')),
    rule: await desk.locator(id('quote-rule')).getAttribute('title'),
  };
}

async function register(desk) {
  await desk.click(id('register'));
  const result = desk.locator(id('registration-result'));
  await result.waitFor();
  return {
    registration: await result.getAttribute('data-registration-id'),
    invoice: await result.getAttribute('data-invoice-id'),
  };
}

async function api(method, route, body, headers = {}) {
  const resp = await fetch(`${BASE}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${env.ADMIN_TOKEN}`, ...headers },
    body,
  });
  const text = await resp.text();
  assert.ok(resp.ok, `${method} ${route}: ${resp.status} ${text}`);
  return JSON.parse(text);
}

test('a visit from the desk to the doctor, the screen told at once, and a fee update arriving meanwhile', async () => {
  const desk = await person('clerk');
  await signIn(desk, 'clerk', 'desk');
  await shot(desk, 'desk');

  await newPatient(desk, '钱一', 1);
  const first = await quote(desk);
  assert.match(first.rule, /^fees 1\.0\.0 /);
  const visit = await register(desk);
  await shot(desk, 'desk-registered');

  // The cashier finds the patient and takes payment.
  const cashier = await person('cashier');
  await signIn(cashier, 'cashier', 'cashier');
  await cashier.fill(id('patient-search'), '钱一');
  await cashier.press(id('patient-search'), 'Enter');
  await cashier.waitForSelector(id(`invoice-${visit.invoice}`));
  await cashier.click(id('method-wechat'));
  await cashier.click(id('pay'));
  await cashier.waitForSelector(id('pay-result'));
  await shot(cashier, 'cashier');

  // The clerk checks them in.
  const row = desk.locator(`${id(`visit-${visit.registration}`)}`);
  await row.locator(id('check-in')).click();
  await desk.waitForSelector(id('check-in-result'));

  // The waiting-room screen, opened once.
  const screen = await person('screen');
  let loads = 0;
  screen.on('load', () => { loads += 1; });
  await screen.goto(`${BASE}/screen.html#token=${env.SCREEN_TOKEN}&schedules=${SCHEDULE}`);
  await screen.waitForSelector(`${id('screen-connection')}[data-state="live"]`);

  // The doctor sees the patient as paid, and calls them.
  const doctor = await person('doctor');
  await signIn(doctor, 'doctor', 'doctor');
  const ticket = doctor.locator(`${id('doctor-session-' + SCHEDULE)} [data-testid^="ticket-"][data-paid="true"]`);
  await ticket.first().waitFor();
  await doctor.locator(`${id('doctor-session-' + SCHEDULE)} ${id('room')}`).fill('诊室3');
  await doctor.locator(`${id('doctor-session-' + SCHEDULE)} ${id('call-next')}`).click();
  await doctor.waitForSelector(`${id('current-name')}:has-text("钱一")`);
  await shot(doctor, 'doctor');

  // The screen shows the call by itself: no reload.
  await screen.waitForSelector(`${id('screen-latest-patient')}:has-text("钱**")`, { timeout: 10_000 });
  assert.equal(await screen.locator(id('screen-latest-room')).innerText(), '诊室3');
  assert.equal(loads, 1, 'the screen reloaded');
  await shot(screen, 'screen');

  // An operator, on the update server's console, uploads fees 2.0.0 and rolls it out, while
  // the clerk types the next patient.
  const operator = await person('operator');
  await operator.goto(`${env.SERVER_URL}/`);
  await operator.fill(id('login-username'), 'admin');
  await operator.fill(id('login-password'), env.SERVER_PASSWORD);
  await operator.click(id('login-submit'));
  await operator.waitForSelector(`${id('node-hospital-1-connected')}[data-state="connected"]`);
  await shot(operator, 'console-fleet');
  await operator.click(id('nav-releases'));
  await operator.setInputFiles(id('upload-file'), env.FEES_BUNDLE);
  await operator.click(id('upload-submit'));
  await operator.click(id('upload-success-link'));
  await operator.waitForSelector(id('release-checks'));
  await shot(operator, 'console-release');
  await operator.click(id('rollout-target-all'));
  await operator.fill(id('rollout-waves'), '1');
  await operator.click(id('rollout-start'));
  await operator.click(id('confirm-ok'));
  await desk.click(id('next-patient'));
  await newPatient(desk, '钱二', 2);
  const target = id('target-hospital-1');
  await operator.waitForSelector(
    `${target}[data-state="live"], ${target}[data-state="healthy"]`,
    { timeout: 60_000 },
  );
  await shot(operator, 'console-rollout');
  // The next patient's fee follows the new rule, quoted and charged alike.
  const second = await quote(desk);
  assert.match(second.rule, /^fees 2\.0\.0 /);
  const next = await register(desk);
  const invoice = await api('GET', `/invoices/${next.invoice}`);
  assert.equal(invoice.total_fen, second.fen);
  // And the desk was told, without losing anything it was doing.
  await desk.waitForSelector(`${id('rule-fees')}[data-version="2.0.0"]`, { timeout: 20_000 });
  await shot(desk, 'desk-after-update');

  // The rollout ends healthy once the node's watch window closes.
  await operator.waitForSelector(`${id('rollout-state')}[data-state="completed"]`, { timeout: 60_000 });
  await operator.click(id('nav-audit'));
  await operator.waitForSelector(`${id('audit-verify')}[data-state="verified"]`);
  await shot(operator, 'console-audit');

  assert.deepEqual(troubles, [], troubles.join('\n'));
  for (const page of [desk, cashier, screen, doctor, operator]) await page.context().close();
});

test('each role reaches its own page only', async () => {
  const desk = await person('clerk');
  await signIn(desk, 'clerk', 'desk');
  await desk.goto(`${BASE}/#/cashier`);
  await desk.waitForSelector(id('not-for-role'));
  const doctor = await person('doctor');
  await signIn(doctor, 'doctor', 'doctor');
  await doctor.goto(`${BASE}/#/desk`);
  await doctor.waitForSelector(id('not-for-role'));
  const kiosk = await person('kiosk');
  await signIn(kiosk, 'kiosk', 'kiosk');
  await shot(kiosk, 'kiosk');
  await kiosk.goto(`${BASE}/#/doctor`);
  await kiosk.waitForSelector(id('not-for-role'));
  for (const page of [desk, doctor, kiosk]) await page.context().close();
});

test('a bad bundle uploaded in the console shows the server\'s reason', async () => {
  const operator = await person('operator-bad-bundle');
  await operator.goto(`${env.SERVER_URL}/`);
  await operator.fill(id('login-username'), 'admin');
  await operator.fill(id('login-password'), env.SERVER_PASSWORD);
  await operator.click(id('login-submit'));
  await operator.click(id('nav-releases'));
  const bundle = await readFile(env.FEES_BUNDLE);
  bundle[bundle.length - 10] ^= 0xff; // one byte of the payload changed: the digest no longer matches
  await operator.setInputFiles(id('upload-file'), { name: 'tampered.nsb', mimeType: 'application/octet-stream', buffer: bundle });
  await operator.click(id('upload-submit'));
  const error = operator.locator(id('upload-error'));
  await error.waitFor();
  const text = await error.innerText();
  assert.match(text, /digest|signature|tamper|refus/i, text);
  await operator.context().close();
});
