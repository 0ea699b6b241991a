/**
 * `import` and `sync` killed (SIGKILL) half-way, then run again: the rerun completes, fetches only
 * what is missing, and leaves nothing duplicated and nothing corrupt — no half-written blob under
 * blobs/, no leftover upload file, no manifest whose content is not all there.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { startTestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { expectImageStored, ociLayoutBlobs, tempDirs } from '../e2e/support.js';
import { CLI, runCli, sleep } from '../server/cli.js';
import { expectStoreIntact } from './support.js';

const tmp = tempDirs('airgap-resume');
const cli = (args: string[]) => runCli(args, { timeoutMs: 300_000 });
const IMAGES = 4;

let srcDir: string;
let images: BuiltOciImage[];
let upstream: Distribution;

beforeAll(async () => {
  srcDir = tmp.make('src');
  // Incompressible layers big enough that a kill lands in the middle of the transfer.
  images = [];
  for (let i = 0; i < IMAGES; i++) {
    images.push(buildOciLayoutImage(srcDir, { tag: `v${i}`, layerBytes: 4 * 1024 * 1024, layersPerImage: 2 }));
    // Generating is synchronous: let the test runner's own messages through between images.
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  upstream = await startDistribution();
  for (const image of images) await skopeoCopy(image.ociRef, `docker://${upstream.host}/big/app:${image.tag}`, { destInsecure: true });
}, 300_000);

afterAll(async () => {
  await upstream?.stop();
  tmp.cleanup();
});

function blobFiles(storage: string): number {
  const root = join(storage, 'blobs', 'sha256');
  if (!existsSync(root)) return 0;
  return readdirSync(root).reduce((n, two) => n + readdirSync(join(root, two)).length, 0);
}

/** Starts the CLI and SIGKILLs it once `ready()` holds (some content written, not all). */
async function killHalfWay(args: string[], ready: () => boolean): Promise<void> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 120_000;
  while (!ready()) {
    if (child.exitCode !== null) throw new Error(`the command finished (exit ${child.exitCode}) before it could be killed half-way`);
    if (Date.now() > deadline) throw new Error('the command made no progress within 120s');
    await sleep(5);
  }
  child.kill('SIGKILL');
  await exited;
}

/** The metadata holds each blob once, and every manifest has all it references. */
function expectConsistent(storage: string): void {
  const db = new Database(join(storage, 'airlock.db'), { readonly: true });
  try {
    const files = expectStoreIntact(storage);
    expect(db.prepare('SELECT COUNT(*) FROM blobs').pluck().get()).toBe(files);
    const dangling = db
      .prepare(
        `SELECT COUNT(*) FROM manifest_refs r WHERE
           (r.kind = 'blob' AND NOT EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = r.repo_id AND b.digest = r.child))
        OR (r.kind = 'manifest' AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.repo_id AND m.digest = r.child))`,
      )
      .pluck()
      .get();
    expect(dangling).toBe(0);
  } finally {
    db.close();
  }
  expect(readdirSync(join(storage, 'uploads'))).toEqual([]);
}

async function expectAllImages(storage: string, repo: string): Promise<void> {
  const srv = await startTestServer({ storage });
  try {
    for (const image of images) await expectImageStored(srv.url, repo, image.tag, image, ociLayoutBlobs(srcDir));
  } finally {
    await srv.close();
  }
}

describe('killed half-way and rerun', () => {
  it('import of a layout completes on the rerun, nothing duplicated or corrupt', async () => {
    const storage = tmp.make('store-import');
    const total = new Set(images.flatMap((i) => i.blobDigests)).size;
    await killHalfWay(['import', srcDir, '--prefix', 'big/app', '--storage', storage], () => blobFiles(storage) >= 3);
    expect(blobFiles(storage)).toBeLessThan(total);
    const rerun = await cli(['import', srcDir, '--prefix', 'big/app', '--storage', storage]);
    expect(rerun.code, rerun.stderr + rerun.stdout).toBe(0);
    expect(rerun.stdout).toMatch(/already present/);
    expectConsistent(storage);
    await expectAllImages(storage, 'big/app');
  });

  it('sync into the store completes on the rerun, fetching only what is missing', async () => {
    const storage = tmp.make('store-sync');
    const refs = images.map((i) => `${upstream.host}/big/app:${i.tag}`);
    await killHalfWay(['sync', ...refs, '--insecure', '--concurrency', '2', '--storage', storage], () => blobFiles(storage) >= 3);
    const rerun = await cli(['sync', ...refs, '--insecure', '--storage', storage]);
    expect(rerun.code, rerun.stderr + rerun.stdout).toBe(0);
    expect(rerun.stdout).toMatch(/already present/);
    expectConsistent(storage);
    await expectAllImages(storage, `${upstream.host.replace(':', '_')}/big/app`);
  });

  it('sync --to-dir completes on the rerun, and the directory imports whole', async () => {
    const dir = join(tmp.make('carry'), 'layout');
    const refs = images.map((i) => `${upstream.host}/big/app:${i.tag}`);
    const layoutBlobs = () => (existsSync(join(dir, 'blobs', 'sha256')) ? readdirSync(join(dir, 'blobs', 'sha256')).length : 0);
    await killHalfWay(['sync', ...refs, '--insecure', '--to-dir', dir], () => layoutBlobs() >= 3);
    const rerun = await cli(['sync', ...refs, '--insecure', '--to-dir', dir]);
    expect(rerun.code, rerun.stderr + rerun.stdout).toBe(0);
    expect(existsSync(join(dir, '.airlock-tmp'))).toBe(false);
    const storage = tmp.make('store-carried');
    const imported = await cli(['import', dir, '--storage', storage]);
    expect(imported.code, imported.stderr + imported.stdout).toBe(0);
    expectConsistent(storage);
    await expectAllImages(storage, `${upstream.host.replace(':', '_')}/big/app`);
  });
});
