// Cold and warm pulls through the cache with the real skopeo, and tag freshness (tagTTL).
// Upstreams: a real docker-registry (CNCF distribution 2.8) and a second airlock, each behind a
// counting reverse proxy so the tests see exactly what reached the upstream.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { buildDockerDirImage, type BuiltDirImage } from '../helpers/images.js';
import { pushImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { eventually, getBlob, getManifest, startAirlock, startUpstreamProxy, stats, tempDirs, type UpstreamProxy } from './support.js';

const tmp = tempDirs('coldwarm');

afterAll(() => tmp.cleanup());

/** Every file of a skopeo `dir:` directory, by name → bytes. */
function dirFiles(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).sort().map((name) => [name, readFileSync(join(dir, name))]));
}

function expectSameDir(actual: string, expected: string): void {
  const a = dirFiles(actual);
  const e = dirFiles(expected);
  expect([...a.keys()]).toEqual([...e.keys()]);
  for (const [name, bytes] of e) expect(a.get(name)!.equals(bytes), name).toBe(true);
}

describe('cold pull, then warm pulls with the upstream stopped', () => {
  const REPO = 'mirror/library/app';
  let registry: Distribution;
  let proxy: UpstreamProxy;
  let airlock: TestServer;
  let src: string;
  let built: BuiltDirImage;

  beforeAll(async () => {
    registry = await startDistribution();
    proxy = await startUpstreamProxy(registry.url);
    src = tmp.make('src');
    built = buildDockerDirImage(src, { layerBytes: 8192 });
    await skopeoCopy(built.dirRef, `docker://${registry.host}/library/app:v1`, { destInsecure: true });
    // tagTTL 0: every tag request revalidates, so with the upstream gone the tag is served stale.
    airlock = await startAirlock([{ prefix: 'mirror', url: proxy.url, tagTTL: 0 }]);
  });

  afterAll(async () => {
    await airlock?.close();
    await proxy?.close();
    await registry?.stop();
  });

  it('a cold `skopeo copy --all` through airlock is byte-identical and fetches each blob upstream once', async () => {
    const out = tmp.make('cold');
    await skopeoCopy(`docker://${airlock.host}/${REPO}:v1`, `dir:${out}`, { srcInsecure: true });
    expectSameDir(out, src);

    for (const d of built.blobDigests) expect(proxy.count('GET', `/v2/library/app/blobs/${d}`), d).toBe(1);
    for (const d of built.manifestDigests) expect(proxy.count('GET', `/v2/library/app/manifests/${d}`), d).toBe(1);
    const bytes = built.blobDigests.reduce((n, d) => n + readFileSync(join(src, d.slice(7))).length, 0);
    // A blob is counted once committed, which may be a moment after its last byte reached skopeo.
    await eventually(async () => expect((await stats(airlock.url)).cache.bytesFromUpstream).toBe(bytes));
    const s = await stats(airlock.url);
    expect(s.cache.misses).toBeGreaterThanOrEqual(1 + built.manifestDigests.length + built.blobDigests.length);
    expect(s.cache.staleServed).toBe(0);
  });

  it('with the upstream stopped, pulls by tag (served STALE) and by digest (HIT) still succeed', async () => {
    await registry.stop();
    await proxy.stop(); // nothing listens on the upstream's port any more: connection refused
    proxy.reset();

    const before = await stats(airlock.url);
    const byTag = await getManifest(airlock.url, REPO, 'v1');
    expect(byTag.status).toBe(200);
    expect(byTag.header('x-cache')).toBe('STALE');
    expect(byTag.body.equals(built.indexBytes)).toBe(true);
    expect(byTag.header('docker-content-digest')).toBe(built.indexDigest);
    const afterTag = await stats(airlock.url);
    expect(afterTag.cache.staleServed - before.cache.staleServed).toBe(1);

    const byDigest = await getManifest(airlock.url, REPO, built.indexDigest);
    expect(byDigest.status).toBe(200);
    expect(byDigest.header('x-cache')).toBe('HIT');
    const child = await getManifest(airlock.url, REPO, built.manifestDigests[0]!);
    expect(child.header('x-cache')).toBe('HIT');
    const blob = await getBlob(airlock.url, REPO, built.blobDigests[0]!);
    expect(blob.status).toBe(200);
    expect(blob.header('x-cache')).toBe('HIT');
    expect((await stats(airlock.url)).cache.staleServed).toBe(afterTag.cache.staleServed);

    const warmTag = tmp.make('warm-tag');
    await skopeoCopy(`docker://${airlock.host}/${REPO}:v1`, `dir:${warmTag}`, { srcInsecure: true });
    expectSameDir(warmTag, src);
    const warmDigest = tmp.make('warm-digest');
    await skopeoCopy(`docker://${airlock.host}/${REPO}@${built.indexDigest}`, `dir:${warmDigest}`, { srcInsecure: true });
    expectSameDir(warmDigest, src);

    const after = await stats(airlock.url);
    expect(after.cache.staleServed).toBeGreaterThan(afterTag.cache.staleServed);
    expect(after.upstreams[0]!.errors).toBeGreaterThan(0);
    expect(after.upstreams[0]!.lastError).toContain(proxy.url);
    expect(proxy.requests).toEqual([]);
  });
});

