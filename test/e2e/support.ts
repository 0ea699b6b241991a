/**
 * Shared pieces of the skopeo end-to-end tests: a recording HTTP relay placed between skopeo and
 * airlock (so a test can see exactly which requests a client made), and HTTP-API checks that an
 * image built by test/helpers/images.ts is stored in a repository byte for byte.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, Agent, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { digestHex, MEDIA_TYPES, sha256Digest, type BuiltImage } from '../helpers/images.js';

/** Every manifest media type the fixtures produce, as a registry client would ask for them. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.dockerManifest,
].join(', ');

// ---- temp dirs ---------------------------------------------------------------------------------

/** Temp directories for one test file; `cleanup()` removes all of them (call it in afterAll). */
export function tempDirs(prefix: string): { make(name: string): string; cleanup(): void } {
  const roots: string[] = [];
  return {
    make(name: string) {
      const d = mkdtempSync(join(tmpdir(), `airlock-e2e-${prefix}-${name}-`));
      roots.push(d);
      return d;
    },
    cleanup() {
      for (const d of roots.splice(0)) rmSync(d, { recursive: true, force: true });
    },
  };
}

// ---- recording relay ---------------------------------------------------------------------------

export interface RecordedRequest {
  method: string;
  /** Path and query exactly as the client sent them. */
  url: string;
  path: string;
  query: URLSearchParams;
  status: number;
}

export interface Recorder {
  /** e.g. 127.0.0.1:40123 — use it in docker:// references instead of the server's host. */
  host: string;
  /** Requests that completed (response head received from airlock), in arrival order. */
  requests: RecordedRequest[];
  /** Forgets everything recorded so far. */
  reset(): void;
  close(): Promise<void>;
}

/**
 * A plain HTTP relay on an ephemeral 127.0.0.1 port that forwards every request to `targetUrl`
 * unchanged (method, path, query, headers, streamed body) and records method, URL and the status
 * airlock answered. airlock writes relative Location headers, so uploads keep going through the
 * relay.
 */
export async function startRecorder(targetUrl: string): Promise<Recorder> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const requests: RecordedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    const upstream = httpRequest(
      {
        host: target.hostname,
        port: Number(target.port),
        method: req.method,
        path: url,
        headers: req.headers,
        agent,
      },
      (ures) => {
        const q = url.indexOf('?');
        requests.push({
          method: req.method ?? 'GET',
          url,
          path: q === -1 ? url : url.slice(0, q),
          query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1)),
          status: ures.statusCode ?? 0,
        });
        res.writeHead(ures.statusCode ?? 502, ures.rawHeaders);
        ures.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
      res.end(`relay error: ${err.message}`);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    reset() {
      requests.length = 0;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

// ---- HTTP API checks ---------------------------------------------------------------------------

export interface FetchedManifest {
  status: number;
  bytes: Buffer;
  contentType: string | null;
  digest: string | null;
}

export async function fetchManifest(baseUrl: string, repo: string, reference: string): Promise<FetchedManifest> {
  const res = await fetch(`${baseUrl}/v2/${repo}/manifests/${reference}`, { headers: { Accept: MANIFEST_ACCEPT } });
  return {
    status: res.status,
    bytes: Buffer.from(await res.arrayBuffer()),
    contentType: res.headers.get('content-type'),
    digest: res.headers.get('docker-content-digest'),
  };
}

export async function headBlob(baseUrl: string, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${baseUrl}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
  return res.status;
}

export async function fetchBlob(baseUrl: string, repo: string, digest: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(`${baseUrl}/v2/${repo}/blobs/${digest}`);
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** GET /v2/<repo>/tags/list → the tag array (or the status when it is not 200). */
export async function fetchTags(baseUrl: string, repo: string): Promise<{ status: number; tags: string[] | null }> {
  const res = await fetch(`${baseUrl}/v2/${repo}/tags/list`);
  if (res.status !== 200) {
    await res.arrayBuffer();
    return { status: res.status, tags: null };
  }
  const body = (await res.json()) as { name: string; tags: string[] | null };
  expect(body.name).toBe(repo);
  return { status: 200, tags: body.tags };
}

export async function fetchCatalog(baseUrl: string): Promise<string[]> {
  const res = await fetch(`${baseUrl}/v2/_catalog?n=10000`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { repositories: string[] }).repositories;
}

/** Reads a config or layer blob of a fixture from the directory it was built in. */
export type BlobReader = (digest: string) => Buffer;

export const ociLayoutBlobs =
  (dir: string): BlobReader =>
  (digest) =>
    readFileSync(join(dir, 'blobs', 'sha256', digestHex(digest)));

export const dirTransportBlobs =
  (dir: string): BlobReader =>
  (digest) =>
    readFileSync(join(dir, digestHex(digest)));

/**
 * Asserts over the HTTP API that `repo` serves the whole image: the index / list at `reference`
 * byte-identical with its media type and digest, every child manifest by digest byte-identical,
 * and every config and layer blob with the original bytes.
 */
export async function expectImageStored(
  baseUrl: string,
  repo: string,
  reference: string,
  built: BuiltImage,
  readBlob: BlobReader,
): Promise<void> {
  const top = await fetchManifest(baseUrl, repo, reference);
  expect(top.status, `GET ${repo}/manifests/${reference}`).toBe(200);
  expect(top.bytes.equals(built.indexBytes)).toBe(true);
  expect(top.contentType).toBe(built.indexMediaType);
  expect(top.digest).toBe(built.indexDigest);

  for (const img of built.images) {
    const child = await fetchManifest(baseUrl, repo, img.manifestDigest);
    expect(child.status, `GET ${repo}/manifests/${img.manifestDigest}`).toBe(200);
    expect(child.bytes.equals(img.manifestBytes)).toBe(true);
    expect(child.contentType).toBe(img.manifestMediaType);
    expect(child.digest).toBe(img.manifestDigest);
  }

  for (const digest of built.blobDigests) {
    const blob = await fetchBlob(baseUrl, repo, digest);
    expect(blob.status, `GET ${repo}/blobs/${digest}`).toBe(200);
    expect(sha256Digest(blob.bytes)).toBe(digest);
    expect(blob.bytes.equals(readBlob(digest))).toBe(true);
  }
}

/** The config and layer digests of a built image, split (configs are blobs too). */
export function configAndLayers(built: BuiltImage): { configs: string[]; layers: string[] } {
  const configs = [...new Set(built.images.map((i) => i.configDigest))];
  const layers = [...new Set(built.images.flatMap((i) => i.layers.map((l) => l.digest)))];
  return { configs, layers };
}
