// How the client reads upstreams that misbehave or are down, each played by a real node:http server
// (or a closed port) on 127.0.0.1, plus the protocol details those servers make visible.

import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { UpstreamClient, isUpstreamDown } from '../../src/proxy/client.js';
import { UpstreamError } from '../../src/proxy/errors.js';
import { freePort } from '../helpers/distribution.js';
import { readAll, startHttpServer, upstreamConfig, type TestHttpServer, type UpstreamInput } from './fixtures.js';

const MANIFEST = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}');
const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()!();
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TestHttpServer> {
  const server = await startHttpServer(handler);
  cleanup.push(() => server.close());
  return server;
}

function clientFor(url: string, extra: Partial<UpstreamInput> = {}): UpstreamClient {
  const client = new UpstreamClient(upstreamConfig({ prefix: 'up', url, insecure: true, ...extra }));
  cleanup.push(() => client.close());
  return client;
}

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

describe('UpstreamClient failures', () => {
  it('reports a refused connection as unreachable, naming the upstream and repository', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const err = await failure(clientFor(url).getManifest('team/app', 'v1'));
    expect(err.kind).toBe('unreachable');
    expect(err.message).toContain(`upstream ${url} is unreachable (connection refused, ECONNREFUSED) for manifest team/app:v1`);
    expect(isUpstreamDown(err)).toBe(true);
  });

  it('reports a 5xx as server', async () => {
    const server = await serve((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}'));
    const err = await failure(clientFor(server.url).getManifest('team/app', 'v1'));
    expect(err).toMatchObject({ kind: 'server', status: 503, repository: 'team/app' });
    expect(err.message).toContain(`upstream ${server.url} failed (503) serving manifest team/app:v1: UNAVAILABLE maintenance`);
    expect(isUpstreamDown(err)).toBe(true);
  });

  it('reports a 429 as ratelimited with Retry-After in seconds', async () => {
    const server = await serve((_req, res) => res.writeHead(429, { 'retry-after': '7' }).end());
    const err = await failure(clientFor(server.url).getBlob('team/app', `sha256:${'a'.repeat(64)}`));
    expect(err).toMatchObject({ kind: 'ratelimited', status: 429, retryAfterMs: 7000 });
    expect(isUpstreamDown(err)).toBe(true);
  });

  it('reports a 429 as ratelimited with Retry-After as an HTTP date', async () => {
    const server = await serve((_req, res) => res.writeHead(429, { 'retry-after': new Date(Date.now() + 120_000).toUTCString() }).end());
    const err = await failure(clientFor(server.url).getManifest('team/app', 'v1'));
    expect(err.kind).toBe('ratelimited');
    // HTTP dates have one-second resolution.
    expect(err.retryAfterMs).toBeGreaterThan(118_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(120_000);
  });

  it('reports a stalled upstream as timeout', async () => {
    const server = await serve(() => {
      /* never answers */
    });
    const err = await failure(clientFor(server.url, { timeout: '200ms' }).getManifest('team/app', 'v1'));
    expect(err.kind).toBe('timeout');
    expect(isUpstreamDown(err)).toBe(true);
  });

  it('reports other statuses as invalid, which is not "down"', async () => {
    const server = await serve((_req, res) => res.writeHead(400).end());
    const err = await failure(clientFor(server.url).getManifest('team/app', 'v1'));
    expect(err.kind).toBe('invalid');
    expect(isUpstreamDown(err)).toBe(false);
  });

  it('detects a manifest that does not match the digest it was requested by', async () => {
    const server = await serve((_req, res) => res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(MANIFEST));
    const wanted = `sha256:${'b'.repeat(64)}`;
    const err = await failure(clientFor(server.url).getManifest('team/app', wanted));
    expect(err.kind).toBe('digest-mismatch');
    expect(err.message).toContain(`hashes to ${digestOf(MANIFEST)}, not the requested ${wanted}`);
  });

  it('detects a manifest that does not match its Docker-Content-Digest', async () => {
    const server = await serve((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': `sha256:${'c'.repeat(64)}` }).end(MANIFEST),
    );
    const err = await failure(clientFor(server.url).getManifest('team/app', 'v1'));
    expect(err.kind).toBe('digest-mismatch');
  });

  it('refuses manifests over 4 MiB', async () => {
    const server = await serve((_req, res) => res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(Buffer.alloc(4 * 1024 * 1024 + 1, 0x20)));
    const err = await failure(clientFor(server.url).getManifest('team/app', 'v1'));
    expect(err.kind).toBe('invalid');
    expect(err.message).toContain('larger than 4194304 bytes');
  });

  it('refuses plain http unless the upstream is marked insecure', () => {
    // The config schema refuses it first, naming the key to set...
    expect(() => upstreamConfig({ prefix: 'up', url: 'http://127.0.0.1:1' })).toThrow(
      'upstream http://127.0.0.1:1 is plain http: set insecure: true to allow it',
    );
    // ...and the client refuses it too when handed such a config by code.
    const config = { ...upstreamConfig({ prefix: 'up', url: 'http://127.0.0.1:1', insecure: true }), insecure: false };
    expect(() => new UpstreamClient(config)).toThrow('upstream http://127.0.0.1:1 uses plain http; set insecure: true to allow it');
  });
});

describe('UpstreamClient protocol details', () => {
  it('sends each manifest media type as its own Accept header and derives a missing digest', async () => {
    let accepts: string[] = [];
    const server = await serve((req, res) => {
      accepts = req.rawHeaders.filter((_v, i) => i % 2 === 1 && req.rawHeaders[i - 1]!.toLowerCase() === 'accept');
      // No Docker-Content-Digest and a generic content type: the client must work both out from the body.
      res.writeHead(200, { 'content-type': 'application/json' }).end(MANIFEST);
    });
    const m = await clientFor(server.url).getManifest('team/app', 'v1');
    expect(accepts).toEqual([
      'application/vnd.oci.image.index.v1+json',
      'application/vnd.oci.image.manifest.v1+json',
      'application/vnd.docker.distribution.manifest.list.v2+json',
      'application/vnd.docker.distribution.manifest.v2+json',
    ]);
    expect(m).toMatchObject({ digest: digestOf(MANIFEST), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: MANIFEST.length });
  });

  it('follows tag list pagination through Link headers', async () => {
    const all = ['a', 'b', 'c', 'd', 'e'];
    const requested: string[] = [];
    const server = await serve((req, res) => {
      requested.push(req.url ?? '');
      const url = new URL(req.url ?? '/', 'http://x');
      const n = Number(url.searchParams.get('n'));
      const last = url.searchParams.get('last');
      const start = last === null ? 0 : all.indexOf(last) + 1;
      const page = all.slice(start, start + n);
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (start + n < all.length) {
        // The first next-link is relative (as distribution writes it), the second absolute (as some proxies do).
        const next = `/v2/team/app/tags/list?n=${n}&last=${page.at(-1)}`;
        headers.link = `<${start === 0 ? next : `${server.url}${next}`}>; rel="next"`;
      }
      res.writeHead(200, headers).end(JSON.stringify({ name: 'team/app', tags: page }));
    });
    expect(await clientFor(server.url).listTags('team/app', { pageSize: 2 })).toEqual(all);
    expect(requested).toEqual(['/v2/team/app/tags/list?n=2', '/v2/team/app/tags/list?n=2&last=b', '/v2/team/app/tags/list?n=2&last=d']);
  });

  it('follows a blob redirect to another host without sending the Authorization header there', async () => {
    const blob = Buffer.from('layer bytes from the CDN');
    let cdnAuthorization: string | undefined = 'not called';
    const cdn = await serve((req, res) => {
      cdnAuthorization = req.headers.authorization;
      res.writeHead(200, { 'content-length': String(blob.length) }).end(blob);
    });
    const registry = await serve((req, res) => {
      if (req.headers.authorization !== `Basic ${Buffer.from('u:p').toString('base64')}`) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
        return;
      }
      res.writeHead(307, { location: `${cdn.url}/signed/blob?sig=xyz` }).end();
    });
    const result = await clientFor(registry.url, { username: 'u', password: 'p' }).getBlob('team/app', digestOf(blob));
    expect((await readAll(result.body)).equals(blob)).toBe(true);
    expect(result.size).toBe(blob.length);
    expect(cdnAuthorization).toBeUndefined();
  });

  it('surfaces a transfer that breaks mid-blob as an UpstreamError on the stream', async () => {
    const server = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write(Buffer.alloc(100));
      setTimeout(() => res.destroy(), 20);
    });
    const result = await clientFor(server.url).getBlob('team/app', `sha256:${'d'.repeat(64)}`);
    const err = await readAll(result.body).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).kind).toBe('unreachable');
  });

  it('holds a blob upstream back while the consumer takes nothing, then delivers every byte in order', async () => {
    // 64 MiB offered as fast as the socket takes it: with nobody reading, the relay may buffer about
    // 1 MiB and the sockets a few more, not the body.
    const blob = Buffer.alloc(64 * 1024 * 1024);
    for (let i = 0; i < blob.length; i += 4096) blob.writeUInt32BE(i, i);
    let sent = 0;
    const server = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(blob.length) });
      const more = () => {
        while (sent < blob.length) {
          const chunk = blob.subarray(sent, sent + 65536);
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    const result = await clientFor(server.url).getBlob('team/app', digestOf(blob));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(result.body.readableLength).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect(sent).toBeLessThan(32 * 1024 * 1024);
    expect((await readAll(result.body)).equals(blob)).toBe(true);
  });

  it('closes the upstream request when the blob stream is destroyed', async () => {
    let closed!: () => void;
    const requestClosed = new Promise<void>((resolve) => (closed = resolve));
    const server = await serve((req, res) => {
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.write(Buffer.alloc(1000));
      req.socket.once('close', closed);
    });
    const result = await clientFor(server.url).getBlob('team/app', `sha256:${'e'.repeat(64)}`);
    result.body.destroy();
    // At once, not when some idle timeout of the client or the server ends the connection (30 s).
    const outcome = await Promise.race([requestClosed.then(() => 'closed'), new Promise((resolve) => setTimeout(() => resolve('still open'), 3000))]);
    expect(outcome).toBe('closed');
  });
});
