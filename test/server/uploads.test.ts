// Upload sessions across restarts, and the expiry of abandoned ones.
import { randomBytes } from 'node:crypto';
import { existsSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, sha256, startUpload, withDigest } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
async function start(overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const t = await startTestServer(overrides);
  servers.push(t);
  return t;
}

describe('restart in the middle of an upload', () => {
  it('the session and its bytes survive; the upload resumes and commits byte-exact', async () => {
    const t = await start();
    const name = 'restart/upload';
    const data = randomBytes(300_000);
    const half = 150_000;
    const location = await startUpload(t.url, name);
    const first = await http(t.url, location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-length': half, 'content-range': `0-${half - 1}` },
      body: data.subarray(0, half),
    });
    expectStatus(first, 202);

    await t.restart();

    const status = await http(t.url, location);
    expect(status.status).toBe(204);
    expect(status.header('range')).toBe(`0-${half - 1}`);
    const rest = await http(t.url, location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-length': data.length - half, 'content-range': `${half}-${data.length - 1}` },
      body: data.subarray(half),
    });
    expectStatus(rest, 202);
    expect(rest.header('range')).toBe(`0-${data.length - 1}`);
    expectStatus(await http(t.url, withDigest(location, sha256(data)), { method: 'PUT' }), 201);

    const blob = await http(t.url, `/v2/${name}/blobs/${sha256(data)}`);
    expect(blob.status).toBe(200);
    expect(blob.body.equals(data)).toBe(true);
  });

  it('a wrong digest after a restart is still caught (the bytes are re-hashed from disk)', async () => {
    const t = await start();
    const data = randomBytes(10_000);
    const location = await startUpload(t.url, 'restart/wrong');
    await http(t.url, location, { method: 'PATCH', headers: { 'content-length': data.length }, body: data });
    await t.restart();
    expectError(await http(t.url, withDigest(location, sha256(randomBytes(4))), { method: 'PUT' }), 400, 'DIGEST_INVALID');
    expectError(await http(t.url, `/v2/restart/wrong/blobs/${sha256(data)}`), 404, 'BLOB_UNKNOWN');
  });
});

describe('abandoned upload sessions expire', () => {
  it('a session untouched for longer than uploads.ttl is removed with its bytes', async () => {
    const t = await start({ uploads: { ttl: '1s' } });
    const name = 'expire/me';
    const location = await startUpload(t.url, name);
    await http(t.url, location, { method: 'PATCH', headers: { 'content-length': 100 }, body: randomBytes(100) });
    const id = location.split('/').pop()!;
    const file = join(t.storage, 'uploads', id);
    expect(existsSync(file)).toBe(true);

    // Not yet: a sweep right now keeps it.
    await t.server.registry.expireUploads(Date.now());
    expect((await http(t.url, location)).status).toBe(204);

    // As if two seconds had passed.
    const removed = await t.server.registry.expireUploads(Date.now() + 2_000);
    expect(removed).toBeGreaterThanOrEqual(1);
    expect(existsSync(file)).toBe(false);
    expectError(await http(t.url, location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await http(t.url, location, { method: 'PATCH', headers: { 'content-length': 1 }, body: 'x' }), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('a session still being written to is kept (every PATCH renews it)', async () => {
    const t = await start({ uploads: { ttl: '10s' } });
    const before = Date.now();
    const [active, idle] = [await startUpload(t.url, 'expire/active'), await startUpload(t.url, 'expire/idle')];
    await new Promise((r) => setTimeout(r, 1000));
    await http(t.url, active, { method: 'PATCH', headers: { 'content-length': 10 }, body: randomBytes(10) });
    // 10.5 s after both sessions began, but less than 10 s after the PATCH.
    await t.server.registry.expireUploads(before + 10_500);
    expect((await http(t.url, active)).header('range')).toBe('0-9');
    expectError(await http(t.url, idle), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('uploads opened while the sweeper runs all stay usable', async () => {
    const t = await start();
    let sweeping = true;
    const sweeper = (async () => {
      while (sweeping) await t.server.registry.expireUploads();
    })();
    const lost: string[] = [];
    try {
      for (let round = 0; round < 4; round++) {
        const locations = await Promise.all(Array.from({ length: 40 }, () => startUpload(t.url, 'expire/busy')));
        for (const location of locations) {
          const res = await http(t.url, location);
          if (res.status !== 204) lost.push(`${location}: ${res.status} ${res.text}`);
          await http(t.url, location, { method: 'DELETE' });
        }
      }
    } finally {
      sweeping = false;
      await sweeper;
    }
    expect(lost).toEqual([]);
  });

  it('a file without a session (a pull-through fill, a crash leftover) goes only once unwritten for the TTL', async () => {
    const t = await start({ uploads: { ttl: '10m' } });
    const uploads = join(t.storage, 'uploads');
    const fresh = join(uploads, '11111111-1111-4111-8111-111111111111');
    const stale = join(uploads, '22222222-2222-4222-8222-222222222222');
    writeFileSync(fresh, randomBytes(10));
    writeFileSync(stale, randomBytes(10));
    const anHourAgo = new Date(Date.now() - 3_600_000);
    utimesSync(stale, anHourAgo, anHourAgo);
    await t.server.registry.expireUploads();
    expect(existsSync(fresh)).toBe(true);
    expect(existsSync(stale)).toBe(false);
  });

  it('the server sweeps on its own, without being asked', async () => {
    const t = await start({ uploads: { ttl: '1s' } });
    const location = await startUpload(t.url, 'expire/auto');
    const deadline = Date.now() + 5_000;
    let status = 204;
    while (status === 204 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      status = (await http(t.url, location)).status;
    }
    expectError(await http(t.url, location), 404, 'BLOB_UPLOAD_UNKNOWN');
  });
});
