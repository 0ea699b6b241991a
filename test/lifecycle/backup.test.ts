// airlock backup DIR: a consistent copy of a live store, taken while clients push, that
// `airlock serve --storage DIR` runs from; blobs hard-linked on the same filesystem, copied to another.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { listBlobsOfDir, skopeoCopy } from '../helpers/skopeo.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli, startCli } from '../server/cli.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function expectImage(url: string, repo: string, tag: string, image: PushedImage): Promise<void> {
  const manifest = await fetch(`${url}/v2/${repo}/manifests/${tag}`, { headers: { accept: image.mediaType } });
  expect(manifest.status, `${repo}:${tag}`).toBe(200);
  expect(Buffer.from(await manifest.arrayBuffer()).equals(image.manifest)).toBe(true);
  for (const [digest, data] of image.blobs) {
    const blob = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
    expect(blob.status).toBe(200);
    expect(Buffer.from(await blob.arrayBuffer()).equals(data), `${repo}@${digest}`).toBe(true);
  }
}

describe('airlock backup', () => {
  it('copies a live server while it takes pushes; the copy serves every image it holds byte for byte and fsck finds it clean', async () => {
    const storage = tempDir('airlock-live-');
    const target = join(tempDir('airlock-backups-'), 'copy');
    const t: TestServer = await startTestServer({ storage });
    cleanups.push(() => t.close());

    const pushed = new Map<string, PushedImage>();
    for (let i = 0; i < 5; i++) pushed.set(`before/app${i}:v1`, await pushImage(t.url, `before/app${i}`, 'v1', { layers: 2, layerSize: 64 * 1024 }));

    // Pushes go on while the backup runs.
    let pushing = true;
    const during = (async () => {
      for (let i = 0; pushing; i++) pushed.set(`during/app${i}:v1`, await pushImage(t.url, `during/app${i}`, 'v1', { layers: 2, layerSize: 256 * 1024 }));
    })();
    const backup = await runCli(['backup', target, '--storage', storage], { timeoutMs: 60_000 });
    pushing = false;
    await during;
    expect(backup.code, backup.stderr).toBe(0);
    expect([...pushed.keys()].filter((k) => k.startsWith('during/')).length).toBeGreaterThan(0);
    expect(backup.stderr).toContain(`asking it to make the copy`);
    expect(backup.stdout).toMatch(/hard-linked, 0 copied/);
    expect(backup.stdout).toContain(`serve it with: airlock serve --storage ${target}`);
    // Same filesystem: hard links, not copies.
    const someBlob = [...pushed.values()][0]!.layerDigests[0]!.slice(7);
    expect(statSync(join(target, 'blobs', 'sha256', someBlob.slice(0, 2), someBlob)).nlink).toBe(2);

    const check = await runCli(['fsck', '--storage', target], { timeoutMs: 60_000 });
    expect(check.code, check.stdout).toBe(0);

    // Restoring is serving from it: everything pushed before is there, and whatever of the pushes
    // during the backup made it in is whole.
    const restored = await startCli(['--storage', target, '--listen', '127.0.0.1:0', '--log-level', 'info']);
    cleanups.push(() => restored.kill());
    const catalog = (await (await fetch(`${restored.url}/v2/_catalog?n=1000`)).json()) as { repositories: string[] };
    for (const [ref, image] of pushed) {
      const [repo, tag] = ref.split(':') as [string, string];
      if (ref.startsWith('before/')) expect(catalog.repositories).toContain(repo);
      if (catalog.repositories.includes(repo)) await expectImage(restored.url, repo, tag, image);
    }
    expect(readdirSync(join(target, 'uploads'))).toEqual([]);
  });

  it('copies blobs to another filesystem, and refuses a directory that is not empty', async () => {
    const storage = tempDir('airlock-offline-');
    const t = await startTestServer({ storage });
    const image = await pushImage(t.url, 'offline/app', 'v1', { layers: 3 });
    await t.close();

    const mountPoint = tempDir('airlock-backup-fs-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mountPoint]);
    cleanups.push(() => void execFileSync('umount', ['-l', mountPoint]));
    const target = join(mountPoint, `copy-${randomUUID()}`);
    const backup = await runCli(['backup', target, '--storage', storage], { timeoutMs: 60_000 });
    expect(backup.code, backup.stderr).toBe(0);
    expect(backup.stdout).toMatch(/4 blobs .*0 hard-linked, 4 copied/);

    const restored = await startTestServer({ storage: target });
    cleanups.push(() => restored.close());
    await expectImage(restored.url, 'offline/app', 'v1', image);
    // A real client pulls the image from the restored copy, every blob verified by skopeo.
    const pulled = join(tempDir('airlock-pulled-'), 'image');
    await skopeoCopy(`docker://${restored.host}/offline/app:v1`, `dir:${pulled}`, { srcInsecure: true, all: false });
    expect(listBlobsOfDir(pulled).map((b) => b.digest).sort()).toEqual([...image.blobs.keys()].sort());
    for (const blob of listBlobsOfDir(pulled)) expect(readFileSync(blob.path).equals(image.blobs.get(blob.digest)!)).toBe(true);

    const busy = join(tempDir('airlock-busy-'), 'x');
    mkdirSync(busy);
    execFileSync('touch', [join(busy, 'something')]);
    const refused = await runCli(['backup', busy, '--storage', storage], { timeoutMs: 30_000 });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('is not empty');
  });
});
