// A cold blob asked for in ways other than one whole GET: with `Range` (containerd resumes an
// interrupted layer download with `bytes=N-`), and by a client that goes away mid-transfer. Either
// way the client gets exactly what it asked for, and the cache ends up with the whole blob, verified,
// from one upstream transfer. Upstream: docker-registry behind a counting (and slowing) proxy.

import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { blobFile, call, eventually, getBlob, sha256, startAirlock, startUpstreamProxy, stats, uploadFiles, type UpstreamProxy } from './support.js';

const LAYER = 4 * 1024 * 1024;
const REPO = 'up/team/app';
let registry: Distribution;
let proxy: UpstreamProxy;
let airlock: TestServer;
let image: PushedImage;

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'team/app', 'v1', { layers: 4, layerSize: LAYER });
  proxy = await startUpstreamProxy(registry.url);
  airlock = await startAirlock([{ prefix: 'up', url: proxy.url }]);
});

beforeEach(() => {
  proxy.reset();
  proxy.fault = undefined;
});

afterAll(async () => {
  await airlock?.close();
  await proxy?.close();
  await registry?.stop();
});

/** The blob is in the cache, whole and matching its digest, and served from there with no upstream request. */
async function expectCachedWhole(digest: string): Promise<void> {
  await eventually(() => expect(readFileSync(blobFile(airlock.storage, digest)).equals(image.blobs.get(digest)!)).toBe(true), 10_000);
  await eventually(() => expect(uploadFiles(airlock.storage)).toEqual([]));
  const seen = proxy.requests.length;
  const again = await getBlob(airlock.url, REPO, digest);
  expect(again.status).toBe(200);
  expect(again.header('x-cache')).toBe('HIT');
  expect(sha256(again.body)).toBe(digest);
  expect(proxy.requests.length).toBe(seen);
}

describe('Range on a cold blob', () => {
  it('bytes=N- (a resumed download): 206 with exactly the rest; the cache gets the whole blob from one transfer', async () => {
    const digest = image.layerDigests[0]!;
    const from = 1_234_567;
    const res = await call(airlock.url, `/v2/${REPO}/blobs/${digest}`, { headers: { range: `bytes=${from}-` } });
    expect(res.status).toBe(206);
    expect(res.complete).toBe(true);
    expect(res.header('content-range')).toBe(`bytes ${from}-${LAYER - 1}/${LAYER}`);
    expect(res.header('content-length')).toBe(String(LAYER - from));
    expect(res.header('x-cache')).toBe('MISS');
    expect(res.body.equals(image.blobs.get(digest)!.subarray(from))).toBe(true);

    await expectCachedWhole(digest);
    expect(proxy.count('GET', `/blobs/${digest}`)).toBe(1);
    await eventually(async () => expect((await stats(airlock.url)).storage.blobs).toBeGreaterThanOrEqual(1));
  });

  it('a range in the middle, and one past the end (416), on other cold blobs', async () => {
    const digest = image.layerDigests[1]!;
    const res = await call(airlock.url, `/v2/${REPO}/blobs/${digest}`, { headers: { range: 'bytes=100-199' } });
    expect(res.status).toBe(206);
    expect(res.header('content-range')).toBe(`bytes 100-199/${LAYER}`);
    expect(res.body.equals(image.blobs.get(digest)!.subarray(100, 200))).toBe(true);
    await expectCachedWhole(digest);
    expect(proxy.count('GET', `/blobs/${digest}`)).toBe(1);

    const beyond = image.layerDigests[2]!;
    const bad = await call(airlock.url, `/v2/${REPO}/blobs/${beyond}`, { headers: { range: `bytes=${LAYER}-` } });
    expect(bad.status).toBe(416);
    expect(bad.header('content-range')).toBe(`bytes */${LAYER}`);
  });
});

describe('a client leaving mid-fill', () => {
  it('does not stop the fill: the blob is stored whole and the next GET is a HIT with no upstream request', async () => {
    const digest = image.layerDigests[3]!;
    // About two seconds for the whole layer: the client is surely gone long before the end.
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`) ? { kind: 'slow', bytesPerSecond: 2 * 1024 * 1024 } : undefined);
    const url = new URL(`/v2/${REPO}/blobs/${digest}`, airlock.url);
    const received = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, agent: false }, (res) => {
        expect(res.statusCode).toBe(200);
        res.once('data', (chunk: Buffer) => {
          req.destroy();
          resolve(chunk.length);
        });
      });
      req.on('error', (e) => (req.destroyed ? undefined : reject(e)));
      req.end();
    });
    expect(received).toBeLessThan(LAYER);
    proxy.fault = undefined;

    await expectCachedWhole(digest);
    expect(proxy.count('GET', `/blobs/${digest}`)).toBe(1);
  });
});
