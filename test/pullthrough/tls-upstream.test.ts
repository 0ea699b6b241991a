// HTTPS upstreams: another airlock serving TLS with a certificate from `airlock cert` (a private CA).
// With caFile naming that CA, pulls go through (skopeo end to end); without it, or when the
// certificate does not name the host airlock connects to, the upstream is refused and the client
// is told why. A CA file replaced while airlock runs is used from the next request on.

import { readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/index.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import type { TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { runCli } from '../server/cli.js';
import { call, expectError, getBlob, getManifest, sha256, startAirlock, stats, tempDirs } from './support.js';

const tmp = tempDirs('tls');

/** `airlock cert` into a fresh directory: ca.crt, server.crt, server.key. */
async function airlockCert(hostArgs: string[]): Promise<string> {
  const dir = join(tmp.make('pki'), 'tls');
  const r = await runCli(['cert', ...hostArgs, '--out', dir, '--days', '2']);
  expect(r.code, r.stderr).toBe(0);
  return dir;
}

/** An airlock upstream on `storage`, serving HTTPS with the certificate in `pki`. */
function startTlsUpstream(storage: string, pki: string, port = 0): Promise<RunningServer> {
  return startServer({
    listen: `127.0.0.1:${port}`,
    storage,
    log: { level: 'silent' },
    tls: { cert: join(pki, 'server.crt'), key: join(pki, 'server.key') },
  });
}

/** Fills an upstream's storage through plain HTTP first (the push helpers speak plain HTTP only). */
async function seed(storage: string, repo: string, tag: string): Promise<PushedImage> {
  const plain = await startServer({ listen: '127.0.0.1:0', storage, log: { level: 'silent' } });
  try {
    return await pushImage(plain.url, repo, tag, { layerSize: 64 * 1024 });
  } finally {
    await plain.close();
  }
}

/** Replaces a file the way configuration management does: write beside it, rename over it. */
function replaceFile(path: string, contents: Buffer | string): void {
  writeFileSync(`${path}.new`, contents);
  renameSync(`${path}.new`, path);
}

describe('an HTTPS upstream with a private CA', () => {
  let pki: string;
  let wrongHostPki: string;
  let storage: string;
  let upstream: RunningServer;
  let wrongHost: RunningServer;
  let airlock: TestServer;
  let image: PushedImage;
  let second: PushedImage;
  let caFile: string;

  beforeAll(async () => {
    pki = await airlockCert(['--host', 'localhost', '--ip', '127.0.0.1']);
    // A certificate for another name only: trusted CA, wrong host.
    wrongHostPki = await airlockCert(['--host', 'registry.example.test']);
    storage = tmp.make('upstream');
    image = await seed(storage, 'team/app', 'v1');
    second = await seed(storage, 'team/app', 'v2');
    upstream = await startTlsUpstream(storage, pki);
    const wrongStorage = tmp.make('wrong');
    await seed(wrongStorage, 'team/app', 'v1');
    wrongHost = await startTlsUpstream(wrongStorage, wrongHostPki);
    expect(upstream.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);

    caFile = join(tmp.make('ca'), 'upstream-ca.crt');
    writeFileSync(caFile, readFileSync(join(pki, 'ca.crt')));
    airlock = await startAirlock([
      { prefix: 'tls', url: upstream.url, caFile, insecure: false },
      { prefix: 'untrusted', url: upstream.url, insecure: false },
      { prefix: 'wronghost', url: wrongHost.url, caFile: join(wrongHostPki, 'ca.crt'), insecure: false },
    ]);
  });

  afterAll(async () => {
    await airlock?.close();
    await upstream?.close();
    await wrongHost?.close();
    tmp.cleanup();
  });

  it('caFile trusts it: skopeo pulls through airlock, byte-identical', async () => {
    const out = tmp.make('out');
    await skopeoCopy(`docker://${airlock.host}/tls/team/app:v1`, `dir:${out}`, { srcInsecure: true });
    const files = readdirSync(out);
    for (const [digest, bytes] of image.blobs) {
      const name = digest.slice('sha256:'.length);
      expect(files).toContain(name);
      expect(readFileSync(join(out, name)).equals(bytes)).toBe(true);
    }
    expect(sha256(readFileSync(join(out, 'manifest.json')))).toBe(image.manifestDigest);
    const s = await stats(airlock.url);
    const tls = s.upstreams.find((u) => u.prefix === 'tls')!;
    expect(tls.errors).toBe(0);
    expect(tls.misses).toBeGreaterThan(0);
  });

  it('without caFile the certificate is refused: 503 naming the upstream and the fix, nothing stored', async () => {
    const err = expectError(await getManifest(airlock.url, 'untrusted/team/app', 'v1'), 503, 'UNAVAILABLE');
    expect(err.message).toContain(upstream.url);
    expect(err.message).toContain('TLS verification failed');
    expect(err.message).toContain('caFile');
    expectError(await getBlob(airlock.url, 'untrusted/team/app', image.layerDigests[0]!), 503, 'UNAVAILABLE');
    const catalog = (await call(airlock.url, '/v2/_catalog')).json<{ repositories: string[] }>().repositories;
    expect(catalog).not.toContain('untrusted/team/app');
    const s = await stats(airlock.url);
    expect(s.upstreams.find((u) => u.prefix === 'untrusted')!.lastError).toContain('TLS verification failed');
  });

  it('a certificate from the trusted CA that does not name the host is refused, and the message says so', async () => {
    const err = expectError(await getManifest(airlock.url, 'wronghost/team/app', 'v1'), 503, 'UNAVAILABLE');
    expect(err.message).toContain(wrongHost.url);
    expect(err.message).toContain('does not name 127.0.0.1');
    expect(err.message).not.toContain('set caFile');
  });

  it('a replaced caFile is used without a restart, at once even after the upstream was being skipped', async () => {
    // The upstream is restarted on the same port with a certificate from another CA.
    const port = Number(new URL(upstream.url).port);
    const renewed = await airlockCert(['--host', 'localhost', '--ip', '127.0.0.1']);
    await upstream.close();
    upstream = await startTlsUpstream(storage, renewed, port);

    // Still trusting the old CA only: refused, until the failures make airlock skip the upstream.
    for (let i = 0; i < 3; i++) {
      const refused = expectError(await getManifest(airlock.url, 'tls/team/app', 'v2'), 503, 'UNAVAILABLE');
      expect(refused.message).toContain('TLS verification failed');
    }
    const skipped = expectError(await getManifest(airlock.url, 'tls/team/app', 'v2'), 503, 'UNAVAILABLE');
    expect(skipped.message).toContain('is skipped until');

    // The renewed CA is tried at once: no waiting out the cool-down that the old one caused.

    replaceFile(caFile, readFileSync(join(renewed, 'ca.crt')));
    const res = await getManifest(airlock.url, 'tls/team/app', 'v2');
    expect(res.status).toBe(200);
    expect(res.header('docker-content-digest')).toBe(second.manifestDigest);
    expect(res.body.equals(second.manifest)).toBe(true);
    const layer = await getBlob(airlock.url, 'tls/team/app', second.layerDigests[0]!);
    expect(layer.status).toBe(200);
    expect(sha256(layer.body)).toBe(second.layerDigests[0]);

    // A broken replacement (half-written, not PEM) keeps the last good CA in use.
    replaceFile(caFile, 'not a certificate');
    const third = await getBlob(airlock.url, 'tls/team/app', second.configDigest);
    expect(third.status).toBe(200);
  });
});
