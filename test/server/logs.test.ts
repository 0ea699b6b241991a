// The access log: one JSON line per request on stdout, with a request id, never a credential.
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { http, pushBlob, sha256 } from '../helpers/http.js';
import { startCli, waitFor, type CliProcess } from './cli.js';

let storage: string;
let child: CliProcess;
beforeAll(async () => {
  storage = mkdtempSync(join(tmpdir(), 'airlock-logs-'));
  child = await startCli(['--listen', '127.0.0.1:0', '--storage', storage, '--log-level', 'debug']);
});
afterAll(async () => {
  await child.kill();
  rmSync(storage, { recursive: true, force: true });
});

it('requests with Basic credentials are logged with a request id and without the credential', async () => {
  const password = 'S3cret-Passw0rd-xyz';
  const credential = Buffer.from(`mirror-writer:${password}`).toString('base64');
  const authorization = `Basic ${credential}`;
  const requests = [
    http(child.url, '/v2/', { headers: { authorization } }),
    http(child.url, `/v2/logs/app/manifests/${sha256('none')}`, { headers: { authorization } }),
    http(child.url, '/v2/logs/app/blobs/uploads/', { method: 'POST', headers: { authorization, 'x-request-id': 'client-chosen-id.1' } }),
    http(child.url, '/v2/Bad/Name/tags/list', { headers: { authorization, cookie: `session=${password}` } }),
  ];
  const responses = await Promise.all(requests);
  const ids = responses.map((r) => r.header('x-request-id'));
  expect(ids[2]).toBe('client-chosen-id.1');
  expect(new Set(ids).size).toBe(ids.length);

  const lines = await waitFor('four request log lines', () => {
    const found = child.logLines().filter((l) => l.msg === 'request' && ids.includes(l.reqId as string));
    return found.length === ids.length ? found : undefined;
  });
  for (const line of lines) {
    expect(typeof line.reqId).toBe('string');
    expect(line).toMatchObject({ method: expect.any(String), url: expect.stringMatching(/^\/v2\//), status: expect.any(Number) });
  }
  expect(lines.map((l) => l.status).sort()).toEqual(responses.map((r) => r.status).sort());

  const stdout = child.stdout();
  const stderr = child.stderr();
  for (const secret of [credential, password, authorization]) {
    expect(stdout).not.toContain(secret);
    expect(stderr).not.toContain(secret);
  }
});

it('an unacceptable X-Request-Id is replaced by a generated one', async () => {
  const res = await http(child.url, '/v2/', { headers: { 'x-request-id': 'bad id with spaces' } });
  const id = res.header('x-request-id')!;
  expect(id).not.toBe('bad id with spaces');
  expect(id).toMatch(/^[0-9a-f-]{36}$/);
  await waitFor('its log line', () => (child.logLines().some((l) => l.msg === 'request' && l.reqId === id) ? true : undefined));
});

it('with auth configured, neither passwords nor issued tokens reach the log', async () => {
  const password = 'An0ther-Secret-pw';
  const htpasswd = join(storage, 'users.htpasswd');
  writeFileSync(htpasswd, `writer:${bcrypt.hashSync(password, 4)}\n`);
  const config = join(storage, 'auth.yaml');
  writeFileSync(
    config,
    [
      'auth:',
      `  htpasswd: ${JSON.stringify(htpasswd)}`,
      '  rules:',
      '    - { users: [writer], repos: ["**"], actions: [pull, push, delete] }',
      '',
    ].join('\n'),
  );
  const secured = await startCli(['--config', config, '--listen', '127.0.0.1:0', '--storage', join(storage, 'secured'), '--log-level', 'debug']);
  try {
    const good = `Basic ${Buffer.from(`writer:${password}`).toString('base64')}`;
    const wrongPassword = `${password}-wrong`;
    const bad = `Basic ${Buffer.from(`writer:${wrongPassword}`).toString('base64')}`;
    expect((await http(secured.url, '/v2/', { headers: { authorization: bad } })).status).toBe(401);
    expect((await http(secured.url, '/v2/', { headers: { authorization: good } })).status).toBe(200);
    const tokenRes = await http(secured.url, '/auth/token?service=airlock&scope=repository:logs/app:pull,push', { headers: { authorization: good } });
    expect(tokenRes.status).toBe(200);
    const token = (tokenRes.json().token ?? tokenRes.json().access_token) as string;
    expect(token.length).toBeGreaterThan(20);
    const tags = await http(secured.url, '/v2/logs/app/tags/list', { headers: { authorization: `Bearer ${token}` } });
    expect(tags.status).toBe(404);
    const ids = [tags.header('x-request-id')];
    await waitFor('the request log line', () => (secured.logLines().some((l) => l.msg === 'request' && ids.includes(l.reqId as string)) ? true : undefined));

    const output = secured.stdout() + secured.stderr();
    // The failed login was logged (a warning), just not its password.
    expect(secured.logLines().some((l) => (l.level ?? 0) >= 40)).toBe(true);
    for (const secret of [password, wrongPassword, good.slice(6), bad.slice(6), token, token.split('.')[2]!]) expect(output).not.toContain(secret);
  } finally {
    await secured.kill();
  }
});

it('a blob file shorter than recorded: the download is cut short, the log says why, the server goes on', async () => {
  const data = randomBytes(3 * 1024 * 1024);
  const digest = await pushBlob(child.url, 'logs/damaged', data);
  const hex = digest.slice('sha256:'.length);
  truncateSync(join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex), 1024 * 1024);
  const outcome = await http(child.url, `/v2/logs/damaged/blobs/${digest}`).then(
    (res) => res.body.length,
    () => 'cut',
  );
  expect(outcome === 'cut' || (typeof outcome === 'number' && outcome < data.length)).toBe(true);
  const failure = await waitFor('the failure in the log', () =>
    child.logLines().find((l) => l.msg === 'request failed' && JSON.stringify(l.err).includes('ends before byte')),
  );
  expect(failure).toMatchObject({ method: 'GET', path: `/v2/logs/damaged/blobs/${digest}` });
  expect((await http(child.url, '/v2/')).status).toBe(200);
});
