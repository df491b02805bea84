// The REST API as the pages use it: same-origin fetch with the login cookie, JSON errors as
// `ApiError`, and a 401 anywhere sends the browser to the login page.

/** `lost`: its node stopped renewing its lease; it comes back (`ready`) when the node returns. */
export type SessionState = 'creating' | 'ready' | 'stopping' | 'destroyed' | 'failed' | 'lost';

export interface Session {
  id: string;
  state: SessionState;
  image: string;
  created_at: string;
  expires_at: string;
  idle_timeout_seconds: number;
  ide_url: string;
  failure?: string;
  /** The repository cloned at session start (when the server was asked to clone one). */
  repo?: { url?: string; ref?: string; path?: string; state?: 'cloning' | 'ready' | 'failed'; message?: string };
  /** The repository's work is pushed to `mayfly/<id>` when the session ends. */
  auto_push?: boolean;
  /** Paused while nobody uses it (state stays ready); the next request resumes it. */
  paused?: boolean;
  /** The user who created it (absent: made with the server token). */
  owner?: string;
  /** The owner's email (admins only). */
  owner_email?: string;
  /** The node whose VM runs it. */
  node?: string;
}

export interface ExecBody {
  cmd: string[];
  cwd?: string;
  env?: Record<string, string>;
  timeout_seconds?: number;
}

export interface ExecResult {
  exit_code: number | null;
  signal?: number;
  timed_out?: boolean;
  stdout: string;
  stderr: string;
  truncated?: boolean;
}

export interface ImageInfo {
  name: string;
  description: string;
  built_at: string;
  size_bytes: number;
}

export interface FileInfo {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  modified: number;
}

/** private: the owner (and admins); team: anyone signed in to this install; public: anyone with the URL. */
export type Visibility = 'private' | 'team' | 'public';

export interface Port {
  port: number;
  url: string;
  visibility: Visibility;
}

export type Role = 'admin' | 'member';

/** A user's limits; absent is "no limit" (or, as a user's own values, "the role's default"). */
export interface Quotas {
  max_sessions?: number;
  max_vcpus?: number;
  max_memory_mib?: number;
  agent_runs_per_day?: number;
}

export interface QuotaUsage {
  sessions: number;
  vcpus: number;
  memory_mib: number;
  agent_runs_today: number;
}

export interface User {
  id: string;
  email: string;
  name: string;
  role: Role;
  /** `password` or `oidc`. */
  source: string;
  created_at: string;
  last_sign_in_at?: string;
  quotas: Quotas;
}

/** `GET /api/v1/me`. */
export interface Me {
  /** Absent for the server token. */
  user?: User;
  role: Role;
  bootstrap: boolean;
  quotas: Quotas;
  usage: QuotaUsage;
  /** Port of the server's SSH gateway, when one runs. */
  ssh_port?: number;
}

export interface AuthProviders {
  password: boolean;
  oidc?: string;
}

export interface ApiToken {
  id: string;
  name: string;
  created_at: string;
  expires_at?: string;
  last_used_at?: string;
}

/** Only at creation: the secret. */
export interface CreatedToken extends ApiToken {
  token: string;
}

export interface SshKey {
  id: string;
  name: string;
  algorithm: string;
  /** `SHA256:…`, as `ssh-keygen -lf` prints it. */
  fingerprint: string;
  public_key: string;
  created_at: string;
  last_used_at?: string;
}

export interface SavedGitCredential {
  host: string;
  username?: string;
  updated_at: string;
}

export interface CreateUser {
  email: string;
  name?: string;
  role?: Role;
  password?: string;
  quotas?: Quotas;
}

export interface UpdateUser {
  name?: string;
  role?: Role;
  password?: string;
  quotas?: Quotas;
}

export interface AuditEntry {
  seq: number;
  at: string;
  user?: string;
  actor: string;
  action: string;
  session?: string;
  detail: unknown;
  ip?: string;
}

export interface AuditPage {
  entries: AuditEntry[];
  next_before?: number;
}

export interface AuditQuery {
  user?: string;
  action?: string;
  since?: string;
  until?: string;
  before?: number;
  limit?: number;
}

export type FileChangeKind = 'created' | 'modified' | 'deleted' | 'renamed';

