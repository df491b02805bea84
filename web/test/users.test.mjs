// Users end to end: real `mayfly serve`, real Chromium, a real VM. The server token (the
// bootstrap admin) makes an admin and a member; they sign in with passwords, the member makes
// a session and an API token, the admin sees their session, sets their quota and reads the
// audit log, the member hits the quota, and signing out ends the cookie.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { prerequisites, screenshot, startBrowser, startServer, TOKEN, until } from './harness.mjs';

const SLOW = { timeout: 300_000 };
const MEMBER = { email: 'member@example.com', name: 'Mia Member', password: 'member-password-1' };
const ADMIN = { email: 'admin@example.com', name: 'Ada Admin', password: 'admin-password-1' };
let srv, memberBrowser, adminBrowser, member, admin, memberId, sid;

/** The API from Node: `auth` is a bearer token or `{ cookie }`. */
async function apiCall(method, path, { auth = TOKEN, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (typeof auth === 'string') headers.authorization = `Bearer ${auth}`;
  else headers.cookie = auth.cookie;
  const res = await fetch(srv.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

async function passwordSignIn(page, email, password) {
  await page.waitForSelector('#password-form:not([hidden])');
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('#password-submit');
}

/** Opens the user menu and returns its text. */
async function menuText(page) {
  await page.click('#user-menu');
  await page.waitForSelector('.user-pop:not([hidden]) #sign-out');
  const text = await page.textContent('.user-pop');
  await page.keyboard.press('Escape');
  return text;
}

before(async () => {
  const { missing } = prerequisites();
  assert.deepEqual(missing, [], `browser tests need: ${missing.join(', ')}`);
  srv = await startServer();
  for (const [u, role] of [[MEMBER, 'member'], [ADMIN, 'admin']]) {
    const r = await apiCall('POST', '/api/v1/users', { body: { ...u, role } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    if (role === 'member') memberId = r.body.id;
  }
  memberBrowser = await startBrowser();
  adminBrowser = await startBrowser();
  member = await memberBrowser.context.newPage();
  admin = await adminBrowser.context.newPage();
  for (const p of [member, admin]) p.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await memberBrowser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: srv.base });
});

after(async () => {
  await memberBrowser?.close();
  await adminBrowser?.close();
  await srv?.stop();
});

test('a member signs in with a password, sees who they are, and creates a session', SLOW, async () => {
  await member.goto(`${srv.base}/account`);
  await member.waitForURL((u) => u.pathname === '/login' && u.searchParams.get('next') === '/account');
  await screenshot(member, 'signin');
  await passwordSignIn(member, MEMBER.email, MEMBER.password);
  // Back where they were going.
  await member.waitForURL(`${srv.base}/account`);
  await member.waitForSelector('#quotas');
  assert.equal(await member.$('.acct-nav [data-section="users"]'), null, 'members have no Users page');

  await member.goto(`${srv.base}/`);
  const menu = await menuText(member);
  assert.match(menu, /member@example\.com/);
  assert.match(menu, /member/);
  assert.doesNotMatch(menu, /Audit log/);
  await member.waitForSelector('#new-session:not([disabled])');
  await member.selectOption('#image', 'minimal');
  await member.click('#new-session');
  await member.waitForURL(/\/s\/[a-z0-9]+$/);
  sid = new URL(member.url()).pathname.split('/')[2];
  await until('the session to be ready', () => member.evaluate(() => window.mayfly?.session().state === 'ready'), 240_000);
  // The IDE has the user menu too.
  assert.match(await menuText(member), /member@example\.com/);
  const mine = await apiCall('GET', `/api/v1/sessions/${sid}`);
  assert.equal(mine.body.owner, memberId);
});

test('a member makes an API token, copies it once, uses it, and revokes it', SLOW, async () => {
  await member.goto(`${srv.base}/account#tokens`);
  await member.fill('#token-name', 'e2e laptop');
  await member.fill('#token-days', '7');
  await member.click('#token-create');
  await member.waitForSelector('#token-secret >> text=shown only this once');
  const shown = (await member.textContent('#token-value')).trim();
  assert.match(shown, /^mfy_/);
  await member.click('#token-copy');
  await member.waitForSelector('#token-copy >> text=Copied');
  const copied = await member.evaluate(() => navigator.clipboard.readText());
  assert.equal(copied, shown);
  await member.waitForSelector('#tokens [data-token] >> text=e2e laptop');
  await screenshot(member, 'tokens');

  const me = await apiCall('GET', '/api/v1/me', { auth: copied });
  assert.equal(me.status, 200);
  assert.equal(me.body.user.email, MEMBER.email);
  assert.equal(me.body.role, 'member');

  await member.click('button[aria-label="Revoke e2e laptop"]');
  await member.click('.modal button:has-text("Revoke")');
  await member.waitForSelector('#tokens [data-token]', { state: 'detached' });
  assert.equal((await apiCall('GET', '/api/v1/me', { auth: copied })).status, 401);
});

test('a member adds an SSH key on the account page, sees its fingerprint, and removes it', SLOW, async () => {
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILECrozYiomYf/UgrsSDB/VVYfqsVyTmHZNScEr+R4WZ mia@laptop';
  await member.goto(`${srv.base}/account#ssh`);
  await member.fill('#ssh-key', 'not a key');
  await member.click('#ssh-add');
  await member.waitForSelector('#ssh-error:not(:empty)');
  assert.match(await member.textContent('#ssh-error'), /not an OpenSSH public key/);
  await member.fill('#ssh-key', key);
  await member.click('#ssh-add');
  await member.waitForSelector('#ssh-keys [data-key] >> text=mia@laptop');
  assert.match(await member.textContent('#ssh-keys'), /SHA256:l4oqtJ1zhgJ\/KsaCwxJmXDmbfJd3M\+VnZIJHksZyzKc/);
  await screenshot(member, 'ssh-keys');
  const listed = await apiCall('GET', '/api/v1/me/ssh-keys', { auth: { cookie: await cookieHeader(member) } });
  assert.equal(listed.body.length, 1);
  await member.click('button[aria-label="Remove mia@laptop"]');
  await member.click('.modal button:has-text("Remove")');
  await member.waitForSelector('#ssh-keys [data-key]', { state: 'detached' });
});

/** The page's cookies as a Cookie header. */
async function cookieHeader(page) {
  return (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
}

test('a wrong password and a provider error show on the sign-in page', SLOW, async () => {
  await admin.goto(`${srv.base}/login?error=${encodeURIComponent('The identity provider refused: access_denied')}`);
  await admin.waitForSelector('#provider-error >> text=access_denied');
  await passwordSignIn(admin, ADMIN.email, 'not-the-password');
  await admin.waitForSelector('#password-error:not(:empty)');
  assert.match(await admin.textContent('#password-error'), /Wrong email or password/);
  assert.equal(new URL(admin.url()).pathname, '/login');
});

test('an admin sees the member\'s session with its owner, sets their quota and reads the audit log', SLOW, async () => {
  await passwordSignIn(admin, ADMIN.email, ADMIN.password);
  await admin.waitForURL(`${srv.base}/`);
  assert.match(await menuText(admin), /admin@example\.com[\s\S]*admin[\s\S]*Users[\s\S]*Audit log/);
  await admin.waitForSelector(`.row[data-id="${sid}"] .cell.owner`);
  assert.equal((await admin.textContent(`.row[data-id="${sid}"] .cell.owner`)).trim(), MEMBER.email);
  assert.match(await admin.textContent('.row.head'), /Owner/);
  await screenshot(admin, 'home-admin');

  await admin.goto(`${srv.base}/account#users`);
  const memberRow = `#users tr:has([data-user="${memberId}"])`;
  await admin.waitForSelector(memberRow);
  assert.match(await admin.textContent(memberRow), /member@example\.com.*Mia Member.*member.*password/);
  assert.match(await admin.textContent(`${memberRow} .quota-summary`), /role defaults/);
  await admin.click(`button[aria-label="Edit ${MEMBER.email}"]`);
  await admin.fill('#edit-max_sessions', '1');
  await admin.click('#modal-save');
  await admin.waitForSelector('.acct-modal', { state: 'detached' });
  await until('the quota in the list', async () => /sessions ≤ 1/.test(await admin.textContent(`${memberRow} .quota-summary`)));
  const saved = await apiCall('GET', `/api/v1/users/${memberId}`);
  assert.deepEqual(saved.body.quotas, { max_sessions: 1 });
  assert.equal(saved.body.role, 'member', 'the role stays');
  await screenshot(admin, 'users');

  await admin.click('.acct-nav [data-section="audit"]');
  await admin.waitForSelector(`#audit-user option[value="${memberId}"]`, { state: 'attached' });
  await admin.selectOption('#audit-user', memberId);
  await admin.click('#audit-apply');
  const rows = () =>
    admin.$$eval('#audit tbody tr', (trs) => trs.map((tr) => ({ action: tr.dataset.action, who: tr.querySelector('.audit-actor').textContent })));
  await until('the member\'s entries only', async () => {
    const r = await rows();
    return r.length && r.every((e) => e.who === 'member@example.com') && r.some((e) => e.action === 'session_create');
  });
  const actions = (await rows()).map((e) => e.action);
  assert.ok(actions.includes('sign_in'), actions.join(','));
  assert.ok(actions.includes('session_create'), actions.join(','));
  assert.ok(actions.includes('token_create'), actions.join(','));
  assert.ok(!actions.includes('user_create'), 'the server token\'s entries are filtered out');
  // Newest first: the token came after the session.
  assert.ok(actions.indexOf('token_revoke') < actions.indexOf('session_create'), actions.join(','));
  await screenshot(admin, 'audit');
});

test('a member at their quota sees the quota message when creating another session', SLOW, async () => {
  await member.goto(`${srv.base}/account#quotas`);
  const quota = '.acct-content [data-quota="max_sessions"]';
  await member.waitForSelector(quota);
  assert.match(await member.textContent(quota), /Sessions\s*1 \/ 1/);
  assert.ok(await member.$(`${quota}.full`), 'shown as used up');
  await member.goto(`${srv.base}/`);
  await member.waitForSelector(`.row[data-id="${sid}"]`);
  assert.equal(await member.$('.cell.owner'), null, 'members have no Owner column');
  await member.waitForSelector('#new-session:not([disabled])');
  await member.click('#new-session');
  await member.waitForSelector('#create-error.quota:not([hidden])');
  const text = await member.textContent('#create-error');
  assert.match(text, /Quota reached/);
  assert.match(text, /quota max_sessions exceeded/);
  assert.equal(new URL(member.url()).pathname, '/', 'stays on the sessions page');
  assert.equal((await apiCall('GET', '/api/v1/sessions')).body.length, 1, 'no second session');
  await screenshot(member, 'quota');
});

test('signing out goes to the sign-in page and the old cookie stops working', SLOW, async () => {
  const cookie = (await memberBrowser.context.cookies(srv.base)).find((c) => c.name === 'mayfly_session');
  assert.ok(cookie, 'signed in by cookie');
  const auth = { cookie: `mayfly_session=${cookie.value}` };
  assert.equal((await apiCall('GET', '/api/v1/me', { auth })).status, 200);
  await member.click('#user-menu');
  await member.click('#sign-out');
  await member.waitForURL((u) => u.pathname === '/login');
  assert.equal((await apiCall('GET', '/api/v1/me', { auth })).status, 401);
  await member.goto(`${srv.base}/`);
  await member.waitForURL((u) => u.pathname === '/login');
});
