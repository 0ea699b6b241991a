// Index children arrive lazily: pulling a multi-arch index fetches the index alone; each platform's
// manifest (and its blobs) is fetched when a client first asks for it, and only then. A node pulls
// its own platform, so a mirror must not download every architecture of every image it serves.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import type { TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { getManifest, sleep, startAirlock, startUpstreamProxy, stats, tempDirs, type UpstreamProxy } from './support.js';

const tmp = tempDirs('lazy');
let registry: Distribution;
let proxy: UpstreamProxy;
let airlock: TestServer;
let image: BuiltOciImage;

beforeAll(async () => {
  registry = await startDistribution();
  image = buildOciLayoutImage(tmp.make('src'), {
    tag: 'v1',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 's390x' },
    ],
  });
  await skopeoCopy(image.ociRef, `docker://${registry.host}/team/multi:v1`, { destInsecure: true });
  proxy = await startUpstreamProxy(registry.url);
  airlock = await startAirlock([{ prefix: 'up', url: proxy.url }]);
});

afterAll(async () => {
  await airlock?.close();
  await proxy?.close();
  await registry?.stop();
  tmp.cleanup();
});

it('pulling the index fetches the index only; a child is fetched on its first request, then served locally', async () => {
  const index = await getManifest(airlock.url, 'up/team/multi', 'v1');
  expect(index.status).toBe(200);
  expect(index.header('docker-content-digest')).toBe(image.indexDigest);
  // Time for any background prefetch to show up at the upstream; none may.
  await sleep(500);
  expect(proxy.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['GET /v2/team/multi/manifests/v1']);
  expect((await stats(airlock.url)).storage.manifests).toBe(1);

  const [amd64, arm64, s390x] = image.manifestDigests as [string, string, string];
  proxy.reset();
  const child = await getManifest(airlock.url, 'up/team/multi', arm64);
  expect(child.status).toBe(200);
  expect(child.header('x-cache')).toBe('MISS');
  expect(child.body.equals(image.images[1]!.manifestBytes)).toBe(true);
  await sleep(200);
  // Only that child: not its siblings, not its blobs.
  expect(proxy.requests.map((r) => `${r.method} ${r.path}`)).toEqual([`GET /v2/team/multi/manifests/${arm64}`]);

  proxy.reset();
  expect((await getManifest(airlock.url, 'up/team/multi', arm64)).header('x-cache')).toBe('HIT');
  expect(proxy.requests).toEqual([]);
  const s = await stats(airlock.url);
  expect(s.storage.manifests).toBe(2);
  expect(s.storage.blobs).toBe(0);
  for (const other of [amd64, s390x]) expect(proxy.count(undefined, other)).toBe(0);
});
