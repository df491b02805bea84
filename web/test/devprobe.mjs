// scratch: UI iteration against a running dev server
import { startBrowser, screenshot, until } from './harness.mjs';
const base = process.env.BASE ?? 'http://127.0.0.1:5173';
const b = await startBrowser();
const page = await b.context.newPage();
page.on('pageerror', (e) => console.log('pageerror:', e.message));
page.on('console', (m) => m.type() === 'error' && console.log('console:', m.text()));
try {
  await page.goto(base + '/login');
  await page.fill('#token', 'devtoken');
  await page.click('button[type=submit]');
  await page.waitForSelector('#new-session:not([disabled])');
  await page.click('#new-session');
  await page.waitForURL(/\/s\//);
  await until('prompt', async () => (await page.evaluate(() => window.mayfly?.terminalText() ?? '')).includes('#'), 60000);
  await page.click('.xterm');
  await page.keyboard.type("mkdir -p src && printf 'import os\\n\\ndef main():\\n    print(\"hello\", os.getcwd())\\n\\nif __name__ == \"__main__\":\\n    main()\\n' > src/app.py && echo hello > a.txt\n");
  await page.waitForSelector('.tree-row[data-path="/root/a.txt"]', { timeout: 15000 });
  await page.click('.tree-row[data-path="/root/src"]');
  await page.waitForSelector('.tree-row[data-path="/root/src/app.py"]');
  await page.click('.tree-row[data-path="/root/src/app.py"]');
  await page.waitForSelector('.monaco-editor .view-lines');
  await page.click('.tree-row[data-path="/root/a.txt"]');
  await page.waitForTimeout(300);
  await page.keyboard.press('End');
  await page.keyboard.type(' world');
  await page.click('.tab[data-path="/root/src/app.py"]');
  await page.click('.xterm');
  await page.keyboard.type("python3 -c \"import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',8000));s.listen();time.sleep(3600)\" &\n");
  await page.waitForSelector('.port-row[data-port="8000"]', { timeout: 20000 });
  await page.waitForTimeout(500);
  await screenshot(page, 'dev-ide');
} catch (e) { console.log('ERR', e.message); await screenshot(page, 'dev-error'); }
await b.close();
