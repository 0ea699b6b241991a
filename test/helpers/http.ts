// Raw HTTP helpers for API tests: one request function over node:http (exact paths, repeated header
// lines, streamed bodies), spec error assertions, and small builders that push blobs and manifests.

import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { expect } from 'vitest';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  /** The body parsed as JSON (throws on a non-JSON body). */
  json<T = any>(): T;
  /** A single-valued response header (lowercase name). */
  header(name: string): string | undefined;
}

export interface RequestOptions {
  method?: string;
  /** An array value sends the header as several lines. */
  headers?: OutgoingHttpHeaders;
  body?: Buffer | string;
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function sha512(data: Buffer | string): string {
  return `sha512:${createHash('sha512').update(data).digest('hex')}`;
}

/**
 * Sends one request to `base` + `path`, where `path` goes on the wire exactly as given (no URL
 * normalisation, so `..` and `%2e` reach the server). `path` may also be an absolute URL.
 */
export function http(base: string, path: string, options: RequestOptions = {}): Promise<HttpResponse> {
  const { req, response } = openRequest(base, path, options);
  req.end(options.body);
  return response;
}

/**
 * Starts a request whose body the caller writes (req.write / req.end), e.g. a slow streamed PATCH.
 * Without a Content-Length header the body goes out chunked.
 */
export function openRequest(base: string, path: string, options: RequestOptions = {}): { req: ClientRequest; response: Promise<HttpResponse> } {
  const url = new URL(path.startsWith('http') ? path : base);
  const rawPath = path.startsWith('http') ? url.pathname + url.search : path;
  let req!: ClientRequest;
  const response = new Promise<HttpResponse>((resolve, reject) => {
    req = httpRequest(
      { host: url.hostname, port: url.port, method: options.method ?? 'GET', path: rawPath, headers: options.headers, agent: false },
      (res) => readResponse(res).then(resolve, reject),
    );
    req.on('error', reject);
  });
  return { req, response };
}

/** Reads a whole response (http or https) into an HttpResponse. */
export function readResponse(res: IncomingMessage): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', reject);
    res.on('end', () => {
      const body = Buffer.concat(chunks);
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        body,
        text: body.toString('utf8'),
        json: () => JSON.parse(body.toString('utf8')),
        header: (name) => {
          const v = res.headers[name.toLowerCase()];
          return Array.isArray(v) ? v.join(', ') : v;
        },
      });
    });
  });
}

/** Asserts a spec error response: the status, JSON {"errors":[{code,message,detail}]}, a non-empty message. */
export function expectError(res: HttpResponse, status: number, code: string): { code: string; message: string; detail: unknown } {
  expect({ status: res.status, body: res.text.slice(0, 500) }).toMatchObject({ status });
  expect(res.header('content-type')).toMatch(/^application\/json/);
  const body = res.json<{ errors: { code: string; message: string; detail: unknown }[] }>();
  expect(Array.isArray(body.errors)).toBe(true);
  expect(body.errors.length).toBeGreaterThan(0);
  const [error] = body.errors;
  expect(error!.code).toBe(code);
  expect(typeof error!.message).toBe('string');
  expect(error!.message.length).toBeGreaterThan(0);
  expect(error).toHaveProperty('detail');
  return error!;
}

export function expectStatus(res: HttpResponse, status: number): void {
  expect({ status: res.status, body: res.text.slice(0, 500) }).toMatchObject({ status });
}

/** Adds ?digest= to an upload URL the way careful clients do: & when it already has a query. */
export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

/** POST a new upload session; returns its Location (as sent: a path, or an absolute URL). */
export async function startUpload(base: string, repo: string): Promise<string> {
  const res = await http(base, `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  expectStatus(res, 202);
  const location = res.header('location');
  expect(location).toBeTruthy();
  return location!;
}

/** Pushes a blob in one request (POST ?digest=); returns its digest. */
export async function pushBlob(base: string, repo: string, data: Buffer = randomBytes(1024), digest = sha256(data)): Promise<string> {
  const res = await http(base, `/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'content-length': data.length },
    body: data,
  });
  expectStatus(res, 201);
  return digest;
}

