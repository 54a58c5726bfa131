// The hospital's pages in Debian's Chromium, against a node the Rust test
// `crates/node/tests/it/browser.rs` started (it passes the node's address, an administrator's
// token, a session, a screen token and the fees 2.0.0 bundle in the environment).
//
// One visit end to end, each person on their own page: the clerk registers a new patient, the
// cashier takes payment, the clerk checks them in, the doctor sees them paid and calls them, and
// the waiting-room screen shows the call without a reload. Meanwhile an operator uploads fees
// 2.0.0 in the update server's console and rolls it out while the clerk types the next patient,
// whose fee then follows the new rule: no page error and no failed request anywhere. On the
// way the clerk corrects a phone number and checks the patient in with a triage priority.
// Then an administrator reads a patient's corrections and revokes a waiting-room screen.
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
async function person(name, viewport = { width: 1366, height: 768 }) {
  // A computer set to another time zone than the hospital's (UTC+8 by the node's policy): the
  // pages keep the hospital's day and times (`GET /today`). When they took today from the
  // browser's clock, a desk in UTC showed yesterday's sessions from 16:00 to midnight; in
  // UTC-11 the two days differ for 19 hours of every 24.
  const context = await browser.newContext({ viewport, locale: 'zh-CN', timezoneId: 'Pacific/Pago_Pago' });
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

  // The patient says the phone number is wrong: the clerk corrects it from the card, by
  // keyboard (a reason, then Enter). A clerk is not offered the revisions (an administrator's).
  await desk.click(id('correct-patient'));
  const phone = desk.locator(id('correct-phone'));
  await phone.waitFor();
  assert.equal(await desk.evaluate(() => document.activeElement.dataset.testid), 'correct-name');
  assert.equal(await phone.inputValue(), '13900000001');
  await phone.fill('13900000011');
  await desk.fill(id('correct-reason'), '患者告知手机号登记有误');
  await shot(desk, 'desk-correct');
  await desk.press(id('correct-reason'), 'Enter');
  await desk.waitForSelector(id('correct-result'));
  await desk.waitForSelector(id('correct-patient-form'), { state: 'detached' });
  assert.equal(await desk.locator(id('selected-patient-phone')).innerText(), '139****0011');
  assert.equal(await desk.locator(id('revisions-toggle')).count(), 0);
  // Escape closes the form unsaved, and focus returns to the card.
  await desk.click(id('correct-patient'));
  await desk.locator(id('correct-name')).waitFor();
  await desk.keyboard.press('Escape');
  await desk.waitForSelector(id('correct-patient-form'), { state: 'detached' });
  assert.equal(await desk.evaluate(() => document.activeElement.dataset.testid), 'correct-patient');

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

  // The clerk checks them in, noting a disability for the triage rule: the options start at
  // none, and Enter on the checkbox checks in.
  const row = desk.locator(`${id(`visit-${visit.registration}`)}`);
  await row.locator(id('check-in')).waitFor();
  await row.locator(id('check-in-options-toggle')).click();
  const options = desk.locator(id(`check-in-options-${visit.registration}`));
  assert.equal(await options.locator(id('check-in-emergency')).inputValue(), '0');
  assert.equal(await options.locator(id('check-in-disabled')).isChecked(), false);
  assert.equal(await options.locator(id('check-in-military')).isChecked(), false);
  await options.locator(id('check-in-disabled')).check();
  const checkInRequest = desk.waitForRequest((r) => r.url().endsWith('/api/v1/check-ins'));
  await options.locator(id('check-in-disabled')).press('Enter');
  assert.deepEqual((await checkInRequest).postDataJSON(), { appointment_id: Number(visit.registration), disabled: true });
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

  // The node's page charts its traffic with the update marked where it went live, and the
  // traffic before and after it.
  await operator.click(id('nav-fleet'));
  await operator.click(id('node-hospital-1-link'));
  // (a vertical line has no width, so it is attached rather than visible to playwright)
  await operator.waitForSelector(`${id('chart-rps')} .mark-live`, { state: 'attached', timeout: 20_000 });
  const samples = Number(await operator.locator(id('chart-rps')).getAttribute('data-samples'));
  assert.ok(samples >= 3, `the chart has ${samples} samples`);
  for (const key of ['error_rate', 'p99_ms']) {
    await operator.waitForSelector(`${id(`chart-${key}`)} .mark-live`, { state: 'attached' });
  }
  const update = operator.locator(`${id('traffic-updates')} tr[data-step="live"]`);
  assert.equal(await update.getAttribute('data-version'), '2.0.0');
  assert.equal(await update.getAttribute('data-component'), 'fees');
  await shot(operator, 'console-node');

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
  // An auditor lands on the read audit, where the clerk's reads of patients are, and may go
  // nowhere else.
  const auditor = await person('auditor');
  await signIn(auditor, 'auditor', 'audit');
  await auditor.fill(id('read-audit-staff'), 'clerk');
  await auditor.click(id('read-audit-search'));
  // The list shown on arrival holds everyone's reads; wait for this search's answer to replace it.
  await auditor.waitForSelector(`${id('read-audit-entries')}[aria-busy="false"]`, { state: 'attached' });
  await auditor.waitForSelector(`${id('read-audit-entry')}[data-username="clerk"]`);
  const readers = await auditor.locator(id('read-audit-entry')).evaluateAll((rows) => rows.map((r) => r.dataset.username));
  assert.ok(readers.length > 0 && readers.every((u) => u === 'clerk'), readers.join(','));
  await shot(auditor, 'read-audit');
  await auditor.goto(`${BASE}/#/desk`);
  await auditor.waitForSelector(id('not-for-role'));
  for (const page of [desk, doctor, kiosk, auditor]) await page.context().close();
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

test('an administrator corrects a patient at the desk, reads the revisions, and revokes a screen', async () => {
  // An administrator of their own (the node's first one signs in by a generated password), and
  // a patient to correct.
  const json = { 'content-type': 'application/json' };
  await api('POST', '/users', JSON.stringify({ username: 'admin2', role: 'admin', password: 'admin2-password-1' }), json);
  const patient = await api('POST', '/patients', JSON.stringify({
    name: '孙三', gender: 'male', birth_date: '1958-03-15', id_number: idNumber(3), phone: '13900000003',
    insurance_category: 'none', insurance_number: null,
  }), json);
  const admin = await person('admin');
  await signIn(admin, 'admin2', 'admin');

  // The waiting-room screens: the one the test set-up created is listed; a new one is created,
  // listed, and revoked after a confirmation (a first Cancel keeps it).
  await admin.waitForSelector(`${id('screens-list')} tr[data-state="active"]:has-text("内科候诊区")`);
  await admin.fill(id('screen-name'), '二楼候诊区');
  await admin.check(id(`screen-session-${SCHEDULE}`));
  await admin.click(id('screen-create'));
  const created = admin.locator(`${id('screens-list')} tr:has-text("二楼候诊区")`);
  await admin.waitForSelector(`${id('screens-list')} tr[data-state="active"]:has-text("二楼候诊区")`);
  const screenUrl = new URL(await admin.locator(id('screen-url')).inputValue());
  const board = `${BASE}/api/v1/board?${screenUrl.hash.slice(1)}`;
  assert.equal((await fetch(board)).status, 200);
  await created.locator(id('screen-revoke')).click();
  await admin.click(id('confirm-cancel'));
  assert.equal(await created.getAttribute('data-state'), 'active');
  await created.locator(id('screen-revoke')).click();
  await admin.waitForSelector(`${id('confirm-dialog')}:has-text("二楼候诊区")`);
  await admin.click(id('confirm-ok'));
  await admin.waitForSelector(`${id('screens-list')} tr[data-state="revoked"]:has-text("二楼候诊区")`);
  await admin.waitForSelector(id('screen-revoked'));
  assert.equal(await created.locator(id('screen-revoke')).count(), 0);
  assert.equal(await admin.locator(id('screen-result')).isHidden(), true);
  await admin.waitForSelector(`${id('screens-list')} tr[data-state="active"]:has-text("内科候诊区")`);
  await shot(admin, 'admin-screens');
  // The revoked screen's address no longer shows the board.
  assert.equal((await fetch(board)).status, 401);
  const tv = await person('revoked-screen');
  await tv.goto(screenUrl.href);
  await tv.waitForSelector(`${id('screen-connection')}[data-state="offline"]:has-text("屏幕令牌无效")`);

  // At the desk: a phone number the node refuses is shown beside the phone field; corrected,
  // the card shows it, and the revisions say who changed what, when and why.
  await admin.click(id('nav-desk'));
  await admin.fill(id('patient-search'), '孙三');
  await admin.press(id('patient-search'), 'Enter');
  await admin.waitForSelector(`${id('selected-patient')}[data-patient-id="${patient.id}"]`);
  await admin.click(id('correct-patient'));
  await admin.fill(id('correct-phone'), '12345');
  await admin.fill(id('correct-reason'), '患者告知手机号登记有误');
  await admin.press(id('correct-phone'), 'Enter');
  const phoneError = admin.locator(`${id('correct-patient-form')} .field:has(${id('correct-phone')}) ${id('correct-phone-error')}`);
  await phoneError.waitFor();
  assert.match(await phoneError.innerText(), /6 to 20/);
  assert.equal(await admin.locator(id('correct-phone')).getAttribute('aria-invalid'), 'true');
  assert.equal(await admin.evaluate(() => document.activeElement.dataset.testid), 'correct-phone');
  await shot(admin, 'desk-correct-error');
  await admin.fill(id('correct-phone'), '13900000033');
  await admin.press(id('correct-phone'), 'Enter');
  await admin.waitForSelector(id('correct-result'));
  assert.equal(await admin.locator(id('selected-patient-phone')).innerText(), '139****0033');
  await admin.click(id('revisions-toggle'));
  const revision = admin.locator(`${id('revisions')} > li`);
  await revision.first().waitFor();
  assert.equal(await revision.count(), 1);
  assert.equal(await revision.locator(id('revision-actor')).innerText(), 'admin2');
  assert.equal(await revision.locator(id('revision-reason')).innerText(), '患者告知手机号登记有误');
  const change = revision.locator(id('revision-change-phone'));
  assert.equal(await change.locator(id('revision-before')).innerText(), '13900000003');
  assert.equal(await change.locator(id('revision-after')).innerText(), '13900000033');
  assert.equal(await revision.locator('[data-testid^="revision-change-"]').count(), 1);
  await shot(admin, 'desk-revisions');
  for (const page of [admin, tv]) await page.context().close();
});

test('every page fits a tablet held upright: nothing wider than the screen', async () => {
  const tablet = { width: 768, height: 1024 };
  const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  for (const [user, route] of [['clerk', 'desk'], ['cashier', 'cashier'], ['doctor', 'doctor'], ['kiosk', 'kiosk'], ['auditor', 'audit']]) {
    const page = await person(`tablet-${user}`, tablet);
    await signIn(page, user, route);
    await page.waitForLoadState('networkidle');
    assert.equal(await overflow(page), 0, `the ${route} page scrolls sideways on a tablet`);
    if (user === 'clerk') await shot(page, 'tablet-desk');
    await page.context().close();
  }
  const operator = await person('tablet-operator', tablet);
  await operator.goto(`${env.SERVER_URL}/`);
  await operator.fill(id('login-username'), 'admin');
  await operator.fill(id('login-password'), env.SERVER_PASSWORD);
  await operator.click(id('login-submit'));
  await operator.waitForSelector(id('node-hospital-1-link'));
  for (const [page, shown] of [
    ['fleet', id('node-hospital-1-link')],
    ['releases', '[data-testid^="release-"][data-testid$="-link"]'],
    ['rollouts', '[data-testid^="rollout-"][data-testid$="-link"]'],
    ['audit', `${id('audit-verify')}[data-state="verified"]`],
    ['nodes/hospital-1', id('chart-rps')],
  ]) {
    await operator.goto(`${env.SERVER_URL}/#/${page}`);
    await operator.locator(shown).first().waitFor();
    assert.equal(await overflow(operator), 0, `the console's ${page} page scrolls sideways on a tablet`);
  }
  await shot(operator, 'tablet-console-node');
  await operator.context().close();
});
