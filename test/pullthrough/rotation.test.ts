// A rotated pull secret: the upstream (another airlock with `auth:` and Bearer tokens, or
// docker-registry with htpasswd Basic auth, each re-reading its htpasswd file while it runs) gets a new password for the robot account; airlock's authFile is updated while airlock
// runs, and the very next pull uses it: no restart. Until the file is updated the pull fails with
// "credentials were rejected"; a half-written file keeps the last good credentials in use.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser } from '../../src/auth/htpasswd.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { expectError, getBlob, getManifest, sha256, sleep, startAirlock, tempDirs } from './support.js';

const tmp = tempDirs('rotation');
const USER = 'robot';
/** Tokens of the upstream live this long, so a token got with the old password soon stops working. */
const TOKEN_TTL_MS = 1000;

let htpasswd: string;
let upstream: TestServer;
let airlock: TestServer;
let authFile: string;
let images: PushedImage[];

function pullSecret(host: string, password: string): string {
  return JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${USER}:${password}`).toString('base64') } } });
}

beforeAll(async () => {
  htpasswd = join(tmp.make('htpasswd'), 'users.htpasswd');
  await addUser(htpasswd, USER, 'first-password', 4);
  upstream = await startTestServer({
    auth: { htpasswd, tokenTTL: `${TOKEN_TTL_MS}ms`, rules: [{ users: [USER], repos: ['**'], actions: ['pull', 'push'] }] },
  });
  images = [];
  for (const tag of ['v1', 'v2', 'v3']) {
    images.push(await pushImage(upstream.url, 'team/app', tag, { credentials: { username: USER, password: 'first-password' } }));
  }
  authFile = join(tmp.make('secret'), 'pull-secret.json');
  writeFileSync(authFile, pullSecret(upstream.host, 'first-password'));
  airlock = await startAirlock([{ prefix: 'up', url: upstream.url, authFile }]);
});

afterAll(async () => {
  await airlock?.close();
  await upstream?.close();
  tmp.cleanup();
});

describe('authFile rotation', () => {
  it('a rotated upstream password is refused until the authFile is updated, then used without a restart', async () => {
    const first = await getManifest(airlock.url, 'up/team/app', 'v1');
    expect(first.status).toBe(200);
    expect(first.header('docker-content-digest')).toBe(images[0]!.manifestDigest);

    // The upstream's owner rotates the robot's password; the token airlock holds runs out.
    await addUser(htpasswd, USER, 'second-password', 4);
    await sleep(TOKEN_TTL_MS + 200);
    const refused = expectError(await getManifest(airlock.url, 'up/team/app', 'v2'), 502, 'UPSTREAM_ERROR');
    expect(refused.message).toContain('credentials were rejected');

    // The new pull secret is dropped in place (written beside, renamed over: how Secrets and config
    // management replace files).
    writeFileSync(`${authFile}.tmp`, pullSecret(upstream.host, 'second-password'));
    renameSync(`${authFile}.tmp`, authFile);
    const out = tmp.make('out');
    await skopeoCopy(`docker://${airlock.host}/up/team/app:v2`, `dir:${out}`, { srcInsecure: true });
    expect(sha256(readFileSync(join(out, 'manifest.json')))).toBe(images[1]!.manifestDigest);
    for (const [digest, bytes] of images[1]!.blobs) expect(readFileSync(join(out, digest.slice(7))).equals(bytes)).toBe(true);
  });

  it('a file rewritten in place is picked up too; an unusable one keeps the last good credentials', async () => {
    // Half-written (not JSON): the credentials in use stay the last good ones, pulls keep working.
    writeFileSync(authFile, '{"auths": {');
    await sleep(TOKEN_TTL_MS + 200); // a new token must be fetched, with the credentials in use
    const stillGood = await getBlob(airlock.url, 'up/team/app', images[2]!.configDigest);
    expect(stillGood.status).toBe(200);
    expect(stillGood.header('x-cache')).toBe('MISS');

    await addUser(htpasswd, USER, 'third-password', 4);
    await sleep(TOKEN_TTL_MS + 200);
    expectError(await getManifest(airlock.url, 'up/team/app', 'v3'), 502, 'UPSTREAM_ERROR');
    writeFileSync(authFile, pullSecret(upstream.host, 'third-password'));
    const res = await getManifest(airlock.url, 'up/team/app', 'v3');
    expect(res.status).toBe(200);
    expect(res.header('docker-content-digest')).toBe(images[2]!.manifestDigest);
  });
});

describe('authFile rotation with a Basic-auth upstream (docker-registry htpasswd)', () => {
  let registry: Distribution;
  let basicAirlock: TestServer;
  let secret: string;
  let pushed: PushedImage[];

  beforeAll(async () => {
    registry = await startDistribution({ users: { [USER]: 'old-password' } });
    pushed = [];
    for (const tag of ['v1', 'v2']) {
      pushed.push(await pushImage(registry.url, 'team/app', tag, { credentials: { username: USER, password: 'old-password' } }));
    }
    secret = join(tmp.make('basic-secret'), 'auth.json');
    writeFileSync(secret, pullSecret(registry.host, 'old-password'));
    basicAirlock = await startAirlock([{ prefix: 'basic', url: registry.url, authFile: secret }]);
  });

  afterAll(async () => {
    await basicAirlock?.close();
    await registry?.stop();
  });

  it('the new password is sent from the next request after the file changes', async () => {
    expect((await getManifest(basicAirlock.url, 'basic/team/app', 'v1')).status).toBe(200);
    // docker-registry re-reads its htpasswd file: the old password stops working at once.
    writeFileSync(join(dirname(registry.storage), 'htpasswd'), `${USER}:${bcrypt.hashSync('new-password', 4)}\n`);
    const refused = expectError(await getManifest(basicAirlock.url, 'basic/team/app', 'v2'), 502, 'UPSTREAM_ERROR');
    expect(refused.message).toContain(`credentials were rejected by ${registry.url}`);

    writeFileSync(`${secret}.tmp`, pullSecret(registry.host, 'new-password'));
    renameSync(`${secret}.tmp`, secret);
    const out = tmp.make('basic-out');
    await skopeoCopy(`docker://${basicAirlock.host}/basic/team/app:v2`, `dir:${out}`, { srcInsecure: true });
    expect(sha256(readFileSync(join(out, 'manifest.json')))).toBe(pushed[1]!.manifestDigest);
  });
});