export interface Pushed {
  digest: string;
  body: Buffer;
  mediaType: string;
  /** Config and layer blobs pushed for it, by digest. */
  blobs: Map<string, Buffer>;
}

/** PUT a manifest by tag or digest; `manifest` objects are serialised, Buffers sent as they are. */
export async function pushManifest(base: string, repo: string, reference: string, manifest: object | Buffer, mediaType: string): Promise<HttpResponse & { digest: string; sent: Buffer }> {
  const sent = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
  const res = await http(base, `/v2/${repo}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: sent });
  return Object.assign(res, { digest: sha256(sent), sent });
}

export interface ImageOptions {
  format?: 'oci' | 'docker';
  /** Tag, or omitted for a push by digest (tagless). */
  tag?: string;
  layers?: number;
  layerSize?: number;
  platform?: { os: string; architecture: string };
}

/** Pushes random layers, a config and an image manifest that references them. */
export async function pushImage(base: string, repo: string, options: ImageOptions = {}): Promise<Pushed> {
  const docker = options.format === 'docker';
  const blobs = new Map<string, Buffer>();
  const layers: { mediaType: string; digest: string; size: number }[] = [];
  for (let i = 0; i < (options.layers ?? 1); i++) {
    const data = randomBytes(options.layerSize ?? 512);
    const digest = await pushBlob(base, repo, data);
    blobs.set(digest, data);
    layers.push({ mediaType: docker ? MEDIA.dockerLayer : MEDIA.ociLayer, digest, size: data.length });
  }
  const platform = options.platform ?? { os: 'linux', architecture: 'amd64' };
  const config = Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, nonce: randomBytes(8).toString('hex') }));
  const configDigest = await pushBlob(base, repo, config);
  blobs.set(configDigest, config);
  const mediaType = docker ? MEDIA.dockerManifest : MEDIA.ociManifest;
  const manifest = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? MEDIA.dockerConfig : MEDIA.ociConfig, digest: configDigest, size: config.length },
    layers,
  };
  const res = await pushManifest(base, repo, options.tag ?? sha256(JSON.stringify(manifest)), manifest, mediaType);
  expectStatus(res, 201);
  return { digest: res.digest, body: res.sent, mediaType, blobs };
}

/** Pushes the empty config blob `{}` artifacts use; returns its descriptor. */
export async function pushEmptyConfig(base: string, repo: string): Promise<{ mediaType: string; digest: string; size: number }> {
  const data = Buffer.from('{}');
  return { mediaType: MEDIA.ociEmpty, digest: await pushBlob(base, repo, data), size: data.length };
}

export interface MultipartPart {
  headers: Record<string, string>;
  body: Buffer;
}

/** Splits a multipart/byteranges body into its parts (headers lowercased). */
export function parseMultipart(body: Buffer, contentType: string): MultipartPart[] {
  const m = /boundary=("?)([^";]+)\1/.exec(contentType);
  if (!m) throw new Error(`no boundary in ${contentType}`);
  const delimiter = Buffer.from(`--${m[2]}`);
  const parts: MultipartPart[] = [];
  let pos = body.indexOf(delimiter);
  if (pos === -1) throw new Error('no boundary in the body');
  for (;;) {
    pos += delimiter.length;
    if (body.subarray(pos, pos + 2).toString() === '--') break; // closing delimiter
    expect(body.subarray(pos, pos + 2).toString()).toBe('\r\n');
    pos += 2;
    const headerEnd = body.indexOf('\r\n\r\n', pos);
    if (headerEnd === -1) throw new Error('part without a header end');
    const headers: Record<string, string> = {};
    for (const line of body.subarray(pos, headerEnd).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), headerEnd + 4);
    if (next === -1) throw new Error('part without a following boundary');
    parts.push({ headers, body: body.subarray(headerEnd + 4, next) });
    pos = next + 2;
  }
  return parts;
}

/** A random lowercase repository-name component, so tests sharing a server never collide. */
export function uniqueName(prefix = 'repo'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}
