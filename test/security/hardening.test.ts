/**
 * Hardening on a live server: slow-loris headers are cut off after limits.headersTimeout, idle
 * connections after limits.idleTimeout (between requests and mid-body too, while a slow but moving
 * body is left alone), failed logins back off with 429 + Retry-After, upload sessions are bounded
 * per user, and the logs of a real `airlock serve` child carry audit lines for pushes, mounts,
 * deletes and refusals while never containing a password, a Basic credential or a token.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, MEDIA, sha256 } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { freePort, startCli, waitFor, type CliProcess, type LogLine } from '../server/cli.js';
import {
  basic,
  bearer,
  getToken,
  imageManifest,
  postBlob,
  pushImageAs,
  putManifest,
  rawExchange,
  sleep,
  tempDirs,
  tokenRequest,
  withAuth,
  writeHtpasswd,
} from './support.js';

const tmp = tempDirs('hardening');
afterAll(() => tmp.cleanup());

describe('slow-loris: limits.headersTimeout 2s', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ limits: { headersTimeout: '2s', idleTimeout: '30s' } });
  });
  afterAll(async () => srv?.close());

  it('a client sending its headers one byte per second is cut off after ~2s (408 or closed), while others are served', async () => {
    const head = `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ${'slow'.repeat(10)}\r\n\r\n`;
    const chunks: (string | (() => Promise<void>))[] = [];
    for (const ch of head) chunks.push(ch, () => sleep(1_000));
    const loris = rawExchange(srv.server.port, chunks, 15_000);
    // Meanwhile a normal client is not held up.
    await sleep(500);
    const started = Date.now();
    expectStatus(await http(srv.url, '/v2/'), 200);
    expect(Date.now() - started).toBeLessThan(1_000);

    const r = await loris;
    expect(r.closed).toBe(true);
    // Timed from its first byte: 2s, plus up to one connection sweep (0.5s) and scheduling slack.
    expect(r.ms).toBeGreaterThanOrEqual(1_900);
    expect(r.ms).toBeLessThan(4_000);
    expect(r.status === undefined || r.status === 408).toBe(true);
    expect(r.data).not.toContain('200 OK');
    expectStatus(await http(srv.url, '/v2/'), 200);
  });

  it('a connection that never sends a byte is closed after ~2s as well', async () => {
    const r = await rawExchange(srv.server.port, [], 15_000);
    expect(r.closed).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(1_900);
    expect(r.ms).toBeLessThan(4_000);
  });

  it('the limit is on headers only: a body trickling in for longer than 2s is accepted', async () => {
    const data = randomBytes(5);
    const location = (await http(srv.url, '/v2/slow/body/blobs/uploads/', { method: 'POST' })).header('location')!;
    const chunks: (string | Buffer | (() => Promise<void>))[] = [
      `PATCH ${location} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
    ];
    for (const byte of data) chunks.push(() => sleep(700), Buffer.from([byte]));
    const r = await rawExchange(srv.server.port, chunks, 10_000);
    expect(r.ms).toBeGreaterThan(3_000);
    expect(r.status).toBe(202);
    expect(r.data).toMatch(/\r\nRange: 0-4\r\n/i);
  });
});

describe('idle connections: limits.idleTimeout 2s', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ limits: { headersTimeout: '30s', idleTimeout: '2s' } });
  });
  afterAll(async () => srv?.close());

  it('a silent connection is closed after ~2s', async () => {
    const r = await rawExchange(srv.server.port, [], 15_000);
    expect(r.closed).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(1_900);
    expect(r.ms).toBeLessThan(4_000);
  });

  it('a keep-alive connection idle after a request is closed after ~2s (+ Node\'s 1s keep-alive grace), not 65s', async () => {
    const r = await rawExchange(srv.server.port, ['GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'], 15_000);
    expect(r.status).toBe(200);
    expect(r.data).toMatch(/keep-alive/i);
    expect(r.closed).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(1_900);
    expect(r.ms).toBeLessThan(4_500);
  });

  it('a body that stalls midway is cut off after ~2s; the upload keeps what arrived and can be cancelled', async () => {
    const location = (await http(srv.url, '/v2/stall/blobs/uploads/', { method: 'POST' })).header('location')!;
    const r = await rawExchange(
      srv.server.port,
      [`PATCH ${location} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n`, randomBytes(10)],
      15_000,
    );
    expect(r.closed).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(1_900);
    expect(r.ms).toBeLessThan(4_000);
    expect(r.data).not.toMatch(/HTTP\/1\.1 2\d\d/);
    // The 10 bytes that arrived stay (a client may resume from them), and the session can be cancelled.
    const status = await http(srv.url, location);
    expectStatus(status, 204);
    expect(status.header('range')).toBe('0-9');
    expectStatus(await http(srv.url, location, { method: 'DELETE' }), 204);
    expectStatus(await http(srv.url, '/v2/'), 200);
  });

  it('a slow body that keeps moving (a byte every 0.5s for 3s) is not idle and completes', async () => {
    const data = randomBytes(6);
    const location = (await http(srv.url, '/v2/trickle/blobs/uploads/', { method: 'POST' })).header('location')!;
    const chunks: (string | Buffer | (() => Promise<void>))[] = [
      `PUT ${location}?digest=${sha256(data)} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
    ];
    for (const byte of data) chunks.push(() => sleep(500), Buffer.from([byte]));
    const r = await rawExchange(srv.server.port, chunks, 10_000);
    expect(r.ms).toBeGreaterThan(2_500);
    expect(r.status).toBe(201);
    const back = await http(srv.url, `/v2/trickle/blobs/${sha256(data)}`);
    expect(back.body.equals(data)).toBe(true);
  });
});

describe('failed-login back-off on the token endpoint', () => {
  let srv: TestServer;
  const PASSWORD = 'right-password';
  beforeAll(async () => {
    const htpasswd = join(tmp.make('throttle'), 'users.htpasswd');
    await writeHtpasswd(htpasswd, { victim: PASSWORD, bystander: PASSWORD });
    srv = await startTestServer({ auth: { htpasswd, rules: [{ users: ['*'], repos: ['**'], actions: ['pull'] }] } });
  });
  afterAll(async () => srv?.close());

  it('5 wrong passwords are 401; the 6th attempt is 429 with Retry-After; then even the right password waits; after it, the right one works', async () => {
    const scope = ['repository:some/repo:pull'];
    for (let i = 1; i <= 5; i++) {
      const res = await tokenRequest(srv.url, scope, basic('victim', `wrong-${i}`));
      expectError(res, 401, 'UNAUTHORIZED');
    }
    const sixth = await tokenRequest(srv.url, scope, basic('victim', 'wrong-6'));
    const error = expectError(sixth, 429, 'TOOMANYREQUESTS');
    const retryAfter = Number(sixth.header('retry-after'));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(error.detail).toEqual({ retryAfterSeconds: retryAfter });

    const rightButEarly = await tokenRequest(srv.url, scope, basic('victim', PASSWORD));
    expectError(rightButEarly, 429, 'TOOMANYREQUESTS');
    expect(rightButEarly.text).not.toContain('"token"');
    // Basic on /v2/ is the same login: it waits too.
    expectError(await http(srv.url, '/v2/', { headers: { authorization: basic('victim', PASSWORD) } }), 429, 'TOOMANYREQUESTS');
    // Keyed by (user, address): another user from the same address is not locked out.
    await getToken(srv.url, scope, basic('bystander', PASSWORD));

    await sleep(Number(rightButEarly.header('retry-after')) * 1_000 + 100);
    const { jwt } = await getToken(srv.url, scope, basic('victim', PASSWORD));
    expect(jwt.payload.sub).toBe('victim');
    // A success clears the record: the next mistake is a plain 401 again.
    expectError(await tokenRequest(srv.url, scope, basic('victim', 'wrong-again')), 401, 'UNAUTHORIZED');
  });
});

describe('upload sessions bounded per user: limits.uploadSessionsPerUser 3', () => {
  const start = (base: string, repo: string, auth?: string) =>
    http(base, `/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: withAuth(auth, { 'content-length': 0 }) });

  describe('with auth: per user', () => {
    let srv: TestServer;
    const alice = () => basic('alice', 'alice-pw');
    const bob = () => basic('bob', 'bob-pw');
    beforeAll(async () => {
      const htpasswd = join(tmp.make('sessions'), 'users.htpasswd');
      await writeHtpasswd(htpasswd, { alice: 'alice-pw', bob: 'bob-pw' });
      srv = await startTestServer({
        auth: { htpasswd, rules: [{ users: ['*'], repos: ['**'], actions: ['pull', 'push', 'delete'] }] },
        limits: { uploadSessionsPerUser: 3 },
      });
    });
    afterAll(async () => srv?.close());

    it('the 4th open session is 429 TOOMANYREQUESTS (across repositories, Basic or token); cancelling or completing one frees a slot; other users are unaffected', async () => {
      const locations: string[] = [];
      for (const repo of ['a/one', 'a/two', 'b/three']) {
        const res = await start(srv.url, repo, alice());
        expectStatus(res, 202);
        locations.push(res.header('location')!);
      }
      expectError(await start(srv.url, 'c/four', alice()), 429, 'TOOMANYREQUESTS');
      // A token is the same user.
      const { body } = await getToken(srv.url, ['repository:c/four:push'], alice());
      expectError(await start(srv.url, 'c/four', bearer(body.token)), 429, 'TOOMANYREQUESTS');
      // A monolithic upload opens a session too.
      expectError(await postBlob(srv.url, 'c/four', randomBytes(10), alice()), 429, 'TOOMANYREQUESTS');
      // Bob has his own budget.
      expectStatus(await start(srv.url, 'a/one', bob()), 202);

      expectStatus(await http(srv.url, locations.shift()!, { method: 'DELETE', headers: { authorization: alice() } }), 204);
      const again = await start(srv.url, 'c/four', alice());
      expectStatus(again, 202);
      locations.push(again.header('location')!);
      expectError(await start(srv.url, 'c/five', alice()), 429, 'TOOMANYREQUESTS');

      const data = randomBytes(100);
      const done = await http(srv.url, `${locations.shift()!}?digest=${sha256(data)}`, {
        method: 'PUT',
        headers: { authorization: alice(), 'content-type': 'application/octet-stream', 'content-length': data.length },
        body: data,
      });
      expectStatus(done, 201);
      expectStatus(await start(srv.url, 'c/five', alice()), 202);
    });
  });

  describe('without auth: per client address', () => {
    let srv: TestServer;
    beforeAll(async () => {
      srv = await startTestServer({ limits: { uploadSessionsPerUser: 3 } });
    });
    afterAll(async () => srv?.close());

    it('an anonymous client gets 3 sessions, the 4th is 429, a cancelled one frees a slot', async () => {
      const locations: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await start(srv.url, `anon/r${i}`);
        expectStatus(res, 202);
        locations.push(res.header('location')!);
      }
      const refused = await start(srv.url, 'anon/r3');
      expectError(refused, 429, 'TOOMANYREQUESTS');
      expectStatus(await http(srv.url, locations[0]!, { method: 'DELETE' }), 204);
      expectStatus(await start(srv.url, 'anon/r3'), 202);
    });
  });
});

describe('logs of a real `airlock serve` with auth', () => {
  const USERS = { writer: 'Wr1ter-Pa55word!', admin: 'Adm1n-Pa55word!', reader: 'Read3r-Pa55word!' } as const;
  let cli: CliProcess;
  let base: string;
  const secrets: string[] = [];
  const tokens: string[] = [];

  const auth = (user: keyof typeof USERS) => {
    const header = basic(user, USERS[user]);
    secrets.push(USERS[user], header.slice('Basic '.length));
    return header;
  };
  async function token(user: keyof typeof USERS, scopes: string[]): Promise<string> {
    const { body } = await getToken(base, scopes, auth(user));
    tokens.push(body.token);
    return bearer(body.token);
  }

  beforeAll(async () => {
    const dir = tmp.make('cli');
    const htpasswd = join(dir, 'users.htpasswd');
    await writeHtpasswd(htpasswd, USERS);
    // A refused legacy entry, so the log must also say why that user cannot log in.
    writeFileSync(htpasswd, `legacy:$apr1$airlock1$X1P94K2QlJrWpT2Fpvxst0\n`, { flag: 'a' });
    const port = await freePort();
    const config = join(dir, 'airlock.yaml');
    // JSON is YAML.
    writeFileSync(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        storage: join(dir, 'storage'),
        log: { level: 'info' },
        auth: {
          htpasswd,
          rules: [
            { users: ['writer'], repos: ['**'], actions: ['pull', 'push'] },
            { users: ['admin'], repos: ['**'], actions: ['*'] },
            { users: ['reader'], repos: ['**'], actions: ['pull'] },
          ],
        },
      }),
    );
    cli = await startCli(['--config', config]);
    base = cli.url;
  });
  afterAll(async () => cli?.kill());

  function lines(filter: (l: LogLine) => boolean): LogLine[] {
    return cli.logLines().filter(filter);
  }

  it('push, mount, delete and refused requests leave audit lines with user, repo, digest and remote address; no secret is ever logged', async () => {
    // Pushes with Basic.
    const image = await pushImageAs(base, 'team/app', auth('writer'), 'v1', 2);
    // A pull and a mount with a bearer token.
    const writerToken = await token('writer', ['repository:team/app:pull,push', 'repository:team/copy:pull,push']);
    expectStatus(await http(base, '/v2/team/app/manifests/v1', { headers: { authorization: writerToken, accept: MEDIA.ociManifest } }), 200);
    const [mounted] = [...image.blobs.keys()];
    expectStatus(await http(base, `/v2/team/copy/blobs/uploads/?mount=${mounted}&from=team/app`, { method: 'POST', headers: { authorization: writerToken, 'content-length': 0 } }), 201);
    // A mount without from=: the source is found among the repositories the writer may pull, and named.
    expectStatus(await http(base, `/v2/team/copy2/blobs/uploads/?mount=${mounted}`, { method: 'POST', headers: { authorization: auth('writer'), 'content-length': 0 } }), 201);
    // A delete with a bearer token.
    const adminToken = await token('admin', ['repository:team/app:delete']);
    expectStatus(await http(base, `/v2/team/app/manifests/${image.digest}`, { method: 'DELETE', headers: { authorization: adminToken } }), 202);
    // Refusals: a reader pushing (Basic and token), a writer deleting, a wrong password, a forged token.
    const readerBlob = randomBytes(32);
    expectError(await postBlob(base, 'team/app', readerBlob, auth('reader')), 403, 'DENIED');
    const readerToken = await token('reader', ['repository:team/app:pull,push']);
    const config = Buffer.from('{}');
    expectError(await putManifest(base, 'team/app', 'v2', imageManifest(config, []), readerToken), 403, 'DENIED');
    expectError(await http(base, `/v2/team/app/blobs/${mounted}`, { method: 'DELETE', headers: { authorization: auth('writer') } }), 403, 'DENIED');
    const wrong = basic('admin', 'Not-The-Password-42');
    secrets.push('Not-The-Password-42', wrong.slice('Basic '.length));
    expectError(await http(base, '/v2/team/app/tags/list', { headers: { authorization: wrong } }), 401, 'UNAUTHORIZED');
    const forged = `${writerToken.slice('Bearer '.length, -6)}AAAAAA`;
    expectError(await http(base, '/v2/team/app/tags/list', { headers: { authorization: bearer(forged) } }), 401, 'UNAUTHORIZED');
    // Anonymous refusals: a pull and a push without credentials (401 with a challenge).
    expectError(await http(base, '/v2/team/app/manifests/v1', { headers: { accept: MEDIA.ociManifest } }), 401, 'UNAUTHORIZED');
    const anonymousBlob = randomBytes(16);
    expectError(await postBlob(base, 'team/app', anonymousBlob), 401, 'UNAUTHORIZED');
    // The version check challenges every anonymous client by design (it is how login starts);
    // a login there with a wrong password is a refusal.
    expectError(await http(base, '/v2/'), 401, 'UNAUTHORIZED');
    const nobody = basic('nobody', 'Nobody-Pass-77');
    secrets.push('Nobody-Pass-77', nobody.slice('Basic '.length));
    expectError(await http(base, '/v2/', { headers: { authorization: nobody } }), 401, 'UNAUTHORIZED');
    // The legacy user's right password does not work.
    const legacy = basic('legacy', 'legacy-secret');
    secrets.push('legacy-secret', legacy.slice('Basic '.length));
    expectError(await tokenRequest(base, [], legacy), 401, 'UNAUTHORIZED');

    const deleteLine = await waitFor('the delete audit line', () => lines((l) => l.audit === 'delete')[0]);
    await waitFor('the last denied line', () => lines((l) => l.audit === 'denied' && l.code === 'UNAUTHORIZED' && l.user === 'legacy')[0] ?? lines((l) => l.msg === 'login failed' && l.user === 'legacy')[0]);

    // push: every blob and the manifest, with the tag.
    const pushes = lines((l) => l.audit === 'push');
    for (const digest of image.blobs.keys()) {
      expect(pushes).toContainEqual(expect.objectContaining({ audit: 'push', user: 'writer', repo: 'team/app', digest, remote: '127.0.0.1' }));
    }
    expect(pushes).toContainEqual(expect.objectContaining({ audit: 'push', user: 'writer', repo: 'team/app', digest: image.digest, tag: 'v1', remote: '127.0.0.1' }));
    expect(lines((l) => l.audit === 'mount')).toEqual([
      expect.objectContaining({ user: 'writer', repo: 'team/copy', digest: mounted, from: 'team/app', remote: '127.0.0.1' }),
      expect.objectContaining({ user: 'writer', repo: 'team/copy2', digest: mounted, from: 'team/app', remote: '127.0.0.1' }),
    ]);
    expect(deleteLine).toMatchObject({ audit: 'delete', user: 'admin', repo: 'team/app', digest: image.digest, remote: '127.0.0.1' });

    // denied: who, what, where from.
    const denied = lines((l) => l.audit === 'denied');
    expect(denied).toContainEqual(expect.objectContaining({ code: 'DENIED', user: 'reader', repo: 'team/app', digest: sha256(readerBlob), method: 'POST', remote: '127.0.0.1' }));
    expect(denied).toContainEqual(expect.objectContaining({ code: 'DENIED', user: 'reader', repo: 'team/app', method: 'PUT', remote: '127.0.0.1' }));
    expect(denied).toContainEqual(expect.objectContaining({ code: 'DENIED', user: 'writer', repo: 'team/app', digest: mounted, method: 'DELETE', remote: '127.0.0.1' }));
    expect(denied).toContainEqual(expect.objectContaining({ code: 'UNAUTHORIZED', user: 'admin', repo: 'team/app', remote: '127.0.0.1' }));
    expect(denied).toContainEqual(expect.objectContaining({ code: 'UNAUTHORIZED', user: '(bearer token)', repo: 'team/app', remote: '127.0.0.1' }));
    // Anonymous refusals are audited like the others; the version check's challenge is not a refusal.
    expect(denied).toContainEqual(
      expect.objectContaining({ code: 'UNAUTHORIZED', user: '(anonymous)', repo: 'team/app', method: 'GET', path: '/v2/team/app/manifests/v1', remote: '127.0.0.1' }),
    );
    expect(denied).toContainEqual(
      expect.objectContaining({ code: 'UNAUTHORIZED', user: '(anonymous)', repo: 'team/app', digest: sha256(anonymousBlob), method: 'POST', remote: '127.0.0.1' }),
    );
    expect(denied.filter((l) => l.path === '/v2/' && l.user === '(anonymous)')).toEqual([]);
    expect(denied).toContainEqual(expect.objectContaining({ code: 'UNAUTHORIZED', user: 'nobody', path: '/v2/', remote: '127.0.0.1' }));
    expect(lines((l) => l.msg === 'login failed')).toContainEqual(expect.objectContaining({ user: 'admin', remoteAddress: '127.0.0.1' }));
    // The refused htpasswd entry is reported with its reason, not its hash.
    const refusedEntry = lines((l) => typeof l.msg === 'string' && l.msg.startsWith('htpasswd entry refused'));
    expect(refusedEntry).toEqual([expect.objectContaining({ user: 'legacy', line: 4 })]);
    expect(refusedEntry[0]!.msg).toContain('Apache MD5 ($apr1$)');

    // No secret anywhere: passwords, base64(user:password), tokens (whole, or their signature part).
    const out = cli.stdout() + cli.stderr();
    expect(tokens.length).toBe(3);
    expect(secrets.length).toBeGreaterThanOrEqual(8);
    for (const secret of [...secrets, ...tokens, ...tokens.map((t) => t.split('.')[2]!), forged]) {
      expect(out.includes(secret), `log contains a secret (${secret.slice(0, 6)}…)`).toBe(false);
    }
    expect(out).not.toContain('X1P94K2QlJrWpT2Fpvxst0'); // the legacy entry's hash
    expect(out).not.toMatch(/\$2[aby]\$\d\d\$/);
  });
});