export type SessionEvent =
  | { type: 'state'; session: string; from: SessionState | null; to: SessionState; reason?: string; at: string }
  | { type: 'port_opened'; session: string; port: Port }
  | { type: 'port_closed'; session: string; port: number }
  | { type: 'file_changed'; session: string; path: string; kind: FileChangeKind; from?: string }
  | { type: 'repo'; session: string; repo: NonNullable<Session['repo']> }
  | { type: 'repo_push'; session: string; branch: string; sha?: string; error?: string }
  | { type: 'agent_status'; session: string; run: string; status: 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted'; reason?: string; summary?: string }
  | { type: 'agent_text'; session: string; run: string; delta: string }
  | { type: 'agent_tool_call'; session: string; run: string; call_id: string; name: string; arguments: string }
  | { type: 'agent_tool_result'; session: string; run: string; call_id: string; name: string; output: string; is_error: boolean; paths?: string[] }
  | { type: 'agent_retry'; session: string; run: string; attempt: number; delay_ms: number; reason: string };

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function loginUrl(): string {
  return `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
}

export function redirectToLogin(): never {
  location.assign(loginUrl());
  throw new ApiError(401, 'unauthorized', 'not logged in');
}

async function failure(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // Not our JSON error shape (a proxy's page): keep the status line.
  }
  return new ApiError(res.status, code, message);
}

export interface CallOptions {
  body?: unknown;
  raw?: BodyInit;
  signal?: AbortSignal;
  /** Do not redirect to the login page on 401 (the login page itself). */
  noRedirect?: boolean;
}

/** Calls the API; returns the raw response of a successful call. */
export async function call(method: string, path: string, opts: CallOptions = {}): Promise<Response> {
  const headers: Record<string, string> = {};
  let body: BodyInit | undefined = opts.raw;
  if (opts.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.body);
  } else if (opts.raw !== undefined) {
    headers['content-type'] = 'application/octet-stream';
  }
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'same-origin', signal: opts.signal });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'cannot reach the Mayfly server');
  }
  if (res.status === 401 && !opts.noRedirect) redirectToLogin();
  if (!res.ok) throw await failure(res);
  return res;
}

export async function json<T>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
  const res = await call(method, path, opts);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

const enc = encodeURIComponent;
const s = (id: string) => `/api/v1/sessions/${enc(id)}`;

function query(q: object): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export const api = {
  login: (token: string) => call('POST', '/api/v1/login', { body: { token }, noRedirect: true }),
  password: (email: string, password: string) => call('POST', '/api/v1/auth/password', { body: { email, password }, noRedirect: true }),
  providers: () => json<AuthProviders>('GET', '/api/v1/auth/providers', { noRedirect: true }),
  logout: () => call('POST', '/api/v1/logout', { noRedirect: true }),
  me: () => json<Me>('GET', '/api/v1/me'),
  tokens: () => json<ApiToken[]>('GET', '/api/v1/tokens'),
  createToken: (name: string, expires_in_days?: number) => json<CreatedToken>('POST', '/api/v1/tokens', { body: { name, expires_in_days } }),
  revokeToken: (id: string) => call('DELETE', `/api/v1/tokens/${enc(id)}`),
  gitCredentials: () => json<SavedGitCredential[]>('GET', '/api/v1/me/git-credentials'),
  saveGitCredential: (host: string, token: string, username?: string) =>
    json<SavedGitCredential>('PUT', `/api/v1/me/git-credentials/${enc(host)}`, { body: { token, username } }),
  deleteGitCredential: (host: string) => call('DELETE', `/api/v1/me/git-credentials/${enc(host)}`),
  sshKeys: () => json<SshKey[]>('GET', '/api/v1/me/ssh-keys'),
  addSshKey: (public_key: string, name?: string) => json<SshKey>('POST', '/api/v1/me/ssh-keys', { body: { public_key, name } }),
  removeSshKey: (id: string) => call('DELETE', `/api/v1/me/ssh-keys/${enc(id)}`),
  users: () => json<User[]>('GET', '/api/v1/users'),
  createUser: (body: CreateUser) => json<User>('POST', '/api/v1/users', { body }),
  updateUser: (id: string, body: UpdateUser) => json<User>('PATCH', `/api/v1/users/${enc(id)}`, { body }),
  deleteUser: (id: string) => call('DELETE', `/api/v1/users/${enc(id)}`),
  audit: (q: AuditQuery) => json<AuditPage>('GET', `/api/v1/audit${query(q)}`),
  sessions: () => json<Session[]>('GET', '/api/v1/sessions'),
  session: (id: string) => json<Session>('GET', s(id)),
  create: (image: string) => json<Session>('POST', '/api/v1/sessions?wait=false', { body: { image } }),
  remove: (id: string) => call('DELETE', s(id)),
  images: () => json<ImageInfo[]>('GET', '/api/v1/images'),
  list: (id: string, path: string) => json<FileInfo[]>('GET', `${s(id)}/files?path=${enc(path)}`),
  read: (id: string, path: string, signal?: AbortSignal) => call('GET', `${s(id)}/files?path=${enc(path)}`, { signal }),
  write: (id: string, path: string, data: BodyInit) => call('PUT', `${s(id)}/files?path=${enc(path)}`, { raw: data }),
  removePath: (id: string, path: string) => call('DELETE', `${s(id)}/files?path=${enc(path)}`),
  mkdir: (id: string, path: string) => call('POST', `${s(id)}/files/mkdir?path=${enc(path)}`),
  rename: (id: string, from: string, to: string) => call('POST', `${s(id)}/files/rename`, { body: { from, to } }),
  exec: (id: string, body: ExecBody) => json<ExecResult>('POST', `${s(id)}/exec`, { body }),
  ports: (id: string) => json<Port[]>('GET', `${s(id)}/ports`),
  setVisibility: (id: string, port: number, visibility: Visibility) =>
    json<Port>('PATCH', `${s(id)}/ports/${port}`, { body: { visibility } }),
};
