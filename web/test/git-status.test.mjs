// Table tests of the `git status --porcelain=v2 --branch -z` parser (src/lib/git.ts), built
// with the esbuild that Vite already brings. No VM, no browser.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildSync } from 'esbuild';

const out = buildSync({ entryPoints: [new URL('../src/lib/git.ts', import.meta.url).pathname], bundle: true, format: 'esm', write: false });
const { parseStatus } = await import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].text).toString('base64')}`);

const z = (...recs) => recs.map((r) => r + '\0').join('');
const H = 'N... 100644 100644 100644 aaaaaaa bbbbbbb';

const cases = [
  {
    name: 'clean branch with upstream',
    out: z('# branch.oid 1234abcd', '# branch.head main', '# branch.upstream origin/main', '# branch.ab +2 -1'),
    want: { branch: 'main', hasHead: true, upstream: 'origin/main', ahead: 2, behind: 1, staged: [], changes: [] },
  },
  {
    name: 'before the first commit, untracked file with spaces',
    out: z('# branch.oid (initial)', '# branch.head main', '? my notes.txt'),
    want: { branch: 'main', hasHead: false, ahead: 0, behind: 0, staged: [], changes: [{ path: 'my notes.txt', letter: '?' }] },
  },
  {
    name: 'staged and unstaged in one file, a deletion, detached HEAD',
    out: z('# branch.oid 1234abcd', '# branch.head (detached)', `1 MM ${H} src/a b.rs`, `1 .D ${H} gone.txt`),
    want: {
      branch: null, hasHead: true, ahead: 0, behind: 0,
      staged: [{ path: 'src/a b.rs', from: undefined, letter: 'M' }],
      changes: [{ path: 'src/a b.rs', letter: 'M' }, { path: 'gone.txt', letter: 'D' }],
    },
  },
  {
    name: 'rename: the original path is the next NUL record',
    out: z('# branch.oid 1234abcd', '# branch.head dev', `2 R. ${H} R100 new name.md`, 'old name.md', '? after.txt'),
    want: {
      branch: 'dev', hasHead: true, ahead: 0, behind: 0,
      staged: [{ path: 'new name.md', from: 'old name.md', letter: 'R' }],
      changes: [{ path: 'after.txt', letter: '?' }],
    },
  },
  {
    name: 'unmerged entry and an ignored one',
    out: z('# branch.oid 1234abcd', '# branch.head main', 'u UU N... 100644 100644 100644 100644 a b c conflict.c', '! ignored.o'),
    want: { branch: 'main', hasHead: true, ahead: 0, behind: 0, staged: [], changes: [{ path: 'conflict.c', letter: 'U' }] },
  },
];

for (const c of cases) {
  test(`parseStatus: ${c.name}`, () => assert.deepEqual(parseStatus(c.out), c.want));
}
