// The stats contract (/api/v1/stats, /metrics): every key, values matching exactly what the test
// did, counts surviving restarts; /healthz and /readyz.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { call, eventually, expectError, getBlob, getManifest, startAirlock, startUpstreamProxy, stats, type StatsDoc, type UpstreamProxy } from './support.js';

let registry: Distribution;
let proxy: UpstreamProxy;
let dead: UpstreamProxy;
let airlock: TestServer;
let image: PushedImage;
let layer: string;
let layerSize: number;
let configSize: number;

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'team/app', 'v1', { layerSize: 4096 });
  layer = image.layerDigests[0]!;
  layerSize = image.blobs.get(layer)!.length;
  configSize = image.blobs.get(image.configDigest)!.length;
  proxy = await startUpstreamProxy(registry.url);
  dead = await startUpstreamProxy(registry.url);
  await dead.stop();
  airlock = await startAirlock([
    { prefix: 'up', url: proxy.url },
    { prefix: 'fresh', url: proxy.url, tagTTL: 0 },
    { prefix: 'dead', url: dead.url },
  ]);
});

afterAll(async () => {
  await airlock?.close();
  await proxy?.close();
  await dead?.close();
  await registry?.stop();
});

/** Metric samples of Prometheus text: "name{labels}" → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

function counts(s: StatsDoc) {
  return {
    cache: { ...s.cache },
    upstreams: s.upstreams.map(({ lastError: _lastError, ...rest }) => rest),
    storage: s.storage,
  };
}

describe('stats', () => {
  let expected: ReturnType<typeof counts>;

  it('/api/v1/stats has every contract key with the values of what was done', async () => {
    const x = (res: { header(n: string): string | undefined }) => res.header('x-cache');
    expect(x(await getManifest(airlock.url, 'up/team/app', 'v1'))).toBe('MISS');
    expect(x(await getManifest(airlock.url, 'up/team/app', 'v1'))).toBe('HIT');
    expect(x(await getBlob(airlock.url, 'up/team/app', layer))).toBe('MISS');
    await eventually(async () => expect((await stats(airlock.url)).storage.blobs).toBe(1));
    expect(x(await getBlob(airlock.url, 'up/team/app', layer))).toBe('HIT');
    expect(x(await getBlob(airlock.url, 'up/team/app', image.configDigest))).toBe('MISS');
    // tagTTL 0: the next request revalidates, the upstream fails (503), the cached tag is served stale.
    expect(x(await getManifest(airlock.url, 'fresh/team/app', 'v1'))).toBe('MISS');
    proxy.fault = () => ({ kind: 'status', status: 503 });
    expect(x(await getManifest(airlock.url, 'fresh/team/app', 'v1'))).toBe('STALE');
    proxy.fault = undefined;
    expectError(await getManifest(airlock.url, 'dead/team/app', 'v1'), 503, 'UNAVAILABLE');

    await eventually(async () => expect((await stats(airlock.url)).storage.blobs).toBe(2));
    const s = await stats(airlock.url);
    expect(Object.keys(s).sort()).toEqual(['cache', 'gc', 'storage', 'upstreams']);
    // No garbage collection has run yet.
    expect((s as unknown as { gc: unknown }).gc).toBeNull();
    expect(s.cache).toEqual({
      hits: 3,
      misses: 4,
      hitRatio: 3 / 7,
      staleServed: 1,
      bytesFromCache: layerSize,
      bytesFromUpstream: layerSize + configSize,
      evictedBlobs: 0,
      evictedBytes: 0,
      evictedManifests: 0,
    });
    const [up, fresh, down] = s.upstreams;
    expect(up).toEqual({ prefix: 'up', url: proxy.url, hits: 2, misses: 3, errors: 0, bytesFromUpstream: layerSize + configSize, lastError: null });
    expect(fresh).toMatchObject({ prefix: 'fresh', url: proxy.url, hits: 1, misses: 1, errors: 1, bytesFromUpstream: 0 });
    expect(fresh!.lastError).toContain('503');
    expect(down).toMatchObject({ prefix: 'dead', url: dead.url, hits: 0, misses: 0, errors: 1, bytesFromUpstream: 0 });
    expect(down!.lastError).toContain('connection refused');
    // One manifest (cached in two repositories), a layer and a config.
    expect(s.storage).toEqual({ repositories: 2, manifests: 1, blobs: 2, bytes: layerSize + configSize });
    expected = counts(s);
  });

  it('/metrics is Prometheus text with the same figures; /healthz and /readyz answer 200', async () => {
    const res = await call(airlock.url, '/metrics');
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toMatch(/^text\/plain/);
    const m = parseMetrics(res.body.toString('utf8'));
    const c = expected.cache;
    expect(m.get('airlock_cache_hits_total')).toBe(c.hits);
    expect(m.get('airlock_cache_misses_total')).toBe(c.misses);
    expect(m.get('airlock_cache_stale_served_total')).toBe(c.staleServed);
    expect(m.get('airlock_cache_bytes_from_cache_total')).toBe(c.bytesFromCache);
    expect(m.get('airlock_cache_bytes_from_upstream_total')).toBe(c.bytesFromUpstream);
    for (const u of expected.upstreams) {
      const labels = `{prefix="${u.prefix}",url="${u.url}"}`;
      expect(m.get(`airlock_upstream_hits_total${labels}`), u.prefix).toBe(u.hits);
      expect(m.get(`airlock_upstream_misses_total${labels}`), u.prefix).toBe(u.misses);
      expect(m.get(`airlock_upstream_errors_total${labels}`), u.prefix).toBe(u.errors);
      expect(m.get(`airlock_upstream_bytes_total${labels}`), u.prefix).toBe(u.bytesFromUpstream);
    }
    expect(m.get('airlock_storage_repositories')).toBe(expected.storage.repositories);
    expect(m.get('airlock_storage_manifests')).toBe(expected.storage.manifests);
    expect(m.get('airlock_storage_blobs')).toBe(expected.storage.blobs);
    expect(m.get('airlock_storage_bytes')).toBe(expected.storage.bytes);

    for (const path of ['/healthz', '/readyz']) expect((await call(airlock.url, path)).status, path).toBe(200);
  });

  it('counts survive restarts, and keep counting from where they were', async () => {
    await airlock.restart();
    expect(counts(await stats(airlock.url))).toEqual(expected);
    const metrics = parseMetrics((await call(airlock.url, '/metrics')).body.toString('utf8'));
    expect(metrics.get('airlock_cache_hits_total')).toBe(expected.cache.hits);
    expect(metrics.get('airlock_cache_stale_served_total')).toBe(1);

    proxy.reset();
    expect((await getBlob(airlock.url, 'up/team/app', layer)).header('x-cache')).toBe('HIT');
    expect(proxy.requests).toEqual([]);
    await airlock.restart();
    const s = await stats(airlock.url);
    expect(s.cache).toMatchObject({ hits: 4, misses: 4, staleServed: 1, bytesFromCache: 2 * layerSize, bytesFromUpstream: layerSize + configSize });
    expect(s.cache.hitRatio).toBe(4 / 8);
    expect(s.upstreams[0]).toMatchObject({ hits: 3, misses: 3, errors: 0 });
    expect(s.upstreams[1]).toMatchObject({ hits: 1, misses: 1, errors: 1 });
    expect(s.upstreams[2]).toMatchObject({ errors: 1 });
    // The last error an operator would look for is kept across restarts too.
    expect(s.upstreams[1]!.lastError).toContain('503');
    expect(s.upstreams[2]!.lastError).toContain('connection refused');
    expect(s.storage).toEqual(expected.storage);
    for (const path of ['/healthz', '/readyz']) expect((await call(airlock.url, path)).status, path).toBe(200);
  });
});
