import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PullSecretError, credentialsForHost, loadPullSecret, parsePullSecret } from '../../src/proxy/pullsecret.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const dir = mkdtempSync(join(tmpdir(), 'airlock-pullsecret-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pull secrets', () => {
  it('decodes base64 user:password entries by host, keeping colons in the password', () => {
    const secret = parsePullSecret(JSON.stringify({ auths: { 'quay.io': { auth: b64('robot+ci:pa:ss'), email: 'x@y' } } }), 'ps.json');
    expect(credentialsForHost(secret, 'quay.io')).toEqual({ username: 'robot+ci', password: 'pa:ss' });
    expect(credentialsForHost(secret, 'QUAY.IO')).toEqual({ username: 'robot+ci', password: 'pa:ss' });
    expect(credentialsForHost(secret, 'ghcr.io')).toBeUndefined();
  });

  it('accepts username/password fields', () => {
    const secret = parsePullSecret(JSON.stringify({ auths: { 'registry.local:5000': { username: 'u', password: 'p' } } }), 'ps.json');
    expect(credentialsForHost(secret, 'registry.local:5000')).toEqual({ username: 'u', password: 'p' });
    expect(credentialsForHost(secret, 'registry.local')).toBeUndefined();
  });

  it('accepts keys written as URLs, and finds Docker Hub under any of its names', () => {
    const secret = parsePullSecret(
      JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64('hubuser:hubpass') }, 'http://10.0.0.1:5000': { auth: b64('a:b') } } }),
      'config.json',
    );
    expect(credentialsForHost(secret, 'registry-1.docker.io')).toEqual({ username: 'hubuser', password: 'hubpass' });
    expect(credentialsForHost(secret, 'docker.io')).toEqual({ username: 'hubuser', password: 'hubpass' });
    expect(credentialsForHost(secret, '10.0.0.1:5000')).toEqual({ username: 'a', password: 'b' });
  });

  it('skips entries without credentials (credential helpers) and namespace-scoped keys', () => {
    const secret = parsePullSecret(JSON.stringify({ auths: { 'ghcr.io': {}, 'quay.io/org/repo': { auth: b64('scoped:x') } } }), 'ps.json');
    expect(secret.size).toBe(0);
  });

  it('reads a file from disk', () => {
    const path = join(dir, 'pull-secret.json');
    writeFileSync(path, JSON.stringify({ auths: { 'quay.io': { auth: b64('u:p') } } }));
    expect(credentialsForHost(loadPullSecret(path), 'quay.io')).toEqual({ username: 'u', password: 'p' });
  });

  it('names the file and the reason when it cannot be read', () => {
    const path = join(dir, 'missing.json');
    expect(() => loadPullSecret(path)).toThrow(PullSecretError);
    expect(() => loadPullSecret(path)).toThrow(`pull secret ${path}: cannot be read (ENOENT)`);
  });

  it('names the file and the reason for invalid JSON', () => {
    expect(() => parsePullSecret('{"auths": ', '/etc/ps.json')).toThrow(/^pull secret \/etc\/ps\.json: is not valid JSON/);
    expect(() => parsePullSecret('{"registries": {}}', '/etc/ps.json')).toThrow('pull secret /etc/ps.json: has no "auths" object');
  });

  it('names the file and the entry for bad base64, without echoing the secret', () => {
    const bad = () => parsePullSecret(JSON.stringify({ auths: { 'quay.io': { auth: 'not*base64!' } } }), '/etc/ps.json');
    expect(bad).toThrow('pull secret /etc/ps.json: entry "quay.io": "auth" is not valid base64');
    const noColon = () => parsePullSecret(JSON.stringify({ auths: { 'quay.io': { auth: b64('justuser') } } }), '/etc/ps.json');
    expect(noColon).toThrow('pull secret /etc/ps.json: entry "quay.io": "auth" does not decode to "username:password"');
    expect(noColon).not.toThrow(/justuser/);
  });
});
