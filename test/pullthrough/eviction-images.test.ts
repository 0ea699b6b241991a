// Cache eviction takes whole cached images: the least recently served cached blob leaves with the
// cached manifests and tags referencing it and their other blobs; an upstream's own maxBytes bounds
// its share besides cache.maxBytes; pushed content is never evicted; nothing stale is served from
// memory afterwards. Garbage collection removes cached blobs no manifest references.
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ageStore, gcOverHttp, hasBlobFile, writeDownAccess } from '../gc/support.js';
import { MEDIA, pushBlob, pushImage, pushManifest, type Pushed } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { eventually, getBlob, getManifest, sleep, startAirlock } from './support.js';

const MiB = 1024 * 1024;

/** Pulls an image by tag through the mirror (manifest, config, layers) and waits until its blobs are stored. */
async function pullThrough(base: string, repo: string, tag: string, image: Pushed): Promise<string | undefined> {
  const m = await getManifest(base, repo, tag);
  expect(m.status).toBe(200);
  expect(m.body.equals(image.body)).toBe(true);
  for (const [digest, data] of image.blobs) {
    const b = await getBlob(base, repo, digest);
    expect(b.status).toBe(200);
    expect(b.body.equals(data)).toBe(true);
  }
  for (const digest of image.blobs.keys()) {
    await eventually(async () => expect((await getBlob(base, repo, digest, 'HEAD')).header('x-cache')).toBe('HIT'));
  }
  return m.header('x-cache');
}

function rows(storage: string, sql: string, ...params: unknown[]): number {
  const db = new Database(join(storage, 'airlock.db'), { readonly: true });
  try {
    return db.prepare(sql).pluck().get(...params) as number;
  } finally {
    db.close();
  }
}

const manifestRows = (storage: string, digest: string) => rows(storage, 'SELECT COUNT(*) FROM manifests WHERE digest = ?', digest);
const tagRows = (storage: string, digest: string) => rows(storage, 'SELECT COUNT(*) FROM tags WHERE digest = ?', digest);

