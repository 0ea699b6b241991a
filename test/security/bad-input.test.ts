/**
 * Hostile and broken input against a live server, with access control on and off: HTTP the parser
 * must refuse (oversized and malformed headers, negative / overflowing / conflicting Content-Length,
 * broken chunking — written on raw sockets), path tricks in names, invalid digests, JSON bombs and
 * non-JSON manifests, garbage Content-Range, and forged, altered, foreign and expired bearer tokens.
 * Every case gets a spec error (or, for unparsable HTTP, a parser answer and a closed connection);
 * afterwards the server still serves and the image pushed at the start is intact byte for byte.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, MEDIA, sha256, uniqueName, type HttpResponse } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  basic,
  bearer,
  decodeJwt,
  encodeJwtPart,
  expectBearerChallenge,
  expectImageIntact,
  getToken,
  imageManifest,
  postBlob,
  pushImageAs,
  putManifest,
  rawExchange,
  sleep,
  tempDirs,
  withAuth,
  writeHtpasswd,
  type PushedImage,
  type RawResult,
} from './support.js';

const ADMIN = { user: 'admin', password: 'admin-pass' };
const READER = { user: 'reader', password: 'reader-pass' };
const MANIFEST_LIMIT = 4 * 1024 * 1024;

const tmp = tempDirs('badinput');
let htpasswd: string;

beforeAll(async () => {
  htpasswd = join(tmp.make('users'), 'users.htpasswd');
  await writeHtpasswd(htpasswd, { [ADMIN.user]: ADMIN.password, [READER.user]: READER.password });
});
afterAll(() => tmp.cleanup());

function authConfig(extra: { tokenTTL?: string } = {}) {
  return {
    htpasswd,
    anonymous: [],
    rules: [
      { users: [ADMIN.user], repos: ['**'], actions: ['*' as const] },
      { users: [READER.user], repos: ['**'], actions: ['pull' as const] },
    ],
    ...extra,
  };
}

/** Unparsable HTTP: the parser's own answer (or none) and a closed connection, never a hang. */
function expectParserRefusal(result: RawResult, statuses: number[]): void {
  expect(result.closed, `connection closed (got ${JSON.stringify(result.data.slice(0, 200))})`).toBe(true);
  if (result.status !== undefined) expect(statuses).toContain(result.status);
  expect(result.data).not.toMatch(/HTTP\/1\.1 [25]\d\d/);
}

/** A response's error message stays short however big the input was (no echo of attacker data). */
function expectShortError(res: HttpResponse): void {
  expect(res.body.length).toBeLessThan(4096);
}

