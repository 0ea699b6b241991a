/**
 * Access control on a live server, cell by cell: identities (anonymous, reader, writer, admin) ×
 * operations (pull manifest, pull blob, push, delete, mount, catalog) × the way credentials arrive
 * (plain Basic on /v2/, or a bearer token from GET /auth/token), in a registry with `anonymous: [pull]`
 * and in one without anonymous access. Every cell asserts the status, the spec error code, the
 * challenge (realm, service and the exact scope needed), the token's `access` claim, and that a
 * refused request changed nothing.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { expectError, expectStatus, http, MEDIA, sha256, uniqueName, type HttpResponse } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  accessMap,
  basic,
  bearer,
  decodeJwt,
  expectBearerChallenge,
  getToken,
  imageManifest,
  postBlob,
  pushImageAs,
  putManifest,
  tempDirs,
  tokenRequest,
  withAuth,
  writeHtpasswd,
  type PushedImage,
} from './support.js';

const PASSWORDS = {
  reader: 'reader-pass-1',
  writer: 'writer-pass-2',
  admin: 'admin-pass-3',
  teamwriter: 'team-pass-4',
  globber: 'glob-pass-5',
} as const;

const RULES: NonNullable<ConfigInput['auth']>['rules'] = [
  { users: ['reader'], repos: ['**'], actions: ['pull'] },
  { users: ['writer'], repos: ['**'], actions: ['pull', 'push'] },
  { users: ['admin'], repos: ['**'], actions: ['*'] },
  { users: ['teamwriter'], repos: ['team-a/**'], actions: ['pull', 'push'] },
];

const tmp = tempDirs('matrix');
let htpasswd: string;

beforeAll(async () => {
  htpasswd = join(tmp.make('users'), 'users.htpasswd');
  await writeHtpasswd(htpasswd, PASSWORDS);
});
afterAll(() => tmp.cleanup());

type Identity = 'anonymous' | 'reader' | 'writer' | 'admin';
type Flow = 'basic' | 'token';
type Op = 'pull manifest' | 'pull blob' | 'push' | 'delete' | 'mount' | 'catalog';

const IDENTITIES: Identity[] = ['anonymous', 'reader', 'writer', 'admin'];
const FLOWS: Flow[] = ['basic', 'token'];
const OPS: Op[] = ['pull manifest', 'pull blob', 'push', 'delete', 'mount', 'catalog'];

function basicOf(identity: Identity | 'teamwriter' | 'globber'): string | undefined {
  return identity === 'anonymous' ? undefined : basic(identity, PASSWORDS[identity]);
}

function adminAuth(): string {
  return basic('admin', PASSWORDS.admin);
}

/** What the rules allow `identity` on any repository (all rules above use `**`). */
function allowed(identity: Identity, anonymousPull: boolean): Set<string> {
  const anon = anonymousPull ? ['pull'] : [];
  const byUser: Record<Identity, string[]> = {
    anonymous: [],
    reader: ['pull'],
    writer: ['pull', 'push'],
    admin: ['pull', 'push', 'delete', 'catalog'],
  };
  return new Set([...anon, ...byUser[identity]]);
}

function permitted(op: Op, may: Set<string>): boolean {
  switch (op) {
    case 'pull manifest':
    case 'pull blob':
      return may.has('pull');
    case 'push':
      return may.has('push');
    case 'delete':
      return may.has('delete');
    case 'mount':
      return may.has('push') && may.has('pull');
    case 'catalog':
      return may.has('catalog');
  }
}

/** A refusal: 401 with a Bearer challenge naming `scopes` for anonymous callers, 403 DENIED for known users. */
function expectRefused(res: HttpResponse, base: string, identity: Identity, flow: Flow, scopes: string[]): void {
  if (identity === 'anonymous') {
    // No credentials: the challenge to go and get a token. A token that does not cover it: insufficient_scope.
    expectBearerChallenge(res, base, scopes, flow === 'token' ? 'insufficient_scope' : undefined);
  } else {
    const error = expectError(res, 403, 'DENIED');
    expect(error.detail).toMatchObject({ user: identity });
    expect((error.detail as { scopes: string[] }).scopes.sort()).toEqual([...scopes].sort());
    expect(res.header('www-authenticate')).toBeUndefined();
  }
}