describe('eviction of cached images', () => {
  let upstream: TestServer;
  let mirror: TestServer;
  const images: Record<string, Pushed> = {};

  beforeAll(async () => {
    upstream = await startTestServer();
    for (const name of ['one', 'two', 'three', 'four']) images[name] = await pushImage(upstream.url, `team/${name}`, { tag: 'v1', layers: 2, layerSize: MiB / 2 });
    mirror = await startAirlock([
      // Its own budget: room for one image (1 MiB each) but not two.
      { prefix: 'small', url: upstream.url, maxBytes: '1.5MiB' },
      { prefix: 'big', url: upstream.url },
    ], { cache: { maxBytes: '100MiB' } });
  });

  afterAll(async () => {
    await mirror?.close();
    await upstream?.close();
  });

  it('an upstream over its maxBytes loses its least recently served image whole; other upstreams and pushed content stay', async () => {
    const s = mirror.storage;
    await pullThrough(mirror.url, 'small/team/one', 'v1', images.one!);
    await mirror.server.evictCache();
    await sleep(5);
    await pullThrough(mirror.url, 'big/team/three', 'v1', images.three!);
    await pullThrough(mirror.url, 'big/team/four', 'v1', images.four!);
    const local = await pushImage(mirror.url, 'small/team/local', { tag: 'mine', layers: 1, layerSize: MiB });
    await sleep(5);
    await pullThrough(mirror.url, 'small/team/two', 'v1', images.two!);
    await mirror.server.evictCache();

    // "one" left whole: blobs, manifest, tag.
    for (const digest of images.one!.blobs.keys()) expect(hasBlobFile(s, digest)).toBe(false);
    expect(manifestRows(s, images.one!.digest)).toBe(0);
    expect(tagRows(s, images.one!.digest)).toBe(0);
    // "two" (same upstream, served later), the other upstream's images and pushed content stay.
    for (const image of [images.two!, images.three!, images.four!, local]) {
      for (const digest of image.blobs.keys()) expect(hasBlobFile(s, digest)).toBe(true);
      expect(manifestRows(s, image.digest)).toBe(1);
    }
    // Its repository held nothing else: it leaves the catalog with it (a deleted image's stays).
    const catalog = async () => ((await (await fetch(`${mirror.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories;
    expect(await catalog()).not.toContain('small/team/one');
    expect(await catalog()).toEqual(expect.arrayContaining(['small/team/two', 'small/team/local', 'big/team/three']));
    const stats = (await (await fetch(`${mirror.url}/api/v1/stats`)).json()) as { cache: Record<string, number> };
    expect(stats.cache.evictedManifests).toBe(1);
    expect(stats.cache.evictedBlobs).toBe(images.one!.blobs.size);

    // Asked for again, the image comes back from the upstream (not a stale answer from memory), byte-exact.
    expect(await pullThrough(mirror.url, 'small/team/one', 'v1', images.one!)).toBe('MISS');
    expect(await catalog()).toContain('small/team/one');
  });

  it('cache.maxBytes evicts images whole across upstreams, never pushed content', async () => {
    const tight = await startAirlock([{ prefix: 'up', url: upstream.url }], { cache: { maxBytes: '1.5MiB' } });
    try {
      const s = tight.storage;
      const pushed = await pushImage(tight.url, 'up/team/pushed', { tag: 'v1', layers: 1, layerSize: 2 * MiB });
      await pullThrough(tight.url, 'up/team/three', 'v1', images.three!);
      // Access times are written in batches: a pass within budget writes them down.
      await tight.server.evictCache();
      await sleep(5);
      await pullThrough(tight.url, 'up/team/four', 'v1', images.four!);
      await tight.server.evictCache();
      for (const digest of images.three!.blobs.keys()) expect(hasBlobFile(s, digest)).toBe(false);
      expect(manifestRows(s, images.three!.digest)).toBe(0);
      for (const image of [images.four!, pushed]) {
        for (const digest of image.blobs.keys()) expect(hasBlobFile(s, digest)).toBe(true);
        expect(manifestRows(s, image.digest)).toBe(1);
      }
      expect(tagRows(s, images.four!.digest)).toBe(1);
    } finally {
      await tight.close();
    }
  });
});

describe('eviction of a cached multi-arch image', () => {
  it('each child leaves with its blobs; the index and its tag leave with the last child', async () => {
    const upstream = await startTestServer();
    const mirror = await startAirlock([{ prefix: 'up', url: upstream.url, maxBytes: 1 }]);
    try {
      const children = [
        await pushImage(upstream.url, 'team/multi', { platform: { os: 'linux', architecture: 'amd64' }, layerSize: 4096 }),
        await pushImage(upstream.url, 'team/multi', { platform: { os: 'linux', architecture: 'arm64' }, layerSize: 4096 }),
      ];
      const index = await pushManifest(
        upstream.url,
        'team/multi',
        'v1',
        { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: children.map((c) => ({ mediaType: c.mediaType, digest: c.digest, size: c.body.length })) },
        MEDIA.ociIndex,
      );
      expect(index.status).toBe(201);
      expect((await getManifest(mirror.url, 'up/team/multi', 'v1')).status).toBe(200);
      for (const child of children) await pullThrough(mirror.url, 'up/team/multi', child.digest, child);
      expect(manifestRows(mirror.storage, index.digest)).toBe(1);
      await sleep(5);
      await mirror.server.evictCache();
      for (const child of children) {
        expect(manifestRows(mirror.storage, child.digest)).toBe(0);
        for (const digest of child.blobs.keys()) expect(hasBlobFile(mirror.storage, digest)).toBe(false);
      }
      expect(manifestRows(mirror.storage, index.digest)).toBe(0);
      expect(tagRows(mirror.storage, index.digest)).toBe(0);
      // And it all comes back from the upstream.
      const again = await getManifest(mirror.url, 'up/team/multi', 'v1');
      expect(again.header('x-cache')).toBe('MISS');
      expect(again.body.equals(index.sent)).toBe(true);
      await pullThrough(mirror.url, 'up/team/multi', children[1]!.digest, children[1]!);
    } finally {
      await mirror.close();
      await upstream.close();
    }
  });
});

describe('garbage collection of cached content', () => {
  it('removes cached blobs no manifest references and keeps cached images, which still pull from the cache', async () => {
    const upstream = await startTestServer();
    const mirror = await startAirlock([{ prefix: 'up', url: upstream.url }], { gc: { schedule: '24h', grace: '10m' } });
    try {
      const image = await pushImage(upstream.url, 'team/app', { tag: 'v1', layers: 2 });
      const loose = await pushBlob(upstream.url, 'team/app', randomBytes(4096));
      await pullThrough(mirror.url, 'up/team/app', 'v1', image);
      expect((await getBlob(mirror.url, 'up/team/app', loose)).status).toBe(200);
      await eventually(async () => expect((await getBlob(mirror.url, 'up/team/app', loose, 'HEAD')).header('x-cache')).toBe('HIT'));
      await writeDownAccess(mirror.server);
      ageStore(mirror.storage, 2 * 3_600_000);
      // Cached by an airlock that did not record what cached manifests reference: GC parses them.
      const db = new Database(join(mirror.storage, 'airlock.db'));
      db.prepare('DELETE FROM manifest_refs').run();
      db.close();

      const result = await gcOverHttp(mirror.url, {});
      expect(result.removedManifests).toBe(0);
      expect(result.removedBlobs).toBe(1);
      expect(hasBlobFile(mirror.storage, loose)).toBe(false);
      for (const digest of image.blobs.keys()) expect(hasBlobFile(mirror.storage, digest)).toBe(true);
      await upstream.close();
      // The upstream is gone: the image is served from the cache alone.
      const m = await getManifest(mirror.url, 'up/team/app', image.digest);
      expect(m.status).toBe(200);
      for (const [digest, data] of image.blobs) {
        const b = await getBlob(mirror.url, 'up/team/app', digest);
        expect(b.header('x-cache')).toBe('HIT');
        expect(b.body.equals(data)).toBe(true);
      }
    } finally {
      await mirror.close();
      await upstream.close();
    }
  });
});
