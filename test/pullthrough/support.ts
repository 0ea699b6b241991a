// Shared pieces of the pull-through tests. Everything here is a real server on 127.0.0.1: a counting
// (and, on request, misbehaving) reverse proxy placed in front of a real upstream registry, plain
// node:http request helpers that notice cut-short bodies, and airlock started with upstreams.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer, request as httpRequest, Agent, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

export type UpstreamInput = NonNullable<ConfigInput['upstreams']>[number];

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

// ---- counting / fault-injecting reverse proxy ------------------------------------------------------

export interface SeenRequest {
  method: string;
  /** Path without the query. */
  path: string;
  url: string;
  headers: IncomingHttpHeaders;
}

/**
 * What the proxy does with a request instead of forwarding it untouched:
 * - status: answer it itself with this status (and headers/body), never reaching the registry;
 * - truncate: forward, pass the head on, then only the first `keep` bytes (default half of the body)
 *   and destroy the connection, as an upstream dying mid-transfer does;
 * - corrupt: forward, but flip every byte of the body (same length, different digest);
 * - delay: forward after `ms` milliseconds;
 * - slow: forward, but pass the body on at about `bytesPerSecond` (a slow link or a distant registry);
 * - hang: accept and never answer.
 */
export type Fault =
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  | { kind: 'truncate'; keep?: number }
  | { kind: 'corrupt' }
  | { kind: 'delay'; ms: number }
  | { kind: 'slow'; bytesPerSecond: number }
  | { kind: 'hang' };

export interface UpstreamProxy {
  /** e.g. http://127.0.0.1:40123 — what airlock's upstream `url` points at. */
  url: string;
  host: string;
  port: number;
  /** Every request that reached the proxy, in arrival order (faulted ones included). */
  requests: SeenRequest[];
  /** Requests with this method whose path ends with / includes `path` (any when omitted). */
  count(method?: string, path?: string | RegExp): number;
  reset(): void;
  /** Decides per request whether to misbehave; undefined forwards untouched. */
  fault: ((req: SeenRequest) => Fault | undefined) | undefined;
  /** Stops listening (the port then refuses connections). */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  resume(): Promise<void>;
  close(): Promise<void>;
}

export async function startUpstreamProxy(targetUrl: string): Promise<UpstreamProxy> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const requests: SeenRequest[] = [];
  const hanging = new Set<ServerResponse>();

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const seen: SeenRequest = { method: req.method ?? 'GET', path: q === -1 ? url : url.slice(0, q), url, headers: req.headers };
    requests.push(seen);
    const fault = proxy.fault?.(seen);
    if (fault?.kind === 'status') {
      req.resume();
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
      res.end(fault.body ?? JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected ${fault.status}` }] }));
      return;
    }
    if (fault?.kind === 'hang') {
      hanging.add(res);
      return;
    }
    if (fault?.kind === 'delay') {
      setTimeout(() => forwardRequest(req, res, undefined), fault.ms);
      return;
    }
    forwardRequest(req, res, fault);
  };

  const forwardRequest = (req: IncomingMessage, res: ServerResponse, fault: Fault | undefined) => {
    const url = req.url ?? '/';
    const { host: _host, ...headers } = req.headers;
    const forward = httpRequest(
      { host: target.hostname, port: Number(target.port), method: req.method, path: url, headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (fault?.kind === 'truncate') {
          const total = Number(answer.headers['content-length'] ?? 0);
          const keep = fault.keep ?? Math.floor(total / 2);
          let sent = 0;
          answer.on('data', (chunk: Buffer) => {
            if (sent >= keep) return;
            const part = chunk.subarray(0, keep - sent);
            sent += part.length;
            res.write(part);
            if (sent >= keep) {
              answer.destroy();
              // Let the kept bytes leave before the connection dies.
              setTimeout(() => res.socket?.destroy(), 20);
            }
          });
          return;
        }
        if (fault?.kind === 'slow') {
          // Each chunk is followed by the pause it would take at that rate before the next is read.
          answer.on('data', (chunk: Buffer) => {
            answer.pause();
            res.write(chunk);
            setTimeout(() => answer.resume(), (chunk.length / fault.bytesPerSecond) * 1000);
          });
          answer.on('end', () => res.end());
          res.on('close', () => answer.destroy());
          return;
        }
        if (fault?.kind === 'corrupt') {
          answer.on('data', (chunk: Buffer) => res.write(Buffer.from(chunk.map((b) => b ^ 0xff))));
          answer.on('end', () => res.end());
          return;
        }
        answer.pipe(res);
      },
    );
    forward.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy error: ${err.message}`);
    });
    req.pipe(forward);
  };

  let server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const shut = async () => {
    for (const res of hanging) res.destroy();
    hanging.clear();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  let listening = true;
  const proxy: UpstreamProxy = {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    requests,
    fault: undefined,
    count(method?: string, path?: string | RegExp) {
      return requests.filter(
        (r) =>
          (method === undefined || r.method === method) &&
          (path === undefined || (typeof path === 'string' ? r.path.endsWith(path) : path.test(r.path))),
      ).length;
    },
    reset() {
      requests.length = 0;
    },
    async stop() {
      if (!listening) return;
      listening = false;
      await shut();
    },
    async resume() {
      if (listening) return;
      server = createServer(handler);
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
      listening = true;
    },
    async close() {
      if (listening) await shut();
      listening = false;
      agent.destroy();
    },
  };
  return proxy;
}

