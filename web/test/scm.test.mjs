// Browser end-to-end tests of the IDE's Source Control view: real Chromium, the real server and a
// real VM (`minimal`, which has git). A bare repository inside the VM stands in for the remote;
// every action is checked against git's state in the VM (exec API), not only the page.
// Run with the other browser tests: `MAYFLY_DATA_DIR=… npm test` in web/.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { screenshot, signedInSession, until } from './harness.mjs';

const SLOW = { timeout: 180_000 };
const REPO = '/root/app';
let srv, browser, page, sid;

const ide = (fn, ...args) => page.evaluate(fn, ...args);

/** Runs a shell script in the VM through the exec API (the page's login cookie). */
async function vm(script) {
  const r = await page.evaluate(
    async ([id, script]) => {
      const res = await fetch(`/api/v1/sessions/${id}/exec`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ cmd: ['sh', '-c', script], timeout_seconds: 60 }),
      });
      return { status: res.status, body: await res.json() };
    },
    [sid, script],
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** stdout of a script that must succeed. */
async function sh(script) {
  const r = await vm(script);
  assert.equal(r.exit_code, 0, `${script}\n${r.stderr}`);
  return r.stdout.trim();
}

async function typeInTerminal(text) {
  await page.click('.term:not([hidden]) .xterm-screen');
  await page.keyboard.type(text);
}

const row = (group, path) => `.scm-repo[data-repo="${REPO}"] .scm-group.${group} .scm-row[data-path="${path}"]`;

async function rowAction(group, path, label) {
  await page.hover(row(group, path));
  await page.click(`${row(group, path)} button[aria-label="${label}"]`);
}

before(async () => {
  ({ srv, browser, page, sid } = await signedInSession());
  await page.goto(`${srv.base}/s/${sid}`);
  await until('the IDE to be ready', () => ide(() => window.mayfly?.session().state === 'ready'), 60_000);
  await until('a shell prompt', async () => /root@.*# $/m.test(await ide(() => window.mayfly.terminalText())), 60_000);
});

after(async () => {
  await browser?.close();
  await srv?.stop();
});

test('without a repository the view offers to initialize one', SLOW, async () => {
  await page.click('#activity-scm');
  await page.waitForSelector('.scm-empty >> text=No git repository');
  assert.ok(await page.isVisible('.scm-init'));
  assert.ok(await page.isHidden('.view.explorer'), 'the explorer gives way to source control');
});

test('changes made in the terminal appear grouped with status letters, and a diff opens', SLOW, async () => {
  // A "remote" inside the VM, and a clone of it in the workspace with one pushed commit.
  await sh(
    [
      'git config --global user.name "Test User"',
      'git config --global user.email test@example.com',
      'git config --global init.defaultBranch main',
      'git init -q --bare /srv/remote.git',
      `git clone -q /srv/remote.git ${REPO} 2>/dev/null`,
      `cd ${REPO}`,
      'printf "line one\\nline two\\n" > README.md',
      'git add README.md && git commit -q -m "first commit" && git push -q -u origin main',
    ].join(' && '),
  );
  await page.click('#scm-refresh');
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-branch-name >> text=main`);
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-ab >> text=↑0 ↓0`);

  await typeInTerminal(`cd ${REPO} && echo 'line three' >> README.md && echo new > new.txt && mkdir -p src && echo x > src/lib.rs\n`);
  // File events refresh the view: no click on Refresh here.
  await page.waitForSelector(row('changes', 'README.md'), { timeout: 30_000 });
  await page.waitForSelector(row('changes', 'new.txt'));
  await page.waitForSelector(row('changes', 'src/lib.rs'));
  assert.equal(await page.textContent(`${row('changes', 'README.md')} .letter`), 'M');
  assert.equal(await page.textContent(`${row('changes', 'new.txt')} .letter`), 'U');
  assert.equal(await page.textContent('#activity-scm .activity-badge'), '3');

  await page.click(`${row('changes', 'README.md')} .name`);
  await page.waitForSelector('.tab.active[data-path^="diff:tree:"]');
  await page.waitForSelector('.diff-view .monaco-diff-editor');
  const texts = await until('the diff to load', async () => (await ide(() => window.mayfly.diffTexts())).find((d) => d.key === `diff:tree:${REPO}/README.md` && d.modified));
  assert.equal(texts.original, 'line one\nline two\n');
  assert.equal(texts.modified, 'line one\nline two\nline three\n');
  await page.waitForSelector('.diff-view .line-insert, .diff-view .char-insert');
  await screenshot(page, 'scm-diff');
});

