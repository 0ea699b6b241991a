// Authenticating to upstreams: a Bearer token service (as quay.io / Docker Hub do it) in front of a
// second airlock, and docker-registry with htpasswd Basic auth read from a pull secret (authFile).
// Wrong credentials give the client a clear error, and the server carries on.

import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { listBlobsOfOciLayout, readOciLayoutTagged, skopeo, skopeoCopy } from '../helpers/skopeo.js';
import { startHttpServer, type TestHttpServer } from '../proxy/fixtures.js';
import { call, expectError, getBlob, getManifest, startAirlock, stats, tempDirs } from './support.js';

const ROBOT = { username: 'robot', password: 's3cret' };
const PULLER = { username: 'puller', password: 'pa55word' };
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

const tmp = tempDirs('auth');
let upstream: TestServer; // a second airlock: the content behind the token gate
let tokenService: TestHttpServer;
let gate: TestHttpServer;
let htpasswdRegistry: Distribution;
let airlock: TestServer;
let image: BuiltOciImage;
let imageDir: string;
const tokenRequests: Array<{ authorization: string | undefined; scope: string | null; status: number }> = [];
const gateRequests: Array<{ method: string; path: string; status: number }> = [];
const issued = new Set<string>();

beforeAll(async () => {
  upstream = await startTestServer();
  htpasswdRegistry = await startDistribution({ users: { [PULLER.username]: PULLER.password } });

  // Token service: only the robot gets tokens (a private repository: anonymous callers are refused).
  tokenService = await startHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token');
    const ok = req.headers.authorization === basic(ROBOT.username, ROBOT.password);
    tokenRequests.push({ authorization: req.headers.authorization, scope: url.searchParams.get('scope'), status: ok ? 200 : 401 });
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ details: 'incorrect username or password' }));
      return;
    }
    const token = randomUUID();
    issued.add(token);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
  });
  // The registry side: 401 + Bearer challenge unless the request carries an issued token.
  gate = await startHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token === undefined || !issued.has(token)) {
      gateRequests.push({ method: req.method ?? 'GET', path, status: 401 });
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="${tokenService.url}/token",service="gate.test"`,
        'content-type': 'application/json',
      });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    const { authorization: _dropped, host: _host, ...headers } = req.headers;
    const forward = httpRequest(`${upstream.url}${req.url}`, { method: req.method, headers }, (answer) => {
      gateRequests.push({ method: req.method ?? 'GET', path, status: answer.statusCode ?? 0 });
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    req.pipe(forward);
  });

  imageDir = tmp.make('src');
  image = buildOciLayoutImage(imageDir, { tag: 'v1', layerBytes: 4096 });
  await skopeoCopy(image.ociRef, `docker://${upstream.host}/team/app:v1`, { destInsecure: true });
  await skopeoCopy(image.ociRef, `docker://${htpasswdRegistry.host}/team/app:v1`, {
    destInsecure: true,
    extra: ['--dest-creds', `${PULLER.username}:${PULLER.password}`],
  });

  const pullSecret = join(tmp.make('secret'), 'pull-secret.json');
  writeFileSync(
    pullSecret,
    JSON.stringify({
      auths: {
        'quay.io': { auth: Buffer.from('someone:else').toString('base64') },
        [htpasswdRegistry.host]: { auth: Buffer.from(`${PULLER.username}:${PULLER.password}`).toString('base64'), email: 'ci@example.com' },
      },
    }),
  );

  airlock = await startAirlock([
    { prefix: 'token', url: gate.url, ...ROBOT },
    { prefix: 'token-wrong', url: gate.url, username: ROBOT.username, password: 'wrong' },
    { prefix: 'token-anonymous', url: gate.url },
    { prefix: 'basic', url: htpasswdRegistry.url, authFile: pullSecret },
    { prefix: 'basic-wrong', url: htpasswdRegistry.url, username: PULLER.username, password: 'wrong' },
  ]);
});

afterAll(async () => {
  await airlock?.close();
  await gate?.close();
  await tokenService?.close();
  await htpasswdRegistry?.stop();
  await upstream?.close();
  tmp.cleanup();
});

/** skopeo copy --all through airlock into an OCI layout, compared blob for blob with the source. */
async function pullAndCompare(repo: string): Promise<void> {
  const out = tmp.make('out');
  await skopeoCopy(`docker://${airlock.host}/${repo}:v1`, `oci:${out}:v1`, { srcInsecure: true });
  expect(readOciLayoutTagged(out, 'v1').digest).toBe(image.indexDigest);
  const expected = listBlobsOfOciLayout(imageDir);
  const got = listBlobsOfOciLayout(out);
  expect(got.map((b) => b.digest)).toEqual(expected.map((b) => b.digest));
}

