/**
 * Why a pull through airlock failed must reach the clients of containers/image (skopeo, CRI-O,
 * podman), which ignore the body of a 5xx and print only its status line. Here the upstream is
 * another airlock speaking HTTPS with a certificate from `airlock cert` that the pulling airlock
 * does not trust (no caFile): the real skopeo prints "503 upstream <host>: TLS verification failed,
 * set caFile", not just "503 Service Unavailable". Reason phrases hold only characters a status line
 * may carry, are bounded, and never carry credentials.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/distribution.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { skopeo, TLS_INSECURE } from '../helpers/skopeo.js';
import { MAX_REASON_LENGTH, reasonPhrase } from '../../src/server/respond.js';
import { runCli } from '../server/cli.js';
import { rawExchange, tempDirs } from './support.js';

const tmp = tempDirs('reason');
let upstream: TestServer;
let airlock: TestServer;
let refusedPort: number;

beforeAll(async () => {
  const certDir = join(tmp.make('cert'), 'pki');
  const cert = await runCli(['cert', '--host', 'localhost', '--ip', '127.0.0.1', '--out', certDir]);
  expect(cert, cert.stderr).toMatchObject({ code: 0 });
  expect(existsSync(join(certDir, 'server.crt'))).toBe(true);
  upstream = await startTestServer({ tls: { cert: join(certDir, 'server.crt'), key: join(certDir, 'server.key') } });
  expect(upstream.url).toMatch(/^https:/);
  refusedPort = await freePort();
  airlock = await startTestServer({
    upstreams: [
      // No caFile: the upstream's private CA is not trusted.
      { prefix: 'secure', url: upstream.url },
      // Credentials in the URL must never reach a status line.
      { prefix: 'down', url: `http://puller:S3cret-In-Url@127.0.0.1:${refusedPort}`, insecure: true },
    ],
  });
}, 60_000);

afterAll(async () => {
  await airlock?.close();
  await upstream?.close();
  tmp.cleanup();
});

/** The raw status line of a GET, as a client reads it off the wire. */
async function statusLine(path: string): Promise<string> {
  const r = await rawExchange(airlock.server.port, [`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`], 15_000);
  return r.data.split('\r\n', 1)[0]!;
}

describe('the reason for a 5xx is in the status line', () => {
  it('skopeo inspect through an upstream with an untrusted certificate prints "TLS verification failed, set caFile"', async () => {
    const r = await skopeo(['inspect', TLS_INSECURE, `docker://${airlock.host}/secure/library/app:v1`], { timeoutMs: 60_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`503 upstream ${upstream.host}: TLS verification failed, set caFile`);
    expect(r.stderr).not.toContain('503 Service Unavailable');
  });

  it('the body still carries the whole explanation, and the status line the short one', async () => {
    const line = await statusLine('/v2/secure/library/app/blobs/sha256:' + 'a'.repeat(64));
    expect(line).toMatch(new RegExp(`^HTTP/1\\.1 503 upstream ${upstream.host.replace(/\./g, '\\.')}: `));
    expect(line).toContain('TLS verification failed, set caFile');
    const res = await rawExchange(airlock.server.port, [`GET /v2/secure/library/app/manifests/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`]);
    const body = JSON.parse(res.data.slice(res.data.indexOf('\r\n\r\n') + 4)) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe('UNAVAILABLE');
    expect(body.errors[0]!.message).toMatch(/TLS verification failed \([A-Z_]+\).*set caFile/);
  });

  it('an upstream refusing connections: "unreachable, connection refused", without the credentials in its URL', async () => {
    const line = await statusLine('/v2/down/library/app/manifests/v1');
    expect(line).toBe(`HTTP/1.1 503 upstream 127.0.0.1:${refusedPort}: unreachable, connection refused`);
    const r = await skopeo(['inspect', TLS_INSECURE, `docker://${airlock.host}/down/library/app:v1`], { timeoutMs: 60_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`503 upstream 127.0.0.1:${refusedPort}: unreachable`);
    expect(r.stderr).not.toContain('S3cret-In-Url');
    expect(line).not.toContain('puller');
  });

  it('errors below 500 keep the standard reason phrase', async () => {
    expect(await statusLine('/v2/local/app/manifests/v1')).toBe('HTTP/1.1 404 Not Found');
  });
});

describe('reason phrases are safe', () => {
  it('control characters, CR/LF and non-ASCII become spaces; the length is bounded', () => {
    expect(reasonPhrase('upstream a:\r\nSet-Cookie: x\u0000y é')).toBe('upstream a: Set-Cookie: x y');
    const long = reasonPhrase(`upstream ${'h'.repeat(500)}: failed`);
    expect(long.length).toBe(MAX_REASON_LENGTH);
    expect(long.endsWith('...')).toBe(true);
    expect(reasonPhrase('\u00e9\r\n')).toBe('Error');
    for (const text of [long, reasonPhrase('a\tb\u007fc')]) expect(text).toMatch(/^[\x20-\x7e]+$/);
  });
});
