// The IDE rides out a server restart: an open IDE page keeps its session when `mayfly serve` is
// killed (kill -9) and started again on the same address and data dir. The terminal shows that
// the link dropped, reconnects by itself, replays its scrollback, and the same shell (with its
// variables) takes new input; a file saved before the crash is still there.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { screenshot, signedInSession, startServer, until } from './harness.mjs';

const SLOW = { timeout: 240_000 };
let srv, browser, page, sid;

const term = () => page.evaluate(() => window.mayfly?.terminalText() ?? '');

before(async () => {
  // `end` at the final stop: the test's VMs go with the last server.
  ({ srv, browser, page, sid } = await signedInSession({ env: { MAYFLY_ON_SHUTDOWN: 'end' } }));
});

after(async () => {
  await browser?.close();
  await srv?.stop();
});

test('an open IDE reconnects after kill -9 and a restart, and the same terminal takes input', SLOW, async () => {
  await page.goto(`${srv.base}/s/${sid}`);
  await page.waitForSelector('.term:not([hidden])[data-state="live"] .xterm-screen');
  await page.click('.term:not([hidden]) .xterm-screen');
  await page.keyboard.type("export RIDE=41; echo 'saved before' > /root/kept.txt; echo before-''restart\n");
  await until('the command before the restart', async () => (await term()).includes('before-restart'), 60_000);

  const bind = new URL(srv.base).host;
  const data = srv.data;
  await srv.crash();
  await until('the terminal to show the lost link', () =>
    page.evaluate(() => !!document.querySelector('.term:not([hidden]).disconnected')), 60_000);
  await screenshot(page, 'restart-disconnected');

  srv = await startServer({ MAYFLY_ON_SHUTDOWN: 'end' }, { data, bind });
  // Live = attached again (its input goes to the shell); the link dropped in between.
  await until('the terminal to reconnect', () =>
    page.evaluate(() => !!document.querySelector('.term:not([hidden])[data-state="live"]')), 90_000);
  // The scrollback came back with the re-attach.
  await until('the replayed scrollback', async () => (await term()).includes('before-restart'), 30_000);
  await page.click('.term:not([hidden]) .xterm-screen');
  await page.keyboard.type("echo after-$((RIDE+1))-''restart\n");
  await until('the same shell answering after the restart', async () => (await term()).includes('after-42-restart'), 60_000).catch(async (e) => {
    await screenshot(page, 'restart-failed');
    throw new Error(`${e.message}\nterminal:\n${await term()}\nserver log:\n${srv.log()}`);
  });
  await screenshot(page, 'restart-reconnected');

  const s = await page.evaluate(async (id) => (await fetch(`/api/v1/sessions/${id}`)).json(), sid);
  assert.equal(s.state, 'ready');
  const kept = await page.evaluate(async (id) => (await fetch(`/api/v1/sessions/${id}/files?path=/root/kept.txt`)).text(), sid);
  assert.equal(kept, 'saved before\n');
  // No session-ended banner: the session never ended.
  assert.equal(await page.evaluate(() => !!document.querySelector('.session-banner')), false);
});
