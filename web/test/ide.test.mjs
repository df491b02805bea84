// Browser end-to-end tests: real headless Chromium against the real `mayfly serve` binary with
// real VMs (the `minimal` image in $MAYFLY_DATA_DIR). Run by scripts/test after the cargo tests;
// alone: `MAYFLY_DATA_DIR=… npm test` in web/. Screenshots land in test-artifacts/.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fillToken, prerequisites, screenshot, startBrowser, startServer, TOKEN, until } from './harness.mjs';

const SLOW = { timeout: 180_000 };
let srv, browser, page, sid;

const term = () => page.evaluate(() => window.mayfly?.terminalText() ?? '');
const ide = (fn, ...args) => page.evaluate(fn, ...args);

async function typeInTerminal(text) {
  await page.click('.term:not([hidden]) .xterm-screen');
  await page.keyboard.type(text);
}

/** Runs a shell command in the terminal and waits for `expect` in its output. */
async function shell(cmd, expect, ms = 30_000) {
  const marker = `done-${Math.random().toString(36).slice(2, 8)}`;
  await typeInTerminal(`${cmd}; echo ${marker.slice(0, 4)}''${marker.slice(4)}\n`);
  await until(`"${cmd}" to finish`, async () => (await term()).includes(marker), ms);
  if (expect) await until(`"${expect}" in the terminal`, async () => (await term()).includes(expect), ms);
}

async function openFile(path) {
  await page.click(`.tree-row[data-path="${path}"]`);
  await page.waitForSelector(`.tab.active[data-path="${path}"]`);
}

/** Puts the keyboard in the editor, at the end of the text. */
async function editorEnd() {
  await page.click('.monaco-editor .view-lines');
  await page.keyboard.press('Control+End');
}

/** Waits for the tree's inline name input to have the keyboard. */
async function treeInput() {
  await page.waitForSelector('.tree-input');
  await until('the name input to be focused', () => ide(() => document.activeElement?.classList.contains('tree-input')));
}

before(async () => {
  const { missing } = prerequisites();
  assert.deepEqual(missing, [], `browser tests need: ${missing.join(', ')}`);
  srv = await startServer();
  browser = await startBrowser();
  page = await browser.context.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
});

after(async () => {
  await browser?.close();
  await srv?.stop();
});

test('an IDE URL without login redirects to the login page, which refuses a bad token', SLOW, async () => {
  await page.goto(`${srv.base}/s/snotloggedin1`);
  await page.waitForURL((u) => u.pathname === '/login');
  assert.equal(new URL(page.url()).searchParams.get('next'), '/s/snotloggedin1');
  await fillToken(page, 'wrong-token');
  await page.waitForSelector('#token-error:not(:empty)');
  assert.match(await page.textContent('#token-error'), /not valid/);
  await page.goto(`${srv.base}/`);
  await page.waitForURL((u) => u.pathname === '/login');
  await screenshot(page, 'login');
  await fillToken(page, TOKEN);
  await page.waitForURL(`${srv.base}/`);
  await page.waitForSelector('#sessions .empty, #sessions .row');
});

