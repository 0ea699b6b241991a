// database: and blobs.s3: — the shared backends of a scale-out deployment, validated at start with
// messages that name the key and say what to write instead.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';
import { redactUrl } from '../../src/config/redact-url.js';

const s3 = { endpoint: 'http://127.0.0.1:7480', bucket: 'airlock' };

function problem(input: unknown): string {
  try {
    parseConfig(input);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected the config to be refused');
}

describe('database:', () => {
  it('is absent by default (SQLite under storage)', () => {
    const config = parseConfig({});
    expect(config.database).toBeUndefined();
    expect(config.blobs).toBeUndefined();
  });

  it('takes a postgres:// or postgresql:// URL', () => {
    expect(parseConfig({ database: { url: 'postgres://airlock:pw@db:5432/airlock' } }).database?.url).toBe('postgres://airlock:pw@db:5432/airlock');
    expect(parseConfig({ database: { url: 'postgresql://db/airlock?sslmode=require' } }).database?.url).toContain('sslmode');
  });

  it('refuses another scheme, a non-URL, a URL without database, and unknown keys, naming the key', () => {
    expect(problem({ database: { url: 'mysql://u:secret@db/airlock' } })).toMatch(/database\.url: must start with postgres:\/\/ or postgresql:\/\/ \(got mysql:\/\/\)/);
    expect(problem({ database: { url: 'db.example:5432' } })).toMatch(/database\.url: must (be a PostgreSQL URL|start with postgres)/);
    expect(problem({ database: { url: 'postgres://u:secret@db:5432' } })).toMatch(/database\.url: names no database/);
    expect(problem({ database: { url: 'postgres://db/a', pool: 3 } })).toMatch(/database: unknown key\(s\) "pool"/);
  });

  it('never quotes the password in its error message', () => {
    expect(problem({ database: { url: 'mysql://u:hunter2@db/airlock' } })).not.toContain('hunter2');
    expect(problem({ database: { url: 'postgres://u:hunter2@db' } })).not.toContain('hunter2');
  });
});

describe('blobs.s3:', () => {
  it('applies the defaults', () => {
    const config = parseConfig({ blobs: { s3 } });
    expect(config.blobs?.s3).toEqual({ ...s3, region: 'us-east-1', prefix: '', forcePathStyle: true, redirect: false });
  });

  it('refuses an endpoint that is not http(s)', () => {
    expect(problem({ blobs: { s3: { ...s3, endpoint: 's3.example:443' } } })).toMatch(/blobs\.s3\.endpoint: must be an http:\/\/ or https:\/\/ URL/);
    expect(problem({ blobs: { s3: { ...s3, endpoint: 'ftp://s3.example' } } })).toMatch(/blobs\.s3\.endpoint/);
  });

  it.each([
    ['Airlock', /only lowercase letters/],
    ['ab', /3 to 63 characters/],
    ['a'.repeat(64), /3 to 63 characters/],
    ['-airlock', /begin and end with a letter or digit/],
    ['air..lock', /two dots/],
    ['192.168.1.10', /IP address/],
    ['my_bucket', /only lowercase letters/],
    ['xn--airlock', /reserves/],
  ])('refuses the bucket name %s', (bucket, reason) => {
    expect(problem({ blobs: { s3: { ...s3, bucket } } })).toMatch(new RegExp(`blobs\\.s3\\.bucket: bucket name "${bucket.replace(/\./g, '\\.')}" .*${reason.source}`));
  });

  it('accepts ordinary bucket names', () => {
    for (const bucket of ['airlock', 'my-mirror.example', 'a1b']) expect(parseConfig({ blobs: { s3: { ...s3, bucket } } }).blobs?.s3.bucket).toBe(bucket);
  });

  it('wants accessKeyId and secretAccessKey together', () => {
    expect(problem({ blobs: { s3: { ...s3, accessKeyId: 'AK' } } })).toMatch(/blobs\.s3\.secretAccessKey: accessKeyId is set but secretAccessKey is not/);
    expect(problem({ blobs: { s3: { ...s3, secretAccessKey: 'SK' } } })).toMatch(/blobs\.s3\.accessKeyId: secretAccessKey is set but accessKeyId is not/);
    expect(parseConfig({ blobs: { s3: { ...s3, accessKeyId: 'AK', secretAccessKey: 'SK' } } }).blobs?.s3.secretAccessKey).toBe('SK');
  });

  it('refuses a prefix with a leading or trailing slash, and caFile on plain http', () => {
    expect(problem({ blobs: { s3: { ...s3, prefix: '/airlock' } } })).toMatch(/blobs\.s3\.prefix: must not begin or end with "\/"/);
    expect(parseConfig({ blobs: { s3: { ...s3, prefix: 'team/airlock' } } }).blobs?.s3.prefix).toBe('team/airlock');
    expect(problem({ blobs: { s3: { ...s3, caFile: 'ca.pem' } } })).toMatch(/blobs\.s3\.caFile: caFile applies to an https:\/\/ endpoint/);
  });
});

describe('AWS_* environment variables', () => {
  const file = 'config/examples/scale-out.yaml';

  it('fill the credentials and region the file leaves out', () => {
    const config = loadConfig({ config: file }, { AWS_ACCESS_KEY_ID: 'AKENV', AWS_SECRET_ACCESS_KEY: 'SKENV', AWS_REGION: 'eu-west-1' });
    expect(config.blobs?.s3).toMatchObject({ accessKeyId: 'AKENV', secretAccessKey: 'SKENV', region: 'us-east-1' });
  });

  it('give the region when the file has none, and lose to a key the file sets', () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-config-'));
    try {
      const path = join(dir, 'airlock.yaml');
      writeFileSync(path, 'blobs:\n  s3: { endpoint: "http://127.0.0.1:7480", bucket: airlock, accessKeyId: AKFILE, secretAccessKey: SKFILE }\n');
      const config = loadConfig({ config: path }, { AWS_ACCESS_KEY_ID: 'AKENV', AWS_SECRET_ACCESS_KEY: 'SKENV', AWS_REGION: 'eu-west-1' });
      expect(config.blobs?.s3).toMatchObject({ accessKeyId: 'AKFILE', secretAccessKey: 'SKFILE', region: 'eu-west-1' });
      expect(loadConfig({ config: path }, {}).blobs?.s3.region).toBe('us-east-1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('complete a key id given in the file with the secret from the environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-config-'));
    try {
      const path = join(dir, 'airlock.yaml');
      writeFileSync(path, 'blobs:\n  s3: { endpoint: "http://127.0.0.1:7480", bucket: airlock, accessKeyId: AKFILE }\n');
      expect(loadConfig({ config: path }, { AWS_SECRET_ACCESS_KEY: 'SKENV' }).blobs?.s3.secretAccessKey).toBe('SKENV');
      expect(() => loadConfig({ config: path }, {})).toThrow(/blobs\.s3\.secretAccessKey: accessKeyId is set but secretAccessKey is not/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('are not consulted when there is no blobs.s3', () => {
    const config = loadConfig({ config: 'config/examples/pull-through.yaml' }, { AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK' });
    expect(config.blobs).toBeUndefined();
  });
});

describe('redactUrl', () => {
  it('hides the password and keeps the rest readable', () => {
    expect(redactUrl('postgres://airlock:s3cr%40t@db.example:5432/airlock')).toBe('postgres://airlock:***@db.example:5432/airlock');
    expect(redactUrl('postgres://db.example/airlock?sslmode=require&password=x')).toBe('postgres://db.example/airlock?sslmode=require&password=***');
    expect(redactUrl('postgres://airlock@db/airlock')).toBe('postgres://airlock@db/airlock');
  });

  it('hides a password even in something that does not parse as a URL', () => {
    expect(redactUrl('//user:hunter2@db:bad port/x')).not.toContain('hunter2');
  });
});
