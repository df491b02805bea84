import { startServer, startBrowser, screenshot, TOKEN, until } from './harness.mjs';
const srv = await startServer();
console.log('server', srv.base);
const b = await startBrowser();
const page = await b.context.newPage();
page.on('console', (m) => console.log('console:', m.type(), m.text()));
page.on('pageerror', (e) => console.log('pageerror:', e.message));
try {
  await page.goto(srv.base + '/');
  console.log('url', page.url());
  await page.waitForSelector('#token');
  await screenshot(page, 'probe-login');
  await page.fill('#token', TOKEN);
  await page.click('button[type=submit]');
  await page.waitForURL(srv.base + '/');
  await page.waitForSelector('#new-session:not([disabled])');
  await screenshot(page, 'probe-home-empty');
  await page.click('#new-session');
  await page.waitForURL(/\/s\//);
  await page.waitForTimeout(500);
  await screenshot(page, 'probe-ide-boot');
  await until('terminal prompt', async () => (await page.evaluate(() => window.mayfly?.terminalText())).includes('#'), 60000);
  await screenshot(page, 'probe-ide');
} catch (e) { console.log('ERR', e); await screenshot(page, 'probe-error'); }
await b.close();
await srv.stop();
