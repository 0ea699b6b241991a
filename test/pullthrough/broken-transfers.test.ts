// Upstreams that break a transfer: the connection dies mid-blob, or the bytes do not match the
// digest. Nothing half-done or wrong may be cached, the client must not mistake the answer for a
// good one, and the next request goes upstream again.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { FsBlobStore } from '../../src/storage/blobstore.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import {
  blobFile,
  blobFiles,
  eventually,
  expectError,
  getBlob,
  getManifest,
  sha256,
  startAirlock,
  startUpstreamProxy,
  stats,
  uploadFiles,
  type UpstreamProxy,
} from './support.js';

const LAYER = 2 * 1024 * 1024;
let registry: Distribution;
let proxy: UpstreamProxy;
let airlock: TestServer;

beforeAll(async () => {
  registry = await startDistribution();
  proxy = await startUpstreamProxy(registry.url);
  airlock = await startAirlock([{ prefix: 'up', url: proxy.url }]);
});

afterAll(async () => {
  await airlock?.close();
  await proxy?.close();
  await registry?.stop();
});

function expectNothingKept(digest: string): void {
  expect(existsSync(blobFile(airlock.storage, digest))).toBe(false);
  expect(blobFiles(airlock.storage).filter((f) => f.endsWith(digest.slice(7)))).toEqual([]);
  expect(uploadFiles(airlock.storage)).toEqual([]);
}

