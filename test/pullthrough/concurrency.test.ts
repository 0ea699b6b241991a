// Many clients asking for one cold, large blob at once share a single upstream transfer.

import { existsSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { blobFile, eventually, hashBlob, startAirlock, startUpstreamProxy, stats, uploadFiles, type UpstreamProxy } from './support.js';

const SIZE = 64 * 1024 * 1024;
const CLIENTS = 50;

let registry: Distribution;
let proxy: UpstreamProxy;
let airlock: TestServer;
let image: PushedImage;

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'big/image', 'v1', { layerSize: SIZE });
  proxy = await startUpstreamProxy(registry.url);
  airlock = await startAirlock([{ prefix: 'up', url: proxy.url }]);
});

afterAll(async () => {
  await airlock?.close();
  await proxy?.close();
  await registry?.stop();
});

describe('single flight on a cold blob', () => {
  it(`${CLIENTS} concurrent clients on one cold 64 MiB blob: one upstream GET, every client gets the exact bytes`, async () => {
    const layer = image.layerDigests[0]!;
    image.blobs.clear(); // 64 MiB less to hold while 50 clients stream
    // The upstream answers after a short pause, so every client arrives while the transfer is pending.
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`) ? { kind: 'delay', ms: 300 } : undefined);

    const results = await Promise.all(Array.from({ length: CLIENTS }, () => hashBlob(airlock.url, 'up/big/image', layer)));

    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(1);
    expect(proxy.count(undefined, `/blobs/${layer}`)).toBe(1);
    for (const r of results) {
      expect(r).toMatchObject({ status: 200, digest: layer, bytes: SIZE, complete: true, xCache: 'MISS' });
    }

    await eventually(() => expect(existsSync(blobFile(airlock.storage, layer))).toBe(true));
    expect(statSync(blobFile(airlock.storage, layer)).size).toBe(SIZE);
    expect(uploadFiles(airlock.storage)).toEqual([]);
    // The file is in place (renamed, its directory being synced) a moment before the fill is
    // recorded and counted.
    await eventually(async () => expect((await stats(airlock.url)).cache.bytesFromUpstream).toBe(SIZE));
    const s = await stats(airlock.url);
    expect(s.upstreams[0]!.bytesFromUpstream).toBe(SIZE);
    expect(s.cache.misses).toBe(CLIENTS);

    // Afterwards it is a plain cache hit, still without the upstream.
    const again = await hashBlob(airlock.url, 'up/big/image', layer);
    expect(again).toMatchObject({ status: 200, digest: layer, bytes: SIZE, complete: true, xCache: 'HIT' });
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(1);
  });
});
