// Smoke test of the official E2B JS SDK against a Mayfly E2B door (node js_sdk.mjs).
// Environment: E2B_URL, E2B_KEY; E2B_SDK_DIR: a directory whose node_modules has `e2b`.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.E2B_SDK_DIR ?? process.cwd(), 'index.js'));
const { Sandbox, CommandExitError } = require('e2b');
const opts = { apiUrl: process.env.E2B_URL, sandboxUrl: process.env.E2B_URL, apiKey: process.env.E2B_KEY };

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

const sbx = await Sandbox.create({ ...opts, metadata: { suite: 'js' }, envs: { JS_VAR: 'from-js' } });
try {
  const r = await sbx.commands.run('echo $JS_VAR; echo err >&2');
  expect(r.stdout.trim() === 'from-js', `stdout ${JSON.stringify(r.stdout)}`);
  expect(r.stderr.trim() === 'err', `stderr ${JSON.stringify(r.stderr)}`);
  let failed = null;
  try {
    await sbx.commands.run('exit 4');
  } catch (e) {
    failed = e;
  }
  expect(failed instanceof CommandExitError && failed.exitCode === 4, `exit error ${failed}`);
  await sbx.files.write('/root/js.txt', 'js files');
  expect((await sbx.files.read('/root/js.txt')) === 'js files', 'file round trip');
  const names = (await sbx.files.list('/root')).map((e) => e.name);
  expect(names.includes('js.txt'), `list ${names}`);
  const info = await sbx.getInfo();
  expect(info.metadata.suite === 'js', `metadata ${JSON.stringify(info.metadata)}`);
} finally {
  await sbx.kill();
}
expect(!(await sbx.isRunning()), 'still running after kill');
console.log('JS OK');
