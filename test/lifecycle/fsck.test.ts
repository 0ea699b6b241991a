// airlock fsck against a real store: damage made by hand (a flipped byte, a deleted blob file, an
// orphan file, rows pointing at nothing, a stale temporary) is found by name, --repair fixes it and
// says how, and a second fsck is clean. Run offline (the CLI takes the storage lock) and through a
// running server (the CLI asks it), with the same output and exit codes.
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { addUser } from '../../src/auth/htpasswd.js';
import { TEST_COST } from '../auth/helpers.js';
import { pushImage, sha256 } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../server/cli.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const t = await startTestServer(overrides);
  cleanups.push(() => t.close());
  return t;
}

async function pushLooseBlob(url: string, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data });
  expect(res.status).toBe(201);
  return digest;
}

function blobPath(storage: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

function flipByte(path: string): void {
  const bytes = readFileSync(path);
  bytes[bytes.length >> 1]! ^= 0xff;
  writeFileSync(path, bytes);
}

describe('airlock fsck', () => {
  it('finds a flipped byte, a deleted file, an orphan file, dangling rows and a stale temporary by name; --repair fixes them', async () => {
    const storage = join(tmpdir(), `airlock-fsck-${randomUUID()}`);
    cleanups.push(() => rmSync(storage, { recursive: true, force: true }));
    const t = await server({ storage });
    const image = await pushImage(t.url, 'apps/web', 'v1', { layers: 2 });
    const flipped = await pushLooseBlob(t.url, 'apps/loose', randomBytes(3000));
    const deleted = await pushLooseBlob(t.url, 'apps/loose', randomBytes(2000));
    await t.close();
    cleanups.pop();

    flipByte(blobPath(storage, flipped));
    rmSync(blobPath(storage, deleted));
    const orphanDigest = sha256(randomBytes(100));
    mkdirSync(join(blobPath(storage, orphanDigest), '..'), { recursive: true });
    writeFileSync(blobPath(storage, orphanDigest), 'not recorded anywhere');
    const orphanRelative = join('blobs', 'sha256', orphanDigest.slice(7, 9), orphanDigest.slice(7));
    const staleId = randomUUID();
    writeFileSync(join(storage, 'uploads', staleId), 'half a fill');
    const ghost = sha256('no such manifest');
    const db = new Database(join(storage, 'airlock.db'));
    const repoId = db.prepare('SELECT id FROM repositories WHERE name = ?').pluck().get('apps/web') as number;
    db.prepare('INSERT INTO tags (repo_id, name, digest, cached, updated_at) VALUES (?, ?, ?, 0, 0)').run(repoId, 'ghost', ghost);
    db.close();

    const found = await runCli(['fsck', '--storage', storage], { timeoutMs: 30_000 });
    expect(found.code, found.stderr).toBe(1);
    expect(found.stdout).toMatch(new RegExp(`corrupt blob\\s+${flipped}`));
    expect(found.stdout).toMatch(new RegExp(`missing file\\s+${deleted}`));
    expect(found.stdout).toContain(`orphan file        ${orphanRelative}`);
    expect(found.stdout).toMatch(/dangling row\s+apps\/web:ghost: tag points at manifest/);
    expect(found.stdout).toContain(`stale temporary    uploads/${staleId}`);
    expect(found.stdout).toContain('5 problem(s) found; run airlock fsck --repair');
    // Nothing was touched without --repair.
    expect(existsSync(blobPath(storage, orphanDigest))).toBe(true);

    const repaired = await runCli(['fsck', '--storage', storage, '--repair'], { timeoutMs: 30_000 });
    expect(repaired.code, repaired.stdout + repaired.stderr).toBe(0);
    expect(repaired.stdout).toContain('5 problem(s) found, 5 repaired, 0 remaining');
    expect(repaired.stdout).toMatch(/repaired: moved to quarantine\/sha256-[0-9a-f]{64}\.\S+ and dropped its rows/);
    // The evidence is kept, not deleted.
    const quarantined = readdirSync(join(storage, 'quarantine'));
    expect(quarantined).toHaveLength(1);
    expect(quarantined[0]!.startsWith(flipped.replace(':', '-'))).toBe(true);
    expect(existsSync(blobPath(storage, orphanDigest))).toBe(false);
    expect(existsSync(join(storage, 'uploads', staleId))).toBe(false);

    const again = await runCli(['fsck', '--storage', storage], { timeoutMs: 30_000 });
    expect(again.code, again.stdout).toBe(0);
    expect(again.stdout).toContain('clean: no problems found');

    // A directory that holds no store is said so, not turned into an empty one.
    const nowhere = join(tmpdir(), `airlock-nowhere-${randomUUID()}`);
    const none = await runCli(['fsck', '--storage', nowhere], { timeoutMs: 30_000 });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`there is no airlock store in ${nowhere}`);
    expect(existsSync(nowhere)).toBe(false);

    // The intact image still pulls byte for byte; the repaired blobs are gone, so pushing them again works.
    const back = await server({ storage });
    const manifest = await fetch(`${back.url}/v2/apps/web/manifests/v1`, { headers: { accept: image.mediaType } });
    expect(Buffer.from(await manifest.arrayBuffer()).equals(image.manifest)).toBe(true);
    for (const [digest, data] of image.blobs) {
      const blob = await fetch(`${back.url}/v2/apps/web/blobs/${digest}`);
      expect(Buffer.from(await blob.arrayBuffer()).equals(data)).toBe(true);
    }
    expect((await fetch(`${back.url}/v2/apps/loose/blobs/${flipped}`, { method: 'HEAD' })).status).toBe(404);
  });

  it('re-hashes blobs of several MiB (the hashing threads\' size) byte for byte: one flipped byte in 24 MiB is found', async () => {
    const storage = join(tmpdir(), `airlock-fsck-big-${randomUUID()}`);
    cleanups.push(() => rmSync(storage, { recursive: true, force: true }));
    const t = await server({ storage });
    const intact = await pushLooseBlob(t.url, 'apps/big', randomBytes(24 * 1024 * 1024 + 5));
    const flipped = await pushLooseBlob(t.url, 'apps/big', randomBytes(24 * 1024 * 1024 - 7));
    // Both ways fsck reads a blob: a server hashing it, then offline.
    flipByte(blobPath(storage, flipped));
    const viaServer = await runCli(['fsck', '--storage', storage, '--json'], { timeoutMs: 60_000 });
    expect(viaServer.code, viaServer.stderr).toBe(1);
    const report = JSON.parse(viaServer.stdout) as { problems: { kind: string; subject: string }[]; checked: { blobs: number; bytes: number } };
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'corrupt-blob', subject: flipped })]);
    expect(report.checked).toMatchObject({ blobs: 1, bytes: 24 * 1024 * 1024 + 5 });
    await t.close();
    cleanups.pop();

    const offline = await runCli(['fsck', '--storage', storage, '--repair'], { timeoutMs: 60_000 });
    expect(offline.stdout).toMatch(new RegExp(`corrupt blob\\s+${flipped}`));
    expect(offline.stdout).not.toContain(intact);
    const again = await runCli(['fsck', '--storage', storage], { timeoutMs: 60_000 });
    expect(again.code, again.stdout).toBe(0);
    expect(again.stdout).toContain('clean: no problems found');
  });

  it('runs inside the server that holds the storage, for users with delete on **, with the same report and exit codes', async () => {
    const dir = join(tmpdir(), `airlock-fsck-auth-${randomUUID()}`);
    mkdirSync(dir, { recursive: true });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const htpasswd = join(dir, 'users.htpasswd');
    await addUser(htpasswd, 'admin', 'admin-secret', TEST_COST);
    await addUser(htpasswd, 'writer', 'writer-secret', TEST_COST);
    const storage = join(dir, 'storage');
    const t = await server({
      storage,
      auth: {
        htpasswd,
        rules: [
          { users: ['admin'], repos: ['**'], actions: ['pull', 'push', 'delete'] },
          { users: ['writer'], repos: ['**'], actions: ['pull', 'push'] },
        ],
      },
    });
    const credentials = { username: 'admin', password: 'admin-secret' };
    const image = await pushImage(t.url, 'team/app', 'v1', { layers: 2, credentials });
    const authfile = (user: string, password: string) => {
      const file = join(dir, `${user}.json`);
      writeFileSync(file, JSON.stringify({ auths: { [t.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
      return file;
    };

    const anonymous = await runCli(['fsck', '--storage', storage], { timeoutMs: 30_000 });
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toContain(`is served by pid ${process.pid}`);
    expect(anonymous.stderr).toMatch(/refused \(401\): UNAUTHORIZED/);
    const writer = await runCli(['fsck', '--storage', storage, '--authfile', authfile('writer', 'writer-secret')], { timeoutMs: 30_000 });
    expect(writer.code).toBe(1);
    expect(writer.stderr).toMatch(/refused \(403\): DENIED/);

    const admin = authfile('admin', 'admin-secret');
    const clean = await runCli(['fsck', '--storage', storage, '--authfile', admin], { timeoutMs: 30_000 });
    expect(clean.code, clean.stderr).toBe(0);
    expect(clean.stdout).toMatch(/checked 3 blobs .* 1 manifests, 3 references/);
    expect(clean.stdout).toContain('clean: no problems found');

    // A layer of a pushed image goes bad on disk.
    const layer = image.layerDigests[0]!;
    flipByte(blobPath(storage, layer));
    const found = await runCli(['fsck', '--storage', storage, '--authfile', admin, '--json'], { timeoutMs: 30_000 });
    expect(found.code).toBe(1);
    const report = JSON.parse(found.stdout) as { problems: { kind: string; subject: string }[] };
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'corrupt-blob', subject: layer })]);

    // Repair quarantines it; the image now lacks the layer, which only a push can bring back: said, exit 1.
    const repair = await runCli(['fsck', '--storage', storage, '--authfile', admin, '--repair'], { timeoutMs: 30_000 });
    expect(repair.code).toBe(1);
    expect(repair.stdout).toMatch(new RegExp(`corrupt blob\\s+${layer}`));
    expect(repair.stdout).toMatch(new RegExp(`dangling reference\\s+team/app@${image.manifestDigest}: references blob ${layer}`));
    expect(repair.stdout).toMatch(/not repaired: push .* again/);
    expect(readdirSync(join(storage, 'quarantine'))).toHaveLength(1);

    // The client pushes the image again (its HEAD now says the layer is missing), and all is well.
    await pushImageAgain(t.url, 'team/app', image.blobs.get(layer)!, credentials);
    const after = await runCli(['fsck', '--storage', storage, '--authfile', admin], { timeoutMs: 30_000 });
    expect(after.code, after.stdout).toBe(0);
    const blob = await fetch(`${t.url}/v2/team/app/blobs/${layer}`, { headers: { authorization: basic(credentials) } });
    expect(Buffer.from(await blob.arrayBuffer()).equals(image.blobs.get(layer)!)).toBe(true);
  });
});

function basic(c: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

async function pushImageAgain(url: string, repo: string, data: Buffer, credentials: { username: string; password: string }): Promise<void> {
  const digest = sha256(data);
  const head = await fetch(`${url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD', headers: { authorization: basic(credentials) } });
  expect(head.status).toBe(404);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data, headers: { authorization: basic(credentials) } });
  expect(res.status).toBe(201);
}
