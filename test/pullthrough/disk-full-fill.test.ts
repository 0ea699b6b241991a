// Disk full during pull-through fills: airlock's storage is a real tmpfs of a few MiB, its upstream a
// real airlock on the normal disk. A blob that cannot fit is refused with a clear 507 before any
// byte is sent, nothing partial stays, reads go on; /readyz says the disk is low before it is full.
// (CI runs as root, which mounting needs.)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, sha256, type PushedImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { call, eventually, startAirlock } from './support.js';

const MiB = 1024 * 1024;

describe('storage volume full during pull-through fills', () => {
  let mountPoint: string;
  let upstream: TestServer;
  let airlock: TestServer;
  let big: PushedImage;
  let small: PushedImage;
  let pair: PushedImage;

  beforeAll(async () => {
    upstream = await startTestServer();
    big = await pushImage(upstream.url, 'lib/big', 'v1', { layers: 1, layerSize: 20 * MiB });
    small = await pushImage(upstream.url, 'lib/small', 'v1', { layers: 1, layerSize: 3 * MiB });
    pair = await pushImage(upstream.url, 'lib/pair', 'v1', { layers: 2, layerSize: 5 * MiB });
    mountPoint = mkdtempSync(join(tmpdir(), 'airlock-fill-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', mountPoint]);
    airlock = await startAirlock([{ prefix: 'cache', url: upstream.url }], { storage: mountPoint, storageMinFree: '10MiB' });
  }, 60_000);

  afterAll(async () => {
    await airlock?.close();
    await upstream?.close();
    execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('refuses a blob that cannot fit with 507 STORAGE_FULL naming it, keeps nothing of it, and goes on serving', async () => {
    expect((await call(airlock.url, '/readyz')).status).toBe(200);
    const layer = big.layerDigests[0]!;
    const refused = await call(airlock.url, `/v2/cache/lib/big/blobs/${layer}`);
    expect(refused.status).toBe(507);
    const error = refused.json<{ errors: { code: string; message: string }[] }>().errors[0]!;
    expect(error.code).toBe('STORAGE_FULL');
    expect(error.message).toContain(`blob ${layer} (${20 * MiB} bytes)`);
    expect(error.message).toContain('cannot be cached');
    expect(readdirSync(join(mountPoint, 'uploads'))).toEqual([]);

    // What fits is still fetched and cached, and served byte for byte.
    const smallLayer = small.layerDigests[0]!;
    const got = await call(airlock.url, `/v2/cache/lib/small/blobs/${smallLayer}`);
    expect(got.status).toBe(200);
    expect(sha256(got.body)).toBe(smallLayer);
    const again = await call(airlock.url, `/v2/cache/lib/small/blobs/${smallLayer}`);
    expect(again.header('x-cache')).toBe('HIT');
    expect(again.body.equals(small.blobs.get(smallLayer)!)).toBe(true);
  });

  it('/readyz reports low disk space once free space is under storageMinFree, while reads go on', async () => {
    const ready = await call(airlock.url, '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json<{ reason: string }>().reason).toMatch(/^low disk space: .* free on the storage volume, below storageMinFree \(10\.0 MiB\)/);
    const smallLayer = small.layerDigests[0]!;
    expect((await call(airlock.url, `/v2/cache/lib/small/blobs/${smallLayer}`)).status).toBe(200);
  });

  it('two fills that fit one at a time but not together: one is cached, the other refused cleanly', async () => {
    const [a, b] = pair.layerDigests as [string, string];
    const answers = await Promise.all([a, b].map((d) => call(airlock.url, `/v2/cache/lib/pair/blobs/${d}`)));
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 507]);
    const ok = answers.find((r) => r.status === 200)!;
    expect(ok.complete).toBe(true);
    expect(pair.blobs.has(sha256(ok.body))).toBe(true);
    // The cached one is made durable just after its client had it all.
    await eventually(() => expect(readdirSync(join(mountPoint, 'uploads'))).toEqual([]));
    expect((await call(airlock.url, `/v2/cache/lib/pair/blobs/${sha256(ok.body)}`)).header('x-cache')).toBe('HIT');
    // And the store is consistent: what was cached is whole.
    expect((await call(airlock.url, `/v2/cache/lib/small/blobs/${small.layerDigests[0]}`)).status).toBe(200);
  });
});
