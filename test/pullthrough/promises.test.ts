// README promises outside the fast path: a non-default limits.manifestBytes, a tag deleted upstream
// between two revalidations, and `airlock user add NAME --config FILE` writing into the htpasswd
// file that config names (then used by a server started from the same config).

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MEDIA, openRequest, pushBlob, pushManifest } from '../helpers/http.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { CLI, startCli, type CliProcess } from '../server/cli.js';
import { call, expectError, getManifest, sleep, startAirlock, startUpstreamProxy, stats, tempDirs, type UpstreamProxy } from './support.js';

const tmp = tempDirs('promises');
afterAll(() => tmp.cleanup());

describe('limits.manifestBytes set to 2 KiB', () => {
  const LIMIT = 2048;
  let server: TestServer;
  let config: { mediaType: string; digest: string; size: number };

  beforeAll(async () => {
    server = await startTestServer({ limits: { manifestBytes: '2KiB' } });
    const data = Buffer.from('{"architecture":"amd64","os":"linux"}');
    config = { mediaType: MEDIA.ociConfig, digest: await pushBlob(server.url, 'team/app', data), size: data.length };
  });

  afterAll(() => server?.close());

  /** An OCI image manifest of exactly `size` bytes (padded with an annotation). */
  function manifestOfSize(size: number): Buffer {
    const base = { schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers: [], annotations: { pad: '' } };
    const bare = Buffer.byteLength(JSON.stringify(base));
    const body = Buffer.from(JSON.stringify({ ...base, annotations: { pad: 'x'.repeat(size - bare) } }));
    expect(body.length).toBe(size);
    return body;
  }

  it('a manifest of exactly the limit is accepted; one byte more gets 413 MANIFEST_INVALID naming the limit', async () => {
    const atLimit = await pushManifest(server.url, 'team/app', 'at-limit', manifestOfSize(LIMIT), MEDIA.ociManifest);
    expect(atLimit.status).toBe(201);

    const over = await pushManifest(server.url, 'team/app', 'over', manifestOfSize(LIMIT + 1), MEDIA.ociManifest);
    const err = expectError({ ...over, complete: true }, 413, 'MANIFEST_INVALID');
    expect(err.message).toContain(String(LIMIT));
    expect((await getManifest(server.url, 'team/app', 'over')).status).toBe(404);
    expect((await getManifest(server.url, 'team/app', 'at-limit')).status).toBe(200);
  });

  it('a chunked body (no Content-Length) over the limit is refused too, without reading it all', async () => {
    const { req, response } = openRequest(server.url, '/v2/team/app/manifests/chunked', {
      method: 'PUT',
      headers: { 'content-type': MEDIA.ociManifest },
    });
    req.write(manifestOfSize(LIMIT + 100));
    req.end();
    const res = await response;
    expect(res.status).toBe(413);
    expect(res.json<{ errors: { code: string }[] }>().errors[0]!.code).toBe('MANIFEST_INVALID');
    // The server carries on.
    expect((await call(server.url, '/v2/')).status).toBe(200);
  });
});

