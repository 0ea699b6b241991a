import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AccessNeed } from '../../src/auth/authorizer.js';
import { Authorizer } from '../../src/auth/authorizer.js';
import type { AuthConfig } from '../../src/config/schema.js';
import { RegistryError } from '../../src/registry/errors.js';
import { basicHeader, captureLogger, TEST_COST, tempDir } from './helpers.js';

const REALM = 'https://registry.example:5000/token';
const PASSWORDS = { reader: 'reader-pw-1', writer: 'writer-pw-2', admin: 'admin-pw-3' } as const;

let dir: string;
let cleanup: () => void;
let capture: ReturnType<typeof captureLogger>;
let now: number;

function makeAuthorizer(overrides: Partial<AuthConfig> = {}): Authorizer {
  const config: AuthConfig = {
    htpasswd: 'users.htpasswd',
    anonymous: ['pull'],
    tokenTTL: 300_000,
    rules: [
      { users: ['admin'], repos: ['**'], actions: ['*'] },
      { users: ['writer'], repos: ['**'], actions: ['pull', 'push', 'delete'] },
      { users: ['reader'], repos: ['**'], actions: ['pull'] },
    ],
    ...overrides,
  };
  return new Authorizer(config, join(dir, 'storage'), capture.log, { baseDir: dir, now: () => now });
}

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  capture = captureLogger();
  now = Date.parse('2030-06-01T12:00:00Z');
  const lines = Object.entries(PASSWORDS).map(([user, pw]) => `${user}:${bcrypt.hashSync(pw, TEST_COST)}`);
  writeFileSync(join(dir, 'users.htpasswd'), lines.join('\n') + '\n');
});
afterEach(() => cleanup());

const pull = (name: string): AccessNeed => ({ resource: { type: 'repository', name }, actions: ['pull'] });
const push = (name: string): AccessNeed => ({ resource: { type: 'repository', name }, actions: ['pull', 'push'] });
const del = (name: string): AccessNeed => ({ resource: { type: 'repository', name }, actions: ['delete'] });
const catalog: AccessNeed = { resource: { type: 'registry', name: 'catalog' }, actions: ['catalog'] };
const basic = (user: keyof typeof PASSWORDS) => basicHeader(user, PASSWORDS[user]);

/** The RegistryError a promise rejects with. */
async function failure(promise: Promise<unknown>): Promise<RegistryError> {
  try {
    await promise;
  } catch (e) {
    expect(e).toBeInstanceOf(RegistryError);
    return e as RegistryError;
  }
  throw new Error('expected a RegistryError, but the call succeeded');
}

describe('Authorizer.authorize', () => {
  it('lets anonymous clients pull when anonymous allows it', async () => {
    const auth = makeAuthorizer();
    await expect(auth.authorize(undefined, [pull('team/app')], REALM)).resolves.toEqual({});
  });

  it('challenges anonymous clients for anything more, naming the needed scope', async () => {
    const auth = makeAuthorizer();
    const error = await failure(auth.authorize(undefined, [push('team/app')], REALM));
    expect(error.code).toBe('UNAUTHORIZED');
    expect(error.status).toBe(401);
    expect(error.headers['WWW-Authenticate']).toBe(`Bearer realm="${REALM}",service="airlock",scope="repository:team/app:pull,push"`);
  });

  it('challenges anonymous pulls when anonymous access is off', async () => {
    const auth = makeAuthorizer({ anonymous: [] });
    const error = await failure(auth.authorize(undefined, [pull('team/app')], REALM));
    expect(error.code).toBe('UNAUTHORIZED');
  });

  it('always challenges the credential-less version check, so clients log in for real', async () => {
    const auth = makeAuthorizer();
    const error = await failure(auth.authorize(undefined, [], REALM));
    expect(error.code).toBe('UNAUTHORIZED');
    expect(error.headers['WWW-Authenticate']).toBe(`Bearer realm="${REALM}",service="airlock"`);
    await expect(auth.authorize(basic('reader'), [], REALM)).resolves.toEqual({ user: 'reader' });
  });

  it('reader may pull but not push or delete (403 DENIED)', async () => {
    const auth = makeAuthorizer();
    await expect(auth.authorize(basic('reader'), [pull('team/app')], REALM)).resolves.toEqual({ user: 'reader' });
    const pushError = await failure(auth.authorize(basic('reader'), [push('team/app')], REALM));
    expect(pushError.code).toBe('DENIED');
    expect(pushError.status).toBe(403);
    expect(pushError.message).toContain('"reader" may not pull,push on repository "team/app"');
    expect((await failure(auth.authorize(basic('reader'), [del('team/app')], REALM))).code).toBe('DENIED');
  });

  it('writer may pull, push and delete but not list the catalog', async () => {
    const auth = makeAuthorizer();
    await expect(auth.authorize(basic('writer'), [push('ocp4/openshift4'), pull('other/base')], REALM)).resolves.toEqual({ user: 'writer' });
    await expect(auth.authorize(basic('writer'), [del('ocp4/openshift4')], REALM)).resolves.toEqual({ user: 'writer' });
    expect((await failure(auth.authorize(basic('writer'), [catalog], REALM))).code).toBe('DENIED');
  });

  it('admin may do everything, the catalog included', async () => {
    const auth = makeAuthorizer();
    await expect(auth.authorize(basic('admin'), [push('a/b'), del('a/b'), catalog], REALM)).resolves.toEqual({ user: 'admin' });
  });

  it('answers a wrong password, an unknown user and a malformed header with 401 and a challenge', async () => {
    const auth = makeAuthorizer();
    for (const header of [basicHeader('reader', 'wrong'), basicHeader('nobody', 'x'), basicHeader('', 'x'), 'Basic %%%', 'Negotiate abc']) {
      const error = await failure(auth.authorize(header, [pull('team/app')], REALM));
      expect(error.code, header).toBe('UNAUTHORIZED');
      expect(error.headers['WWW-Authenticate'], header).toContain('scope="repository:team/app:pull"');
    }
  });

  it('fails at ready() when the htpasswd file is missing', async () => {
    const auth = new Authorizer({ htpasswd: 'missing.htpasswd', anonymous: [], rules: [], tokenTTL: 1000 }, join(dir, 'storage'), capture.log, { baseDir: dir });
    await expect(auth.ready()).rejects.toThrow(/missing\.htpasswd/);
  });
});

