// The IDE's Agent view against the real server, a real VM and a scripted model server that
// speaks OpenAI's streaming Chat Completions wire format (the only fake: no hosted LLM here).
// The test asserts what the agent really did in the VM and what the page shows while it works.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { screenshot, signedInSession, until } from './harness.mjs';

const SLOW = { timeout: 180_000 };
let srv, browser, page, sid, model;
const requests = [];

const ide = (fn, ...args) => page.evaluate(fn, ...args);

/** One streamed reply: SSE `data:` chunks in OpenAI's format, then `[DONE]`. */
function stream(res, chunks) {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const c of chunks) res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'scripted', choices: [c] })}\n\n`);
  res.end('data: [DONE]\n\n');
}

const toolCall = (id, name, args) => [
  { index: 0, delta: { role: 'assistant', tool_calls: [{ index: 0, id, type: 'function', function: { name, arguments: '' } }] }, finish_reason: null },
  { index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: JSON.stringify(args) } }] }, finish_reason: null },
  { index: 0, delta: {}, finish_reason: 'tool_calls' },
];
const text = (...pieces) => [...pieces.map((p) => ({ index: 0, delta: { content: p }, finish_reason: null })), { index: 0, delta: {}, finish_reason: 'stop' }];

/** The scenario, one reply per model request, in order. */
const SCRIPT = [
  toolCall('call_1', 'write_file', { path: '/root/notes.txt', content: 'written by the agent\n' }),
  toolCall('call_2', 'shell', { command: 'echo agent-was-$((40+2)) && wc -c /root/notes.txt' }),
  text('All done: ', 'notes.txt has ', 'new text.'),
  // Second prompt: a command that would run for ten minutes, stopped from the page.
  toolCall('call_3', 'shell', { command: 'sleep 600', timeout_seconds: 900 }),
];

function startModel() {
  return new Promise((ok) => {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        requests.push({ url: req.url, auth: req.headers.authorization, body: JSON.parse(body) });
        const reply = SCRIPT[requests.length - 1];
        if (!reply || req.url !== '/v1/chat/completions') {
          res.writeHead(500).end('script exhausted');
          return;
        }
        stream(res, reply);
      });
    });
    server.listen(0, '127.0.0.1', () => ok(server));
  });
}

async function vm(script) {
  return page.evaluate(
    async ([id, script]) => {
      const res = await fetch(`/api/v1/sessions/${id}/exec`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ cmd: ['sh', '-c', script] }),
      });
      return res.json();
    },
    [sid, script],
  );
}

before(async () => {
  model = await startModel();
  Object.assign(process.env, {
    MAYFLY_AGENT_PROVIDER: 'openai',
    MAYFLY_AGENT_BASE_URL: `http://127.0.0.1:${model.address().port}/v1`,
    MAYFLY_AGENT_MODEL: 'scripted',
    MAYFLY_AGENT_API_KEY: 'sk-browser-test',
  });
  ({ srv, browser, page, sid } = await signedInSession());
  assert.equal((await vm('printf "old text\\n" > /root/notes.txt')).exit_code, 0);
  await page.goto(`${srv.base}/s/${sid}`);
  await until('the IDE to be ready', () => ide(() => window.mayfly?.session().state === 'ready'), 60_000);
});

after(async () => {
  await browser?.close();
  await srv?.stop();
  model?.close();
});

test('the agent works in the VM while the page streams its text, tool calls and terminal', SLOW, async () => {
  // An open editor on the file the agent will rewrite.
  await until('the file in the tree', () => page.isVisible('.tree-row[data-path="/root/notes.txt"]'), 30_000);
  await page.click('.tree-row[data-path="/root/notes.txt"]');
  await until('the editor to show the old text', async () => (await ide(() => window.mayfly.editorText('/root/notes.txt'))) === 'old text\n', 30_000);

  await page.click('#activity-agent');
  await page.fill('.agent-input', 'Write the notes file and check it.');
  await page.keyboard.press('Enter');
  await until('the run to succeed', () => page.isVisible('.agent-notice.run-succeeded'), 120_000);

  // What really happened in the VM.
  const out = await vm('cat /root/notes.txt');
  assert.equal(out.stdout, 'written by the agent\n');
  // The page: the prompt, both tool calls done (not pending, no error), the streamed answer.
  assert.equal(await page.textContent('.agent-msg.user .agent-text'), 'Write the notes file and check it.');
  for (const tool of ['write_file', 'shell']) {
    assert.equal(await page.locator(`.agent-tool[data-tool="${tool}"]:not(.pending):not(.error)`).count(), 1, tool);
  }
  assert.equal(await page.textContent('.agent-msg.assistant .agent-text'), 'All done: notes.txt has new text.');
  await page.click('.agent-tool[data-tool="shell"] summary');
  assert.match(await page.textContent('.agent-tool[data-tool="shell"] .tool-result'), /agent-was-42/);
  // The open editor followed the agent's write; the agent's terminal is a tab showing its command.
  await until('the editor to follow the file', async () => (await ide(() => window.mayfly.editorText('/root/notes.txt'))) === 'written by the agent\n', 30_000);
  assert.equal((await page.textContent('.term-tab.active span')).trim(), 'agent');
  await until('the command in the agent terminal', async () => (await ide(() => window.mayfly.terminalText())).includes('agent-was-42'), 30_000);
  // The model got the real tool results, and the key only in its header.
  assert.equal(requests[0].auth, 'Bearer sk-browser-test');
  const results = requests[2].body.messages.filter((m) => m.role === 'tool').map((m) => m.content);
  assert.match(results.join('\n'), /21 \/root\/notes.txt/);
  await screenshot(page, 'agent');
});

test('Stop cancels a run whose command would take ten minutes', SLOW, async () => {
  await page.fill('.agent-input', 'Now wait a long time.');
  await page.keyboard.press('Enter');
  await until('the long command to run', () => page.isVisible('.agent-tool.pending[data-tool="shell"]'), 60_000);
  await until('sleep in the VM', async () => (await vm('pgrep -x sleep')).exit_code === 0, 30_000);
  await page.click('#agent-stop');
  await until('the run to be cancelled', () => page.isVisible('.agent-notice.run-cancelled'), 60_000);
  await until('sleep to be gone', async () => (await vm('pgrep -x sleep')).exit_code === 1, 30_000);
  assert.equal(await page.isVisible('#agent-stop'), false);
  assert.equal(await page.isDisabled('#agent-send'), false, 'a new prompt can be sent');
  // After a reload the conversation comes back from the server.
  await page.reload();
  await until('the IDE to be ready', () => ide(() => window.mayfly?.session().state === 'ready'), 60_000);
  await page.click('#activity-agent');
  await until('the history', async () => (await page.locator('.agent-msg.user').count()) === 2, 30_000);
  assert.equal(await page.locator('.agent-tool[data-tool="write_file"]').count(), 1);
});