for (const anonymousPull of [true, false]) {
  describe(`auth matrix, ${anonymousPull ? 'anonymous: [pull]' : 'no anonymous access'}`, () => {
    let srv: TestServer;
    let seeded: PushedImage;

    beforeAll(async () => {
      srv = await startTestServer({ auth: { htpasswd, anonymous: anonymousPull ? ['pull'] : [], rules: RULES } });
      seeded = await pushImageAs(srv.url, 'lib/app', adminAuth());
    });
    afterAll(async () => srv?.close());

    /** The Authorization header a cell uses; in the token flow also checks what the token grants. */
    async function credentialsFor(identity: Identity, flow: Flow, scopes: string[], expectedGrant: Record<string, string[]>): Promise<string | undefined> {
      if (flow === 'basic') return basicOf(identity);
      const { body, jwt } = await getToken(srv.url, scopes, basicOf(identity));
      expect(jwt.header).toMatchObject({ alg: 'ES256', typ: 'JWT' });
      expect(typeof jwt.header.kid).toBe('string');
      expect(jwt.payload).toMatchObject({ iss: 'airlock', aud: 'airlock', sub: identity === 'anonymous' ? '' : identity });
      // tokenTTL default 5m; iat is rounded down and exp up, so the token lives at least expires_in seconds.
      expect([300, 301]).toContain(jwt.payload.exp - jwt.payload.iat);
      expect(jwt.payload.exp * 1000).toBeGreaterThanOrEqual(Date.parse(body.issued_at) + 300_000);
      expect(body.expires_in).toBe(300);
      expect(Math.abs(Date.parse(body.issued_at) - Date.now())).toBeLessThan(5_000);
      expect(accessMap(jwt.payload.access)).toEqual(expectedGrant);
      return bearer(body.token);
    }

    function grant(actions: string[], may: Set<string>): string[] {
      return actions.filter((a) => may.has(a)).sort();
    }

    for (const identity of IDENTITIES) {
      const may = allowed(identity, anonymousPull);
      for (const flow of FLOWS) {
        for (const op of OPS) {
          const ok = permitted(op, may);
          it(`${identity} × ${op} × ${flow}: ${ok ? 'allowed' : identity === 'anonymous' ? '401 + challenge' : '403 DENIED'}`, async () => {
            const base = srv.url;
            switch (op) {
              case 'pull manifest': {
                const scope = `repository:${seeded.repo}:pull`;
                const auth = await credentialsFor(identity, flow, [scope], { [`repository:${seeded.repo}`]: grant(['pull'], may) });
                const res = await http(base, `/v2/${seeded.repo}/manifests/${seeded.tag}`, { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
                if (ok) {
                  expectStatus(res, 200);
                  expect(res.body.equals(seeded.manifest)).toBe(true);
                } else {
                  expectRefused(res, base, identity, flow, [scope]);
                  expect(res.text).not.toContain(seeded.digest);
                }
                return;
              }
              case 'pull blob': {
                const [digest, data] = [...seeded.blobs][0]!;
                const scope = `repository:${seeded.repo}:pull`;
                const auth = await credentialsFor(identity, flow, [scope], { [`repository:${seeded.repo}`]: grant(['pull'], may) });
                const res = await http(base, `/v2/${seeded.repo}/blobs/${digest}`, { headers: withAuth(auth) });
                if (ok) {
                  expectStatus(res, 200);
                  expect(res.body.equals(data)).toBe(true);
                } else {
                  expectRefused(res, base, identity, flow, [scope]);
                }
                return;
              }
              case 'push': {
                const repo = `push/${uniqueName(identity)}`;
                const auth = await credentialsFor(identity, flow, [`repository:${repo}:pull,push`], { [`repository:${repo}`]: grant(['pull', 'push'], may) });
                const layer = randomBytes(1000);
                const config = Buffer.from(`{"nonce":"${randomBytes(4).toString('hex')}"}`);
                const blobRes = await postBlob(base, repo, layer, auth);
                const configRes = await postBlob(base, repo, config, auth);
                const manifest = imageManifest(config, [layer]);
                const putRes = await putManifest(base, repo, 'v1', manifest, auth);
                if (ok) {
                  expectStatus(blobRes, 201);
                  expectStatus(configRes, 201);
                  expectStatus(putRes, 201);
                  expect(putRes.header('docker-content-digest')).toBe(sha256(manifest));
                  const back = await http(base, `/v2/${repo}/manifests/v1`, { headers: withAuth(adminAuth(), { accept: MEDIA.ociManifest }) });
                  expect(back.body.equals(manifest)).toBe(true);
                } else {
                  for (const res of [blobRes, configRes, putRes]) expectRefused(res, base, identity, flow, [`repository:${repo}:push`]);
                  // Nothing of it was stored.
                  expectStatus(await http(base, `/v2/${repo}/blobs/${sha256(layer)}`, { method: 'HEAD', headers: withAuth(adminAuth()) }), 404);
                  expectError(await http(base, `/v2/${repo}/manifests/v1`, { headers: withAuth(adminAuth(), { accept: MEDIA.ociManifest }) }), 404, 'MANIFEST_UNKNOWN');
                }
                return;
              }
              case 'delete': {
                const victim = await pushImageAs(base, `del/${uniqueName(identity)}`, adminAuth(), 'v1', 1);
                const scope = `repository:${victim.repo}:delete`;
                const auth = await credentialsFor(identity, flow, [scope], { [`repository:${victim.repo}`]: grant(['delete'], may) });
                const res = await http(base, `/v2/${victim.repo}/manifests/${victim.digest}`, { method: 'DELETE', headers: withAuth(auth) });
                const after = await http(base, `/v2/${victim.repo}/manifests/${victim.digest}`, { headers: withAuth(adminAuth(), { accept: MEDIA.ociManifest }) });
                if (ok) {
                  expectStatus(res, 202);
                  expectError(after, 404, 'MANIFEST_UNKNOWN');
                } else {
                  expectRefused(res, base, identity, flow, [scope]);
                  expectStatus(after, 200);
                  expect(after.body.equals(victim.manifest)).toBe(true);
                }
                return;
              }
              case 'mount': {
                const target = `mnt/${uniqueName(identity)}`;
                const [digest] = [...seeded.blobs][0]!;
                const auth = await credentialsFor(identity, flow, [`repository:${target}:pull,push`, `repository:${seeded.repo}:pull`], {
                  [`repository:${target}`]: grant(['pull', 'push'], may),
                  [`repository:${seeded.repo}`]: grant(['pull'], may),
                });
                const res = await http(base, `/v2/${target}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${seeded.repo}`, {
                  method: 'POST',
                  headers: withAuth(auth, { 'content-length': 0 }),
                });
                const inTarget = await http(base, `/v2/${target}/blobs/${digest}`, { method: 'HEAD', headers: withAuth(adminAuth()) });
                if (ok) {
                  expectStatus(res, 201);
                  expect(res.header('location')).toBe(`/v2/${target}/blobs/${digest}`);
                  expectStatus(inTarget, 200);
                } else {
                  expectRefused(res, base, identity, flow, [`repository:${target}:push`, `repository:${seeded.repo}:pull`]);
                  expectStatus(inTarget, 404);
                }
                return;
              }
              case 'catalog': {
                const scope = 'registry:catalog:*';
                const auth = await credentialsFor(identity, flow, [scope], { 'registry:catalog': may.has('catalog') ? ['*'] : [] });
                const res = await http(base, '/v2/_catalog', { headers: withAuth(auth) });
                if (ok) {
                  expectStatus(res, 200);
                  expect(res.json<{ repositories: string[] }>().repositories).toContain(seeded.repo);
                } else {
                  expectRefused(res, base, identity, flow, [scope]);
                  expect(res.text).not.toContain(seeded.repo);
                }
                return;
              }
            }
          });
        }
      }
    }

    it('GET /v2/ asks for credentials even where anonymous pull is open, and answers 200 to any valid user', async () => {
      expectBearerChallenge(await http(srv.url, '/v2/'), srv.url, []);
      for (const identity of ['reader', 'writer', 'admin'] as const) {
        const res = await http(srv.url, '/v2/', { headers: withAuth(basicOf(identity)) });
        expectStatus(res, 200);
        expect(res.header('docker-distribution-api-version')).toBe('registry/2.0');
      }
      const { body } = await getToken(srv.url, [], basicOf('reader'));
      expectStatus(await http(srv.url, '/v2/', { headers: withAuth(bearer(body.token)) }), 200);
    });

    it('a wrong password or an unknown user is 401 with a challenge on /v2/ and on the token endpoint; no token is issued', async () => {
      for (const auth of [basic('reader', 'not-the-password'), basic('nobody', PASSWORDS.reader)]) {
        const v2 = await http(srv.url, `/v2/${seeded.repo}/manifests/${seeded.tag}`, { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
        expectBearerChallenge(v2, srv.url, [`repository:${seeded.repo}:pull`]);
        expect(v2.json<{ errors: { message: string }[] }>().errors[0]!.message).toBe('invalid user name or password');
        const token = await tokenRequest(srv.url, [`repository:${seeded.repo}:pull`], auth);
        expectError(token, 401, 'UNAUTHORIZED');
        expect(token.header('www-authenticate')).toBe('Basic realm="airlock"');
        expect(token.text).not.toContain('"token"');
      }
    });

    it('the token endpoint refuses a bearer token as credentials and a foreign service name', async () => {
      const { body } = await getToken(srv.url, [], basicOf('admin'));
      expectError(await tokenRequest(srv.url, [], bearer(body.token)), 401, 'UNAUTHORIZED');
      const foreign = await tokenRequest(srv.url, [`repository:${seeded.repo}:pull`], basicOf('admin'), 'registry.docker.io');
      expectError(foreign, 403, 'DENIED');
    });

    it('a token grants only what the rules allow, per requested scope, whatever is asked for', async () => {
      const scopes = [
        `repository:${seeded.repo}:pull,push,delete`,
        'repository:other/repo:*',
        'registry:catalog:*',
        'repository:Invalid..Name:pull', // not a repository name: no entry at all
        'nonsense',
      ];
      const expectations: Record<Identity, Record<string, string[]>> = {
        anonymous: {
          [`repository:${seeded.repo}`]: anonymousPull ? ['pull'] : [],
          'repository:other/repo': anonymousPull ? ['pull'] : [],
          'registry:catalog': [],
        },
        reader: { [`repository:${seeded.repo}`]: ['pull'], 'repository:other/repo': ['pull'], 'registry:catalog': [] },
        writer: { [`repository:${seeded.repo}`]: ['pull', 'push'], 'repository:other/repo': ['pull', 'push'], 'registry:catalog': [] },
        admin: {
          [`repository:${seeded.repo}`]: ['delete', 'pull', 'push'],
          'repository:other/repo': ['delete', 'pull', 'push'],
          'registry:catalog': ['*'],
        },
      };
      for (const identity of IDENTITIES) {
        const { jwt } = await getToken(srv.url, scopes, basicOf(identity));
        expect(accessMap(jwt.payload.access), identity).toEqual(expectations[identity]);
      }
      // Several scopes in one space-separated parameter count like separate parameters.
      const { jwt } = await getToken(srv.url, [`repository:${seeded.repo}:push repository:x/y:pull`], basicOf('reader'));
      expect(accessMap(jwt.payload.access)).toEqual({ [`repository:${seeded.repo}`]: [], 'repository:x/y': ['pull'] });
    });

    it('a token for one repository does not open another, nor a wider action on the same one', async () => {
      const { body } = await getToken(srv.url, ['repository:some/other:pull,push'], basicOf('writer'));
      const elsewhere = await http(srv.url, `/v2/${seeded.repo}/manifests/${seeded.tag}`, { headers: withAuth(bearer(body.token), { accept: MEDIA.ociManifest }) });
      // The writer could get such a token: tell the client to fetch one (insufficient_scope), don't deny.
      expectBearerChallenge(elsewhere, srv.url, [`repository:${seeded.repo}:pull`], 'insufficient_scope');
      const pullOnly = await getToken(srv.url, [`repository:${seeded.repo}:pull`], basicOf('writer'));
      const push = await postBlob(srv.url, seeded.repo, randomBytes(10), bearer(pullOnly.body.token));
      expectBearerChallenge(push, srv.url, [`repository:${seeded.repo}:push`], 'insufficient_scope');
    });

    it('the signing key survives a restart: a token issued before restart() still works after it', async () => {
      const { body } = await getToken(srv.url, [`repository:${seeded.repo}:pull`], basicOf('reader'));
      const before = decodeJwt(body.token).header.kid;
      await srv.restart();
      const res = await http(srv.url, `/v2/${seeded.repo}/manifests/${seeded.tag}`, { headers: withAuth(bearer(body.token), { accept: MEDIA.ociManifest }) });
      expectStatus(res, 200);
      expect(res.body.equals(seeded.manifest)).toBe(true);
      const again = await getToken(srv.url, [`repository:${seeded.repo}:pull`], basicOf('reader'));
      expect(decodeJwt(again.body.token).header.kid).toBe(before);
    });

    describe('mount needs push on the target AND pull on the source', () => {
      let teamB: PushedImage;
      let teamA: PushedImage;
      const teamAuth = () => basicOf('teamwriter');

      beforeAll(async () => {
        teamB = await pushImageAs(srv.url, `team-b/x-${anonymousPull ? 'open' : 'closed'}`, adminAuth(), 'v1', 1);
        teamA = await pushImageAs(srv.url, `team-a/src-${anonymousPull ? 'open' : 'closed'}`, adminAuth(), 'v1', 1);
      });

      function mount(target: string, digest: string, from: string | undefined, auth: string | undefined): Promise<HttpResponse> {
        const query = `mount=${encodeURIComponent(digest)}${from === undefined ? '' : `&from=${from}`}`;
        return http(srv.url, `/v2/${target}/blobs/uploads/?${query}`, { method: 'POST', headers: withAuth(auth, { 'content-length': 0 }) });
      }

      it('a mount without from= takes the blob from a repository the user may pull that links it (201)', async () => {
        const [digest] = [...teamA.blobs][0]!;
        const target = `team-a/${uniqueName('dst')}`;
        const res = await mount(target, digest, undefined, teamAuth());
        expectStatus(res, 201);
        expect(res.header('location')).toBe(`/v2/${target}/blobs/${digest}`);
        expectStatus(await http(srv.url, `/v2/${target}/blobs/${digest}`, { headers: withAuth(teamAuth()) }), 200);
      });

      it('a mount without from= finds a readable repository even when unreadable ones also link the blob (201)', async () => {
        // The same bytes in team-0 (listed first; the team-a writer may not pull it) and in team-a.
        const data = randomBytes(64);
        const digest = sha256(data);
        expectStatus(await postBlob(srv.url, `team-0/${uniqueName('hidden')}`, data, adminAuth()), 201);
        expectStatus(await postBlob(srv.url, `team-a/${uniqueName('shared')}`, data, adminAuth()), 201);
        const target = `team-a/${uniqueName('dst')}`;
        expectStatus(await mount(target, digest, undefined, teamAuth()), 201);
        expectStatus(await http(srv.url, `/v2/${target}/blobs/${digest}`, { method: 'HEAD', headers: withAuth(teamAuth()) }), 200);
      });

      it('a writer limited to team-a/** mounts from team-a/… (201)', async () => {
        const [digest] = [...teamA.blobs][0]!;
        const target = `team-a/${uniqueName('dst')}`;
        expectStatus(await mount(target, digest, teamA.repo, teamAuth()), 201);
        expectStatus(await http(srv.url, `/v2/${target}/blobs/${digest}`, { headers: withAuth(teamAuth()) }), 200);
      });

      if (anonymousPull) {
        it('with anonymous pull open, team-b/x is readable by everyone, so the team-a writer may mount from it (201)', async () => {
          const [digest] = [...teamB.blobs][0]!;
          expectStatus(await mount(`team-a/${uniqueName('dst')}`, digest, teamB.repo, teamAuth()), 201);
        });
      } else {
        it('a writer limited to team-a/** mounting from team-b/x, which it cannot pull, is refused (403, never 201), by Basic and by token', async () => {
          const [digest] = [...teamB.blobs][0]!;
          const target = `team-a/${uniqueName('dst')}`;
          const byBasic = await mount(target, digest, teamB.repo, teamAuth());
          expect(byBasic.status).not.toBe(201);
          expectError(byBasic, 403, 'DENIED');

          const { body, jwt } = await getToken(srv.url, [`repository:${target}:pull,push`, `repository:${teamB.repo}:pull`], teamAuth());
          expect(accessMap(jwt.payload.access)).toEqual({ [`repository:${target}`]: ['pull', 'push'], [`repository:${teamB.repo}`]: [] });
          const byToken = await mount(target, digest, teamB.repo, bearer(body.token));
          expect(byToken.status).not.toBe(201);
          expectError(byToken, 403, 'DENIED');

          expectStatus(await http(srv.url, `/v2/${target}/blobs/${digest}`, { method: 'HEAD', headers: withAuth(adminAuth()) }), 404);
          // And the blob cannot be read through team-a afterwards.
          expectError(await http(srv.url, `/v2/${target}/blobs/${digest}`, { headers: withAuth(teamAuth()) }), 404, 'BLOB_UNKNOWN');
        });

        it('a mount without from= does not pick the blob out of a repository the user cannot pull (falls back to an upload session)', async () => {
          const [digest] = [...teamB.blobs][0]!;
          const target = `team-a/${uniqueName('dst')}`;
          const res = await mount(target, digest, undefined, teamAuth());
          expect(res.status).not.toBe(201);
          expectStatus(res, 202);
          expect(res.header('location')).toMatch(new RegExp(`^/v2/${target}/blobs/uploads/[0-9a-f-]{36}$`));
          expectError(await http(srv.url, `/v2/${target}/blobs/${digest}`, { headers: withAuth(teamAuth()) }), 404, 'BLOB_UNKNOWN');
          expectStatus(await http(srv.url, res.header('location')!, { method: 'DELETE', headers: withAuth(teamAuth()) }), 204);
        });
      }
    });
  });
}

describe('glob rules: `*` is one component, `**` any depth, the first matching rule decides', () => {
  let srv: TestServer;
  const globber = () => basic('globber', PASSWORDS.globber);

  beforeAll(async () => {
    srv = await startTestServer({
      auth: {
        htpasswd,
        rules: [
          // Listed first, so it wins over the ocp4/* rule below for this one repository.
          { users: ['globber'], repos: ['ocp4/frozen'], actions: ['pull'] },
          { users: ['globber'], repos: ['ocp4/*'], actions: ['pull', 'push'] },
          { users: ['globber'], repos: ['ocp4/**'], actions: ['pull'] },
          { users: ['*'], repos: ['shared/**'], actions: ['pull'] },
          { users: ['admin'], repos: ['**'], actions: ['*'] },
        ],
      },
    });
  });
  afterAll(async () => srv?.close());

  const cases: { repo: string; grant: string[]; why: string }[] = [
    { repo: 'ocp4/release', grant: ['pull', 'push'], why: 'ocp4/* matches one component below ocp4' },
    { repo: 'ocp4/a/b', grant: ['pull'], why: 'ocp4/* stops at one component; ocp4/** matches any depth' },
    { repo: 'ocp4', grant: ['pull'], why: 'ocp4/** matches ocp4 itself (zero components), ocp4/* does not' },
    { repo: 'ocp4/frozen', grant: ['pull'], why: 'the first matching rule decides, not the most generous one' },
    { repo: 'ocp4x/release', grant: [], why: 'globs match whole components: ocp4x is not ocp4' },
    { repo: 'shared/base/ubi9', grant: ['pull'], why: 'users: ["*"] covers every authenticated user' },
  ];

  for (const c of cases) {
    it(`globber on ${c.repo}: ${c.grant.join('+') || 'nothing'} (${c.why})`, async () => {
      const { body, jwt } = await getToken(srv.url, [`repository:${c.repo}:pull,push,delete`], globber());
      expect(accessMap(jwt.payload.access)).toEqual({ [`repository:${c.repo}`]: [...c.grant].sort() });

      for (const auth of [globber(), bearer(body.token)]) {
        // Pull: allowed → the repository is simply empty (404 MANIFEST_UNKNOWN); refused → 403.
        const pull = await http(srv.url, `/v2/${c.repo}/manifests/latest`, { headers: withAuth(auth, { accept: MEDIA.ociManifest }) });
        if (c.grant.includes('pull')) expectError(pull, 404, 'MANIFEST_UNKNOWN');
        else expectError(pull, 403, 'DENIED');
        const push = await postBlob(srv.url, c.repo, randomBytes(64), auth);
        if (c.grant.includes('push')) expectStatus(push, 201);
        else expectError(push, 403, 'DENIED');
        const del = await http(srv.url, `/v2/${c.repo}/manifests/sha256:${'0'.repeat(64)}`, { method: 'DELETE', headers: withAuth(auth) });
        expectError(del, 403, 'DENIED');
      }
    });
  }

  it('a user named by no rule gets nothing, anywhere but where users: ["*"] applies', async () => {
    const { jwt } = await getToken(srv.url, ['repository:ocp4/release:pull', 'repository:shared/x:pull,push'], basic('reader', PASSWORDS.reader));
    expect(accessMap(jwt.payload.access)).toEqual({ 'repository:ocp4/release': [], 'repository:shared/x': ['pull'] });
    expectError(await http(srv.url, '/v2/ocp4/release/tags/list', { headers: withAuth(basic('reader', PASSWORDS.reader)) }), 403, 'DENIED');
  });
});