describe('Authorizer.issueToken and bearer tokens', () => {
  const request = (authorizationHeader: string | undefined, scopes: string[], service: string | undefined = 'airlock') => ({
    authorizationHeader,
    service,
    scopes,
    remoteAddress: '10.0.0.7',
  });

  it('grants the requested actions the user is allowed, and drops the rest', async () => {
    const auth = makeAuthorizer();
    const issued = await auth.issueToken(request(basic('reader'), ['repository:team/app:pull,push']));
    expect(issued.expires_in).toBe(300);
    expect(decodeJwt(issued.token)).toMatchObject({ sub: 'reader', access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] });
  });

  it('reads several scopes, in separate parameters or space-separated in one', async () => {
    const auth = makeAuthorizer();
    const issued = await auth.issueToken(request(basic('writer'), ['repository:a/b:pull,push repository:c/d:pull', 'repository:e:delete', 'registry:catalog:*']));
    expect(decodeJwt(issued.token).access).toEqual([
      { type: 'repository', name: 'a/b', actions: ['pull', 'push'] },
      { type: 'repository', name: 'c/d', actions: ['pull'] },
      { type: 'repository', name: 'e', actions: ['delete'] },
      { type: 'registry', name: 'catalog', actions: [] },
    ]);
  });

  it('issues anonymous tokens with the anonymous actions', async () => {
    const auth = makeAuthorizer();
    const issued = await auth.issueToken(request(undefined, ['repository:team/app:pull,push']));
    expect(decodeJwt(issued.token)).toMatchObject({ sub: '', access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] });
    await expect(auth.authorize(`Bearer ${issued.token}`, [pull('team/app')], REALM)).resolves.toEqual({ user: undefined });
    const error = await failure(auth.authorize(`Bearer ${issued.token}`, [push('team/app')], REALM));
    // Anonymous: more access needs credentials, so 401 (not 403).
    expect(error.code).toBe('UNAUTHORIZED');
  });

  it('ignores unparsable scopes, unknown resource types and invalid repository names', async () => {
    const auth = makeAuthorizer();
    const issued = await auth.issueToken(request(basic('admin'), ['nonsense', 'repository:Bad Name:pull', 'plugin:x:pull', 'repository:ok:pull']));
    expect(decodeJwt(issued.token).access).toEqual([{ type: 'repository', name: 'ok', actions: ['pull'] }]);
  });

  it('a token lets its holder do exactly what it grants', async () => {
    const auth = makeAuthorizer();
    const { token } = await auth.issueToken(request(basic('writer'), ['repository:team/app:pull,push']));
    await expect(auth.authorize(`Bearer ${token}`, [push('team/app')], REALM)).resolves.toEqual({ user: 'writer' });
    // Allowed by the rules but not in this token: ask the client to fetch a wider one.
    const error = await failure(auth.authorize(`Bearer ${token}`, [pull('other/app')], REALM));
    expect(error.code).toBe('UNAUTHORIZED');
    expect(error.headers['WWW-Authenticate']).toBe(`Bearer realm="${REALM}",service="airlock",scope="repository:other/app:pull",error="insufficient_scope"`);
  });

  it('answers 403 when the token holder could never get the access', async () => {
    const auth = makeAuthorizer();
    const { token } = await auth.issueToken(request(basic('reader'), ['repository:team/app:pull,push']));
    expect((await failure(auth.authorize(`Bearer ${token}`, [push('team/app')], REALM))).code).toBe('DENIED');
  });

  it('grants the catalog to admin as registry:catalog:*', async () => {
    const auth = makeAuthorizer();
    const { token } = await auth.issueToken(request(basic('admin'), ['registry:catalog:*']));
    expect(decodeJwt(token).access).toEqual([{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    await expect(auth.authorize(`Bearer ${token}`, [catalog], REALM)).resolves.toEqual({ user: 'admin' });
  });

  it('refuses expired and forged tokens with invalid_token', async () => {
    const auth = makeAuthorizer();
    const { token } = await auth.issueToken(request(basic('writer'), ['repository:team/app:pull']));
    const forged = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const forgedError = await failure(auth.authorize(`Bearer ${forged}`, [pull('team/app')], REALM));
    expect(forgedError.headers['WWW-Authenticate']).toContain('error="invalid_token"');
    now += 301_000;
    const expiredError = await failure(auth.authorize(`Bearer ${token}`, [pull('team/app')], REALM));
    expect(expiredError.code).toBe('UNAUTHORIZED');
    expect(expiredError.headers['WWW-Authenticate']).toContain('error="invalid_token"');
  });

  it('answers wrong credentials with 401 and a Basic challenge', async () => {
    const auth = makeAuthorizer();
    const error = await failure(auth.issueToken(request(basicHeader('writer', 'nope'), ['repository:a:pull'])));
    expect(error.code).toBe('UNAUTHORIZED');
    expect(error.headers['WWW-Authenticate']).toBe('Basic realm="airlock"');
    expect((await failure(auth.issueToken(request('Bearer abc', [])))).code).toBe('UNAUTHORIZED');
  });

  it('refuses tokens for another service', async () => {
    const auth = makeAuthorizer();
    expect((await failure(auth.issueToken(request(basic('admin'), [], 'registry.docker.io')))).code).toBe('DENIED');
    await expect(auth.issueToken(request(basic('admin'), [], undefined))).resolves.toHaveProperty('token');
  });

  it('never logs passwords or tokens', async () => {
    const auth = makeAuthorizer();
    const { token } = await auth.issueToken(request(basic('writer'), ['repository:a:pull']));
    await auth.authorize(`Bearer ${token}`, [pull('a')], REALM);
    await failure(auth.authorize(`Bearer ${token}x`, [pull('a')], REALM));
    await failure(auth.issueToken(request(basicHeader('writer', 'wrong-guess-123'), [])));
    await auth.authorize(basic('admin'), [pull('a')], REALM);
    const logged = capture.text();
    expect(logged).toContain('token issued');
    expect(logged).toContain('login failed');
    for (const secret of [token, token.split('.')[2]!, 'wrong-guess-123', ...Object.values(PASSWORDS)]) expect(logged).not.toContain(secret);
  });
});

describe('failed-login back-off', () => {
  const tokenRequest = (password: string, remoteAddress = '10.0.0.9') => ({
    authorizationHeader: basicHeader('writer', password),
    service: 'airlock',
    scopes: [],
    remoteAddress,
  });

  it('answers 429 with a growing Retry-After after 5 failures, per user and address', async () => {
    const auth = makeAuthorizer();
    for (let i = 0; i < 5; i++) expect((await failure(auth.issueToken(tokenRequest('wrong')))).code).toBe('UNAUTHORIZED');

    // Blocked: even the right password is refused, or the answer would confirm a guess.
    const blocked = await failure(auth.issueToken(tokenRequest(PASSWORDS.writer)));
    expect(blocked.code).toBe('TOOMANYREQUESTS');
    expect(blocked.status).toBe(429);
    expect(blocked.headers['Retry-After']).toBe('1');

    // The same user from another address is not affected.
    await expect(auth.issueToken(tokenRequest(PASSWORDS.writer, '10.0.0.10'))).resolves.toHaveProperty('token');

    now += 1_000;
    expect((await failure(auth.issueToken(tokenRequest('wrong')))).code).toBe('UNAUTHORIZED');
    expect((await failure(auth.issueToken(tokenRequest(PASSWORDS.writer)))).headers['Retry-After']).toBe('2');
    now += 2_000;
    expect((await failure(auth.issueToken(tokenRequest('wrong')))).code).toBe('UNAUTHORIZED');
    expect((await failure(auth.issueToken(tokenRequest(PASSWORDS.writer)))).headers['Retry-After']).toBe('4');

    // Waiting it out and logging in correctly starts over.
    now += 4_000;
    await expect(auth.issueToken(tokenRequest(PASSWORDS.writer))).resolves.toHaveProperty('token');
    expect((await failure(auth.issueToken(tokenRequest('wrong')))).code).toBe('UNAUTHORIZED');
    await expect(auth.issueToken(tokenRequest(PASSWORDS.writer))).resolves.toHaveProperty('token');
  });

  it('counts Basic failures on registry requests too', async () => {
    const auth = makeAuthorizer();
    for (let i = 0; i < 5; i++) await failure(auth.authorize(basicHeader('writer', 'wrong'), [pull('a')], REALM, '10.0.0.11'));
    const blocked = await failure(auth.authorize(basic('writer'), [pull('a')], REALM, '10.0.0.11'));
    expect(blocked.code).toBe('TOOMANYREQUESTS');
    expect(blocked.headers['Retry-After']).toBe('1');
  });
});
