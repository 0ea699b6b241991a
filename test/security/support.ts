/**
 * Shared pieces of the security tests: htpasswd fixtures, Basic/Bearer headers, the token endpoint,
 * JWT and WWW-Authenticate decoding, pushes and reads that carry credentials, raw socket requests
 * (for what an HTTP client library refuses to send) and an HTTPS request that trusts a given CA.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { addUser } from '../../src/auth/htpasswd.js';
import { expectStatus, http, MEDIA, readResponse, sha256, type HttpResponse } from '../helpers/http.js';

/** Cheapest bcrypt cost: fixtures written from code spend no time hashing. */
export const FIXTURE_COST = 4;

/** Writes an htpasswd file with bcrypt entries for every user (cost 4). */
export async function writeHtpasswd(file: string, users: Record<string, string>): Promise<void> {
  for (const [user, password] of Object.entries(users)) await addUser(file, user, password, FIXTURE_COST);
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/** Temp directories for one test file; `cleanup()` removes them all. */
export function tempDirs(prefix: string): { make(name?: string): string; cleanup(): void } {
  const made: string[] = [];
  return {
    make(name = 'dir') {
      const d = mkdtempSync(join(tmpdir(), `airlock-sec-${prefix}-${name}-`));
      made.push(d);
      return d;
    },
    cleanup() {
      for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
    },
  };
}

export function withAuth(auth: string | undefined, headers: Record<string, string | number> = {}): Record<string, string | number> {
  return auth === undefined ? headers : { ...headers, authorization: auth };
}

// ---- tokens ------------------------------------------------------------------------------------

export interface TokenBody {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
}

export interface AccessClaim {
  type: string;
  name: string;
  actions: string[];
}

export interface Jwt {
  header: Record<string, unknown>;
  payload: { iss: string; sub: string; aud: string; exp: number; nbf: number; iat: number; jti: string; access: AccessClaim[] };
  signature: string;
}

/** GET /auth/token?service=airlock&scope=… with Basic credentials (or none). */
export function tokenRequest(base: string, scopes: string[], auth?: string, service: string | null = 'airlock'): Promise<HttpResponse> {
  const query = new URLSearchParams();
  if (service !== null) query.set('service', service);
  for (const s of scopes) query.append('scope', s);
  return http(base, `/auth/token?${query.toString()}`, { headers: withAuth(auth) });
}

/** Fetches a token and checks the response's shape; returns the body and the decoded JWT. */
export async function getToken(base: string, scopes: string[], auth?: string): Promise<{ body: TokenBody; jwt: Jwt }> {
  const res = await tokenRequest(base, scopes, auth);
  expectStatus(res, 200);
  expect(res.header('content-type')).toMatch(/^application\/json/);
  expect(res.header('cache-control')).toBe('no-store');
  const body = res.json<TokenBody>();
  expect(typeof body.token).toBe('string');
  expect(body.access_token).toBe(body.token);
  expect(Number.isInteger(body.expires_in)).toBe(true);
  expect(body.expires_in).toBeGreaterThan(0);
  expect(Number.isNaN(Date.parse(body.issued_at))).toBe(false);
  return { body, jwt: decodeJwt(body.token) };
}

function b64urlJson(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export function decodeJwt(token: string): Jwt {
  const parts = token.split('.');
  expect(parts).toHaveLength(3);
  return { header: b64urlJson(parts[0]!), payload: b64urlJson(parts[1]!) as unknown as Jwt['payload'], signature: parts[2]! };
}

export function encodeJwtPart(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** The access claim as a comparable map: "type:name" → sorted actions (entries without actions kept as []). */
export function accessMap(access: AccessClaim[]): Record<string, string[]> {
  return Object.fromEntries(access.map((a) => [`${a.type}:${a.name}`, [...a.actions].sort()]));
}

// ---- challenges --------------------------------------------------------------------------------

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Scheme k="v",k2="v2"` (quoted-string values with backslash escapes). */
export function parseChallenge(header: string | undefined): Challenge {
  expect(header, 'WWW-Authenticate header').toBeTruthy();
  const m = /^(\S+)\s*(.*)$/.exec(header!)!;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!)) !== null) params[p[1]!] = p[2]!.replace(/\\(.)/g, '$1');
  return { scheme: m[1]!, params };
}

/**
 * A 401 UNAUTHORIZED spec error with `WWW-Authenticate: Bearer realm="<base>/auth/token",service="airlock"`
 * whose scope parameter names exactly `scopes` (in any order), and `error` when given.
 */
export function expectBearerChallenge(res: HttpResponse, base: string, scopes: string[], error?: string): Challenge {
  expect({ status: res.status, body: res.text.slice(0, 300) }).toMatchObject({ status: 401 });
  expect(res.json<{ errors: { code: string }[] }>().errors[0]!.code).toBe('UNAUTHORIZED');
  const challenge = parseChallenge(res.header('www-authenticate'));
  expect(challenge.scheme).toBe('Bearer');
  expect(challenge.params.realm).toBe(`${base}/auth/token`);
  expect(challenge.params.service).toBe('airlock');
  if (scopes.length === 0) expect(challenge.params.scope).toBeUndefined();
  else expect((challenge.params.scope ?? '').split(' ').sort()).toEqual([...scopes].sort());
  expect(challenge.params.error).toBe(error);
  return challenge;
}

// ---- content with credentials ------------------------------------------------------------------

export interface PushedImage {
  repo: string;
  tag: string;
  digest: string;
  manifest: Buffer;
  mediaType: string;
  blobs: Map<string, Buffer>;
}

/** POST ?digest= with the whole blob; returns the response (no status check). */
export function postBlob(base: string, repo: string, data: Buffer, auth?: string): Promise<HttpResponse> {
  return http(base, `/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(sha256(data))}`, {
    method: 'POST',
    headers: withAuth(auth, { 'content-type': 'application/octet-stream', 'content-length': data.length }),
    body: data,
  });
}

/** An OCI image manifest over the given config and layers. */
export function imageManifest(config: Buffer, layers: Buffer[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: MEDIA.ociLayer, digest: sha256(l), size: l.length })),
    }),
  );
}

export function putManifest(base: string, repo: string, reference: string, body: Buffer, auth?: string, mediaType: string = MEDIA.ociManifest): Promise<HttpResponse> {
  return http(base, `/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: withAuth(auth, { 'content-type': mediaType, 'content-length': body.length }),
    body,
  });
}