test('a session is created from the home page and its IDE opens with a terminal', SLOW, async () => {
  await page.waitForSelector('#new-session:not([disabled])');
  assert.equal(await page.inputValue('#image'), 'minimal');
  await page.click('#new-session');
  await page.waitForURL(/\/s\/[a-z0-9]+$/);
  sid = new URL(page.url()).pathname.split('/')[2];
  await until('the session to be ready', () => ide(() => window.mayfly?.session().state === 'ready'), 120_000);
  await until('a shell prompt', async () => /root@.*# $/m.test(await term()), 60_000);
  await page.click('.term:not([hidden]) .xterm-screen');
  // Every keystroke comes back: keystroke → server → VM → echo. The page times each round trip;
  // the figure is printed for the reader, never asserted (speed is `mayfly bench`'s job).
  const echoes = [];
  for (let i = 0; i < 5; i++) {
    echoes.push(await ide(() => window.mayfly.echoLatency()));
    await page.keyboard.press('Backspace');
  }
  echoes.sort((a, b) => a - b);
  console.log(`keystroke echo: median ${echoes[2].toFixed(1)} ms, max ${echoes[4].toFixed(1)} ms`);
  assert.ok(echoes.every((ms) => Number.isFinite(ms) && ms >= 0), `echo times: ${echoes}`);
});

test('a file made in the terminal appears in the tree', SLOW, async () => {
  await typeInTerminal('echo hello > a.txt\n');
  await page.waitForSelector('.tree-row[data-path="/root/a.txt"]', { timeout: 15_000 });
});

test('a file opens, is edited and saved, and the terminal sees the new text', SLOW, async () => {
  await openFile('/root/a.txt');
  const openMs = await ide(() => window.mayfly.lastOpenMs());
  console.log(`file open (click to text on screen): ${openMs.toFixed(1)} ms`);
  assert.ok(openMs > 0, `the editor recorded no open (${openMs})`);
  assert.equal(await ide(() => window.mayfly.editorText('/root/a.txt')), 'hello\n');
  await editorEnd();
  await page.keyboard.press('Control+a');
  await page.keyboard.type('edited in the IDE');
  await page.waitForSelector('.tab.active.dirty');
  await page.keyboard.press('Control+s');
  await page.waitForSelector('.tab.active:not(.dirty)');
  await shell('cat a.txt', 'edited in the IDE');
});

test('a file changed underneath warns of the conflict; a failed save keeps the buffer dirty', SLOW, async () => {
  // A clean buffer follows the disk.
  await shell('echo from-the-shell > a.txt');
  await until('the buffer to follow the disk', async () => (await ide(() => window.mayfly.editorText('/root/a.txt'))) === 'from-the-shell\n');
  // A dirty one gets a conflict notice instead.
  await page.click('.tab[data-path="/root/a.txt"]');
  await editorEnd();
  await page.keyboard.type('my edit');
  await shell('echo changed-underneath > a.txt');
  await page.waitForSelector('.notice.warning >> text=changed in the VM');
  await page.keyboard.press('Control+s');
  assert.ok(await page.$('.tab.active.dirty'), 'not saved over the newer file');
  await page.click('.notice.warning button:has-text("Reload from disk")');
  assert.equal(await ide(() => window.mayfly.editorText('/root/a.txt')), 'changed-underneath\n');
  await page.waitForSelector('.tab.active:not(.dirty)');

  // The server refuses the write: the error shows, the edits stay.
  const aTxt = (url) => url.pathname.endsWith('/files') && url.searchParams.get('path') === '/root/a.txt';
  await page.route(aTxt, (r) =>
    r.request().method() === 'PUT'
      ? r.fulfill({ status: 502, contentType: 'application/json', body: '{"error":{"code":"vm_error","message":"simulated failure"}}' })
      : r.continue(),
  );
  await editorEnd();
  await page.keyboard.type('unsaved');
  await page.keyboard.press('Control+s');
  await page.waitForSelector('.notice.error >> text=simulated failure');
  assert.ok(await page.$('.tab.active.dirty'), 'still dirty after the failure');
  await page.unroute(aTxt);
  await page.click('.notice.error button:has-text("Retry")');
  await page.waitForSelector('.tab.active:not(.dirty)');
  await shell('cat a.txt', 'unsaved');
});

test('files are created, renamed and deleted from the tree', SLOW, async () => {
  await page.click('#new-file');
  await treeInput();
  await page.keyboard.type('notes.md\n');
  await page.waitForSelector('.tab.active[data-path="/root/notes.md"]');
  await page.click('.tree-row[data-path="/root/notes.md"]');
  await page.keyboard.press('F2');
  await treeInput();
  await page.keyboard.press('Control+a');
  await page.keyboard.type('renamed');
  // A file appears in the VM while the name is being typed: the tree refreshes, the typing goes on.
  const put = await ide((id) => fetch(`/api/v1/sessions/${id}/files?path=%2Froot%2Fother.txt`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: 'x' }).then((r) => r.status), sid);
  assert.ok(put >= 200 && put < 300, `writing other.txt: HTTP ${put}`);
  await page.waitForSelector('.tree-row[data-path="/root/other.txt"]');
  await page.keyboard.type('.md\n');
  await page.waitForSelector('.tree-row[data-path="/root/renamed.md"]');
  assert.equal(await page.$('.tree-row[data-path="/root/notes.md"]'), null);
  await page.waitForSelector('.tab[data-path="/root/renamed.md"]');
  await page.click('#new-folder');
  await treeInput();
  await page.keyboard.type('src\n');
  await page.waitForSelector('.tree-row[data-path="/root/src"]');
  await page.click('.tree-row[data-path="/root/renamed.md"]');
  await page.keyboard.press('Delete');
  await page.click('.modal button:has-text("Delete")');
  await until('renamed.md to go', async () => !(await page.$('.tree-row[data-path="/root/renamed.md"]')));
  await shell('ls -p', 'src/');
  assert.ok(!(await term()).split('ls -p').pop().includes('renamed.md'));
});