describe('Bearer token upstream', () => {
  it('pulls through airlock with username/password: the token service gets them as Basic, the registry a token', async () => {
    tokenRequests.length = 0;
    gateRequests.length = 0;
    await pullAndCompare('token/team/app');

    expect(tokenRequests.length).toBeGreaterThanOrEqual(1);
    for (const t of tokenRequests) {
      expect(t).toEqual({ authorization: basic(ROBOT.username, ROBOT.password), scope: 'repository:team/app:pull', status: 200 });
    }
    // One challenge taught airlock the scheme; every other request went with the token straight away.
    expect(gateRequests.filter((r) => r.status === 401)).toHaveLength(1);
    expect(gateRequests.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(1 + image.manifestDigests.length + image.blobDigests.length);
  });

  it('wrong credentials: 502 UPSTREAM_ERROR naming the upstream and the token service, nothing cached', async () => {
    for (const path of ['manifests/v1', `manifests/${image.indexDigest}`]) {
      const res = await call(airlock.url, `/v2/token-wrong/team/app/${path}`);
      const err = expectError(res, 502, 'UPSTREAM_ERROR');
      expect(err.message).toContain('credentials were rejected');
      expect(err.message).toContain(gate.url);
      expect(err.message).toContain(tokenService.url);
      expect(err.detail).toMatchObject({ upstream: gate.url });
    }
    const blob = await getBlob(airlock.url, 'token-wrong/team/app', image.blobDigests[0]!);
    expect(expectError(blob, 502, 'UPSTREAM_ERROR').message).toContain(gate.url);
    // HEAD has no body but keeps the status.
    expect((await getManifest(airlock.url, 'token-wrong/team/app', 'v1', 'HEAD')).status).toBe(502);
    expect(tokenRequests.some((t) => t.authorization === basic(ROBOT.username, 'wrong') && t.status === 401)).toBe(true);

    // skopeo fails cleanly with the status and its reason phrase (containers/image does not read
    // the JSON of 5xx answers, only the status line).
    const r = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${airlock.host}/token-wrong/team/app:v1`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`502 upstream ${new URL(gate.url).host}: token service refused our credentials (401)`);

    const catalog = (await call(airlock.url, '/v2/_catalog')).json<{ repositories: string[] }>().repositories;
    expect(catalog).not.toContain('token-wrong/team/app');
  });

  it('no credentials configured: the error says to configure username/password or authFile', async () => {
    const err = expectError(await getManifest(airlock.url, 'token-anonymous/team/app', 'v1'), 502, 'UPSTREAM_ERROR');
    expect(err.message).toContain('configure username/password or authFile');
    expect(err.message).toContain(gate.url);
  });
});

describe('htpasswd (Basic) upstream with a pull secret', () => {
  it('pulls through airlock with authFile {"auths":{"127.0.0.1:PORT":{"auth":…}}}', async () => {
    await pullAndCompare('basic/team/app');
    const s = await stats(airlock.url);
    const basicStats = s.upstreams.find((u) => u.prefix === 'basic')!;
    expect(basicStats.errors).toBe(0);
    expect(basicStats.misses).toBeGreaterThan(0);
  });

  it('wrong password: 502 UPSTREAM_ERROR naming the upstream, and the server keeps serving', async () => {
    const err = expectError(await getManifest(airlock.url, 'basic-wrong/team/app', 'v1'), 502, 'UPSTREAM_ERROR');
    expect(err.message).toContain(`credentials were rejected by ${htpasswdRegistry.url}`);
    expect(err.detail).toMatchObject({ upstream: htpasswdRegistry.url, repository: 'team/app' });
    const blob = await getBlob(airlock.url, 'basic-wrong/team/app', image.blobDigests[0]!);
    expectError(blob, 502, 'UPSTREAM_ERROR');

    // Rejected credentials are not an outage: the circuit stays closed and every try reaches the upstream.
    for (let i = 0; i < 5; i++) {
      const again = await getManifest(airlock.url, 'basic-wrong/team/app', 'v1');
      expect(expectError(again, 502, 'UPSTREAM_ERROR').message).toContain('credentials were rejected');
    }
    const s = await stats(airlock.url);
    const wrong = s.upstreams.find((u) => u.prefix === 'basic-wrong')!;
    expect(wrong.errors).toBe(7);
    expect(wrong.lastError).toContain('credentials were rejected');

    // The server is fine: health, and pulls through the good upstreams.
    expect((await call(airlock.url, '/healthz')).status).toBe(200);
    expect((await call(airlock.url, '/readyz')).status).toBe(200);
    const good = await getManifest(airlock.url, 'basic/team/app', 'v1');
    expect(good.status).toBe(200);
    expect(good.header('docker-content-digest')).toBe(image.indexDigest);
    const tokenGood = await getBlob(airlock.url, 'token/team/app', image.blobDigests[0]!);
    expect(tokenGood.status).toBe(200);
    expect(s.storage.repositories).toBe(2); // token/team/app and basic/team/app, nothing for the failures
  });
});
