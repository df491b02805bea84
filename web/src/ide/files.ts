// Reading files from the VM for the editor: normal text, large files (first 5 MiB, read-only)
// and binary files (not shown as text).

import { api, ApiError } from '../lib/api';

/** Files larger than this open read-only, truncated to this many bytes. */
export const LARGE_BYTES = 5 * 1024 * 1024;

export type Loaded =
  | { kind: 'text'; text: string; size: number }
  | { kind: 'large'; text: string; size: number }
  | { kind: 'binary'; size: number };

/** A NUL byte in the first 8 KiB means binary (what git and VS Code decide by, too). */
export function looksBinary(bytes: Uint8Array): boolean {
  return bytes.subarray(0, 8192).includes(0);
}

async function readUpTo(res: Response, limit: number): Promise<Uint8Array> {
  const reader = res.body!.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (total < limit) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.length;
  }
  if (total >= limit) void reader.cancel();
  const out = new Uint8Array(Math.min(total, limit));
  let off = 0;
  for (const c of chunks) {
    const n = Math.min(c.length, out.length - off);
    out.set(c.subarray(0, n), off);
    off += n;
    if (off >= out.length) break;
  }
  return out;
}

export async function loadFile(sid: string, path: string): Promise<Loaded> {
  const res = await api.read(sid, path);
  if (res.headers.get('content-type')?.startsWith('application/json')) {
    void res.body?.cancel();
    throw new Error('it is a directory');
  }
  const declared = Number(res.headers.get('content-length'));
  const bytes = await readUpTo(res, LARGE_BYTES + 1);
  const size = Number.isFinite(declared) && declared > 0 ? declared : bytes.length;
  if (looksBinary(bytes)) return { kind: 'binary', size };
  if (size > LARGE_BYTES || bytes.length > LARGE_BYTES) {
    return { kind: 'large', text: new TextDecoder().decode(bytes.subarray(0, LARGE_BYTES)), size };
  }
  try {
    return { kind: 'text', text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), size };
  } catch {
    return { kind: 'binary', size }; // not UTF-8: shown as binary rather than garbled
  }
}

/** The file's current text, or null when it is gone, binary or large (nothing to compare). */
export async function currentText(sid: string, path: string): Promise<string | null> {
  try {
    const f = await loadFile(sid, path);
    return f.kind === 'text' ? f.text : null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}
