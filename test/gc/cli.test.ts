// `airlock gc` on a free storage directory (under its lock) and against the server that holds it
// (POST /api/v1/gc): the same output and exit codes either way; under auth: only for a user allowed
// to delete on "**".
import bcrypt from 'bcryptjs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectStatus, http, pushImage, type Pushed } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../server/cli.js';
import { ageStore, hasBlobFile } from './support.js';

const HOUR = 3_600_000;

/** Pushes an image and deletes its manifest: its blobs are garbage once old enough. */
async function garbage(base: string, repo: string): Promise<Pushed> {
  const image = await pushImage(base, repo, { tag: 'gone', layers: 2 });
  expectStatus(await http(base, `/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' }), 202);
  return image;
}

describe('airlock gc (command)', () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-gc-cli-'));
    dirs.push(dir);
    return dir;
  };

  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('prints the same whether the storage is free or a server holds it, and removes only when not a dry run', async () => {
    const storage = tempDir();
    let server: TestServer | undefined = await startTestServer({ storage, gc: { schedule: '24h', grace: '10m' } });
    let image: Pushed;
    let keptImage: Pushed;
    try {
      keptImage = await pushImage(server.url, 'cli/kept', { tag: 'v1' });
      image = await garbage(server.url, 'cli/gone');
      ageStore(storage, 2 * HOUR);

      const viaServer = await runCli(['gc', '--dry-run', '--storage', storage], { timeoutMs: 30_000 });
      expect(viaServer.stderr).toContain(`the server at ${server.url}`);
      expect(viaServer.code).toBe(0);
      // The repository whose only manifest was deleted is forgotten too (it stayed listed until now).
      expect(viaServer.stdout).toMatch(
        /^would forget empty repository cli\/gone\ngc \(dry run\): would remove 0 manifests, 3 blobs \(3 repository links\) and free [\d.]+ KiB; would forget 1 empty repository; nothing was removed\n$/,
      );
      for (const digest of image.blobs.keys()) expect(hasBlobFile(storage, digest)).toBe(true);

      await server.close();
      server = undefined;
      const local = await runCli(['gc', '--dry-run', '--storage', storage], { timeoutMs: 30_000 });
      expect(local.code).toBe(0);
      expect(local.stdout).toBe(viaServer.stdout);
      for (const digest of image.blobs.keys()) expect(hasBlobFile(storage, digest)).toBe(true);

      const real = await runCli(['gc', '--storage', storage], { timeoutMs: 30_000 });
      expect(real.code).toBe(0);
      expect(real.stdout).toBe(
        viaServer.stdout
          .replace('gc (dry run): would remove', 'gc: removed')
          .replace(' and free ', ', freed ')
          .replaceAll('would forget', 'forgot')
          .replace('; nothing was removed', ''),
      );
      expect((await runCli(['gc', '--dry-run', '--storage', storage], { timeoutMs: 30_000 })).stdout).not.toContain('forget');
      for (const digest of image.blobs.keys()) expect(hasBlobFile(storage, digest)).toBe(false);
      for (const digest of keptImage.blobs.keys()) expect(hasBlobFile(storage, digest)).toBe(true);

      // The same collection through a server prints the same line.
      server = await startTestServer({ storage, gc: { schedule: '24h', grace: '10m' } });
      const again = await garbage(server.url, 'cli/gone2');
      ageStore(storage, 2 * HOUR);
      const real2 = await runCli(['gc', '--storage', storage], { timeoutMs: 30_000 });
      expect(real2.code).toBe(0);
      expect(real2.stdout).toBe(real.stdout.replace('cli/gone\n', 'cli/gone2\n').replace(/freed [\d.]+ KiB/, real2.stdout.match(/freed [\d.]+ KiB/)![0]));
      for (const digest of again.blobs.keys()) expect(hasBlobFile(storage, digest)).toBe(false);
      const stats = (await http(server.url, '/api/v1/stats')).json<{ gc: { removedBlobs: number } }>();
      expect(stats.gc.removedBlobs).toBe(3);
    } finally {
      await server?.close();
    }
  });

  it('exits 2 on bad usage', async () => {
    const storage = tempDir();
    const bad = await runCli(['gc', '--storage', storage, '--untagged-older-than', 'soon']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--untagged-older-than');
    expect((await runCli(['gc', '--storage', storage, 'extra'])).code).toBe(2);
    const help = await runCli(['gc', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Example:');
  });

  describe('under auth:', () => {
    let storage: string;
    let server: TestServer;
    const authfile = (user: string, password: string) => {
      const file = join(tempDir(), `${user}.json`);
      writeFileSync(file, JSON.stringify({ auths: { [server.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
      return file;
    };

    beforeAll(async () => {
      storage = tempDir();
      const htpasswd = join(storage, 'users.htpasswd');
      writeFileSync(htpasswd, `admin:${bcrypt.hashSync('admin-pass', 4)}\nreader:${bcrypt.hashSync('reader-pass', 4)}\n`);
      server = await startTestServer({
        storage,
        auth: {
          htpasswd,
          rules: [
            { users: ['admin'], repos: ['**'], actions: ['pull', 'push', 'delete'] },
            { users: ['reader'], repos: ['**'], actions: ['pull'] },
          ],
        },
      });
    });

    afterAll(async () => {
      await server?.close();
    });

    it('refuses without credentials or without delete on **, and runs for an admin', async () => {
      const none = await runCli(['gc', '--storage', storage], { timeoutMs: 30_000 });
      expect(none.code).toBe(1);
      expect(none.stderr).toContain('--authfile');
      const reader = await runCli(['gc', '--storage', storage, '--authfile', authfile('reader', 'reader-pass')], { timeoutMs: 30_000 });
      expect(reader.code).toBe(1);
      expect(reader.stderr).toMatch(/denied/);
      const admin = await runCli(['gc', '--storage', storage, '--authfile', authfile('admin', 'admin-pass')], { timeoutMs: 30_000 });
      expect(admin.stderr).not.toContain('refused');
      expect(admin.code).toBe(0);
      expect(admin.stdout).toMatch(/^gc: removed 0 manifests, 0 blobs/m);
    });
  });
});
