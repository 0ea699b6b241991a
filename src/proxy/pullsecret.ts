// Reads credentials from a pull secret / ~/.docker/config.json / containers auth.json:
//   {"auths":{"quay.io":{"auth":"base64(user:pass)"}, "https://index.docker.io/v1/":{"username":"u","password":"p"}}}
// OpenShift users already have such a file for every registry they pull from, so airlock takes it as is.

import { readFileSync } from 'node:fs';
import { DOCKER_HUB_HOSTS } from './routing.js';

export interface Credentials {
  username: string;
  password: string;
}

/** Credentials by registry host (lowercase, with port when it is not the default). */
export type PullSecret = ReadonlyMap<string, Credentials>;

/** A pull secret that cannot be used; the message names the file and the reason, never a secret. */
export class PullSecretError extends Error {
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`pull secret ${path}: ${reason}`);
    this.name = 'PullSecretError';
  }
}

/** Reads and parses a pull secret file. */
export function loadPullSecret(path: string): PullSecret {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PullSecretError(path, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parsePullSecret(text, path);
}

/** Parses pull secret text; `path` is only used in error messages. */
export function parsePullSecret(text: string, path: string): PullSecret {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new PullSecretError(path, `is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(doc) || !isObject(doc.auths)) {
    throw new PullSecretError(path, 'has no "auths" object (expected {"auths":{"<registry>":{"auth":"<base64 user:password>"}}})');
  }
  const secret = new Map<string, Credentials>();
  for (const [key, entry] of Object.entries(doc.auths)) {
    const host = registryHost(key);
    // Keys like "quay.io/org/repo" (containers-auth.json scoping by namespace) are not host-wide
    // credentials; airlock looks credentials up by upstream host only, so they are skipped.
    if (host === undefined) continue;
    const credentials = entryCredentials(entry, key, path);
    if (credentials !== undefined) secret.set(host, credentials);
  }
  return secret;
}

/** The credentials for a registry host (`quay.io`, `registry.example.com:5000`), if the secret has any. */
export function credentialsForHost(secret: PullSecret, host: string): Credentials | undefined {
  const wanted = host.toLowerCase();
  const exact = secret.get(wanted);
  if (exact !== undefined) return exact;
  // Docker Hub appears as index.docker.io/v1/ in docker's own files but is pulled from registry-1.docker.io.
  if (DOCKER_HUB_HOSTS.has(wanted)) {
    for (const alias of DOCKER_HUB_HOSTS) {
      const found = secret.get(alias);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/**
 * "quay.io" → "quay.io"; "https://index.docker.io/v1/" → "index.docker.io" (docker writes URLs whose path
 * is an API version); "quay.io/org" → undefined (namespace-scoped, see above).
 */
function registryHost(key: string): string | undefined {
  const trimmed = key.trim().toLowerCase();
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(trimmed)) {
    try {
      return new URL(trimmed).host;
    } catch {
      return undefined;
    }
  }
  return trimmed.includes('/') || trimmed === '' ? undefined : trimmed;
}

function entryCredentials(entry: unknown, key: string, path: string): Credentials | undefined {
  if (!isObject(entry)) throw new PullSecretError(path, `entry "${key}" is not an object`);
  const { auth, username, password } = entry;
  if (typeof auth === 'string' && auth !== '') return decodeAuth(auth, key, path);
  if (typeof username === 'string' && typeof password === 'string') return { username, password };
  if (username !== undefined || password !== undefined) {
    throw new PullSecretError(path, `entry "${key}" needs both "username" and "password" as strings`);
  }
  // An empty entry is what docker writes when a credential helper holds the secret; nothing to use here.
  return undefined;
}

function decodeAuth(auth: string, key: string, path: string): Credentials {
  const compact = auth.replace(/\s+/g, '');
  // Buffer.from(..., 'base64') silently skips junk, so check the alphabet first to report a real error.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) {
    throw new PullSecretError(path, `entry "${key}": "auth" is not valid base64`);
  }
  const decoded = Buffer.from(compact, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) {
    throw new PullSecretError(path, `entry "${key}": "auth" does not decode to "username:password"`);
  }
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
