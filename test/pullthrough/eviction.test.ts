// cache.maxBytes: cached blobs are evicted least-recently-served first; pushed content never is;
// an evicted blob is fetched again from the upstream when asked for.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
const digestOf = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function push(url: string, repo: string, data: Buffer): Promise<string> {
  const digest = digestOf(data);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data });
  expect(res.status).toBe(201);
  return digest;
}

async function pull(url: string, repo: string, digest: string): Promise<{ cache: string | null; body: Buffer }> {
  const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
  expect(res.status).toBe(200);
  return { cache: res.headers.get('x-cache'), body: Buffer.from(await res.arrayBuffer()) };
}

/** Waits until the mirror has committed the blob: a HEAD is then answered from its own storage. */
async function committed(url: string, repo: string, digest: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
    if (res.headers.get('x-cache') === 'HIT') return;
    if (Date.now() > deadline) throw new Error(`blob ${digest} was not committed in time`);
    await sleep(10);
  }
}

describe('cache eviction (cache.maxBytes)', () => {
  let upstream: TestServer;
  let mirror: TestServer;
  const blobs: Buffer[] = [randomBytes(MiB), randomBytes(MiB), randomBytes(MiB), randomBytes(MiB)];
  const digests: string[] = [];
  const file = (digest: string) => join(mirror.storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

  beforeAll(async () => {
    upstream = await startTestServer();
    for (const blob of blobs) digests.push(await push(upstream.url, 'team/app', blob));
    mirror = await startTestServer({
      upstreams: [{ prefix: 'up', url: upstream.url, insecure: true }],
      cache: { maxBytes: '3.5MiB' },
    });
  });

  afterAll(async () => {
    await mirror?.close();
    await upstream?.close();
  });

  it('evicts the least recently served cached blob, keeps pushed content, and refetches on demand', async () => {
    // Cache three (3 MiB, within budget), one after the other so each is served at a distinct time;
    // a pass within budget only records access times.
    for (const digest of digests.slice(0, 3)) {
      expect((await pull(mirror.url, 'up/team/app', digest)).cache).toBe('MISS');
      await committed(mirror.url, 'up/team/app', digest);
      await mirror.server.evictCache();
      await sleep(5);
    }
    // The first one is served again: now the second is the least recently served.
    expect((await pull(mirror.url, 'up/team/app', digests[0]!)).cache).toBe('HIT');
    await mirror.server.evictCache();
    await sleep(5);

    // Pushed content (even in a proxied repository) does not count and is never evicted.
    const pushed = randomBytes(3 * MiB);
    const pushedDigest = await push(mirror.url, 'up/team/local', pushed);

    // A fourth cached blob goes over the budget (once it is committed, which follows the answer).
    expect((await pull(mirror.url, 'up/team/app', digests[3]!)).cache).toBe('MISS');
    await committed(mirror.url, 'up/team/app', digests[3]!);
    await mirror.server.evictCache();
    expect(existsSync(file(digests[1]!))).toBe(false);
    expect(existsSync(file(digests[0]!))).toBe(true);
    expect(existsSync(file(digests[2]!))).toBe(true);
    expect(existsSync(file(digests[3]!))).toBe(true);
    expect(existsSync(file(pushedDigest))).toBe(true);
    expect((await pull(mirror.url, 'up/team/local', pushedDigest)).body.equals(pushed)).toBe(true);

    const stats = (await (await fetch(`${mirror.url}/api/v1/stats`)).json()) as { cache: Record<string, number> };
    expect(stats.cache.evictedBlobs).toBe(1);
    expect(stats.cache.evictedBytes).toBe(MiB);

    // Asked for again, the evicted blob comes back from the upstream, byte-exact.
    const again = await pull(mirror.url, 'up/team/app', digests[1]!);
    expect(again.cache).toBe('MISS');
    expect(again.body.equals(blobs[1]!)).toBe(true);
  });

  it('a cached blob pushed to the same repository becomes pushed content and is kept', async () => {
    const blob = randomBytes(2 * MiB);
    const digest = await push(upstream.url, 'team/both', blob);
    expect((await pull(mirror.url, 'up/team/both', digest)).cache).toBe('MISS');
    await committed(mirror.url, 'up/team/both', digest);
    await push(mirror.url, 'up/team/both', blob);
    // Everything cached is now least recent relative to nothing else: a pass must still keep it.
    await sleep(5);
    await mirror.server.evictCache();
    expect(existsSync(file(digest))).toBe(true);
    expect((await pull(mirror.url, 'up/team/both', digest)).body.equals(blob)).toBe(true);
  });

  it('a cached blob referenced by a manifest pushed here is kept', async () => {
    const layer = randomBytes(2 * MiB);
    const layerDigest = await push(upstream.url, 'team/pinned', layer);
    expect((await pull(mirror.url, 'up/team/pinned', layerDigest)).cache).toBe('MISS');
    await committed(mirror.url, 'up/team/pinned', layerDigest);
    // A local image built on the cached layer: only its config is pushed.
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    const configDigest = await push(mirror.url, 'up/team/pinned', config);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length }],
    });
    const put = await fetch(`${mirror.url}/v2/up/team/pinned/manifests/local`, {
      method: 'PUT',
      body: manifest,
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(put.status).toBe(201);
    // However old its last use, it is no longer a candidate for eviction.
    const candidates = (await mirror.server.registry.meta.evictionCandidates(10_000)).map((c) => c.digest);
    expect(candidates).not.toContain(layerDigest);
    await sleep(5);
    await mirror.server.evictCache();
    expect(existsSync(file(layerDigest))).toBe(true);
  });
});