test('large files open read-only with a notice; binary files are not shown as text', SLOW, async () => {
  await shell("yes 'a line of a large file, to be shown read-only' | head -c 6000000 > big.txt; printf 'a\\0b' > blob.bin");
  await page.waitForSelector('.tree-row[data-path="/root/blob.bin"]');
  await openFile('/root/big.txt');
  await page.waitForSelector('.notice.info >> text=read-only');
  await openFile('/root/blob.bin');
  await page.waitForSelector('.placeholder-view >> text=binary');
  await page.click('.tab[data-path="/root/big.txt"] .tab-close');
  await page.click('.tab[data-path="/root/blob.bin"] .tab-close');
});

test('a listening port shows in the ports view with its preview URL', SLOW, async () => {
  await shell(
    "mkdir -p src && printf 'import socket, time\\n\\n\\ndef serve(port=8000):\\n    s = socket.socket()\\n    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\\n    s.bind((\"0.0.0.0\", port))\\n    s.listen()\\n    print(\"listening on\", port)\\n    time.sleep(3600)\\n\\n\\nif __name__ == \"__main__\":\\n    serve()\\n' > src/server.py",
  );
  await shell('clear');
  await typeInTerminal('python3 src/server.py &\n');
  await page.waitForSelector('.port-row[data-port="8000"]', { timeout: 30_000 });
  const url = await page.getAttribute('.port-row[data-port="8000"] .port-url', 'href');
  assert.match(url, new RegExp(`^http://8000-${sid}\\.localhost:\\d+/$`));
  await page.click('.port-row[data-port="8000"] .visibility');
  await page.click('.context-menu .menu-item:has-text("Team")');
  await page.waitForSelector('.port-row[data-port="8000"] .visibility-chip.team');
  await page.click('.port-row[data-port="8000"] .visibility');
  await page.click('.context-menu .menu-item:has-text("Public")');
  await page.waitForSelector('.port-row[data-port="8000"] .visibility-chip.public');
  await page.click('.tree-row[data-path="/root/src"]');
  await openFile('/root/src/server.py');
  await shell('ls -p --color=always', 'src/');
  await page.click('.tree-row[data-path="/root/src/server.py"]');
  await screenshot(page, 'ide');
});

test('a reload re-attaches the terminal with its scrollback', SLOW, async () => {
  await shell('echo before-reload-marker');
  await page.reload();
  await until('the scrollback after the reload', async () => (await term()).includes('before-reload-marker'), 30_000);
  await shell('echo after-reload', 'after-reload');
  // Open editors come back too.
  await page.waitForSelector('.tab[data-path="/root/a.txt"]');
  await page.waitForSelector('.tab.active[data-path="/root/src/server.py"]');
});

test('a dropped connection shows an indicator, reconnects and keeps the scrollback', SLOW, async () => {
  await ide(() => window.mayfly.dropConnections());
  await page.waitForSelector('.sb-item.conn.retrying, .term-overlay:not([hidden])', { timeout: 5_000 });
  await page.waitForSelector('.sb-item.conn.live', { timeout: 30_000 });
  assert.ok((await term()).includes('before-reload-marker'));
  await shell('echo after-drop', 'after-drop');
});

test('the home page lists the session; deleting it there ends the open IDE', SLOW, async () => {
  const home = await browser.context.newPage();
  await home.goto(`${srv.base}/`);
  await home.waitForSelector(`.row[data-id="${sid}"] .state-ready`);
  assert.match(await home.textContent(`.row[data-id="${sid}"]`), /minimal.*ready.*(just now|min ago)/);
  await screenshot(home, 'home');
  await home.click(`.row[data-id="${sid}"] button[aria-label^="Delete"]`);
  await home.click('.modal button:has-text("Delete")');
  await home.waitForSelector(`.row[data-id="${sid}"]`, { state: 'detached', timeout: 60_000 });
  await home.close();
  await page.waitForSelector('.session-banner >> text=This session has ended', { timeout: 30_000 });
  await page.waitForSelector('.statusbar.ended');
  await screenshot(page, 'ide-ended');
  await page.goto(`${srv.base}/s/${sid}`);
  await page.waitForSelector('.full-page >> text=does not exist');
});
