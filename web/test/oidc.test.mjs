// OpenID Connect sign-in end to end: a real `mayfly serve` configured for a real provider (the
// certified `oidc-provider` package, crates/server/tests/oidc/provider.mjs) and real Chromium
// signing in through the provider's own login form. The provider is down first (a clear message
// on the sign-in page; password users still sign in), then up: a user of an allowed domain is
// made at first sign-in (an admin by group), one of another domain is refused with the reason.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { prerequisites, repo, screenshot, startBrowser, startServer, TOKEN, until } from './harness.mjs';

const SLOW = { timeout: 180_000 };
const CLIENT = { client_id: 'mayfly-web', client_secret: 'oidc-test-secret-42' };
let srv, providerPort, provider, browser;

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Starts provider.mjs on `port`; resolves once it prints its issuer. */
function startProvider(port, redirect) {
  const script = join(repo, 'crates/server/tests/oidc/provider.mjs');
  const env = { ...process.env, OIDC_CLIENTS: JSON.stringify([{ ...CLIENT, redirect_uris: [redirect] }]) };
  const child = spawn(process.execPath, [script, String(port)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`provider did not start in 60 s:\n${err}`)), 60_000);
    child.stdout.once('data', (d) => {
      clearTimeout(timer);
      ok({ child, issuer: JSON.parse(String(d).split('\n')[0]).issuer });
    });
    child.on('exit', (code) => fail(new Error(`provider exited (${code}):\n${err}`)));
  });
}

async function api(method, path, body) {
  const res = await fetch(srv.base + path, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** Clicks "Sign in with Test IdP" on a fresh page; returns the page. */
async function startSignIn() {
  const page = await browser.context.newPage();
  await page.goto(`${srv.base}/login?next=/account`);
  await page.waitForSelector('#oidc');
  assert.match(await page.textContent('#oidc'), /Sign in with Test IdP/);
  await page.click('#oidc');
  return page;
}

/** On the provider's own pages: log in as `login`, give consent if asked, until the provider
 * sends the browser back to Mayfly. */
async function providerLogin(page, login) {
  await page.waitForSelector('input[name="login"]', { timeout: 60_000 });
  assert.ok(page.url().startsWith(`http://127.0.0.1:${providerPort}/`), page.url());
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any password');
  await page.click('button[type="submit"]');
  await until('the provider hands the browser back', async () => {
    if (page.url().startsWith(srv.base)) return true;
    // The consent step (first grant for this client): a form without a login field.
    const consent = (await page.$('input[name="login"]')) === null ? await page.$('button[type="submit"]') : null;
    if (consent) await consent.click().catch(() => {});
    return false;
  }, 60_000);
}

before(async () => {
  const { missing } = prerequisites();
  assert.deepEqual(missing, [], `browser tests need: ${missing.join(', ')}`);
  providerPort = await freePort();
  srv = await startServer({
    MAYFLY_OIDC_ISSUER: `http://127.0.0.1:${providerPort}`,
    MAYFLY_OIDC_CLIENT_ID: CLIENT.client_id,
    MAYFLY_OIDC_CLIENT_SECRET: CLIENT.client_secret,
    MAYFLY_OIDC_NAME: 'Test IdP',
    MAYFLY_OIDC_SCOPES: 'groups',
    MAYFLY_OIDC_ALLOWED_DOMAINS: 'corp.example',
    MAYFLY_OIDC_ADMIN_GROUPS: 'admins',
  });
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  provider?.child.kill();
  await srv?.stop();
});

test('provider down: a clear message, and password users still sign in', SLOW, async () => {
  const page = await startSignIn();
  await page.waitForURL((u) => u.pathname === '/login' && u.searchParams.has('error'), { timeout: 60_000 });
  assert.equal(new URL(page.url()).searchParams.get('next'), '/account', 'where the user was going is kept');
  await page.waitForSelector('#provider-error:not([hidden])');
  const shown = await page.textContent('#provider-error');
  assert.match(shown, /127\.0\.0\.1:\d+/, `names the provider: ${shown}`);
  await screenshot(page, 'oidc-provider-down');
  const r = await api('POST', '/api/v1/users', { email: 'pat@corp.example', password: 'patricia-password' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  await page.fill('#email', 'pat@corp.example');
  await page.fill('#password', 'patricia-password');
  await page.click('#password-submit');
  await page.waitForURL((u) => u.pathname === '/account', { timeout: 60_000 });
  await page.close();
});

test('a user of an allowed domain is made at first sign-in, an admin by group', SLOW, async () => {
  provider = await startProvider(providerPort, `${srv.base}/auth/oidc/callback`);
  await browser.context.clearCookies();
  assert.equal(provider.issuer, `http://127.0.0.1:${providerPort}`);
  const page = await startSignIn();
  await providerLogin(page, 'ada+admins@corp.example');
  await page.waitForURL((u) => u.href.startsWith(srv.base) && u.pathname === '/account', { timeout: 60_000 });
  const me = await page.evaluate(async () => (await fetch('/api/v1/me')).json());
  assert.equal(me.user.email, 'ada@corp.example');
  assert.equal(me.user.name, 'Ada');
  assert.equal(me.user.source, 'oidc');
  assert.equal(me.role, 'admin', 'a member of an admin group');
  await screenshot(page, 'oidc-signed-in');
  // A second sign-in (a new browser session) finds the same user (no duplicate).
  await browser.context.clearCookies();
  const again = await startSignIn();
  await providerLogin(again, 'ada+admins@corp.example');
  await again.waitForURL((u) => u.href.startsWith(srv.base) && u.pathname === '/account', { timeout: 60_000 });
  const users = (await api('GET', '/api/v1/users')).body.filter((u) => u.email === 'ada@corp.example');
  assert.equal(users.length, 1, JSON.stringify(users));
  const audit = (await api('GET', `/api/v1/audit?user=${users[0].id}&action=sign_in`)).body.entries;
  assert.ok(audit.length >= 2 && audit.every((e) => e.detail.method === 'oidc'), JSON.stringify(audit));
  await page.close();
  await again.close();
});

test('another domain is refused with the reason, and nobody is made', SLOW, async () => {
  await browser.context.clearCookies();
  const page = await startSignIn();
  await providerLogin(page, 'eve@evil.example');
  await page.waitForURL((u) => u.pathname === '/login' && u.searchParams.has('error'), { timeout: 60_000 });
  await page.waitForSelector('#provider-error:not([hidden])');
  const shown = await page.textContent('#provider-error');
  assert.match(shown, /corp\.example/, shown);
  const me = await page.evaluate(async () => (await fetch('/api/v1/me')).status);
  assert.equal(me, 401, 'not signed in');
  const users = (await api('GET', '/api/v1/users')).body;
  assert.ok(!users.some((u) => u.email === 'eve@evil.example'), JSON.stringify(users));
  await until('the refusal in the audit log', async () => {
    const entries = (await api('GET', '/api/v1/audit?action=sign_in_failed')).body.entries;
    return entries.some((e) => JSON.stringify(e).includes('evil.example'));
  });
  await page.close();
});