test('stage and unstage one file or all, as git in the VM sees it', SLOW, async () => {
  const cached = () => sh(`git -C ${REPO} diff --cached --name-only`);
  await rowAction('changes', 'README.md', 'Stage Changes');
  await page.waitForSelector(row('staged', 'README.md'));
  assert.equal(await cached(), 'README.md');
  await rowAction('changes', 'new.txt', 'Stage Changes');
  await page.waitForSelector(row('staged', 'new.txt'));
  assert.equal(await page.textContent(`${row('staged', 'new.txt')} .letter`), 'A');
  assert.equal(await cached(), 'README.md\nnew.txt');
  await rowAction('staged', 'new.txt', 'Unstage Changes');
  await page.waitForSelector(row('changes', 'new.txt'));
  assert.equal(await cached(), 'README.md');
  // Stage all, then unstage all.
  await page.hover(`.scm-repo[data-repo="${REPO}"] .scm-group.changes .scm-group-head`);
  await page.click(`.scm-repo[data-repo="${REPO}"] .scm-group.changes button[aria-label="Stage All Changes"]`);
  await until('everything staged', async () => (await cached()) === 'README.md\nnew.txt\nsrc/lib.rs');
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-group.changes`, { state: 'detached' });
  await page.hover(`.scm-repo[data-repo="${REPO}"] .scm-group.staged .scm-group-head`);
  await page.click(`.scm-repo[data-repo="${REPO}"] .scm-group.staged button[aria-label="Unstage All Changes"]`);
  await until('nothing staged', async () => (await cached()) === '');
  await rowAction('changes', 'README.md', 'Stage Changes');
  await page.waitForSelector(row('staged', 'README.md'));
});

test('commit with Ctrl+Enter, then push to a named branch of the remote', SLOW, async () => {
  const box = `.scm-repo[data-repo="${REPO}"] .scm-message`;
  // An empty message is refused with a reason, and nothing is committed.
  await page.click(`.scm-repo[data-repo="${REPO}"] .scm-commit`);
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-error >> text=commit message`);
  assert.equal(await sh(`git -C ${REPO} rev-list --count HEAD`), '1');

  await page.fill(box, 'Add a third line');
  await page.focus(box);
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-group.staged`, { state: 'detached' });
  assert.equal(await sh(`git -C ${REPO} log -1 --format=%s`), 'Add a third line');
  assert.equal(await sh(`git -C ${REPO} show --name-only --format= HEAD`), 'README.md');
  assert.equal(await page.inputValue(box), '', 'the message box is emptied');
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-ab >> text=↑1 ↓0`);
  // The still-untracked files stay in Changes.
  await page.waitForSelector(row('changes', 'new.txt'));

  await page.fill(`.scm-repo[data-repo="${REPO}"] .scm-branch`, 'feature/scm');
  await page.click(`.scm-repo[data-repo="${REPO}"] .scm-push`);
  await until('the branch on the remote', async () => (await vm('git -C /srv/remote.git log -1 --format=%s feature/scm')).stdout.trim() === 'Add a third line');
  assert.equal(await sh(`git -C ${REPO} rev-parse HEAD`), await sh('git -C /srv/remote.git rev-parse feature/scm'));
  // `main` on the remote is untouched, and the local branch now tracks the pushed one.
  assert.equal(await sh('git -C /srv/remote.git log -1 --format=%s main'), 'first commit');
  assert.equal(await sh(`git -C ${REPO} rev-parse --abbrev-ref @{upstream}`), 'origin/feature/scm');
  await page.waitForSelector(`.scm-repo[data-repo="${REPO}"] .scm-ab >> text=↑0 ↓0`);
  assert.ok(await page.isHidden(`.scm-repo[data-repo="${REPO}"] .scm-error`));
});

test("a failing push shows git's error and does not hang", SLOW, async () => {
  await sh(`cd ${REPO} && git remote set-url origin /srv/gone.git && echo more >> README.md && git commit -q -am "second"`);
  await page.click('#scm-refresh');
  await page.click(`.scm-repo[data-repo="${REPO}"] .scm-push`);
  const err = `.scm-repo[data-repo="${REPO}"] .scm-error`;
  await page.waitForSelector(`${err}:not([hidden])`, { timeout: 60_000 });
  const text = await page.textContent(err);
  assert.match(text, /gone\.git/);
  assert.match(text, /does not appear to be a git repository|Could not read from remote/);
  await screenshot(page, 'scm-push-error');
});

test('ending the session warns about uncommitted and unpushed work; cancelling keeps it', SLOW, async () => {
  await page.click('#end-session');
  await page.waitForSelector('.modal >> text=has work that is not pushed');
  const details = await page.textContent('.modal ul.details');
  // new.txt and src/lib.rs are untracked; "second" is on no remote.
  assert.match(details, /\/root\/app: 2 uncommitted changes, 1 unpushed commit/);
  await screenshot(page, 'scm-end-warning');
  await page.click('.modal button:has-text("Cancel")');
  await page.waitForSelector('.modal', { state: 'detached' });
  const s = await page.evaluate(async (id) => (await fetch(`/api/v1/sessions/${id}`)).json(), sid);
  assert.equal(s.state, 'ready');
  assert.equal(await sh('echo still-here'), 'still-here');

  // The home page's delete asks the same question.
  const home = await browser.context.newPage();
  await home.goto(`${srv.base}/`);
  await home.click(`.row[data-id="${sid}"] button[aria-label^="Delete"]`);
  await home.waitForSelector('.modal >> text=has work that is not pushed');
  await home.click('.modal button:has-text("Cancel")');
  await home.close();

  // With everything committed and pushed there is nothing to warn about.
  await sh(`cd ${REPO} && git remote set-url origin /srv/remote.git && git add -A && git commit -q -m third && git push -q origin HEAD:feature/scm`);
  await page.click('#end-session');
  await page.waitForSelector('.modal >> text=End session');
  assert.equal(await page.$('.modal ul.details'), null);
  await page.click('.modal button.danger');
  await page.waitForSelector('.session-banner >> text=This session has ended', { timeout: 60_000 });
});
