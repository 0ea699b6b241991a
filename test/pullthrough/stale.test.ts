// Cached tags served stale when the upstream cannot answer their revalidation, end to end: an
// upstream that accepts the connection and never answers (timeout), and one that rate-limits (429).
// skopeo pulls by tag succeed with the cached image; each stale answer says X-Cache: STALE and is
// counted in staleServed. Upstream: docker-registry behind a fault-injecting proxy.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { expectError, getBlob, getManifest, sha256, startAirlock, startUpstreamProxy, stats, tempDirs, type Fault, type UpstreamProxy } from './support.js';

const tmp = tempDirs('stale');
let registry: Distribution;
let image: PushedImage;

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'team/app', 'v1', { layerSize: 32 * 1024 });
});

afterAll(async () => {
  await registry?.stop();
  tmp.cleanup();
});

/** skopeo copies the tag out of airlock into a dir: the cached image, byte for byte. */
async function pullWithSkopeo(airlock: TestServer, repo: string): Promise<void> {
  const out = tmp.make('out');
  await skopeoCopy(`docker://${airlock.host}/${repo}:v1`, `dir:${out}`, { srcInsecure: true });
  expect(sha256(readFileSync(join(out, 'manifest.json')))).toBe(image.manifestDigest);
  for (const [digest, bytes] of image.blobs) expect(readFileSync(join(out, digest.slice(7))).equals(bytes)).toBe(true);
}

const cases: { name: string; fault: Fault; missStatus: number; missCode: string }[] = [
  { name: 'an upstream that times out (connection accepted, no answer)', fault: { kind: 'hang' }, missStatus: 503, missCode: 'UNAVAILABLE' },
  {
    name: 'an upstream answering 429',
    fault: { kind: 'status', status: 429, headers: { 'retry-after': '30' }, body: JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }) },
    missStatus: 429,
    missCode: 'TOOMANYREQUESTS',
  },
];

for (const c of cases) {
  describe(c.name, () => {
    let proxy: UpstreamProxy;
    let airlock: TestServer;

    beforeAll(async () => {
      proxy = await startUpstreamProxy(registry.url);
      // tagTTL 0: every request by tag revalidates; timeout short, so a hung upstream is given up quickly.
      airlock = await startAirlock([{ prefix: 'up', url: proxy.url, tagTTL: 0, timeout: '500ms' }]);
    });

    afterAll(async () => {
      await airlock?.close();
      await proxy?.close();
    });

    it('serves the cached tag STALE (counted in staleServed), digests and blobs as HITs; a true miss fails', async () => {
      await pullWithSkopeo(airlock, 'up/team/app');
      expect((await stats(airlock.url)).cache.staleServed).toBe(0);

      proxy.fault = () => c.fault;
      proxy.reset();
      const byTag = await getManifest(airlock.url, 'up/team/app', 'v1');
      expect(byTag.status).toBe(200);
      expect(byTag.header('x-cache')).toBe('STALE');
      expect(byTag.header('docker-content-digest')).toBe(image.manifestDigest);
      expect(byTag.body.equals(image.manifest)).toBe(true);
      // It was asked (and failed to answer in time / refused), not skipped.
      expect(proxy.count('HEAD', '/v2/team/app/manifests/v1')).toBe(1);
      const after = await stats(airlock.url);
      expect(after.cache.staleServed).toBe(1);
      expect(after.upstreams[0]!.errors).toBeGreaterThanOrEqual(1);

      const blob = await getBlob(airlock.url, 'up/team/app', image.layerDigests[0]!);
      expect(blob.header('x-cache')).toBe('HIT');

      // A real client pulls the whole image by tag meanwhile.
      await pullWithSkopeo(airlock, 'up/team/app');
      const end = await stats(airlock.url);
      expect(end.cache.staleServed).toBeGreaterThan(1);

      // Nothing cached for this tag: the failure reaches the client.
      expectError(await getManifest(airlock.url, 'up/team/app', 'v2'), c.missStatus, c.missCode);
      proxy.fault = undefined;
    });
  });
}
