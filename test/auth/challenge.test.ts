import { describe, expect, it } from 'vitest';
import { AuthorizationHeaderError, basicChallenge, bearerChallenge, parseAuthorizationHeader } from '../../src/auth/challenge.js';
import { basicHeader } from './helpers.js';

describe('challenges', () => {
  it('formats a Bearer challenge with one scope', () => {
    expect(bearerChallenge({ realm: 'https://reg.example:5000/token', service: 'airlock', scopes: ['repository:team/app:pull,push'] })).toBe(
      'Bearer realm="https://reg.example:5000/token",service="airlock",scope="repository:team/app:pull,push"',
    );
  });

  it('joins several scopes with spaces inside one scope parameter', () => {
    expect(bearerChallenge({ realm: 'https://r/token', service: 'airlock', scopes: ['repository:a:pull', 'repository:b:pull,push'] })).toBe(
      'Bearer realm="https://r/token",service="airlock",scope="repository:a:pull repository:b:pull,push"',
    );
  });

  it('leaves out the scope when nothing specific is needed, and adds an error when given', () => {
    expect(bearerChallenge({ realm: 'https://r/token', service: 'airlock' })).toBe('Bearer realm="https://r/token",service="airlock"');
    expect(bearerChallenge({ realm: 'https://r/token', service: 'airlock', scopes: ['repository:a:pull'], error: 'insufficient_scope' })).toBe(
      'Bearer realm="https://r/token",service="airlock",scope="repository:a:pull",error="insufficient_scope"',
    );
  });

  it('escapes quotes and backslashes in parameter values', () => {
    expect(bearerChallenge({ realm: 'a"b\\c', service: 'airlock' })).toBe('Bearer realm="a\\"b\\\\c",service="airlock"');
  });

  it('formats a Basic challenge', () => {
    expect(basicChallenge()).toBe('Basic realm="airlock"');
  });
});

describe('parseAuthorizationHeader', () => {
  it('returns undefined without a header', () => {
    expect(parseAuthorizationHeader(undefined)).toBeUndefined();
    expect(parseAuthorizationHeader('')).toBeUndefined();
  });

  it('reads Basic credentials, splitting at the first ":" only', () => {
    expect(parseAuthorizationHeader(basicHeader('alice', 'pa:ss:word'))).toEqual({ kind: 'basic', user: 'alice', password: 'pa:ss:word' });
    expect(parseAuthorizationHeader(basicHeader('alice', ''))).toEqual({ kind: 'basic', user: 'alice', password: '' });
  });

  it('reads UTF-8 credentials and a case-insensitive scheme', () => {
    const header = `basic ${Buffer.from('jürgen:pässwörd').toString('base64')}`;
    expect(parseAuthorizationHeader(header)).toEqual({ kind: 'basic', user: 'jürgen', password: 'pässwörd' });
  });

  it('reads a Bearer token', () => {
    expect(parseAuthorizationHeader('Bearer eyJhbGciOi.eyJzdWIi.c2ln-_')).toEqual({ kind: 'bearer', token: 'eyJhbGciOi.eyJzdWIi.c2ln-_' });
    expect(parseAuthorizationHeader('BEARER abc')).toEqual({ kind: 'bearer', token: 'abc' });
  });

  it('throws a typed error for malformed headers, without echoing the secret', () => {
    const secret = 'S3cretValue';
    const cases = [
      'Basic',
      `Basic !!!${secret}`,
      `Basic ${Buffer.from(secret).toString('base64')}`,
      'Bearer',
      `Bearer ${secret} ${secret}`,
      `Digest username="${secret}"`,
      secret,
    ];
    for (const header of cases) {
      let error: unknown;
      try {
        parseAuthorizationHeader(header);
      } catch (e) {
        error = e;
      }
      expect(error, header).toBeInstanceOf(AuthorizationHeaderError);
      expect((error as Error).message, header).not.toContain(secret);
      expect((error as Error).message, header).not.toContain(Buffer.from(secret).toString('base64'));
    }
    expect(() => parseAuthorizationHeader('Basic !!!')).toThrow(/expected "Basic base64\(user:password\)"/);
    expect(() => parseAuthorizationHeader(`Basic ${Buffer.from('nocolon').toString('base64')}`)).toThrow(/no ":"/);
    expect(() => parseAuthorizationHeader('Digest x')).toThrow(/use Basic or Bearer/);
  });
});
