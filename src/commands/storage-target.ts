import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { loadPullSecret, credentialsForHost } from '../proxy/pullsecret.js';
import { acquireStorageLock, readLockHolder, StorageLockedError, type LockHolder, type StorageLock } from '../lifecycle/storage-lock.js';

/**
 * Where a maintenance command (gc, fsck, backup, import into storage) does its work: directly on
 * the storage directory, under its lock, when no process holds it; or inside the server that holds
 * it, over its HTTP API, so that a running server never serves a stale view of a store changed
 * behind its back. Any other holder (another gc, an import) is refused with its pid.
 */
export type StorageTarget = { kind: 'local'; lock: StorageLock } | { kind: 'server'; url: string; holder: LockHolder };

export function claimStorage(storage: string, command: string): StorageTarget {
  mkdirSync(storage, { recursive: true });
  try {
    return { kind: 'local', lock: acquireStorageLock(storage, command) };
  } catch (e) {
    if (e instanceof StorageLockedError && e.holder.command === 'serve' && e.holder.url) {
      return { kind: 'server', url: reachableUrl(e.holder.url), holder: e.holder };
    }
    throw e;
  }
}

/** The server that holds the storage directory, if one does and says where it listens. */
export function holdingServer(storage: string): string | undefined {
  const holder = readLockHolder(storage);
  return holder?.command === 'serve' && holder.url ? reachableUrl(holder.url) : undefined;
}

/** A server listening on every address (0.0.0.0, [::]) is reached on loopback. */
function reachableUrl(url: string): string {
  return url.replace('//0.0.0.0:', '//127.0.0.1:').replace('//[::]:', '//[::1]:');
}

export interface ServerCallOptions {
  /** Pull-secret / docker config.json with an entry for the server's host:port (under `auth:`). */
  authFile?: string;
  /** Seconds; maintenance can take long. Default: no limit. */
  timeout?: number;
}

export interface ServerAnswer {
  status: number;
  body: unknown;
}

// The URL comes from the lock file of the process that holds this storage, on this machine: its
// certificate may be for the public host name only, so loopback calls do not verify it.
const loopbackAgent = new Agent({ connect: { rejectUnauthorized: false } });

/**
 * POSTs a JSON body to the holding server (e.g. /api/v1/gc) and returns its JSON answer.
 * Credentials, when needed, come from --authfile (the same form skopeo and oc use), matched by host.
 */
export async function askServer(url: string, path: string, body: unknown, options: ServerCallOptions = {}): Promise<ServerAnswer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.authFile) {
    const creds = credentialsForHost(loadPullSecret(options.authFile), new URL(url).host);
    if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
  }
  const timeout = (options.timeout ?? 0) * 1000;
  const res = await request(new URL(path, url), {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    dispatcher: loopbackAgent,
    headersTimeout: timeout,
    bodyTimeout: timeout,
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: keep the text for the error message */
  }
  return { status: res.statusCode, body: parsed };
}

/** The first error of a spec error body (`{"errors":[{code,message}]}`), or the body itself, shortened. */
export function describeServerError(body: unknown): string {
  const errors = (body as { errors?: { code?: string; message?: string }[] } | undefined)?.errors;
  if (Array.isArray(errors) && errors[0]) return `${errors[0].code ?? ''} ${errors[0].message ?? ''}`.trim();
  return typeof body === 'string' ? body.slice(0, 500) : JSON.stringify(body).slice(0, 500);
}

/**
 * Hands a maintenance command to the server that holds the storage (POST `path` with `body`) and
 * returns its JSON answer; undefined once it has told the person why it could not (the server
 * unreachable, or refusing: then how to pass credentials). `what` completes "asking it to …".
 */
export async function delegateToServer<T>(
  command: string,
  target: Extract<StorageTarget, { kind: 'server' }>,
  request: { path: string; body: unknown; what: string; authFile?: string },
  stderr: { write(text: string): unknown },
): Promise<T | undefined> {
  stderr.write(`airlock ${command}: the storage is served by pid ${target.holder.pid} (the server at ${target.url}); asking it to ${request.what}\n`);
  let answer: ServerAnswer;
  try {
    answer = await askServer(target.url, request.path, request.body, { authFile: request.authFile });
  } catch (e) {
    stderr.write(`airlock ${command}: cannot reach the server at ${target.url}: ${(e as Error).message}\n`);
    return undefined;
  }
  if (answer.status !== 200) {
    stderr.write(`airlock ${command}: the server refused (${answer.status}): ${describeServerError(answer.body)}\n`);
    if (answer.status === 401 || answer.status === 403) {
      stderr.write(`airlock ${command}: pass --authfile with credentials of a user allowed to delete on "**"\n`);
    }
    return undefined;
  }
  return answer.body as T;
}

/**
 * The options every command working on a store takes (`--config`, `--storage`) and `--help`, for
 * node:util parseArgs; each command adds its own.
 */
export const STORE_OPTIONS = {
  config: { type: 'string', short: 'c' },
  storage: { type: 'string', short: 's' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Why `storage` holds no airlock store (no airlock.db), for commands that must not create one; undefined when it does. */
export function missingStore(storage: string): string | undefined {
  return existsSync(join(storage, 'airlock.db'))
    ? undefined
    : `there is no airlock store in ${storage} (no airlock.db); give --storage or --config of one`;
}