/** Pushes random layers, a config and a tagged OCI manifest, asserting every step succeeds. */
export async function pushImageAs(base: string, repo: string, auth: string | undefined, tag = 'v1', layers = 2): Promise<PushedImage> {
  const blobs = new Map<string, Buffer>();
  const layerData = Array.from({ length: layers }, () => randomBytes(2048));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  for (const data of [...layerData, config]) {
    expectStatus(await postBlob(base, repo, data, auth), 201);
    blobs.set(sha256(data), data);
  }
  const manifest = imageManifest(config, layerData);
  const res = await putManifest(base, repo, tag, manifest, auth);
  expectStatus(res, 201);
  expect(res.header('docker-content-digest')).toBe(sha256(manifest));
  return { repo, tag, digest: sha256(manifest), manifest, mediaType: MEDIA.ociManifest, blobs };
}

/** Reads every blob and the manifest (by tag and by digest) back and compares them byte for byte. */
export async function expectImageIntact(base: string, image: PushedImage, auth?: string): Promise<void> {
  for (const ref of [image.tag, image.digest]) {
    const res = await http(base, `/v2/${image.repo}/manifests/${ref}`, { headers: withAuth(auth, { accept: image.mediaType }) });
    expectStatus(res, 200);
    expect(res.header('docker-content-digest')).toBe(image.digest);
    expect(res.body.equals(image.manifest)).toBe(true);
  }
  for (const [digest, data] of image.blobs) {
    const res = await http(base, `/v2/${image.repo}/blobs/${digest}`, { headers: withAuth(auth) });
    expectStatus(res, 200);
    expect(sha256(res.body)).toBe(digest);
    expect(res.body.equals(data)).toBe(true);
  }
}

// ---- raw sockets -------------------------------------------------------------------------------

export interface RawResult {
  /** Everything the server sent. */
  data: string;
  /** The status code of the first response, if one arrived. */
  status: number | undefined;
  /** True when the server closed the connection (false: we gave up after `timeoutMs`). */
  closed: boolean;
  ms: number;
}

/**
 * Opens a TCP connection, writes `chunks` (strings or Buffers; functions are awaited between writes,
 * e.g. pauses), and collects the answer until the server closes or `timeoutMs` passes.
 */
export function rawExchange(port: number, chunks: (string | Buffer | (() => Promise<void>))[], timeoutMs = 5_000): Promise<RawResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    let data = '';
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(data);
      resolve({ data, status: m ? Number(m[1]) : undefined, closed, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
    socket.once('connect', async () => {
      for (const chunk of chunks) {
        if (done || socket.destroyed) return;
        if (typeof chunk === 'function') await chunk();
        else socket.write(chunk);
      }
    });
  });
}

// ---- HTTPS with a private CA -------------------------------------------------------------------

/** One HTTPS request that trusts `ca` (PEM); the path goes on the wire as given. */
export function httpsCall(
  url: string,
  options: { method?: string; headers?: Record<string, string | number>; body?: Buffer; ca?: string | Buffer; servername?: string } = {},
): Promise<HttpResponse> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method: options.method ?? 'GET',
        headers: options.headers,
        ca: options.ca,
        servername: options.servername,
        agent: false,
      },
      (res) => readResponse(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