describe('a tag moved upstream', () => {
  const TTL_MS = 2000;
  let upstream: TestServer;
  let proxy: UpstreamProxy;
  let airlock: TestServer;

  beforeAll(async () => {
    upstream = await startTestServer();
    proxy = await startUpstreamProxy(upstream.url);
    airlock = await startAirlock([{ prefix: 'up', url: proxy.url, tagTTL: `${TTL_MS}ms` }]);
  });

  afterAll(async () => {
    await airlock?.close();
    await proxy?.close();
    await upstream?.close();
  });

  it(`is picked up after tagTTL, not before; an unchanged tag is revalidated by HEAD alone`, async () => {
    const first = await pushImage(upstream.url, 'team/app', 'stable');
    const cold = await getManifest(airlock.url, 'up/team/app', 'stable');
    const filledAt = Date.now();
    expect(cold.header('docker-content-digest')).toBe(first.manifestDigest);
    expect(cold.header('x-cache')).toBe('MISS');

    const second = await pushImage(upstream.url, 'team/app', 'stable');
    expect(second.manifestDigest).not.toBe(first.manifestDigest);
    proxy.reset();
    const early = await getManifest(airlock.url, 'up/team/app', 'stable');
    expect(Date.now() - filledAt).toBeLessThan(TTL_MS); // still within the TTL, so this is the "before" case
    expect(early.header('docker-content-digest')).toBe(first.manifestDigest);
    expect(early.header('x-cache')).toBe('HIT');
    expect(early.body.equals(first.manifest)).toBe(true);
    expect(proxy.requests).toEqual([]);

    await new Promise((resolve) => setTimeout(resolve, filledAt + TTL_MS + 100 - Date.now()));
    const late = await getManifest(airlock.url, 'up/team/app', 'stable');
    expect(late.status).toBe(200);
    expect(late.header('docker-content-digest')).toBe(second.manifestDigest);
    expect(late.header('x-cache')).toBe('MISS');
    expect(late.body.equals(second.manifest)).toBe(true);
    const refreshedAt = Date.now();

    // Within the TTL again: the new digest is served from the cache.
    proxy.reset();
    const again = await getManifest(airlock.url, 'up/team/app', 'stable');
    expect(again.header('docker-content-digest')).toBe(second.manifestDigest);
    expect(again.header('x-cache')).toBe('HIT');
    expect(proxy.requests).toEqual([]);

    // After another TTL with the tag unchanged: one HEAD upstream, no GET, answered from the cache.
    await new Promise((resolve) => setTimeout(resolve, refreshedAt + TTL_MS + 100 - Date.now()));
    const revalidated = await getManifest(airlock.url, 'up/team/app', 'stable');
    expect(revalidated.header('docker-content-digest')).toBe(second.manifestDigest);
    expect(revalidated.header('x-cache')).toBe('HIT');
    expect(proxy.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['HEAD /v2/team/app/manifests/stable']);

    // The confirmation counts from now: within the TTL again, nothing goes upstream.
    proxy.reset();
    const confirmed = await getManifest(airlock.url, 'up/team/app', 'stable');
    expect(confirmed.header('docker-content-digest')).toBe(second.manifestDigest);
    expect(confirmed.header('x-cache')).toBe('HIT');
    expect(proxy.requests).toEqual([]);
  });

  it('a tag pushed into the proxied repository replaces the cached one at once', async () => {
    const upstreamImage = await pushImage(upstream.url, 'team/pushed', 'v1');
    expect((await getManifest(airlock.url, 'up/team/pushed', 'v1')).header('docker-content-digest')).toBe(upstreamImage.manifestDigest);
    const local = await pushImage(airlock.url, 'up/team/pushed', 'v1');
    proxy.reset();
    const got = await getManifest(airlock.url, 'up/team/pushed', 'v1');
    expect(got.header('docker-content-digest')).toBe(local.manifestDigest);
    expect(got.body.equals(local.manifest)).toBe(true);
    expect(proxy.requests).toEqual([]);
  });
});