for (const mode of ['auth on', 'auth off'] as const) {
  describe(`bad input against a live server, ${mode}`, () => {
    let srv: TestServer;
    let port: number;
    let auth: string | undefined;
    /** Raw request head lines that authenticate (auth on) or nothing (auth off). */
    let authLine: string;
    let image: PushedImage;
    let second: PushedImage;

    beforeAll(async () => {
      srv = await startTestServer(mode === 'auth on' ? { auth: authConfig() } : {});
      port = srv.server.port;
      auth = mode === 'auth on' ? basic(ADMIN.user, ADMIN.password) : undefined;
      authLine = auth ? `Authorization: ${auth}\r\n` : '';
      image = await pushImageAs(srv.url, 'lib/app', auth, 'v1', 3);
      second = await pushImageAs(srv.url, 'a/b/c/nested', auth, 'stable', 1);
    });
    afterAll(async () => srv?.close());

    async function expectServes(): Promise<void> {
      const res = await http(srv.url, '/v2/', { headers: withAuth(auth) });
      expectStatus(res, 200);
    }

    describe('HTTP the parser must refuse (raw sockets)', () => {
      it('a 100 KB header: 431 or a closed connection, and the server still serves', async () => {
        const r = await rawExchange(port, [`GET /v2/ HTTP/1.1\r\nHost: x\r\n${authLine}X-Big: ${'a'.repeat(100 * 1024)}\r\n\r\n`]);
        expectParserRefusal(r, [431]);
        await expectServes();
      });

      it('many headers adding up to more than the header limit: 431 or closed', async () => {
        const many = Array.from({ length: 400 }, (_, i) => `X-H${i}: ${'b'.repeat(100)}\r\n`).join('');
        const r = await rawExchange(port, [`GET /v2/ HTTP/1.1\r\nHost: x\r\n${authLine}${many}\r\n`]);
        expectParserRefusal(r, [431]);
        await expectServes();
      });

      const malformed: [string, string][] = [
        ['a header line without a colon', `GET /v2/ HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n`],
        ['a space inside a header name', `GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n`],
        ['a control character in a header value', `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\u0001b\r\n\r\n`],
        ['a garbage request line', `HELLO THERE\r\n\r\n`],
        ['a NUL byte in the request target', `GET /v2/\u0000 HTTP/1.1\r\nHost: x\r\n\r\n`],
        ['an unknown HTTP version', `GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n`],
        ['binary noise', randomBytes(512).toString('latin1').replace(/^[A-Z]/, '\u0000')],
        ['a negative Content-Length', `PUT /v2/lib/app/manifests/neg HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}`],
        ['a Content-Length beyond 64 bits', `PUT /v2/lib/app/manifests/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}`],
        ['a non-numeric Content-Length', `PUT /v2/lib/app/manifests/nan HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n{}`],
        ['two conflicting Content-Lengths', `PUT /v2/lib/app/manifests/two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}`],
        [
          'Content-Length together with Transfer-Encoding: chunked (smuggling)',
          `POST /v2/lib/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n`,
        ],
        ['an unknown Transfer-Encoding', `POST /v2/lib/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, identity\r\n\r\n`],
      ];
      for (const [what, bytes] of malformed) {
        it(`${what}: refused by the parser (400/4xx/505), connection closed, server still serves`, async () => {
          const r = await rawExchange(port, [bytes.replace('Host: x\r\n', `Host: x\r\n${authLine}`)]);
          expectParserRefusal(r, [400, 413, 431, 501, 505]);
          await expectServes();
        });
      }

      it('a broken chunked body (bad chunk size) on a PATCH: the connection is closed, nothing is stored', async () => {
        const start = await http(srv.url, '/v2/lib/app/blobs/uploads/', { method: 'POST', headers: withAuth(auth, { 'content-length': 0 }) });
        expectStatus(start, 202);
        const location = start.header('location')!;
        const r = await rawExchange(port, [`PATCH ${location} HTTP/1.1\r\nHost: x\r\n${authLine}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\nxx\r\n0\r\n\r\n`]);
        expect(r.closed).toBe(true);
        expect(r.data).not.toMatch(/HTTP\/1\.1 2\d\d/);
        await expectServes();
        await http(srv.url, location, { method: 'DELETE', headers: withAuth(auth) });
      });

      it('a huge but parsable Content-Length on a manifest PUT: 413 MANIFEST_INVALID at once, connection closed', async () => {
        const r = await rawExchange(port, [`PUT /v2/lib/app/manifests/big HTTP/1.1\r\nHost: x\r\n${authLine}Content-Type: ${MEDIA.ociManifest}\r\nContent-Length: 1000000000000000\r\n\r\n{"schemaVersion":2`]);
        expect(r.status).toBe(413);
        expect(r.data).toContain('MANIFEST_INVALID');
        expect(r.data).toMatch(/connection: close/i);
        expect(r.closed).toBe(true);
        await expectServes();
      });

      it('a huge Content-Length on a monolithic blob upload, then the client vanishes: no blob, no leftover upload', async () => {
        const uploads = join(srv.storage, 'uploads');
        const before = readdirSync(uploads).length;
        const digest = sha256('never sent');
        const r = await rawExchange(
          port,
          [
            `POST /v2/lib/app/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\n${authLine}Content-Type: application/octet-stream\r\nContent-Length: 1000000000000000\r\n\r\n`,
            randomBytes(64 * 1024),
            () => sleep(200),
          ],
          400,
        );
        expect(r.status).toBeUndefined(); // still waiting for the body when we hang up
        await expectServes();
        for (let i = 0; i < 100 && readdirSync(uploads).length !== before; i++) await sleep(50);
        expect(readdirSync(uploads).length).toBe(before);
        expectStatus(await http(srv.url, `/v2/lib/app/blobs/${digest}`, { method: 'HEAD', headers: withAuth(auth) }), 404);
      });
    });

    describe('names with path tricks', () => {
      const names: [string, string][] = [
        ['a ../ component', '/v2/lib/../app/manifests/v1'],
        ['a leading ../', '/v2/../lib/app/manifests/v1'],
        ['percent-encoded dots %2e%2e', '/v2/lib/%2e%2e/app/manifests/v1'],
        ['percent-encoded dots %2E%2E as the whole name', '/v2/%2E%2E/manifests/v1'],
        ['an encoded slash %2F', '/v2/lib%2Fapp/manifests/v1'],
        ['an encoded slash in a blob path', `/v2/lib%2F..%2F..%2Fapp/blobs/${sha256('x')}`],
        ['a single dot component', '/v2/lib/./app/tags/list'],
        ['an empty component', '/v2/lib//app/tags/list'],
        ['upper case', '/v2/Lib/App/manifests/v1'],
        ['a name longer than 255 characters', `/v2/${'a'.repeat(300)}/manifests/v1`],
      ];
      for (const [what, path] of names) {
        it(`${what}: 400 NAME_INVALID, nothing outside the repository is touched`, async () => {
          const res = await http(srv.url, path, { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
          expectError(res, 400, 'NAME_INVALID');
          expectShortError(res);
        });
      }

      it('a backslash in the path: refused with 400 by the HTTP adapter before any routing, nothing served', async () => {
        const res = await http(srv.url, '/v2/lib\\..\\app/manifests/v1', { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
        expectStatus(res, 400);
        expect(res.text).not.toContain(image.digest);
        await expectServes();
      });

      it('a /v2 path that URL normalisation would move out of /v2 (/v2/.., /v2/%2e%2e) is still judged by the v2 handler as sent', async () => {
        for (const path of ['/v2/..', '/v2/%2e%2e', '/v2/%2E%2E/', '/v2/../_catalog']) {
          const res = await http(srv.url, path, { headers: withAuth(auth) });
          expectError(res, 404, 'NAME_UNKNOWN');
          expect(res.text).not.toContain('lib/app');
        }
      });

      it('an HTTP/1.0 request without a Host header (a load-balancer probe) is answered, not refused', async () => {
        const r = await rawExchange(port, ['GET /healthz HTTP/1.0\r\n\r\n']);
        expect(r.status).toBe(200);
        expect(r.data).toContain('"status":"ok"');
      });

      it('the same names on pushes and deletes: 400 NAME_INVALID, nothing created', async () => {
        for (const name of ['lib/../evil', 'lib/%2e%2e/evil', 'lib%2Fevil']) {
          expectError(await postBlob(srv.url, name, Buffer.from('x'), auth), 400, 'NAME_INVALID');
          expectError(await putManifest(srv.url, name, 'v1', image.manifest, auth), 400, 'NAME_INVALID');
          expectError(await http(srv.url, `/v2/${name}/manifests/${image.digest}`, { method: 'DELETE', headers: withAuth(auth) }), 400, 'NAME_INVALID');
        }
        const catalog = await http(srv.url, '/v2/_catalog', { headers: withAuth(auth) });
        expect(catalog.json<{ repositories: string[] }>().repositories.sort()).toEqual(['a/b/c/nested', 'lib/app']);
      });

      it('a path-trick upload id or tag is refused, never resolved to a file', async () => {
        expectError(await http(srv.url, '/v2/lib/app/blobs/uploads/..%2F..%2Fairlock.db', { headers: withAuth(auth) }), 404, 'BLOB_UPLOAD_UNKNOWN');
        expectError(await http(srv.url, '/v2/lib/app/blobs/uploads/..', { method: 'PATCH', headers: withAuth(auth), body: 'x' }), 404, 'BLOB_UPLOAD_UNKNOWN');
        expectError(await putManifest(srv.url, 'lib/app', '..', image.manifest, auth), 400, 'TAG_INVALID');
        expectError(await putManifest(srv.url, 'lib/app', '%2e%2e', image.manifest, auth), 400, 'TAG_INVALID');
        expectError(await putManifest(srv.url, 'lib/app', 't'.repeat(129), image.manifest, auth), 400, 'TAG_INVALID');
      });
    });

    describe('invalid digests', () => {
      const bad = [
        'sha256:xyz',
        `sha256:${'a'.repeat(63)}`,
        `sha256:${'a'.repeat(65)}`,
        `sha256:${'A'.repeat(64)}`,
        `md5:${'a'.repeat(32)}`,
        `sha256:${'g'.repeat(64)}`,
        'sha256',
        `:${'a'.repeat(64)}`,
        `sha256:..%2F..%2F${'a'.repeat(58)}`,
      ];
      it('blob GET / HEAD / DELETE with an invalid digest: 400 DIGEST_INVALID', async () => {
        for (const digest of bad) {
          for (const method of ['GET', 'DELETE']) {
            const res = await http(srv.url, `/v2/lib/app/blobs/${digest}`, { method, headers: withAuth(auth) });
            expectError(res, 400, 'DIGEST_INVALID');
            expectShortError(res);
          }
          expectStatus(await http(srv.url, `/v2/lib/app/blobs/${digest}`, { method: 'HEAD', headers: withAuth(auth) }), 400);
        }
      });

      it('uploads started, completed or mounted with an invalid digest: 400 DIGEST_INVALID; a malformed one leaves the session as it was', async () => {
        for (const digest of bad) {
          const monolithic = await http(srv.url, `/v2/lib/app/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: withAuth(auth, { 'content-length': 4 }), body: 'data' });
          expectError(monolithic, 400, 'DIGEST_INVALID');
          const mount = await http(srv.url, `/v2/lib/app/blobs/uploads/?mount=${digest}&from=a/b/c/nested`, { method: 'POST', headers: withAuth(auth, { 'content-length': 0 }) });
          expectError(mount, 400, 'DIGEST_INVALID');
        }
        const start = await http(srv.url, '/v2/lib/app/blobs/uploads/', { method: 'POST', headers: withAuth(auth, { 'content-length': 0 }) });
        expectStatus(start, 202);
        const location = start.header('location')!;
        const data = randomBytes(100);
        const put = (digest: string) =>
          http(srv.url, `${location}?digest=${digest}`, { method: 'PUT', headers: withAuth(auth, { 'content-length': data.length, 'content-type': 'application/octet-stream' }), body: data });
        for (const digest of bad) {
          expectError(await put(digest), 400, 'DIGEST_INVALID');
          const status = await http(srv.url, location, { headers: withAuth(auth) });
          expectStatus(status, 204);
          expect(status.header('range')).toBe('0-0');
        }
        // Well-formed but not the digest of the bytes: the bytes are useless, the session is gone.
        expectError(await put(sha256('not these bytes')), 400, 'DIGEST_INVALID');
        expectError(await http(srv.url, location, { headers: withAuth(auth) }), 404, 'BLOB_UPLOAD_UNKNOWN');
        expectStatus(await http(srv.url, `/v2/lib/app/blobs/${sha256(data)}`, { method: 'HEAD', headers: withAuth(auth) }), 404);
      });

      it('a manifest reference that looks like a digest but is not one: 404 MANIFEST_UNKNOWN on GET and HEAD, 400 DIGEST_INVALID on PUT and DELETE', async () => {
        for (const digest of bad.filter((d) => d.includes(':') && !d.includes('%'))) {
          const res = await http(srv.url, `/v2/lib/app/manifests/${digest}`, { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
          expectError(res, 404, 'MANIFEST_UNKNOWN');
          expectShortError(res);
          expectStatus(await http(srv.url, `/v2/lib/app/manifests/${digest}`, { method: 'HEAD', headers: withAuth(auth) }), 404);
          expectError(await http(srv.url, `/v2/lib/app/manifests/${digest}`, { method: 'DELETE', headers: withAuth(auth) }), 400, 'DIGEST_INVALID');
          expectError(await putManifest(srv.url, 'lib/app', digest, image.manifest, auth), 400, 'DIGEST_INVALID');
        }
      });

      it('a manifest pushed by a digest that does not match its bytes: 400 DIGEST_INVALID', async () => {
        expectError(await putManifest(srv.url, 'lib/app', sha256('something else'), image.manifest, auth), 400, 'DIGEST_INVALID');
      });
    });

    describe('JSON bombs and non-JSON manifests (limit 4 MiB)', () => {
      const depth = 500_000;
      const cases: [string, () => Buffer][] = [
        ['deeply nested arrays', () => Buffer.from('['.repeat(depth) + ']'.repeat(depth))],
        ['deeply nested objects', () => Buffer.from('{"a":'.repeat(200_000) + '1' + '}'.repeat(200_000))],
        [
          'deep nesting inside the annotations of a valid-looking manifest',
          () => Buffer.from(`{"schemaVersion":2,"mediaType":"${MEDIA.ociManifest}","config":{"mediaType":"${MEDIA.ociConfig}","digest":"${sha256('c')}","size":1},"layers":[],"annotations":{"x":${'['.repeat(depth)}${']'.repeat(depth)}}}`),
        ],
        [
          'deep nesting as a descriptor digest (an error detail must not try to echo it)',
          () => Buffer.from(`{"schemaVersion":2,"mediaType":"${MEDIA.ociManifest}","config":{"mediaType":"${MEDIA.ociConfig}","digest":${'['.repeat(depth)}${']'.repeat(depth)},"size":1},"layers":[]}`),
        ],
        ['a 3.5 MiB string as the media type', () => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'x'.repeat(3.5 * 1024 * 1024), layers: [] }))],
        ['a 3.5 MiB digest string in a descriptor', () => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { mediaType: MEDIA.ociConfig, digest: `sha256:${'a'.repeat(3.5 * 1024 * 1024)}`, size: 1 }, layers: [] }))],
        ['a million layers that are not descriptors', () => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: {}, layers: new Array(1_000_000).fill(0) }))],
        ['not JSON at all', () => Buffer.from('this is not json')],
        ['binary garbage', () => randomBytes(4096)],
        ['an empty body', () => Buffer.alloc(0)],
        ['JSON null', () => Buffer.from('null')],
        ['a JSON array', () => Buffer.from('[]')],
        ['a JSON string', () => Buffer.from(JSON.stringify('x'.repeat(3 * 1024 * 1024)))],
        ['truncated JSON', () => image.manifest.subarray(0, image.manifest.length - 3)],
        ['JSON with a trailing second document', () => Buffer.concat([image.manifest, Buffer.from('{}')])],
        ['schemaVersion 1 JSON under an OCI content type', () => Buffer.from('{"schemaVersion":1,"name":"lib/app","tag":"v1","fsLayers":[],"history":[]}')],
      ];
      for (const [what, make] of cases) {
        it(`${what}: 400 MANIFEST_INVALID with a short message, nothing stored`, async () => {
          const body = make();
          expect(body.length).toBeLessThanOrEqual(MANIFEST_LIMIT);
          const tag = uniqueName('bomb');
          const res = await putManifest(srv.url, 'lib/app', tag, body, auth);
          expectError(res, 400, 'MANIFEST_INVALID');
          expectShortError(res);
          expectError(await http(srv.url, `/v2/lib/app/manifests/${tag}`, { headers: withAuth(auth, { accept: MEDIA.ociManifest }) }), 404, 'MANIFEST_UNKNOWN');
        });
      }

      it('a valid manifest carrying a 3.5 MiB annotation (within the limit) is stored and served back byte for byte', async () => {
        const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
        expectStatus(await postBlob(srv.url, 'lib/app', config, auth), 201);
        const manifest = JSON.parse(imageManifest(config, []).toString()) as Record<string, unknown>;
        manifest.annotations = { 'org.example.big': 'y'.repeat(3.5 * 1024 * 1024) };
        const body = Buffer.from(JSON.stringify(manifest));
        expect(body.length).toBeLessThanOrEqual(MANIFEST_LIMIT);
        const put = await putManifest(srv.url, 'lib/app', 'big-annotation', body, auth);
        expectStatus(put, 201);
        const back = await http(srv.url, '/v2/lib/app/manifests/big-annotation', { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
        expectStatus(back, 200);
        expect(back.body.equals(body)).toBe(true);
        expectStatus(await http(srv.url, `/v2/lib/app/manifests/${sha256(body)}`, { method: 'DELETE', headers: withAuth(auth) }), 202);
      });

      it('a 5 MiB manifest with Content-Length: 413 MANIFEST_INVALID, connection closed', async () => {
        const body = Buffer.alloc(5 * 1024 * 1024, 0x20);
        const res = await putManifest(srv.url, 'lib/app', 'five-mib', body, auth).catch((e: Error) => e);
        // Answered before the body was read: the client sees the 413, or a reset while still sending.
        if (res instanceof Error) expect(res.message).toMatch(/EPIPE|ECONNRESET|socket hang up/);
        else {
          expectError(res, 413, 'MANIFEST_INVALID');
          expect(res.header('connection')).toBe('close');
        }
        await expectServes();
      });

      it('a 5 MiB manifest sent chunked (no Content-Length): 413 MANIFEST_INVALID once past the limit', async () => {
        const chunk = 'x'.repeat(64 * 1024);
        const head = `PUT /v2/lib/app/manifests/five-mib-chunked HTTP/1.1\r\nHost: x\r\n${authLine}Content-Type: ${MEDIA.ociManifest}\r\nTransfer-Encoding: chunked\r\n\r\n`;
        const chunks: string[] = [head];
        for (let sent = 0; sent < 5 * 1024 * 1024; sent += chunk.length) chunks.push(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
        chunks.push('0\r\n\r\n');
        const r = await rawExchange(port, chunks, 10_000);
        expect(r.status).toBe(413);
        expect(r.data).toContain('MANIFEST_INVALID');
        expect(r.closed).toBe(true);
        await expectServes();
        expectError(await http(srv.url, '/v2/lib/app/manifests/five-mib-chunked', { headers: withAuth(auth, { accept: MEDIA.ociManifest }) }), 404, 'MANIFEST_UNKNOWN');
      });
    });

    describe('garbage Content-Range on PATCH', () => {
      it('each malformed or out-of-order range: 416 with the upload\'s Range and Location; the upload then completes normally', async () => {
        const start = await http(srv.url, '/v2/lib/app/blobs/uploads/', { method: 'POST', headers: withAuth(auth, { 'content-length': 0 }) });
        expectStatus(start, 202);
        const location = start.header('location')!;
        const data = randomBytes(1000);
        const first = await http(srv.url, location, { method: 'PATCH', headers: withAuth(auth, { 'content-range': '0-499', 'content-length': 500, 'content-type': 'application/octet-stream' }), body: data.subarray(0, 500) });
        expectStatus(first, 202);
        expect(first.header('range')).toBe('0-499');
        for (const range of ['garbage', 'bytes=abc-def', '600-500', '-1-5', '500-', '500-99999999999999999999999', '0-499', '700-999', '500-999/abc', `${'9'.repeat(400)}-1`]) {
          const res = await http(srv.url, location, { method: 'PATCH', headers: withAuth(auth, { 'content-range': range, 'content-length': 500, 'content-type': 'application/octet-stream' }), body: data.subarray(500) });
          expect({ range, status: res.status }).toEqual({ range, status: 416 });
          expect(res.json<{ errors: { code: string }[] }>().errors[0]!.code).toMatch(/^(BLOB_UPLOAD_INVALID|RANGE_INVALID)$/);
          expect(res.header('range')).toBe('0-499');
          expect(res.header('location')).toBe(location);
          expectShortError(res);
        }
        const rest = await http(srv.url, `${location}?digest=${sha256(data)}`, { method: 'PUT', headers: withAuth(auth, { 'content-range': '500-999', 'content-length': 500, 'content-type': 'application/octet-stream' }), body: data.subarray(500) });
        expectStatus(rest, 201);
        const back = await http(srv.url, `/v2/lib/app/blobs/${sha256(data)}`, { headers: withAuth(auth) });
        expect(back.body.equals(data)).toBe(true);
      });
    });

    if (mode === 'auth on') {
      describe('credentials that do not parse', () => {
        const headers = ['Bearer', 'Bearer ', 'Bearer not a token', 'Bearer a.b.c', 'Basic', 'Basic !!!', `Basic ${Buffer.from('no-colon').toString('base64')}`, 'Digest username="admin"', `Bearer ${'x'.repeat(8000)}`];
        it('each malformed Authorization header: 401 UNAUTHORIZED with a challenge, no echo of the header', async () => {
          for (const header of headers) {
            const res = await http(srv.url, `/v2/${image.repo}/manifests/${image.tag}`, { headers: { authorization: header, accept: MEDIA.ociManifest } });
            expectError(res, 401, 'UNAUTHORIZED');
            expect(res.header('www-authenticate')).toMatch(/^Bearer realm=/);
            expectShortError(res);
            if (header.length > 20) expect(res.text).not.toContain(header.slice(7, 27));
          }
        });
      });
    }

    it('afterwards: the server still serves and every blob and manifest pushed at the start is byte-exact', async () => {
      await expectServes();
      await expectImageIntact(srv.url, image, auth);
      await expectImageIntact(srv.url, second, auth);
      const tags = await http(srv.url, '/v2/lib/app/tags/list', { headers: withAuth(auth) });
      expect(tags.json<{ tags: string[] }>().tags).toEqual(['v1']);
    });
  });
}

describe('forged, altered, foreign and expired bearer tokens', () => {
  let srv: TestServer;
  let other: TestServer;
  let shortLived: TestServer;
  let image: PushedImage;
  const admin = () => basic(ADMIN.user, ADMIN.password);

  beforeAll(async () => {
    [srv, other, shortLived] = await Promise.all([
      startTestServer({ auth: authConfig() }),
      startTestServer({ auth: authConfig() }),
      startTestServer({ auth: authConfig({ tokenTTL: '1s' }) }),
    ]);
    image = await pushImageAs(srv.url, 'lib/app', admin(), 'v1', 2);
  });
  afterAll(async () => {
    await Promise.all([srv?.close(), other?.close(), shortLived?.close()]);
  });

  const allScope = () => `repository:${image.repo}:pull,push,delete`;

  /** A DELETE of the image with `token`: must be 401 invalid_token, and the image must stay. */
  async function expectTokenRefused(base: string, token: string): Promise<void> {
    const res = await http(base, `/v2/${image.repo}/manifests/${image.digest}`, { method: 'DELETE', headers: { authorization: bearer(token) } });
    expectBearerChallenge(res, base, [`repository:${image.repo}:delete`], 'invalid_token');
    expect(res.json<{ errors: { message: string }[] }>().errors[0]!.message).toBe('invalid or expired token');
    const pull = await http(base, `/v2/${image.repo}/manifests/${image.tag}`, { headers: { authorization: bearer(token), accept: MEDIA.ociManifest } });
    expectBearerChallenge(pull, base, [`repository:${image.repo}:pull`], 'invalid_token');
    expectStatus(await http(srv.url, `/v2/${image.repo}/manifests/${image.digest}`, { method: 'HEAD', headers: { authorization: admin(), accept: MEDIA.ociManifest } }), 200);
  }

  function forgedClaims(sub: string) {
    const now = Math.floor(Date.now() / 1000);
    return { iss: 'airlock', sub, aud: 'airlock', iat: now, nbf: now, exp: now + 300, jti: '00000000-0000-4000-8000-000000000000', access: [{ type: 'repository', name: image.repo, actions: ['pull', 'push', 'delete'] }] };
  }

  it('alg "none" with admin claims and an empty signature', async () => {
    await expectTokenRefused(srv.url, `${encodeJwtPart({ alg: 'none', typ: 'JWT' })}.${encodeJwtPart(forgedClaims(ADMIN.user))}.`);
  });

  it('alg "none" carrying a real token\'s signature', async () => {
    const { body } = await getToken(srv.url, [allScope()], basic(READER.user, READER.password));
    const signature = body.token.split('.')[2]!;
    await expectTokenRefused(srv.url, `${encodeJwtPart({ alg: 'none', typ: 'JWT' })}.${encodeJwtPart(forgedClaims(READER.user))}.${signature}`);
  });

  it('a real reader token whose payload was modified (delete added to access, sub changed to admin)', async () => {
    const { body, jwt } = await getToken(srv.url, [allScope()], basic(READER.user, READER.password));
    expect(jwt.payload.access).toEqual([{ type: 'repository', name: image.repo, actions: ['pull'] }]);
    const [header, , signature] = body.token.split('.') as [string, string, string];
    const moreAccess = { ...jwt.payload, access: [{ type: 'repository', name: image.repo, actions: ['pull', 'push', 'delete'] }] };
    await expectTokenRefused(srv.url, `${header}.${encodeJwtPart(moreAccess)}.${signature}`);
    await expectTokenRefused(srv.url, `${header}.${encodeJwtPart({ ...moreAccess, sub: ADMIN.user })}.${signature}`);
    // Even the original payload re-encoded with different whitespace is a different signed text.
    await expectTokenRefused(srv.url, `${header}.${Buffer.from(JSON.stringify(jwt.payload, null, 1)).toString('base64url')}.${signature}`);
  });

  it('a real token with a modified header or a truncated or flipped signature', async () => {
    const { body } = await getToken(srv.url, [allScope()], admin());
    const [header, payload, signature] = body.token.split('.') as [string, string, string];
    const decodedHeader = decodeJwt(body.token).header;
    await expectTokenRefused(srv.url, `${encodeJwtPart({ ...decodedHeader, kid: 'other' })}.${payload}.${signature}`);
    await expectTokenRefused(srv.url, `${header}.${payload}.${signature.slice(0, -4)}`);
    const flipped = Buffer.from(signature, 'base64url');
    flipped[0] = flipped[0]! ^ 0xff;
    await expectTokenRefused(srv.url, `${header}.${payload}.${flipped.toString('base64url')}`);
    // The untouched token works, so the refusals above are about the changes.
    expectStatus(await http(srv.url, `/v2/${image.repo}/manifests/${image.tag}`, { headers: { authorization: bearer(body.token), accept: MEDIA.ociManifest } }), 200);
  });

  it('HS256 signed with the server\'s public key as the HMAC secret (algorithm confusion)', async () => {
    const jwk = JSON.parse(readFileSync(join(srv.storage, 'auth', 'token-signing-key.json'), 'utf8')) as Record<string, unknown>;
    const { d: _private, ...publicJwk } = jwk;
    const token = await new SignJWT({ access: forgedClaims(ADMIN.user).access })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer('airlock')
      .setSubject(ADMIN.user)
      .setAudience('airlock')
      .setIssuedAt()
      .setNotBefore('0s')
      .setExpirationTime('5m')
      .setJti('00000000-0000-4000-8000-000000000001')
      .sign(Buffer.from(JSON.stringify(publicJwk)));
    await expectTokenRefused(srv.url, token);
  });

  it('a token signed by another airlock (its own key), with the same issuer and audience', async () => {
    const { body, jwt } = await getToken(other.url, [allScope()], admin());
    expect(jwt.payload).toMatchObject({ iss: 'airlock', aud: 'airlock', sub: ADMIN.user });
    // It is good where it came from…
    expectStatus(await http(other.url, '/v2/', { headers: { authorization: bearer(body.token) } }), 200);
    // …and worthless here.
    await expectTokenRefused(srv.url, body.token);
  });

  it('an expired token (tokenTTL 1s): works at first, refused with invalid_token once expired', async () => {
    const pushed = await pushImageAs(shortLived.url, image.repo, admin(), 'v1', 1);
    const { body, jwt } = await getToken(shortLived.url, [`repository:${image.repo}:pull`], basic(READER.user, READER.password));
    expect(body.expires_in).toBe(1);
    const pull = () => http(shortLived.url, `/v2/${image.repo}/manifests/v1`, { headers: { authorization: bearer(body.token), accept: MEDIA.ociManifest } });
    const fresh = await pull();
    expectStatus(fresh, 200);
    expect(fresh.body.equals(pushed.manifest)).toBe(true);
    // exp is at most 1s (expires_in) + 1s (rounding up to a whole second) away.
    const remaining = jwt.payload.exp * 1000 - Date.now();
    expect(remaining).toBeLessThanOrEqual(2_000);
    await sleep(Math.max(0, remaining + 1_100));
    const stale = await pull();
    expectBearerChallenge(stale, shortLived.url, [`repository:${image.repo}:pull`], 'invalid_token');
    // The client recovers the way the challenge says: a new token.
    const renewed = await getToken(shortLived.url, [`repository:${image.repo}:pull`], basic(READER.user, READER.password));
    expectStatus(await http(shortLived.url, `/v2/${image.repo}/manifests/v1`, { headers: { authorization: bearer(renewed.body.token), accept: MEDIA.ociManifest } }), 200);
  });

  it('a token stays within its own grant even when genuine: a reader token cannot delete (403, the reader could never get one)', async () => {
    const { body } = await getToken(srv.url, [allScope()], basic(READER.user, READER.password));
    const res = await http(srv.url, `/v2/${image.repo}/manifests/${image.digest}`, { method: 'DELETE', headers: { authorization: bearer(body.token) } });
    expectError(res, 403, 'DENIED');
  });

  it('afterwards: the image is intact byte for byte', async () => {
    await expectImageIntact(srv.url, image, admin());
  });
});
