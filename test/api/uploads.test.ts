// Pushing blobs: upload sessions, monolithic and chunked uploads, streamed PATCH, mounts,
// cancellation, digest verification and concurrent commits.
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectError,
  expectStatus,
  http,
  openRequest,
  pushBlob,
  sha256,
  startUpload,
  uniqueName,
  withDigest,
} from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

const repo = () => `push/${uniqueName()}`;
const octet = (length: number, extra: Record<string, string | number> = {}) => ({
  'content-type': 'application/octet-stream',
  'content-length': length,
  ...extra,
});

async function expectBlob(name: string, digest: string, data: Buffer): Promise<void> {
  const res = await http(t.url, `/v2/${name}/blobs/${digest}`);
  expect(res.status).toBe(200);
  expect(res.header('docker-content-digest')).toBe(digest);
  expect(res.body.equals(data)).toBe(true);
}

async function expectNoBlob(name: string, digest: string): Promise<void> {
  expectError(await http(t.url, `/v2/${name}/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
}

/** Upload files in storage/uploads: a finished or cancelled session leaves none behind. */
function uploadFiles(): string[] {
  return readdirSync(join(t.storage, 'uploads'));
}

describe('starting an upload', () => {
  it('POST → 202 with Location, Range 0-0, Docker-Upload-UUID and no body; no minimum chunk size on disk', async () => {
    const name = repo();
    const res = await http(t.url, `/v2/${name}/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(202);
    const location = res.header('location')!;
    expect(location).toMatch(new RegExp(`^/v2/${name}/blobs/uploads/[^/?]+`));
    expect(res.header('range')).toBe('0-0');
    expect(location).toContain(res.header('docker-upload-uuid'));
    expect(res.header('content-length')).toBe('0');
    expect(res.body.length).toBe(0);
    // The S3 store announces one (test/e2e/replicas.test.ts); files take chunks of any size.
    expect(res.header('oci-chunk-min-length')).toBeUndefined();
  });

  it('POST ?digest= with the body is a monolithic upload → 201 with Location and digest', async () => {
    const name = repo();
    const data = randomBytes(4096);
    const digest = sha256(data);
    const res = await http(t.url, `/v2/${name}/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: octet(data.length), body: data });
    expect(res.status).toBe(201);
    expect(res.header('location')).toBe(`/v2/${name}/blobs/${digest}`);
    expect(res.header('docker-content-digest')).toBe(digest);
    await expectBlob(name, digest, data);
  });

  it('POST ?digest= with the wrong digest → 400 DIGEST_INVALID and nothing stored', async () => {
    const name = repo();
    const data = randomBytes(2048);
    const claimed = sha256(randomBytes(8));
    const before = uploadFiles();
    const res = await http(t.url, `/v2/${name}/blobs/uploads/?digest=${claimed}`, { method: 'POST', headers: octet(data.length), body: data });
    expectError(res, 400, 'DIGEST_INVALID');
    await expectNoBlob(name, claimed);
    await expectNoBlob(name, sha256(data));
    expect(uploadFiles()).toEqual(before);
  });
});

describe('cross-repository mount', () => {
  it('mount with from= a repository that links the blob → 201, served from the target', async () => {
    const source = repo();
    const target = repo();
    const data = randomBytes(300);
    const digest = await pushBlob(t.url, source, data);
    const res = await http(t.url, `/v2/${target}/blobs/uploads/?mount=${digest}&from=${source}`, { method: 'POST' });
    expect(res.status).toBe(201);
    expect(res.header('location')).toBe(`/v2/${target}/blobs/${digest}`);
    expect(res.header('docker-content-digest')).toBe(digest);
    await expectBlob(target, digest, data);
  });

  it('mount without from= of a blob the registry holds → 201', async () => {
    const data = randomBytes(300);
    const digest = await pushBlob(t.url, repo(), data);
    const target = repo();
    const res = await http(t.url, `/v2/${target}/blobs/uploads/?mount=${digest}`, { method: 'POST' });
    expect(res.status).toBe(201);
    expect(res.header('docker-content-digest')).toBe(digest);
    await expectBlob(target, digest, data);
  });

  it('an unmountable blob falls back to a new upload session → 202 with a usable Location', async () => {
    const holder = repo();
    const empty = repo();
    const data = randomBytes(300);
    const digest = await pushBlob(t.url, holder, data);
    const target = repo();
    // from= names a repository that does not link the blob (though another one does): no mount.
    const notThere = await http(t.url, `/v2/${target}/blobs/uploads/?mount=${digest}&from=${empty}`, { method: 'POST' });
    expect(notThere.status).toBe(202);
    expect(notThere.header('range')).toBe('0-0');
    await expectNoBlob(target, digest);
    // A digest no repository has: also a session.
    const unknown = await http(t.url, `/v2/${target}/blobs/uploads/?mount=${sha256(randomBytes(8))}&from=${holder}`, { method: 'POST' });
    expect(unknown.status).toBe(202);
    // The fallback session takes the upload.
    const put = await http(t.url, withDigest(notThere.header('location')!, digest), { method: 'PUT', headers: octet(data.length), body: data });
    expect(put.status).toBe(201);
    await expectBlob(target, digest, data);
  });

  it('a mount with an invalid digest → 400 DIGEST_INVALID', async () => {
    expectError(await http(t.url, `/v2/${repo()}/blobs/uploads/?mount=sha256:nothex&from=${repo()}`, { method: 'POST' }), 400, 'DIGEST_INVALID');
  });
});

describe('chunked upload (PATCH with Content-Range)', () => {
  it('chunks in order → 202 each with Range 0-<last>; PUT ?digest= commits the whole blob', async () => {
    const name = repo();
    const data = randomBytes(3000);
    let location = await startUpload(t.url, name);
    for (const [start, end] of [
      [0, 999],
      [1000, 1999],
      [2000, 2999],
    ] as const) {
      const chunk = data.subarray(start, end + 1);
      const res = await http(t.url, location, { method: 'PATCH', headers: octet(chunk.length, { 'content-range': `${start}-${end}` }), body: chunk });
      expect(res.status).toBe(202);
      expect(res.header('range')).toBe(`0-${end}`);
      expect(res.header('content-length')).toBe('0');
      location = res.header('location')!;
    }
    const put = await http(t.url, withDigest(location, sha256(data)), { method: 'PUT', headers: { 'content-length': 0 } });
    expect(put.status).toBe(201);
    expect(put.header('docker-content-digest')).toBe(sha256(data));
    await expectBlob(name, sha256(data), data);
  });

  it('an out-of-order chunk → 416 with the Range the upload really has; the session survives', async () => {
    const name = repo();
    const data = randomBytes(300);
    const location = await startUpload(t.url, name);
    const first = await http(t.url, location, { method: 'PATCH', headers: octet(100, { 'content-range': '0-99' }), body: data.subarray(0, 100) });
    expect(first.status).toBe(202);

    // A gap, then a repeat of the first chunk: both refused.
    for (const [range, chunk] of [
      ['200-299', data.subarray(200, 300)],
      ['0-99', data.subarray(0, 100)],
    ] as const) {
      const res = await http(t.url, location, { method: 'PATCH', headers: octet(chunk.length, { 'content-range': range }), body: chunk });
      expectError(res, 416, 'BLOB_UPLOAD_INVALID');
      expect(res.header('range')).toBe('0-99');
      expect(res.header('location')).toBe(location);
    }

    const status = await http(t.url, location);
    expect(status.header('range')).toBe('0-99');
    const rest = await http(t.url, location, { method: 'PATCH', headers: octet(200, { 'content-range': '100-299' }), body: data.subarray(100) });
    expect(rest.status).toBe(202);
    expect(rest.header('range')).toBe('0-299');
    const put = await http(t.url, withDigest(location, sha256(data)), { method: 'PUT' });
    expect(put.status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });

  it('a malformed Content-Range → 416 with the Range the upload has', async () => {
    const location = await startUpload(t.url, repo());
    await http(t.url, location, { method: 'PATCH', headers: octet(10, { 'content-range': '0-9' }), body: randomBytes(10) });
    for (const range of ['a-b', '20-10', '10']) {
      const res = await http(t.url, location, { method: 'PATCH', headers: octet(4, { 'content-range': range }), body: 'abcd' });
      expectError(res, 416, 'BLOB_UPLOAD_INVALID');
      expect(res.header('range')).toBe('0-9');
      expect(res.header('location')).toBe(location);
    }
  });

  it('a final chunk on PUT that does not continue the upload → 416 with the Range the upload has', async () => {
    const name = repo();
    const data = randomBytes(200);
    const location = await startUpload(t.url, name);
    await http(t.url, location, { method: 'PATCH', headers: octet(100, { 'content-range': '0-99' }), body: data.subarray(0, 100) });
    const res = await http(t.url, withDigest(location, sha256(data)), { method: 'PUT', headers: octet(50, { 'content-range': '150-199' }), body: data.subarray(150) });
    expectError(res, 416, 'BLOB_UPLOAD_INVALID');
    expect(res.header('range')).toBe('0-99');
    expect(res.header('location')).toBe(location);
    const put = await http(t.url, withDigest(location, sha256(data)), { method: 'PUT', headers: octet(100, { 'content-range': '100-199' }), body: data.subarray(100) });
    expect(put.status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });

  it('a malformed Content-Range on an unknown session → 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const res = await http(t.url, `/v2/${repo()}/blobs/uploads/00000000-0000-4000-8000-000000000000`, { method: 'PATCH', headers: octet(4, { 'content-range': 'x' }), body: 'abcd' });
    expectError(res, 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('a Content-Length that disagrees with the Content-Range → 400 SIZE_INVALID', async () => {
    const location = await startUpload(t.url, repo());
    const res = await http(t.url, location, { method: 'PATCH', headers: octet(20, { 'content-range': '0-9' }), body: randomBytes(20) });
    expectError(res, 400, 'SIZE_INVALID');
  });

  it('PUT with a final chunk (Content-Range) completes the upload', async () => {
    const name = repo();
    const data = randomBytes(2000);
    const location = await startUpload(t.url, name);
    const patch = await http(t.url, location, { method: 'PATCH', headers: octet(1500, { 'content-range': '0-1499' }), body: data.subarray(0, 1500) });
    expect(patch.status).toBe(202);
    const put = await http(t.url, withDigest(patch.header('location')!, sha256(data)), {
      method: 'PUT',
      headers: octet(500, { 'content-range': '1500-1999' }),
      body: data.subarray(1500),
    });
    expect(put.status).toBe(201);
    expect(put.header('location')).toBe(`/v2/${name}/blobs/${sha256(data)}`);
    await expectBlob(name, sha256(data), data);
  });

  it('PUT with the whole blob and no PATCH (monolithic via a session)', async () => {
    const name = repo();
    const data = randomBytes(5000);
    const location = await startUpload(t.url, name);
    const put = await http(t.url, withDigest(location, sha256(data)), { method: 'PUT', headers: octet(data.length), body: data });
    expect(put.status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });
});

describe('streamed upload (PATCH without Content-Range)', () => {
  it('a chunked-encoding PATCH → 202 with Range 0-<last> (no bytes= unit)', async () => {
    const name = repo();
    const data = randomBytes(200_000);
    const location = await startUpload(t.url, name);
    const { req, response } = openRequest(t.url, location, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' } });
    for (let i = 0; i < data.length; i += 50_000) req.write(data.subarray(i, i + 50_000));
    req.end();
    const res = await response;
    expect(res.status).toBe(202);
    expect(res.header('range')).toBe(`0-${data.length - 1}`);
    expect(res.header('range')).not.toContain('bytes');
    const put = await http(t.url, withDigest(res.header('location')!, sha256(data)), { method: 'PUT' });
    expect(put.status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });

  it('two streamed PATCHes append to each other', async () => {
    const name = repo();
    const data = randomBytes(1000);
    const location = await startUpload(t.url, name);
    const a = await http(t.url, location, { method: 'PATCH', headers: octet(400), body: data.subarray(0, 400) });
    expect(a.header('range')).toBe('0-399');
    const b = await http(t.url, location, { method: 'PATCH', headers: octet(600), body: data.subarray(400) });
    expect(b.header('range')).toBe('0-999');
    expect((await http(t.url, withDigest(location, sha256(data)), { method: 'PUT' })).status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });
});

describe('upload status, cancel and completion', () => {
  it('GET on the session → 204 with Location, Range and Docker-Upload-UUID', async () => {
    const name = repo();
    const location = await startUpload(t.url, name);
    const empty = await http(t.url, location);
    expect(empty.status).toBe(204);
    expect(empty.header('range')).toBe('0-0');
    await http(t.url, location, { method: 'PATCH', headers: octet(42), body: randomBytes(42) });
    const res = await http(t.url, location);
    expect(res.status).toBe(204);
    expect(res.header('location')).toBe(location);
    expect(res.header('range')).toBe('0-41');
    expect(location).toContain(res.header('docker-upload-uuid'));
    expect(res.body.length).toBe(0);
  });

  it('DELETE cancels → 204; the session is then unknown and its bytes gone', async () => {
    const name = repo();
    const location = await startUpload(t.url, name);
    await http(t.url, location, { method: 'PATCH', headers: octet(10), body: randomBytes(10) });
    const id = location.split('/').pop()!;
    expect(uploadFiles()).toContain(id);
    const del = await http(t.url, location, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect(uploadFiles()).not.toContain(id);
    expectError(await http(t.url, location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await http(t.url, location, { method: 'PATCH', headers: octet(1), body: 'x' }), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await http(t.url, withDigest(location, sha256('x')), { method: 'PUT' }), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await http(t.url, location, { method: 'DELETE' }), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('DELETE after the commit → 404 BLOB_UPLOAD_UNKNOWN, and the blob is still served', async () => {
    const name = repo();
    const data = randomBytes(700);
    const location = await startUpload(t.url, name);
    expect((await http(t.url, withDigest(location, sha256(data)), { method: 'PUT', headers: octet(data.length), body: data })).status).toBe(201);
    expectError(await http(t.url, location, { method: 'DELETE' }), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await http(t.url, location), 404, 'BLOB_UPLOAD_UNKNOWN');
    await expectBlob(name, sha256(data), data);
  });

  it('a session is bound to its repository', async () => {
    const location = await startUpload(t.url, repo());
    const id = location.split('/').pop()!;
    expectError(await http(t.url, `/v2/${repo()}/blobs/uploads/${id}`), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('an id that was never issued → 404 BLOB_UPLOAD_UNKNOWN', async () => {
    expectError(await http(t.url, `/v2/${repo()}/blobs/uploads/not-an-upload`), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('PUT without ?digest= → 400 DIGEST_INVALID', async () => {
    const location = await startUpload(t.url, repo());
    expectError(await http(t.url, location, { method: 'PUT', headers: octet(3), body: 'abc' }), 400, 'DIGEST_INVALID');
  });

  it('a digest mismatch on PUT → 400 DIGEST_INVALID; nothing stored and the session gone', async () => {
    const name = repo();
    const data = randomBytes(1000);
    const wrong = sha256(randomBytes(8));
    const location = await startUpload(t.url, name);
    await http(t.url, location, { method: 'PATCH', headers: octet(data.length), body: data });
    expectError(await http(t.url, withDigest(location, wrong), { method: 'PUT' }), 400, 'DIGEST_INVALID');
    await expectNoBlob(name, wrong);
    await expectNoBlob(name, sha256(data));
    expectError(await http(t.url, location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expect(uploadFiles()).not.toContain(location.split('/').pop());
    // The blob file never appeared either (other tests' blobs may share its shard directory).
    const hex = sha256(data).slice(7);
    expect(existsSync(join(t.storage, 'blobs', 'sha256', hex.slice(0, 2), hex))).toBe(false);
  });

  it('two sessions committing the same blob in parallel both succeed; one copy is stored', async () => {
    const name = repo();
    const data = randomBytes(64 * 1024);
    const digest = sha256(data);
    const [a, b] = await Promise.all([startUpload(t.url, name), startUpload(t.url, name)]);
    await Promise.all([a, b].map((loc) => http(t.url, loc, { method: 'PATCH', headers: octet(data.length), body: data })));
    const puts = await Promise.all([a, b].map((loc) => http(t.url, withDigest(loc, digest), { method: 'PUT' })));
    expect(puts.map((p) => p.status)).toEqual([201, 201]);
    await expectBlob(name, digest, data);
    const hex = digest.slice(7);
    // Exactly one file for it (other tests' blobs may share its shard directory).
    expect(readdirSync(join(t.storage, 'blobs', 'sha256', hex.slice(0, 2))).filter((f) => f.startsWith(hex))).toEqual([hex]);
    expect(uploadFiles()).not.toContain(a.split('/').pop());
    expect(uploadFiles()).not.toContain(b.split('/').pop());
  });
});

describe('upload URL handling', () => {
  it('the Location is used as given, with ?digest= appended, or & when it carries a query', async () => {
    const name = repo();
    const data = randomBytes(100);
    const location = await startUpload(t.url, name);
    const patch = await http(t.url, location, { method: 'PATCH', headers: octet(data.length), body: data });
    const next = patch.header('location')!;
    // A client that keeps whatever query the server gave and adds its own parameters.
    const withQuery = `${next}${next.includes('?') ? '&' : '?'}client=1`;
    const put = await http(t.url, withDigest(withQuery, sha256(data)), { method: 'PUT' });
    expect(put.status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });

  it('an absolute upload URL works as well as the relative one', async () => {
    const name = repo();
    const data = randomBytes(100);
    const location = new URL(await startUpload(t.url, name), t.url).toString();
    const put = await http(t.url, withDigest(location, sha256(data)), { method: 'PUT', headers: octet(data.length), body: data });
    expect(put.status).toBe(201);
    await expectBlob(name, sha256(data), data);
  });
});

describe('digest algorithms', () => {
  it('sha512 blobs are verified and served', async () => {
    const { createHash } = await import('node:crypto');
    const name = repo();
    const data = randomBytes(1500);
    const digest = `sha512:${createHash('sha512').update(data).digest('hex')}`;
    await pushBlob(t.url, name, data, digest);
    await expectBlob(name, digest, data);
    // And through a chunked session.
    const location = await startUpload(t.url, name);
    const other = randomBytes(100);
    const otherDigest = `sha512:${createHash('sha512').update(other).digest('hex')}`;
    await http(t.url, location, { method: 'PATCH', headers: octet(100, { 'content-range': '0-99' }), body: other });
    expectStatus(await http(t.url, withDigest(location, otherDigest), { method: 'PUT' }), 201);
    await expectBlob(name, otherDigest, other);
  });

  it('?digest-algorithm= on POST: the session hashes with it as the bytes arrive; one airlock cannot verify → 400 before any byte', async () => {
    const { createHash } = await import('node:crypto');
    const sha512 = (b: Buffer) => `sha512:${createHash('sha512').update(b).digest('hex')}`;
    const name = repo();
    expectError(await http(t.url, `/v2/${name}/blobs/uploads/?digest-algorithm=md5`, { method: 'POST' }), 400, 'DIGEST_INVALID');
    // A session per announced algorithm, each sent the same bytes; then the file on disk is
    // replaced by other bytes of the same length. The commit trusts the hash taken as the bytes
    // arrived when the algorithm matches (so it accepts the digest of what was sent), and reads
    // the file back when it does not (so it finds the replaced bytes).
    const sent = randomBytes(5000);
    const session = async (query: string) => {
      const res = await http(t.url, `/v2/${name}/blobs/uploads/${query}`, { method: 'POST' });
      expectStatus(res, 202);
      const patched = await http(t.url, res.header('location')!, { method: 'PATCH', headers: octet(sent.length, { 'content-range': `0-${sent.length - 1}` }), body: sent });
      expectStatus(patched, 202);
      return patched.header('location')!;
    };
    const announced = await session('?digest-algorithm=sha512');
    const unannounced = await session('');
    for (const location of [announced, unannounced]) {
      const id = new URL(location, t.url).pathname.split('/').pop()!;
      expect(uploadFiles()).toContain(id);
      writeFileSync(join(t.storage, 'uploads', id), randomBytes(sent.length));
    }
    expectStatus(await http(t.url, withDigest(announced, sha512(sent)), { method: 'PUT' }), 201);
    expectError(await http(t.url, withDigest(unannounced, sha512(sent)), { method: 'PUT' }), 400, 'DIGEST_INVALID');
  });

  it('an unknown algorithm → 400 DIGEST_INVALID', async () => {
    const name = repo();
    const data = randomBytes(10);
    const res = await http(t.url, `/v2/${name}/blobs/uploads/?digest=md5:${'a'.repeat(32)}`, { method: 'POST', headers: octet(10), body: data });
    expectError(res, 400, 'DIGEST_INVALID');
    expectError(await http(t.url, `/v2/${name}/blobs/sha384:${'a'.repeat(96)}`), 400, 'DIGEST_INVALID');
    const location = await startUpload(t.url, name);
    expectError(await http(t.url, withDigest(location, `foo:${'a'.repeat(64)}`), { method: 'PUT', headers: octet(10), body: data }), 400, 'DIGEST_INVALID');
  });
});
