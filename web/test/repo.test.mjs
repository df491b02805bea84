// Browser end-to-end test of the repository line: real Chromium, the real server, real VMs and a
// real git remote on the host (a bare repository served over git's "dumb" HTTP protocol by a
// static file server in this process, which holds its first request until the test lets it go,
// so the page is seen while the clone runs). Then a clone that fails: git's message is shown,
// can be dismissed, and the session works.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { screenshot, signedInSession, until } from './harness.mjs';

const SLOW = { timeout: 180_000 };
let srv, browser, page, sid, remote, git;

const ide = (fn, ...args) => page.evaluate(fn, ...args);
const banner = () => ide(() => {
  const el = document.querySelector('.repo-banner');
  return el && { hidden: el.hidden, state: el.dataset.state, text: el.textContent };
});

/** A bare repo `app.git` (app.py, src/lib.py) under a temp dir, ready for dumb HTTP. */
function makeRepo() {
  const root = mkdtempSync(join(tmpdir(), 'mayfly-web-git-'));
  const run = (cwd, ...args) => execFileSync('git', args, { cwd, stdio: 'pipe' });
  const work = join(root, 'work');
  run(root, 'init', '-q', '-b', 'main', work);
  writeFileSync(join(work, 'app.py'), "print('hello')\n");
  run(work, 'add', '.');
  run(work, '-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-qm', 'first');
  run(root, 'clone', '-q', '--bare', work, 'app.git');
  run(join(root, 'app.git'), 'update-server-info');
  return root;
}

/** Serves `root` read-only on all addresses; requests wait until `release()`. */
async function serveGit(root) {
  let release;
  const gate = new Promise((r) => (release = r));
  const seen = [];
  const server = createServer(async (req, res) => {
    seen.push(req.url);
    await gate;
    const path = normalize(join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname)));
    if (!path.startsWith(root) || !existsSync(path) || !statSync(path).isFile()) return res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    createReadStream(path).pipe(res);
  });
  await new Promise((r) => server.listen(0, '0.0.0.0', r));
  return { port: server.address().port, release, seen, close: () => server.close() };
}

/** The host's first non-loopback IPv4 address (the VM's egress reaches the host there). */
function hostAddress() {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  throw new Error('no non-loopback IPv4 address');
}

before(async () => {
  const root = makeRepo();
  git = { root, ...(await serveGit(root)) };
  remote = `${hostAddress()}:${git.port}`;
  ({ srv, browser, page, sid } = await signedInSession({
    body: { image: 'minimal', auto_push: true, repo: { url: `http://${remote}/app.git` }, network: { egress: 'allowlist', allow: [remote] } },
    env: { MAYFLY_EGRESS_PRIVATE_ALLOW: remote },
  }));
});

after(async () => {
  git?.release();
  git?.close();
  await browser?.close();
  await srv?.stop();
  if (git) rmSync(git.root, { recursive: true, force: true });
});

test('the clone shows its progress, then ready, and the explorer shows the repository', SLOW, async () => {
  await page.goto(`${srv.base}/s/${sid}`);
  await until('the IDE to be ready', () => ide(() => window.mayfly?.session().state === 'ready'), 60_000);
  await until('git to ask the remote', () => git.seen.length > 0, 60_000);
  const cloning = await until('the cloning line', async () => {
    const b = await banner();
    return b && !b.hidden && b.state === 'cloning' && b.text.includes("Cloning into '/root/app'") && b;
  });
  assert.match(cloning.text, new RegExp(`Cloning.*http://${remote}/app\\.git → /root/app`));
  await screenshot(page, 'repo-cloning');
  git.release();
  const ready = await until('the ready line', async () => {
    const b = await banner();
    return b?.state === 'ready' && b;
  }, 60_000);
  assert.ok(!ready.hidden && ready.text.includes('Repository ready'), JSON.stringify(ready));
  await page.click('.tree-row[data-path="/root/app"]');
  await until('app.py in the explorer', () => page.$('.tree-row[data-path="/root/app/app.py"]'));
  await screenshot(page, 'repo-ready');
  await page.click('.repo-banner button[aria-label="Dismiss"]');
  assert.equal((await banner()).hidden, true);
  // With auto-push, ending the session says where the unpushed work goes.
  const r = await ide(async (id) => {
    const res = await fetch(`/api/v1/sessions/${id}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"cmd":["sh","-c","echo more >> /root/app/app.py"]}' });
    return res.json();
  }, sid);
  assert.equal(r.exit_code, 0, JSON.stringify(r));
  await page.click('#end-session');
  await page.waitForSelector('.modal >> text=has work that is not pushed');
  assert.match(await page.textContent('.modal'), new RegExp(`pushed to the branch mayfly/${sid} of its remote`));
  await page.click('.modal button:has-text("Cancel")');
  await page.waitForSelector('.modal', { state: 'detached' });
});

test('a failed clone shows git’s message, can be dismissed, and the session is usable', SLOW, async () => {
  const s = await ide(async (body) => {
    const res = await fetch('/api/v1/sessions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return res.json();
  }, { image: 'minimal', repo: { url: `http://${remote}/missing.git` }, network: { egress: 'allowlist', allow: [remote] } });
  assert.equal(s.state, 'ready', JSON.stringify(s));
  await page.goto(`${srv.base}/s/${s.id}`);
  const failed = await until('the failure line', async () => {
    const b = await banner();
    return b?.state === 'failed' && b;
  }, 60_000);
  assert.ok(!failed.hidden, JSON.stringify(failed));
  assert.match(failed.text, /Clone failed/);
  assert.match(failed.text, /repository 'http:\/\/.*missing\.git\/' not found/, 'git’s own words');
  await until('the failed clone’s folder to leave the explorer', async () => !(await page.$('.tree-row[data-path="/root/missing"]')));
  await screenshot(page, 'repo-failed');
  await page.click('.repo-banner button[aria-label="Dismiss"]');
  assert.equal((await banner()).hidden, true);
  // Usable: its terminal answers.
  await until('a shell prompt', async () => /root@.*# $/m.test(await ide(() => window.mayfly.terminalText())), 60_000);
  await page.click('.term:not([hidden]) .xterm-screen');
  await page.keyboard.type('echo still-$((40+2))\n');
  await until('the command output', async () => (await ide(() => window.mayfly.terminalText())).includes('still-42'));
});
