// A blob a fill stored (written around the page cache) is read back at once in the background: its
// file is in the page cache for the clients that follow, with no request for it; and the read-back
// hashes it, quarantining a write that went wrong (tested on the store: test/lifecycle/read-back.test.ts).
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { blobFile, call, eventually, sha256, startAirlock } from './support.js';

/** Bytes of the file in the page cache, and its size (util-linux's fincore). */
function resident(path: string): { cached: number; size: number } {
  const [cached, size] = execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES,SIZE', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split(/\s+/).map(Number);
  return { cached: cached!, size: size! };
}

describe('read-back of a filled blob', () => {
  let upstream: TestServer;
  let airlock: TestServer;
  let image: PushedImage;

  beforeAll(async () => {
    upstream = await startTestServer();
    image = await pushImage(upstream.url, 'lib/app', 'v1', { layers: 1, layerSize: 8 * 1024 * 1024 });
    airlock = await startAirlock([{ prefix: 'cache', url: upstream.url }]);
  });
  afterAll(async () => {
    await airlock?.close();
    await upstream?.close();
  });

  it('puts the stored file in the page cache without anyone asking for it again', async () => {
    const layer = image.layerDigests[0]!;
    const first = await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`);
    expect(first.header('x-cache')).toBe('MISS');
    expect(sha256(first.body)).toBe(layer);
    const file = blobFile(airlock.storage, layer);
    await eventually(() => {
      const { cached, size } = resident(file);
      expect(size).toBe(8 * 1024 * 1024);
      expect(cached).toBe(size);
    });
    const again = await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`);
    expect(again.header('x-cache')).toBe('HIT');
    expect(sha256(again.body)).toBe(layer);
  });
});
