// A cold blob when the cache disk is slower than the upstream: the client keeps the stream's pace,
// and the cache gets the part its disk could not take by a Range request to the real upstream.
// The only thing faked is the disk: every upload write of this in-process airlock waits until the
// client has the whole blob (a disk that stalls, as a page cache under memory pressure does).

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FsBlobStore, type UploadWriter } from '../../src/storage/blobstore.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { blobFile, eventually, hashBlob, startAirlock, startUpstreamProxy, stats, uploadFiles, type UpstreamProxy } from './support.js';

// Above what one fill may queue for its disk (48 MiB), so the stalled disk falls that far behind.
const SIZE = 64 * 1024 * 1024;

let registry: Distribution;
let proxy: UpstreamProxy;
let airlock: TestServer;
let image: PushedImage;
const realWriter = FsBlobStore.prototype.uploadWriter;
let diskBack: () => void = () => undefined;
const diskStalled = new Promise<void>((resolve) => (diskBack = resolve));

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'slow/disk', 'v1', { layerSize: SIZE });
  proxy = await startUpstreamProxy(registry.url);
  airlock = await startAirlock([{ prefix: 'up', url: proxy.url }]);
  FsBlobStore.prototype.uploadWriter = async function (this: FsBlobStore, id: string): Promise<UploadWriter> {
    const writer = await realWriter.call(this, id);
    return {
      write: async (buffers, bytes) => {
        await diskStalled;
        await writer.write(buffers, bytes);
      },
      close: () => writer.close(),
    };
  };
});

afterAll(async () => {
  FsBlobStore.prototype.uploadWriter = realWriter;
  await airlock?.close();
  await proxy?.close();
  await registry?.stop();
});

it('the client gets the exact bytes at the stream pace; the rest reaches the cache by a Range request, verified', async () => {
  const layer = image.layerDigests[0]!;
  const got = await hashBlob(airlock.url, 'up/slow/disk', layer);
  expect(got).toMatchObject({ status: 200, digest: layer, bytes: SIZE, complete: true, xCache: 'MISS' });
  // The client had every byte while the disk took none: it was never held to the disk's pace.
  diskBack();

  // The cache completes after the client: a second GET asked only for the rest, by range. The
  // upload file is renamed under the digest a moment before the fill is recorded (and counted).
  await eventually(async () => {
    expect(uploadFiles(airlock.storage)).toEqual([]);
    expect((await stats(airlock.url)).cache.bytesFromUpstream).toBeGreaterThan(SIZE);
  }, 20_000);
  const gets = proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`));
  expect(gets).toHaveLength(2);
  expect(gets[0]!.headers.range).toBeUndefined();
  const from = Number(/^bytes=(\d+)-$/.exec(String(gets[1]!.headers.range))?.[1]);
  expect(from).toBeGreaterThan(0);
  expect(from).toBeLessThan(SIZE);

  const cached = readFileSync(blobFile(airlock.storage, layer));
  expect(cached.equals(image.blobs.get(layer)!)).toBe(true);
  const s = await stats(airlock.url);
  expect(s.cache.bytesFromUpstream).toBe(SIZE + (SIZE - from));

  // Served from the cache from now on, with no further upstream request.
  proxy.reset();
  expect(await hashBlob(airlock.url, 'up/slow/disk', layer)).toMatchObject({ status: 200, digest: layer, bytes: SIZE, xCache: 'HIT' });
  expect(proxy.requests).toEqual([]);
});
