/**
 * The three commands as a person meets them: --help with a worked example, usage errors (exit 2),
 * no terminal bar off a terminal, and import --to URL into an airlock under `auth:`,
 * pushing (and recording origins) with --authfile credentials that may push, refused without.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, pushImage } from '../helpers/http.js';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { tempDirs } from '../e2e/support.js';
import { writeHtpasswd, basic } from '../security/support.js';
import { CLI, runCli } from '../server/cli.js';
import { originsOf } from './support.js';

const tmp = tempDirs('airgap-cli');
const cli = (args: string[]) => runCli(args, { timeoutMs: 60_000 });

describe('help and usage', () => {
  for (const command of ['import', 'export', 'sync']) {
    it(`${command} --help prints the usage with a worked example and exits 0`, async () => {
      const run = await cli([command, '--help']);
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`Usage: airlock ${command}`);
      expect(run.stdout).toMatch(new RegExp(`Example:\\n  airlock ${command} `));
    });
  }

  it('bad usage exits 2 with the reason', async () => {
    const cases: [string[], RegExp][] = [
      [['import'], /exactly one SOURCE/],
      [['import', '/nonexistent/layout'], /no such file or directory/],
      [['import', '.', '--bogus'], /Unknown option/],
      [['export', 'repo:tag'], /--to DIR\|FILE.tar is required/],
      [['export', 'a/**', '--to', 'x', '--filter-by-os', 'linux'], /not OS\/ARCH/],
      [['sync'], /at least one SOURCE_REF, or --mapping/],
      [['sync', 'ubuntu:22.04'], /does not start with a registry host/],
      [['sync', 'quay.io/a/b:1', '--concurrency', '0'], /--concurrency takes a number/],
    ];
    for (const [args, reason] of cases) {
      const run = await cli([...args, '--storage', tmp.make('usage')]);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr, args.join(' ')).toMatch(reason);
    }
  });

  it('on a terminal, import draws a progress bar with items, bytes, rate and ETA, then the summary', async () => {
    const src = tmp.make('tty-src');
    buildOciLayoutImage(src, { tag: 'v1' });
    const storage = tmp.make('tty-store');
    // script(1) gives the command a pseudo-terminal, as a person's shell would.
    const { execFileSync } = await import('node:child_process');
    const command = [process.execPath, CLI, 'import', src, '--prefix', 'tty/app', '--storage', storage].map((a) => `'${a}'`).join(' ');
    const out = execFileSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    expect(out).toMatch(/import \[[█░]+\] 100% \| 9\/9 items \| 5\.\d KiB\/5\.\d KiB \| [\d.]+ (B|KiB)\/s \| ETA/);
    expect(out).toMatch(/import: 1 image\(s\); 3 manifest\(s\), 6 blob\(s\)/);
  });

  it('export of something the store does not hold exits 1 naming it', async () => {
    const run = await cli(['export', 'nothing/here:1', '--to', join(tmp.make('out'), 'x'), '--storage', tmp.make('empty')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/nothing\/here:1: no such tag in the store/);
  });

  it('export of a glob matching only a repository whose images were deleted exits 1 saying so', async () => {
    const storage = tmp.make('emptied');
    const srv = await startTestServer({ storage });
    try {
      const image = await pushImage(srv.url, 'gone/app', { tag: 'v1' });
      expect((await http(srv.url, `/v2/gone/app/manifests/${image.digest}`, { method: 'DELETE' })).status).toBe(202);
    } finally {
      await srv.close();
    }
    const run = await cli(['export', 'gone/**', '--to', join(tmp.make('out'), 'x'), '--storage', storage]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/gone\/\*\*: matches only repositories whose images were deleted \(gone\/app\)/);
  });
});

describe('import --to an airlock under auth:', () => {
  let srv: TestServer;
  let image: BuiltOciImage;
  let layout: string;
  const authfile = (user: string, password: string) => {
    const file = join(tmp.make('authfile'), 'auth.json');
    writeFileSync(file, JSON.stringify({ auths: { [srv.host]: { auth: basic(user, password).slice('Basic '.length) } } }));
    return file;
  };

  beforeAll(async () => {
    const dir = tmp.make('auth-server');
    const htpasswd = join(dir, 'users.htpasswd');
    await writeHtpasswd(htpasswd, { writer: 'w-pass', reader: 'r-pass' });
    srv = await startTestServer({
      auth: {
        htpasswd,
        rules: [
          { users: ['writer'], repos: ['**'], actions: ['pull', 'push'] },
          { users: ['reader'], repos: ['**'], actions: ['pull'] },
        ],
      },
    });
    const src = tmp.make('src');
    image = buildOciLayoutImage(src, { tag: 'v1' });
    layout = tmp.make('layout');
    await skopeoCopy(image.ociRef, `oci:${layout}:v1`);
  }, 60_000);

  afterAll(async () => {
    await srv?.close();
    tmp.cleanup();
  });

  it('pushes with the writer and records origins; off a terminal no bar is drawn', async () => {
    const run = await cli(['import', layout, '--prefix', 'team/app', '--map', 'team/app=registry.example.com/team/app', '--to', srv.url, '--authfile', authfile('writer', 'w-pass')]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/import: 1 image\(s\); 3 manifest\(s\), 6 blob\(s\), [\d.]+ KiB in [\d.]+s/);
    expect(run.stderr).not.toMatch(/\u001b\[/);
    const res = await fetch(`${srv.url}/v2/team/app/manifests/v1`, { headers: { authorization: basic('reader', 'r-pass'), accept: image.indexMediaType } });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(image.indexBytes)).toBe(true);
    await srv.server.close();
    expect(await originsOf(srv.storage)).toEqual({ 'team/app': 'registry.example.com/team/app' });
    await srv.restart();
  });

  it('PUT /api/v1/origins needs push on every repository named, and a well-formed body', async () => {
    const put = (auth: string | undefined, body: unknown) =>
      fetch(`${srv.url}/api/v1/origins`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
        body: JSON.stringify(body),
      });
    const origins = { origins: [{ repo: 'team/x', origin: 'quay.io/team/x' }] };
    expect((await put(undefined, origins)).status).toBe(401);
    const denied = await put(basic('reader', 'r-pass'), origins);
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DENIED');
    const bad = await put(basic('writer', 'w-pass'), { origins: [{ repo: 'Not/Valid', origin: 'x' }] });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/expected \{"origins"/);
    const ok = await put(basic('writer', 'w-pass'), origins);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ recorded: 1 });
  });

  it('is refused for a user who may only pull, with a hint, and nothing lands', async () => {
    const run = await cli(['import', layout, '--prefix', 'team/other', '--to', srv.url, '--authfile', authfile('reader', 'r-pass')]);
    expect(run.code).toBe(1);
    expect(run.stdout + run.stderr).toMatch(/answered 403 \(pass --authfile with credentials that may push there\)/);
    const res = await fetch(`${srv.url}/v2/team/other/manifests/v1`, { headers: { authorization: basic('writer', 'w-pass') } });
    expect(res.status).toBe(404);
  });
});
