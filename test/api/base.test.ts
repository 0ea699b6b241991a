// The /v2/ base endpoint and the error contract: every failure is the spec's JSON with its status.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, http, pushImage, sha256 } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

describe('GET /v2/', () => {
  it('answers 200 with the API version header, with or without the trailing slash', async () => {
    for (const path of ['/v2/', '/v2']) {
      const res = await http(t.url, path);
      expect(res.status).toBe(200);
      expect(res.header('docker-distribution-api-version')).toBe('registry/2.0');
      expect(res.header('content-type')).toMatch(/^application\/json/);
      expect(res.json()).toEqual({});
    }
  });

  it('answers HEAD with 200 and no body', async () => {
    const res = await http(t.url, '/v2/', { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.header('docker-distribution-api-version')).toBe('registry/2.0');
    expect(res.body.length).toBe(0);
  });

  it('tags every response with a request id', async () => {
    const res = await http(t.url, '/v2/');
    expect(res.header('x-request-id')).toMatch(/^[A-Za-z0-9._:-]+$/);
  });
});

describe('method not allowed', () => {
  const cases: [string, string, string][] = [
    ['PATCH', '/v2/', 'GET, HEAD'],
    ['POST', '/v2/_catalog', 'GET'],
    ['DELETE', '/v2/library/app/tags/list', 'GET'],
    ['POST', '/v2/library/app/manifests/latest', 'GET, HEAD, PUT, DELETE'],
    ['PUT', `/v2/library/app/blobs/${sha256('x')}`, 'GET, HEAD, DELETE'],
    ['GET', '/v2/library/app/blobs/uploads/', 'POST'],
    ['POST', `/v2/library/app/referrers/${sha256('x')}`, 'GET'],
  ];
  it.each(cases)('%s %s → 405 UNSUPPORTED with Allow', async (method, path, allow) => {
    const res = await http(t.url, path, { method });
    expectError(res, 405, 'UNSUPPORTED');
    expect(res.header('allow')).toBe(allow);
  });
});

describe('error responses', () => {
  it('an unknown /v2 path → 404 with the spec JSON', async () => {
    const res = await http(t.url, '/v2/library/app/nothing-here');
    expectError(res, 404, 'NAME_UNKNOWN');
  });

  it('HEAD errors carry the status and no body', async () => {
    const res = await http(t.url, `/v2/library/app/manifests/${sha256('none')}`, { method: 'HEAD' });
    expect(res.status).toBe(404);
    expect(res.body.length).toBe(0);
  });

  it('every error carries code, message and detail', async () => {
    const image = await pushImage(t.url, 'errors/shape', { tag: 'v1' });
    const cases: [Promise<import('../helpers/http.js').HttpResponse>, number, string][] = [
      [http(t.url, `/v2/errors/shape/blobs/${sha256('missing')}`), 404, 'BLOB_UNKNOWN'],
      [http(t.url, '/v2/errors/shape/manifests/nope'), 404, 'MANIFEST_UNKNOWN'],
      [http(t.url, '/v2/errors/unknown-repo/tags/list'), 404, 'NAME_UNKNOWN'],
      [http(t.url, '/v2/Errors/shape/tags/list'), 400, 'NAME_INVALID'],
      [http(t.url, '/v2/errors/shape/manifests/-bad'), 404, 'MANIFEST_UNKNOWN'],
      [http(t.url, '/v2/errors/shape/manifests/-bad', { method: 'PUT', headers: { 'content-type': image.mediaType }, body: 'not json' }), 400, 'TAG_INVALID'],
      [http(t.url, '/v2/errors/shape/blobs/sha256:short'), 400, 'DIGEST_INVALID'],
      [http(t.url, '/v2/errors/shape/blobs/uploads/00000000-0000-4000-8000-000000000000'), 404, 'BLOB_UPLOAD_UNKNOWN'],
      [http(t.url, '/v2/errors/shape/tags/list?n=abc'), 400, 'PAGINATION_NUMBER_INVALID'],
      [http(t.url, `/v2/errors/shape/manifests/${image.digest}`, { method: 'PUT', headers: { 'content-type': image.mediaType }, body: 'not json' }), 400, 'DIGEST_INVALID'],
    ];
    for (const [pending, status, code] of cases) expectError(await pending, status, code);
  });
});