describe('a tag deleted upstream, found out at revalidation', () => {
  const TTL_MS = 3000;
  let upstream: TestServer;
  let proxy: UpstreamProxy;
  let airlock: TestServer;
  let image: PushedImage;

  beforeAll(async () => {
    upstream = await startTestServer();
    proxy = await startUpstreamProxy(upstream.url);
    airlock = await startAirlock([{ prefix: 'up', url: proxy.url, tagTTL: `${TTL_MS}ms` }]);
    image = await pushImage(upstream.url, 'team/app', 'doomed');
    await pushImage(upstream.url, 'team/app', 'kept');
  });

  afterAll(async () => {
    await airlock?.close();
    await proxy?.close();
    await upstream?.close();
  });

  it('is gone here too (404 MANIFEST_UNKNOWN, out of the tag list), while its content stays reachable by digest', async () => {
    expect((await getManifest(airlock.url, 'up/team/app', 'doomed')).header('x-cache')).toBe('MISS');
    const cachedAt = Date.now();
    expect((await getManifest(airlock.url, 'up/team/app', 'kept')).status).toBe(200);

    const deleted = await call(upstream.url, '/v2/team/app/manifests/doomed', { method: 'DELETE' });
    expect(deleted.status).toBe(202);
    // Within tagTTL the cached tag is still trusted, as promised.
    expect((await getManifest(airlock.url, 'up/team/app', 'doomed')).header('x-cache')).toBe('HIT');
    expect(Date.now() - cachedAt).toBeLessThan(TTL_MS); // still within the TTL, so this is the "before" case

    await sleep(cachedAt + TTL_MS + 100 - Date.now());
    proxy.reset();
    const gone = expectError(await getManifest(airlock.url, 'up/team/app', 'doomed'), 404, 'MANIFEST_UNKNOWN');
    expect(gone.message).toContain(proxy.url);
    expect(proxy.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['HEAD /v2/team/app/manifests/doomed']);
    expect((await getManifest(airlock.url, 'up/team/app', 'doomed', 'HEAD')).status).toBe(404);

    const tags = (await call(airlock.url, '/v2/up/team/app/tags/list')).json<{ tags: string[] }>();
    expect(tags.tags).toEqual(['kept']);
    // Nodes that pinned the digest (ImageDigestMirrorSet pulls) keep getting it, from the cache.
    const byDigest = await getManifest(airlock.url, 'up/team/app', image.manifestDigest);
    expect(byDigest.status).toBe(200);
    expect(byDigest.header('x-cache')).toBe('HIT');
    expect(byDigest.body.equals(image.manifest)).toBe(true);
    // A deleted tag is an answer, not an outage.
    const s = await stats(airlock.url);
    expect(s.upstreams[0]!.errors).toBe(0);
    expect(s.cache.staleServed).toBe(0);
  });
});

describe('airlock user add NAME --config FILE', () => {
  let dir: string;
  let server: CliProcess | undefined;

  afterAll(async () => {
    await server?.kill();
  });

  function userAdd(args: string[], password: string) {
    return spawnSync(process.execPath, [CLI, 'user', 'add', ...args], { cwd: dir, input: `${password}\n`, encoding: 'utf8', timeout: 20_000 });
  }

  it("writes the user into the config's auth.htpasswd; a server started from that config lets the user in", async () => {
    dir = tmp.make('user');
    writeFileSync(
      join(dir, 'airlock.yaml'),
      [
        'listen: "127.0.0.1:0"',
        'storage: ./storage',
        'log: { level: info }',
        'auth:',
        '  htpasswd: users.htpasswd',
        '  rules:',
        '    - { users: [mirror-writer], repos: ["**"], actions: [pull, push] }',
        '',
      ].join('\n'),
    );
    const added = userAdd(['mirror-writer', '--config', 'airlock.yaml', '--password-stdin'], 'pa55-word');
    expect(added.status, added.stderr).toBe(0);
    expect(added.stdout).toContain('added user "mirror-writer"');
    const file = join(dir, 'users.htpasswd');
    expect(existsSync(file)).toBe(true);
    expect(readFileSync(file, 'utf8')).toMatch(/^mirror-writer:\$2y\$/);

    server = await startCli(['--config', 'airlock.yaml'], { cwd: dir });
    const basic = (p: string) => ({ authorization: `Basic ${Buffer.from(`mirror-writer:${p}`).toString('base64')}` });
    expect((await call(server.url, '/v2/', { headers: basic('pa55-word') })).status).toBe(200);
    expect((await call(server.url, '/v2/', { headers: basic('wrong') })).status).toBe(401);

  });

  it('a config without auth.htpasswd is a usage error (2) that says what to pass', () => {
    writeFileSync(join(dir, 'open.yaml'), 'listen: "127.0.0.1:0"\n');
    const r = userAdd(['someone', '--config', 'open.yaml', '--password-stdin'], 'x');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('auth.htpasswd');
  });
});
