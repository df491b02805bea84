// Git in the session's VM, over the exec API: finding repositories, reading their status and
// running git commands. Shared by the IDE's source control view and the "end session" warnings.
// Git never prompts here (GIT_TERMINAL_PROMPT=0, ssh in batch mode) and every call has a
// timeout, so a missing credential fails with git's message instead of hanging.

import { api, ApiError } from './api';

export const WORKSPACE = '/root';

export class GitError extends Error {}

const ENV = {
  GIT_TERMINAL_PROMPT: '0',
  GIT_SSH_COMMAND: 'ssh -o BatchMode=yes',
  // Background status must not take index.lock away from the user's own git in the terminal.
  GIT_OPTIONAL_LOCKS: '0',
};

/** Runs `git args…` in `repo`; returns stdout, or throws a GitError carrying git's stderr. */
export async function git(sid: string, repo: string, args: string[], timeoutSeconds = 30): Promise<string> {
  let r;
  try {
    r = await api.exec(sid, { cmd: ['git', ...args], cwd: repo, env: ENV, timeout_seconds: timeoutSeconds });
  } catch (e) {
    if (e instanceof ApiError && e.status === 422) throw new GitError('git is not installed in this VM.');
    throw e;
  }
  if (r.timed_out) throw new GitError(`git ${args[0]} did not finish within ${timeoutSeconds} s.\n${r.stderr}`.trim());
  if (r.exit_code !== 0) throw new GitError((r.stderr || r.stdout).trim() || `git ${args[0]} failed (exit ${r.exit_code ?? 'signal'})`);
  return r.stdout;
}

/** The repositories of a session: the one the session was created with (when the server says),
 * then the workspace itself or its direct subdirectories that hold a `.git`. */
export async function findRepos(sid: string, sessionRepo?: string): Promise<string[]> {
  const script = `for d in ${WORKSPACE} ${WORKSPACE}/*/; do d=\${d%/}; [ -e "$d/.git" ] && echo "$d"; done; true`;
  const r = await api.exec(sid, { cmd: ['sh', '-c', script], timeout_seconds: 15 });
  const found = r.stdout.split('\n').filter(Boolean);
  return [...new Set([...(sessionRepo ? [sessionRepo] : []), ...found])];
}

export interface Change {
  path: string;
  /** The path before a rename or copy. */
  from?: string;
  /** One status letter: M A D R C T U (conflict) or ? (untracked). */
  letter: string;
}

export interface Status {
  branch: string | null; // null: detached HEAD
  /** false before the first commit. */
  hasHead: boolean;
  upstream?: string;
  ahead: number;
  behind: number;
  staged: Change[];
  changes: Change[];
}

/** Parses `git status --porcelain=v2 --branch -z` (git-status(1), "Porcelain Format Version 2"):
 * NUL-terminated records; `# branch.*` headers; `1 XY sub mH mI mW hH hI path`;
 * `2 XY sub mH mI mW hH hI Xscore path NUL origPath`; `u XY sub m1 m2 m3 mW h1 h2 h3 path`;
 * `? path`; `! path`. Fields are single-space separated and only the path may hold spaces. */
export function parseStatus(out: string): Status {
  const s: Status = { branch: null, hasHead: true, ahead: 0, behind: 0, staged: [], changes: [] };
  const recs = out.split('\0');
  const rest = (rec: string, n: number) => rec.split(' ').slice(n).join(' ');
  for (let i = 0; i < recs.length; i++) {
    const rec = recs[i];
    if (!rec) continue;
    const f = rec.split(' ');
    if (f[0] === '#') {
      if (f[1] === 'branch.oid') s.hasHead = f[2] !== '(initial)';
      else if (f[1] === 'branch.head') s.branch = f[2] === '(detached)' ? null : rest(rec, 2);
      else if (f[1] === 'branch.upstream') s.upstream = rest(rec, 2);
      else if (f[1] === 'branch.ab') {
        s.ahead = Math.abs(parseInt(f[2], 10)) || 0;
        s.behind = Math.abs(parseInt(f[3], 10)) || 0;
      }
    } else if (f[0] === '1' || f[0] === '2') {
      const [x, y] = f[1];
      const path = rest(rec, f[0] === '1' ? 8 : 9);
      const from = f[0] === '2' ? recs[++i] : undefined;
      if (x !== '.') s.staged.push({ path, from, letter: x });
      if (y !== '.') s.changes.push({ path, letter: y });
    } else if (f[0] === 'u') {
      s.changes.push({ path: rest(rec, 10), letter: 'U' });
    } else if (f[0] === '?') {
      s.changes.push({ path: rest(rec, 1), letter: '?' });
    }
  }
  return s;
}

export async function status(sid: string, repo: string): Promise<Status> {
  return parseStatus(await git(sid, repo, ['status', '--porcelain=v2', '--branch', '-z', '--untracked-files=all']));
}

export interface UnsavedWork {
  repo: string;
  uncommitted: number;
  /** Commits on local branches that no remote-tracking branch contains. */
  unpushed: number;
}

/** The repositories of a session that hold work a session end would destroy. Throws when the
 * VM cannot be asked (git errors in one repository count as "unknown", reported as -1). */
export async function unsavedWork(sid: string, sessionRepo?: string): Promise<UnsavedWork[]> {
  const repos = await findRepos(sid, sessionRepo);
  const all = await Promise.all(
    repos.map(async (repo): Promise<UnsavedWork> => {
      try {
        const [st, count] = await Promise.all([
          status(sid, repo),
          git(sid, repo, ['rev-list', '--count', '--branches', '--not', '--remotes']).catch(() => '0'),
        ]);
        const paths = new Set([...st.staged, ...st.changes].map((c) => c.path));
        return { repo, uncommitted: paths.size, unpushed: parseInt(count, 10) || 0 };
      } catch {
        return { repo, uncommitted: -1, unpushed: -1 };
      }
    }),
  );
  return all.filter((w) => w.uncommitted !== 0 || w.unpushed !== 0);
}

/** "3 uncommitted changes, 1 unpushed commit" */
export function describeWork(w: UnsavedWork): string {
  if (w.uncommitted < 0) return `${w.repo}: could not be checked`;
  const n = (k: number, what: string) => `${k} ${what}${k === 1 ? '' : 's'}`;
  const parts = [w.uncommitted ? n(w.uncommitted, 'uncommitted change') : '', w.unpushed ? n(w.unpushed, 'unpushed commit') : ''];
  return `${w.repo}: ${parts.filter(Boolean).join(', ')}`;
}