describe('eviction by the timer of the running server (cache.evictEvery)', () => {
  let upstream: TestServer;
  let mirror: TestServer;

  afterAll(async () => {
    await mirror?.close();
    await upstream?.close();
  });

  it('brings cached content down to 90% of maxBytes on its own, least recently served first', async () => {
    upstream = await startTestServer();
    const blobs = [randomBytes(MiB), randomBytes(MiB), randomBytes(MiB), randomBytes(MiB)];
    const digests: string[] = [];
    for (const blob of blobs) digests.push(await push(upstream.url, 'team/app', blob));
    // 4 MiB cached is over a 3.3 MiB budget; 90% of it is 2.97 MiB, so two blobs must go (one would
    // do to get under the budget itself).
    mirror = await startTestServer({
      upstreams: [{ prefix: 'up', url: upstream.url, insecure: true }],
      cache: { maxBytes: '3.3MiB', evictEvery: '200ms' },
    });
    const file = (digest: string) => join(mirror.storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
    for (const digest of digests) {
      expect((await pull(mirror.url, 'up/team/app', digest)).cache).toBe('MISS');
      await committed(mirror.url, 'up/team/app', digest);
      // Uses are written down in batches (each eviction pass flushes them): let every blob's fall in
      // a pass of its own, so that least recently served is a strict order, not a tie.
      await sleep(300);
    }
    // No direct call: the server's own timer does it.
    const deadline = Date.now() + 10_000;
    while (existsSync(file(digests[1]!)) && Date.now() < deadline) await sleep(50);
    expect(existsSync(file(digests[0]!))).toBe(false);
    expect(existsSync(file(digests[1]!))).toBe(false);
    expect(existsSync(file(digests[2]!))).toBe(true);
    expect(existsSync(file(digests[3]!))).toBe(true);
    const stats = (await (await fetch(`${mirror.url}/api/v1/stats`)).json()) as { cache: Record<string, number> };
    expect(stats.cache.evictedBlobs).toBe(2);
    expect(stats.cache.evictedBytes).toBe(2 * MiB);
    expect((await pull(mirror.url, 'up/team/app', digests[0]!)).body.equals(blobs[0]!)).toBe(true);
  });

  it('evictEvery must be a positive duration', async () => {
    await expect(startTestServer({ cache: { maxBytes: '1GiB', evictEvery: 0 } })).rejects.toThrow(/cache\.evictEvery: must be a positive duration/);
  });
});
