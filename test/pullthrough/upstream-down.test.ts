// When the upstream cannot help: refused connections, the circuit breaker, rate limiting, 404s and
// the negative cache, offline upstreams; and HEAD requests answered without downloading anything.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';
import {
  blobFiles,
  call,
  expectError,
  getBlob,
  getManifest,
  sha256,
  startAirlock,
  startUpstreamProxy,
  stats,
  tempDirs,
  uploadFiles,
  type UpstreamProxy,
} from './support.js';

const tmp = tempDirs('down');
let registry: Distribution;
let proxy: UpstreamProxy;
let image: PushedImage;

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'team/app', 'v1', { layerSize: 4096 });
  proxy = await startUpstreamProxy(registry.url);
});

afterAll(async () => {
  await proxy?.close();
  await registry?.stop();
  tmp.cleanup();
});

describe('connection refused', () => {
  let dead: UpstreamProxy;
  let airlock: TestServer;

  beforeAll(async () => {
    dead = await startUpstreamProxy(registry.url);
    await dead.stop(); // its port now refuses connections
    airlock = await startAirlock([{ prefix: 'dead', url: dead.url }]);
  });

  afterAll(async () => {
    await airlock?.close();
    await dead?.close();
  });

  it('a true miss answers 503 UNAVAILABLE naming the upstream; after repeated failures the circuit opens and answers at once', async () => {
    const first = expectError(await getManifest(airlock.url, 'dead/team/app', 'v1'), 503, 'UNAVAILABLE');
    expect(first.message).toContain(dead.url);
    expect(first.message).toContain('connection refused');
    expect(first.detail).toMatchObject({ upstream: dead.url, repository: 'team/app' });
    const blob = expectError(await getBlob(airlock.url, 'dead/team/app', image.layerDigests[0]!), 503, 'UNAVAILABLE');
    expect(blob.message).toContain(dead.url);
    const digest = expectError(await getManifest(airlock.url, 'dead/team/app', image.manifestDigest), 503, 'UNAVAILABLE');
    expect(digest.message).toContain('connection refused');

    // Three consecutive failures opened the circuit: the upstream is back, yet airlock does not try it.
    await dead.resume();
    const started = Date.now();
    const skipped = expectError(await getManifest(airlock.url, 'dead/team/app', 'v1'), 503, 'UNAVAILABLE');
    expect(Date.now() - started).toBeLessThan(500);
    expect(skipped.message).toContain(`upstream ${dead.url} is skipped until`);
    expect(skipped.message).toContain('connection refused');
    expect(dead.requests).toEqual([]);

    const s = await stats(airlock.url);
    expect(s.upstreams[0]!.errors).toBe(4);
    expect(s.upstreams[0]!.lastError).toContain('is skipped until');
    expect(s.storage.manifests).toBe(0);
    expect((await call(airlock.url, '/healthz')).status).toBe(200);
  });
});

describe('rate limiting and not-found answers', () => {
  let airlock: TestServer;

  beforeAll(async () => {
    airlock = await startAirlock([
      { prefix: 'limited', url: proxy.url },
      { prefix: 'up', url: proxy.url },
    ]);
  });

  afterAll(async () => {
    proxy.fault = undefined;
    await airlock?.close();
  });

  it('429 with Retry-After from the upstream → 429 TOOMANYREQUESTS with Retry-After to the client', async () => {
    proxy.reset();
    proxy.fault = () => ({
      kind: 'status',
      status: 429,
      headers: { 'retry-after': '7' },
      body: JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'pull rate limit reached' }] }),
    });
    const res = await getManifest(airlock.url, 'limited/team/app', 'v1');
    const err = expectError(res, 429, 'TOOMANYREQUESTS');
    expect(res.header('retry-after')).toBe('7');
    expect(err.message).toContain(proxy.url);
    expect(err.message).toContain('pull rate limit reached');
    const blob = await getBlob(airlock.url, 'limited/team/app', image.configDigest);
    expectError(blob, 429, 'TOOMANYREQUESTS');
    expect(blob.header('retry-after')).toBe('7');
    expect(proxy.count()).toBe(2);
    // A third 429 opens the circuit: clients are still told to slow down (not "unreachable"),
    // with the time left, and the upstream is left alone meanwhile.
    expectError(await getManifest(airlock.url, 'limited/team/app', 'v2'), 429, 'TOOMANYREQUESTS');
    expect(proxy.count()).toBe(3);
    const held = await getManifest(airlock.url, 'limited/team/app', 'v3');
    expectError(held, 429, 'TOOMANYREQUESTS');
    expect(Number(held.header('retry-after'))).toBeGreaterThan(0);
    expect(proxy.count()).toBe(3);
    proxy.fault = undefined;
  });

  it('404 → MANIFEST_UNKNOWN / BLOB_UNKNOWN, and a repeat within the negative-cache window stays local', async () => {
    proxy.reset();
    const missingBlob = sha256('not there');
    const cases = [
      { path: '/v2/up/team/app/manifests/no-such-tag', code: 'MANIFEST_UNKNOWN', upstream: '/v2/team/app/manifests/no-such-tag' },
      { path: `/v2/up/team/app/manifests/${sha256('nope')}`, code: 'MANIFEST_UNKNOWN', upstream: `/v2/team/app/manifests/${sha256('nope')}` },
      { path: `/v2/up/team/app/blobs/${missingBlob}`, code: 'BLOB_UNKNOWN', upstream: `/v2/team/app/blobs/${missingBlob}` },
      { path: '/v2/up/team/nothing/manifests/v1', code: 'MANIFEST_UNKNOWN', upstream: '/v2/team/nothing/manifests/v1' },
    ];
    for (const c of cases) {
      const err = expectError(await call(airlock.url, c.path), 404, c.code);
      expect(err.message).toContain(proxy.url);
      expect(proxy.count('GET', c.upstream), c.path).toBe(1);
    }
    const seen = proxy.requests.length;
    for (const c of cases) {
      expectError(await call(airlock.url, c.path), 404, c.code);
      expect((await call(airlock.url, c.path, { method: 'HEAD' })).status).toBe(404);
    }
    expect(proxy.requests.length).toBe(seen);
    // Not-found is an answer, not an outage: no error counted, the circuit stays closed.
    const s = await stats(airlock.url);
    expect(s.upstreams.find((u) => u.prefix === 'up')!.errors).toBe(0);
    const ok = await getManifest(airlock.url, 'up/team/app', 'v1');
    expect(ok.status).toBe(200);
  });
});

