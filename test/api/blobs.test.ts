// Pulling blobs: GET, HEAD, single and multiple byte ranges, unsatisfiable ranges, DELETE.
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, parseMultipart, pushBlob, sha256 } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const REPO = 'pull/blobs';
const data = randomBytes(10_000);
let digest: string;
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
  digest = await pushBlob(t.url, REPO, data);
});
afterAll(async () => {
  await t.close();
});

describe('GET and HEAD', () => {
  it('GET serves the bytes exactly, with digest, length and caching headers', async () => {
    const res = await http(t.url, `/v2/${REPO}/blobs/${digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(data)).toBe(true);
    expect(res.header('content-length')).toBe(String(data.length));
    expect(res.header('docker-content-digest')).toBe(digest);
    expect(res.header('content-type')).toBe('application/octet-stream');
    expect(res.header('etag')).toBe(`"${digest}"`);
    expect(res.header('accept-ranges')).toBe('bytes');
  });

  it('HEAD answers 200 with the length and digest and no body', async () => {
    const res = await http(t.url, `/v2/${REPO}/blobs/${digest}`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.header('content-length')).toBe(String(data.length));
    expect(res.header('docker-content-digest')).toBe(digest);
    expect(res.body.length).toBe(0);
  });

  it('an unknown blob → 404 BLOB_UNKNOWN (HEAD: 404 without a body)', async () => {
    const missing = sha256(randomBytes(16));
    expectError(await http(t.url, `/v2/${REPO}/blobs/${missing}`), 404, 'BLOB_UNKNOWN');
    const head = await http(t.url, `/v2/${REPO}/blobs/${missing}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect(head.body.length).toBe(0);
  });

  it('a blob is served only from repositories that link it', async () => {
    expectError(await http(t.url, `/v2/pull/other/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
  });

  it('an empty blob is served with Content-Length 0', async () => {
    const empty = await pushBlob(t.url, REPO, Buffer.alloc(0));
    const res = await http(t.url, `/v2/${REPO}/blobs/${empty}`);
    expect(res.status).toBe(200);
    expect(res.header('content-length')).toBe('0');
    expect(res.body.length).toBe(0);
  });
});

describe('Range', () => {
  const get = (range: string, method = 'GET') => http(t.url, `/v2/${REPO}/blobs/${digest}`, { method, headers: { range } });

  it('a single range → 206 with Content-Range and exactly those bytes', async () => {
    const res = await get('bytes=100-199');
    expect(res.status).toBe(206);
    expect(res.header('content-range')).toBe(`bytes 100-199/${data.length}`);
    expect(res.header('content-length')).toBe('100');
    expect(res.body.equals(data.subarray(100, 200))).toBe(true);
  });

  it('open-ended, suffix and over-long ranges are clamped to the blob', async () => {
    const open = await get('bytes=9990-');
    expect(open.status).toBe(206);
    expect(open.header('content-range')).toBe(`bytes 9990-9999/${data.length}`);
    expect(open.body.equals(data.subarray(9990))).toBe(true);

    const suffix = await get('bytes=-7');
    expect(suffix.status).toBe(206);
    expect(suffix.header('content-range')).toBe(`bytes 9993-9999/${data.length}`);
    expect(suffix.body.equals(data.subarray(9993))).toBe(true);

    const long = await get('bytes=9995-20000');
    expect(long.status).toBe(206);
    expect(long.header('content-range')).toBe(`bytes 9995-9999/${data.length}`);
    expect(long.body.equals(data.subarray(9995))).toBe(true);
  });

  it('HEAD with a range → 206 with the range headers and no body', async () => {
    const res = await get('bytes=0-9', 'HEAD');
    expect(res.status).toBe(206);
    expect(res.header('content-range')).toBe(`bytes 0-9/${data.length}`);
    expect(res.header('content-length')).toBe('10');
    expect(res.body.length).toBe(0);
  });

  it('several ranges → 206 multipart/byteranges whose parts carry each range', async () => {
    const res = await get('bytes=0-4, 5000-5009,-3');
    expect(res.status).toBe(206);
    const contentType = res.header('content-type')!;
    expect(contentType).toMatch(/^multipart\/byteranges; boundary=/);
    expect(res.header('content-length')).toBe(String(res.body.length));
    const parts = parseMultipart(res.body, contentType);
    expect(parts.map((p) => p.headers['content-range'])).toEqual([
      `bytes 0-4/${data.length}`,
      `bytes 5000-5009/${data.length}`,
      `bytes 9997-9999/${data.length}`,
    ]);
    expect(parts.every((p) => p.headers['content-type'] === 'application/octet-stream')).toBe(true);
    expect(parts[0]!.body.equals(data.subarray(0, 5))).toBe(true);
    expect(parts[1]!.body.equals(data.subarray(5000, 5010))).toBe(true);
    expect(parts[2]!.body.equals(data.subarray(9997))).toBe(true);
  });

  it('a client that leaves in the middle of a multi-range download leaves no file open', async () => {
    const big = randomBytes(4 * 1024 * 1024);
    const d = await pushBlob(t.url, 'pull/ranges', big);
    const ranges = Array.from({ length: 64 }, (_, i) => `${i * 65536}-${i * 65536 + 65535}`).join(',');
    const openFiles = () => readdirSync('/proc/self/fd').length;
    const before = openFiles();
    const url = new URL(t.url);
    for (let i = 0; i < 10; i++) {
      await new Promise<void>((resolve) => {
        const req = httpRequest({ host: url.hostname, port: url.port, path: `/v2/pull/ranges/blobs/${d}`, headers: { range: `bytes=${ranges}` }, agent: false }, (res) => {
          expect(res.statusCode).toBe(206);
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', () => resolve());
        req.end();
      });
    }
    // The server notices the departures asynchronously.
    const deadline = Date.now() + 3_000;
    while (openFiles() > before + 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(openFiles()).toBeLessThanOrEqual(before + 5);
  });

  it('a range starting past the end → 416 with Content-Range bytes */size', async () => {
    const res = await get(`bytes=${data.length}-`);
    expectError(res, 416, 'RANGE_INVALID');
    expect(res.header('content-range')).toBe(`bytes */${data.length}`);
  });

  it('a malformed bytes range → 416 with Content-Range bytes */size', async () => {
    for (const range of ['bytes=abc', 'bytes=20-10', 'bytes=-']) {
      const res = await get(range);
      expectError(res, 416, 'RANGE_INVALID');
      expect(res.header('content-range')).toBe(`bytes */${data.length}`);
    }
  });

  it('a Range in a unit other than bytes is ignored (RFC 9110 §14.2): 200 with the whole blob', async () => {
    const res = await get('items=0-5');
    expect(res.status).toBe(200);
    expect(res.body.equals(data)).toBe(true);
  });
});

describe('DELETE', () => {
  it('DELETE unlinks the blob from the repository → 202, then 404', async () => {
    const bytes = randomBytes(100);
    const d = await pushBlob(t.url, 'pull/deletable', bytes);
    await pushBlob(t.url, 'pull/keeper', bytes);
    const del = await http(t.url, `/v2/pull/deletable/blobs/${d}`, { method: 'DELETE' });
    expectStatus(del, 202);
    expectError(await http(t.url, `/v2/pull/deletable/blobs/${d}`), 404, 'BLOB_UNKNOWN');
    // Another repository's link is untouched.
    const kept = await http(t.url, `/v2/pull/keeper/blobs/${d}`);
    expect(kept.status).toBe(200);
    expect(kept.body.equals(bytes)).toBe(true);
    expectError(await http(t.url, `/v2/pull/deletable/blobs/${d}`, { method: 'DELETE' }), 404, 'BLOB_UNKNOWN');
  });
});
