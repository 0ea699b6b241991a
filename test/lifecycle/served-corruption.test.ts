// A blob file that goes bad on disk is caught when it is next served whole: the client never gets
// the bad bytes as a complete answer, the file is quarantined, and a cached blob comes back from
// its upstream on the next request (pushed content is reported missing, so a push sends it again).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, sha256, type PushedImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { blobFile, call, eventually, startAirlock } from '../pullthrough/support.js';

function flipByte(path: string): void {
  const bytes = readFileSync(path);
  bytes[bytes.length - 10]! ^= 0x01;
  writeFileSync(path, bytes);
}

describe('corrupt blob found while serving', () => {
  let upstream: TestServer;
  let airlock: TestServer;
  let image: PushedImage;

  beforeAll(async () => {
    upstream = await startTestServer();
    image = await pushImage(upstream.url, 'lib/app', 'v1', { layers: 1, layerSize: 3 * 1024 * 1024 });
    airlock = await startAirlock([{ prefix: 'cache', url: upstream.url }]);
  });
  afterAll(async () => {
    await airlock?.close();
    await upstream?.close();
  });

  it('a cached blob is cut short, quarantined, and fetched again from its upstream on the next request', async () => {
    const layer = image.layerDigests[0]!;
    const first = await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`);
    expect(first.status).toBe(200);
    // Cached once the fill recorded it (a HEAD answers from the cache).
    await eventually(async () => expect((await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`, { method: 'HEAD' })).header('x-cache')).toBe('HIT'));
    // The fill's read-back found the file good (test/pullthrough/read-back.test.ts), which spares
    // its serves a day of checks; a restart forgets that, as the file goes bad after it.
    await airlock.restart();
    flipByte(blobFile(airlock.storage, layer));

    const bad = await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`);
    expect(bad.header('x-cache')).toBe('HIT');
    expect(bad.complete).toBe(false); // never a whole answer with wrong bytes
    expect(sha256(bad.body)).not.toBe(layer);
    await eventually(() => expect(readdirSync(join(airlock.storage, 'quarantine'))).toEqual([expect.stringMatching(/^sha256-[0-9a-f]{64}\./)]));

    const again = await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`);
    expect(again.status).toBe(200);
    expect(again.header('x-cache')).toBe('MISS');
    expect(again.body.equals(image.blobs.get(layer)!)).toBe(true);
    const cached = await call(airlock.url, `/v2/cache/lib/app/blobs/${layer}`);
    expect(cached.header('x-cache')).toBe('HIT');
    expect(sha256(cached.body)).toBe(layer);
  });

  it('a pushed blob is quarantined and reported missing, so pushing it again heals the image', async () => {
    const pushed = await pushImage(airlock.url, 'local/app', 'v1', { layers: 1, layerSize: 2 * 1024 * 1024 });
    const layer = pushed.layerDigests[0]!;
    flipByte(blobFile(airlock.storage, layer));
    const ranged = await call(airlock.url, `/v2/local/app/blobs/${layer}`, { headers: { range: 'bytes=0-99' } });
    expect(ranged.status).toBe(206); // a range is not checked (it cannot be), and is served

    const bad = await call(airlock.url, `/v2/local/app/blobs/${layer}`);
    expect(bad.complete).toBe(false);
    await eventually(async () => expect((await call(airlock.url, `/v2/local/app/blobs/${layer}`, { method: 'HEAD' })).status).toBe(404));

    const again = await fetch(`${airlock.url}/v2/local/app/blobs/uploads/?digest=${layer}`, { method: 'POST', body: pushed.blobs.get(layer)! });
    expect(again.status).toBe(201);
    const healed = await call(airlock.url, `/v2/local/app/blobs/${layer}`);
    expect(healed.complete).toBe(true);
    expect(healed.body.equals(pushed.blobs.get(layer)!)).toBe(true);
  });
});