describe('offline upstream', () => {
  it('offline: true never contacts the upstream, yet serves what was cached', async () => {
    const storage = tmp.make('offline');
    const online = await startTestServer({ storage, upstreams: [{ prefix: 'up', url: proxy.url, insecure: true }] });
    expect((await getManifest(online.url, 'up/team/app', 'v1')).status).toBe(200);
    expect((await getManifest(online.url, 'up/team/app', image.manifestDigest)).status).toBe(200);
    for (const d of [image.configDigest, ...image.layerDigests]) expect((await getBlob(online.url, 'up/team/app', d)).status).toBe(200);
    await online.close();

    proxy.reset();
    const offline = await startTestServer({ storage, upstreams: [{ prefix: 'up', url: proxy.url, insecure: true, offline: true, tagTTL: 0 }] });
    try {
      const byTag = await getManifest(offline.url, 'up/team/app', 'v1');
      expect(byTag.status).toBe(200);
      expect(byTag.header('x-cache')).toBe('HIT');
      expect(byTag.body.equals(image.manifest)).toBe(true);
      const byDigest = await getManifest(offline.url, 'up/team/app', image.manifestDigest);
      expect(byDigest.header('x-cache')).toBe('HIT');
      for (const d of [image.configDigest, ...image.layerDigests]) {
        const blob = await getBlob(offline.url, 'up/team/app', d);
        expect(blob.header('x-cache')).toBe('HIT');
        expect(blob.body.equals(image.blobs.get(d)!)).toBe(true);
      }
      const tags = await call(offline.url, '/v2/up/team/app/tags/list');
      expect(tags.json()).toEqual({ name: 'up/team/app', tags: ['v1'] });

      // A true miss cannot be served, and says why.
      const miss = expectError(await getManifest(offline.url, 'up/team/app', 'v2'), 503, 'UNAVAILABLE');
      expect(miss.message).toContain('offline');
      expectError(await getBlob(offline.url, 'up/team/app', sha256('x')), 503, 'UNAVAILABLE');
      expect((await getManifest(offline.url, 'up/other/repo', 'v1', 'HEAD')).status).toBe(503);

      expect(proxy.requests).toEqual([]);
    } finally {
      await offline.close();
    }
  });
});

describe('HEAD on a miss', () => {
  let airlock: TestServer;

  beforeAll(async () => {
    airlock = await startAirlock([{ prefix: 'up', url: proxy.url }]);
  });

  afterAll(async () => {
    await airlock?.close();
  });

  it('is answered from an upstream HEAD: no body downloaded, nothing stored', async () => {
    proxy.reset();
    const byTag = await getManifest(airlock.url, 'up/team/app', 'v1', 'HEAD');
    expect(byTag.status).toBe(200);
    expect(byTag.header('docker-content-digest')).toBe(image.manifestDigest);
    expect(byTag.header('content-length')).toBe(String(image.manifest.length));
    expect(byTag.header('content-type')).toBe(image.mediaType);
    expect(byTag.header('x-cache')).toBe('MISS');

    const byDigest = await getManifest(airlock.url, 'up/team/app', image.manifestDigest, 'HEAD');
    expect(byDigest.status).toBe(200);
    expect(byDigest.header('content-length')).toBe(String(image.manifest.length));

    const layer = image.layerDigests[0]!;
    const blob = await getBlob(airlock.url, 'up/team/app', layer, 'HEAD');
    expect(blob.status).toBe(200);
    expect(blob.header('content-length')).toBe('4096');
    expect(blob.header('docker-content-digest')).toBe(layer);
    expect(blob.header('x-cache')).toBe('MISS');

    expect(proxy.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'HEAD /v2/team/app/manifests/v1',
      `HEAD /v2/team/app/manifests/${image.manifestDigest}`,
      `HEAD /v2/team/app/blobs/${layer}`,
    ]);
    const s = await stats(airlock.url);
    expect(s.storage).toEqual({ repositories: 0, manifests: 0, blobs: 0, bytes: 0 });
    expect(s.cache.bytesFromUpstream).toBe(0);
    expect(blobFiles(airlock.storage)).toEqual([]);
    expect(uploadFiles(airlock.storage)).toEqual([]);
  });
});
