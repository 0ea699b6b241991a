import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { decodeJwt, decodeProtectedHeader, generateKeyPair, SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signingKeyPath, TokenError, TokenIssuer } from '../../src/auth/tokens.js';
import { tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const access = [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }];

describe('TokenIssuer', () => {
  it('issues a token whose claims follow the Docker token spec', async () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    const issuer = await TokenIssuer.open(dir, { now: () => now });
    const issued = await issuer.issue({ subject: 'alice', access, service: 'airlock', ttlMs: 300_000 });

    expect(issued.access_token).toBe(issued.token);
    expect(issued.expires_in).toBe(300);
    expect(issued.issued_at).toBe('2030-01-01T00:00:00.000Z');
    expect(decodeProtectedHeader(issued.token)).toMatchObject({ alg: 'ES256', typ: 'JWT', kid: issuer.keyId });
    const claims = decodeJwt(issued.token);
    expect(claims).toMatchObject({ iss: 'airlock', sub: 'alice', aud: 'airlock', iat: now / 1000, nbf: now / 1000, exp: now / 1000 + 300, access });
    expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);

    const verified = await issuer.verify(issued.token);
    expect(verified.sub).toBe('alice');
    expect(verified.access).toEqual(access);
  });

  it('gives every token its own jti', async () => {
    const issuer = await TokenIssuer.open(dir);
    const a = await issuer.issue({ subject: 'alice', access, ttlMs: 60_000 });
    const b = await issuer.issue({ subject: 'alice', access, ttlMs: 60_000 });
    expect(decodeJwt(a.token).jti).not.toBe(decodeJwt(b.token).jti);
  });

  it('rejects an expired token', async () => {
    let now = Date.now();
    const issuer = await TokenIssuer.open(dir, { now: () => now });
    const { token } = await issuer.issue({ subject: 'alice', access, ttlMs: 60_000 });
    now += 59_000;
    await expect(issuer.verify(token)).resolves.toMatchObject({ sub: 'alice' });
    now += 2_000;
    await expect(issuer.verify(token)).rejects.toThrow(TokenError);
    await expect(issuer.verify(token)).rejects.toThrow(/exp/);
  });

  it('rejects a token whose claims were altered', async () => {
    const issuer = await TokenIssuer.open(dir);
    const { token } = await issuer.issue({ subject: 'alice', access: [], ttlMs: 60_000 });
    const [header, , signature] = token.split('.');
    const forgedPayload = Buffer.from(JSON.stringify({ ...decodeJwt(token), access })).toString('base64url');
    await expect(issuer.verify(`${header}.${forgedPayload}.${signature}`)).rejects.toThrow(/signature/);
  });

  it('rejects an unsigned (alg none) token', async () => {
    const issuer = await TokenIssuer.open(dir);
    const { token } = await issuer.issue({ subject: 'alice', access, ttlMs: 60_000 });
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
    await expect(issuer.verify(`${header}.${token.split('.')[1]}.`)).rejects.toThrow(TokenError);
  });

  it('rejects a token signed by another key', async () => {
    const issuer = await TokenIssuer.open(dir);
    const { privateKey } = await generateKeyPair('ES256');
    const now = Math.floor(Date.now() / 1000);
    const foreign = await new SignJWT({ access })
      .setProtectedHeader({ alg: 'ES256', kid: issuer.keyId })
      .setIssuer('airlock')
      .setSubject('alice')
      .setAudience('airlock')
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 60)
      .setJti('x')
      .sign(privateKey);
    await expect(issuer.verify(foreign)).rejects.toThrow(/signature/);

    const other = tempDir();
    try {
      const otherIssuer = await TokenIssuer.open(other.dir);
      const { token } = await otherIssuer.issue({ subject: 'alice', access, ttlMs: 60_000 });
      await expect(issuer.verify(token)).rejects.toThrow(TokenError);
    } finally {
      other.cleanup();
    }
  });

  it('rejects a token for another audience', async () => {
    const issuer = await TokenIssuer.open(dir);
    const { token } = await issuer.issue({ subject: 'alice', access, service: 'other-registry', ttlMs: 60_000 });
    await expect(issuer.verify(token)).rejects.toThrow(/aud/);
    await expect(issuer.verify(token, 'other-registry')).resolves.toMatchObject({ aud: 'other-registry' });
  });

  it('rejects garbage', async () => {
    const issuer = await TokenIssuer.open(dir);
    await expect(issuer.verify('not-a-jwt')).rejects.toThrow(TokenError);
  });

  it('stores the key with mode 0600 and reuses it after a restart', async () => {
    const first = await TokenIssuer.open(dir);
    const { token } = await first.issue({ subject: 'alice', access, ttlMs: 60_000 });
    const keyFile = signingKeyPath(dir);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(keyFile)).mode & 0o077).toBe(0);
    const jwk = JSON.parse(readFileSync(keyFile, 'utf8')) as Record<string, string>;
    expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256' });

    const restarted = await TokenIssuer.open(dir);
    expect(restarted.keyId).toBe(first.keyId);
    await expect(restarted.verify(token)).resolves.toMatchObject({ sub: 'alice' });
  });

  it('refuses to start on an unusable key file instead of replacing it', async () => {
    await TokenIssuer.open(dir);
    writeFileSync(signingKeyPath(dir), '{"kty":"oct"}');
    await expect(TokenIssuer.open(dir)).rejects.toThrow(/unusable/);
    expect(readFileSync(signingKeyPath(dir), 'utf8')).toBe('{"kty":"oct"}');
  });

  it('two processes starting together end up with the same key', async () => {
    const [a, b] = await Promise.all([TokenIssuer.open(dir), TokenIssuer.open(dir)]);
    expect(a.keyId).toBe(b.keyId);
  });
});