// ---- airlock with upstreams -------------------------------------------------------------------------

/** An airlock whose upstreams are plain-HTTP test registries (insecure: true added). */
export function startAirlock(upstreams: UpstreamInput[], overrides: Partial<ConfigInput> = {}): Promise<TestServer> {
  return startTestServer({ ...overrides, upstreams: upstreams.map((u) => ({ insecure: true, ...u })) });
}

// ---- HTTP ---------------------------------------------------------------------------------------

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** False when the connection ended before the whole response (as announced) arrived. */
  complete: boolean;
  header(name: string): string | undefined;
  json<T = any>(): T;
}

/** One request over a fresh connection; a cut-short body is reported (complete: false), not thrown. */
export function call(base: string, path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method: options.method ?? 'GET', path: url.pathname + url.search, headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        let settled = false;
        const done = () => {
          if (settled) return;
          settled = true;
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            complete: res.complete,
            header: (name) => {
              const v = res.headers[name.toLowerCase()];
              return Array.isArray(v) ? v.join(', ') : v;
            },
            json: () => JSON.parse(body.toString('utf8')),
          });
        };
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', done);
        res.on('error', done);
        res.on('close', done);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

export const getManifest = (base: string, repo: string, ref: string, method = 'GET') =>
  call(base, `/v2/${repo}/manifests/${ref}`, { method, headers: { accept: MANIFEST_ACCEPT } });

export const getBlob = (base: string, repo: string, digest: string, method = 'GET') => call(base, `/v2/${repo}/blobs/${digest}`, { method });

/** Streams a blob through a hash (large blobs, many clients: nothing is held in memory). */
export function hashBlob(
  base: string,
  repo: string,
  digest: string,
): Promise<{ status: number; digest: string; bytes: number; complete: boolean; xCache: string | undefined }> {
  const url = new URL(`/v2/${repo}/blobs/${digest}`, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, agent: false }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let settled = false;
      const done = () => {
        if (settled) return;
        settled = true;
        const xCache = res.headers['x-cache'];
        resolve({ status: res.statusCode ?? 0, digest: `sha256:${hash.digest('hex')}`, bytes, complete: res.complete, xCache: typeof xCache === 'string' ? xCache : undefined });
      };
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
      });
      res.on('end', done);
      res.on('error', done);
      res.on('close', done);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Asserts the spec's error JSON and returns its first error. */
export function expectError(res: Answer, status: number, code: string): { code: string; message: string; detail: unknown } {
  expect({ status: res.status, body: res.body.toString('utf8').slice(0, 500) }).toMatchObject({ status });
  if (res.headers['content-length'] === '0' || res.body.length === 0) throw new Error(`no error body (HEAD?) for ${status} ${code}`);
  const body = res.json<{ errors: { code: string; message: string; detail: unknown }[] }>();
  expect(body.errors[0]?.code).toBe(code);
  expect(body.errors[0]!.message.length).toBeGreaterThan(0);
  return body.errors[0]!;
}

export interface StatsDoc {
  cache: { hits: number; misses: number; hitRatio: number; staleServed: number; bytesFromCache: number; bytesFromUpstream: number };
  upstreams: { prefix: string; url: string; hits: number; misses: number; errors: number; bytesFromUpstream: number; lastError: string | null }[];
  storage: { repositories: number; manifests: number; blobs: number; bytes: number };
}

export async function stats(base: string): Promise<StatsDoc> {
  const res = await call(base, '/api/v1/stats');
  expect(res.status).toBe(200);
  return res.json<StatsDoc>();
}

// ---- storage ------------------------------------------------------------------------------------

/** Every file under <storage>/blobs (committed blobs). */
export function blobFiles(storage: string): string[] {
  const root = join(storage, 'blobs');
  const out: string[] = [];
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(root);
  return out;
}

export function uploadFiles(storage: string): string[] {
  const dir = join(storage, 'uploads');
  return existsSync(dir) ? readdirSync(dir) : [];
}

export function blobFile(storage: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

// ---- misc ---------------------------------------------------------------------------------------

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls until `check` holds (or fails with its last assertion after `timeoutMs`). */
export async function eventually(check: () => void | Promise<void>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(20);
    }
  }
}

/** Temp directories for one test file; cleanup() removes them all. */
export function tempDirs(prefix: string): { make(name: string): string; cleanup(): void } {
  const made: string[] = [];
  return {
    make(name) {
      const d = mkdtempSync(join(tmpdir(), `airlock-pt-${prefix}-${name}-`));
      made.push(d);
      return d;
    },
    cleanup() {
      for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
    },
  };
}