describe('upstream killed mid-blob', () => {
  let image: PushedImage;
  let layer: string;

  beforeAll(async () => {
    image = await pushImage(registry.url, 'team/cut', 'v1', { layerSize: LAYER });
    layer = image.layerDigests[0]!;
  });

  it('the client gets a cut-short body, nothing is kept, HEAD goes upstream again, and a retry succeeds', async () => {
    proxy.reset();
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`) ? { kind: 'truncate' } : undefined);

    // Two clients tail the same broken transfer; both must see it fail.
    const [a, b] = await Promise.all([getBlob(airlock.url, 'up/team/cut', layer), getBlob(airlock.url, 'up/team/cut', layer)]);
    for (const res of [a, b]) {
      if (res.status === 200) {
        expect(res.complete).toBe(false);
        expect(res.body.length).toBeLessThan(LAYER);
        expect(res.header('content-length')).toBe(String(LAYER));
      } else {
        expect(res.status).toBeGreaterThanOrEqual(500);
      }
    }
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(1);

    await eventually(() => expectNothingKept(layer));
    const s = await stats(airlock.url);
    expect(s.storage.blobs).toBe(0);
    expect(s.upstreams[0]!.errors).toBeGreaterThanOrEqual(1);
    expect(s.upstreams[0]!.lastError).toContain(layer);

    // The blob is not known locally: a HEAD asks the upstream again.
    const head = await getBlob(airlock.url, 'up/team/cut', layer, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.header('x-cache')).toBe('MISS');
    expect(head.header('content-length')).toBe(String(LAYER));
    expect(proxy.count('HEAD', `/blobs/${layer}`)).toBe(1);

    // The upstream behaves again: the retry fetches and caches the right bytes.
    proxy.fault = undefined;
    const retry = await getBlob(airlock.url, 'up/team/cut', layer);
    expect(retry.status).toBe(200);
    expect(retry.complete).toBe(true);
    expect(retry.header('x-cache')).toBe('MISS');
    expect(retry.body.equals(image.blobs.get(layer)!)).toBe(true);
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(2);
    await eventually(() => expect(existsSync(blobFile(airlock.storage, layer))).toBe(true));

    const cached = await getBlob(airlock.url, 'up/team/cut', layer);
    expect(cached.header('x-cache')).toBe('HIT');
    expect(sha256(cached.body)).toBe(layer);
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(2);
    expect(uploadFiles(airlock.storage)).toEqual([]);
  });
});

describe('upstream sending bytes that do not match the digest', () => {
  let image: PushedImage;

  beforeAll(async () => {
    image = await pushImage(registry.url, 'team/bad', 'v1', { layerSize: 256 * 1024 });
  });

  it('a blob: the client does not get a complete answer, nothing is cached, the next request goes upstream', async () => {
    const layer = image.layerDigests[0]!;
    proxy.reset();
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`) ? { kind: 'corrupt' } : undefined);

    const bad = await getBlob(airlock.url, 'up/team/bad', layer);
    // Whatever arrived, the client cannot take it for the blob: the answer is an error or cut short.
    expect(bad.status !== 200 || !bad.complete).toBe(true);
    if (bad.status === 200) expect(bad.body.length).toBeLessThan(256 * 1024);
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(1);
    await eventually(() => expectNothingKept(layer));
    expect((await stats(airlock.url)).upstreams[0]!.lastError).toContain(layer);

    const again = await getBlob(airlock.url, 'up/team/bad', layer);
    expect(again.status !== 200 || !again.complete).toBe(true);
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(2);
    await eventually(() => expectNothingKept(layer));

    proxy.fault = undefined;
    const good = await getBlob(airlock.url, 'up/team/bad', layer);
    expect(good.complete).toBe(true);
    expect(good.body.equals(image.blobs.get(layer)!)).toBe(true);
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(3);
  });

  it('a manifest: 502 UPSTREAM_ERROR naming the upstream and the digest, not cached, next request goes upstream', async () => {
    proxy.reset();
    proxy.fault = (r) => (r.method === 'GET' && r.path.includes('/manifests/') ? { kind: 'corrupt' } : undefined);
    for (const ref of ['v1', image.manifestDigest]) {
      const res = await getManifest(airlock.url, 'up/team/bad', ref);
      const err = expectError(res, 502, 'UPSTREAM_ERROR');
      expect(err.message).toContain(proxy.url);
      expect(err.message).toContain(image.manifestDigest);
    }
    expect(proxy.count('GET', '/manifests/v1')).toBe(1);
    expect(proxy.count('GET', `/manifests/${image.manifestDigest}`)).toBe(1);
    expect((await stats(airlock.url)).storage.manifests).toBe(0);

    proxy.fault = undefined;
    const ok = await getManifest(airlock.url, 'up/team/bad', image.manifestDigest);
    expect(ok.status).toBe(200);
    expect(ok.body.equals(image.manifest)).toBe(true);
    expect(ok.header('x-cache')).toBe('MISS');
    expect(proxy.count('GET', `/manifests/${image.manifestDigest}`)).toBe(2);
  });
});

describe('upstream dying before the cache file is ready', () => {
  let image: PushedImage;
  const realCreate = FsBlobStore.prototype.createUpload;

  beforeAll(async () => {
    image = await pushImage(registry.url, 'team/early', 'v1', { layerSize: LAYER });
  });

  afterAll(() => {
    FsBlobStore.prototype.createUpload = realCreate;
  });

  it('the failure reaches the fill (not the process as an unhandled error), nothing is kept, a retry succeeds', async () => {
    const layer = image.layerDigests[0]!;
    proxy.reset();
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`) ? { kind: 'truncate', keep: 64 * 1024 } : undefined);
    // A slow disk (or a busy machine): the upstream connection breaks while the upload file is created.
    FsBlobStore.prototype.createUpload = async function (this: FsBlobStore, id: string) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      return realCreate.call(this, id);
    };
    const broken = await getBlob(airlock.url, 'up/team/early', layer);
    expect(broken.status !== 200 || !broken.complete).toBe(true);
    FsBlobStore.prototype.createUpload = realCreate;
    await eventually(() => expectNothingKept(layer));

    proxy.fault = undefined;
    const retry = await getBlob(airlock.url, 'up/team/early', layer);
    expect(retry.status).toBe(200);
    expect(sha256(retry.body)).toBe(layer);
  });
});
