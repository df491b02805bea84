// Test harness: a real `mayfly serve` (the built release binary) on a free port with a temp
// data dir whose images come from $MAYFLY_DATA_DIR (where scripts/test built `minimal`), and a
// real headless Chromium (Debian's, driven by playwright-core) with a fresh profile.

import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const artifacts = join(repo, 'test-artifacts');
export const TOKEN = process.env.MAYFLY_TEST_TOKEN ?? 'browser-e2e-token-0123456789abcdef';
/** Set to test a server that is already running (e.g. `npm run dev`) instead of starting one. */
const EXTERNAL = process.env.MAYFLY_TEST_URL;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export function prerequisites() {
  const bin = process.env.MAYFLY_BIN ?? join(repo, 'target/release/mayfly');
  const images = process.env.MAYFLY_DATA_DIR;
  const missing = [];
  if (EXTERNAL) return { bin, images, missing: existsSync(CHROMIUM) ? [] : [CHROMIUM] };
  if (!existsSync(bin)) missing.push(`${bin} (cargo build --release)`);
  if (!images || !existsSync(join(images, 'images/minimal/current'))) missing.push('MAYFLY_DATA_DIR with the minimal image (scripts/test)');
  if (!existsSync(CHROMIUM)) missing.push(`${CHROMIUM} (scripts/install-deps --test)`);
  return { bin, images, missing };
}

/**
 * Starts `mayfly serve` on 127.0.0.1:0 (with `extraEnv`); resolves once it prints its address.
 * `opts.data` and `opts.bind` restart a server on the data dir and address of an earlier one;
 * `crash()` kills it with SIGKILL and keeps the data dir (its VMs run on).
 */
export async function startServer(extraEnv = {}, opts = {}) {
  if (EXTERNAL) return { base: EXTERNAL, log: () => '', stop: async () => {} };
  const { bin, images } = prerequisites();
  const data = opts.data ?? mkdtempSync(join(tmpdir(), 'mayfly-web-e2e-'));
  // Each VM's QEMU runs under its own uid, which must be able to enter the data dir (mkdtemp
  // makes it 0700; the server refuses such a dir rather than run QEMU as root).
  chmodSync(data, 0o711);
  const env = {
    ...process.env,
    MAYFLY_TOKEN: TOKEN,
    MAYFLY_IMAGE_DATA_DIR: images,
    MAYFLY_DEFAULT_IMAGE: 'minimal',
    MAYFLY_LOG: process.env.MAYFLY_LOG ?? 'warn',
    // stop() ends every session (the default, `keep`, would leave the test's VMs running after
    // its data dir is gone).
    MAYFLY_ON_SHUTDOWN: 'end',
    ...extraEnv,
  };
  delete env.MAYFLY_DATA_DIR;
  const child = spawn(bin, ['--data-dir', data, 'serve', '--bind', opts.bind ?? '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
    if (process.env.MAYFLY_TEST_VERBOSE) process.stderr.write(d);
  });
  const base = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start in 60 s:\n${log}`)), 60_000);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/mayfly listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on('exit', (code) => fail(new Error(`server exited (${code}) before listening:\n${log}`)));
  });
  return {
    base,
    data,
    log: () => log,
    async crash() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
        await exited;
        clearTimeout(killer);
      }
      rmSync(data, { recursive: true, force: true });
    },
  };
}

/** Chromium with a fresh profile; `close()` removes it. */
export async function startBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'mayfly-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** Polls `fn` until it returns a truthy value; fails with `what` after `ms`. */
export async function until(what, fn, ms = 30_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** On the sign-in page: opens the token form, types `token` and submits it. */
export async function fillToken(page, token) {
  await page.waitForSelector('#token-details');
  if (!(await page.$eval('#token-details', (d) => d.open))) await page.click('#token-details summary');
  await page.fill('#token', token);
  await page.click('#token-submit');
}

/**
 * The common start of a browser test file: a server, a browser, a page signed in with the test
 * token, and a ready session (`body` of the create request; default a `minimal` one).
 */
export async function signedInSession({ body = { image: 'minimal' }, env = {} } = {}) {
  const { missing } = prerequisites();
  if (missing.length) throw new Error(`browser tests need: ${missing.join(', ')}`);
  const srv = await startServer(env);
  const browser = await startBrowser();
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(`${srv.base}/login`);
  await fillToken(page, TOKEN);
  await page.waitForURL(`${srv.base}/`);
  const s = await page.evaluate(async (body) => {
    const res = await fetch('/api/v1/sessions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return res.json();
  }, body);
  if (s.state !== 'ready') throw new Error(`session not ready: ${JSON.stringify(s)}`);
  return { srv, browser, page, sid: s.id };
}
