// `airlock migrate` moves a single-node store into a real PostgreSQL and a real S3 (Ceph radosgw):
// every row and blob arrives verified, an interrupted run resumes, the source is left as it was,
// and what cannot be moved is named.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/storage/blobstore.js';
import { PostgresMetadataStore } from '../../src/storage/postgres/store.js';
import { S3BlobStore } from '../../src/storage/s3-blobstore.js';
import { startCeph, type Ceph } from '../helpers/ceph.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { startTestServer } from '../helpers/server.js';
import { CLI, runCli } from '../server/cli.js';

let postgres: Postgres;
let ceph: Ceph;

beforeAll(async () => {
  [postgres, ceph] = await Promise.all([startPostgres(), startCeph()]);
}, 120_000);
afterAll(async () => {
  await Promise.all([postgres?.stop(), ceph?.stop()]);
});

interface Source {
  storage: string;
  images: { repo: string; tag: string; image: PushedImage }[];
}

/** A store with a few images pushed through a real server, then stopped. */
async function makeSource(count: number, layers = 2, layerSize = 4096): Promise<Source> {
  const storage = mkdtempSync(join(tmpdir(), 'airlock-migrate-src-'));
  const server = await startTestServer({ storage });
  const images: Source['images'] = [];
  try {
    for (let i = 0; i < count; i++) {
      const repo = `ocp/release-${i % 3}/component-${i}`;
      const tag = `v4.${i}`;
      images.push({ repo, tag, image: await pushImage(server.url, repo, tag, { layers, layerSize, format: i % 2 ? 'oci' : 'docker' }) });
    }
  } finally {
    await server.close();
  }
  return { storage, images };
}

function env(): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: ceph.accessKeyId, AWS_SECRET_ACCESS_KEY: ceph.secretAccessKey };
}

function sqliteCounts(storage: string): Record<string, number> {
  const db = new Database(join(storage, 'airlock.db'), { readonly: true });
  try {
    const count = (t: string) => (db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n;
    return { repositories: count('repositories'), blobs: count('blobs'), repo_blobs: count('repo_blobs'), manifests: count('manifests'), tags: count('tags') };
  } finally {
    db.close();
  }
}

async function pgCounts(url: string): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const count = async (t: string) => Number((await client.query(`SELECT COUNT(*) AS n FROM ${t}`)).rows[0].n);
    return {
      repositories: await count('repositories'),
      blobs: await count('blobs'),
      repo_blobs: await count('repo_blobs'),
      manifests: await count('manifests'),
      tags: await count('tags'),
    };
  } finally {
    await client.end();
  }
}

function blobStore(bucket: string): S3BlobStore {
  return new S3BlobStore({
    endpoint: ceph.endpoint,
    bucket,
    region: ceph.region,
    forcePathStyle: true,
    accessKeyId: ceph.accessKeyId,
    secretAccessKey: ceph.secretAccessKey,
    spoolDir: mkdtempSync(join(tmpdir(), 'airlock-migrate-spool-')),
  });
}

describe('airlock migrate', () => {
  it('moves every row and blob into PostgreSQL and S3, verified, and leaves the source as it was', async () => {
    const source = await makeSource(5);
    const database = await postgres.createDatabase();
    const bucket = await ceph.createBucket();
    const before = sqliteCounts(source.storage);
    const sourceDb = readFileSync(join(source.storage, 'airlock.db'));
    try {
      const run = await runCli(['migrate', '--storage', source.storage, '--database', database, '--s3', `${ceph.endpoint}/${bucket}`, '--json'], {
        env: env(),
        timeoutMs: 60_000,
      });
      expect(run.stderr).not.toMatch(/Error/);
      expect(run.code).toBe(0);
      const report = JSON.parse(run.stdout);
      expect(report.problems).toEqual([]);
      expect(report.blobs.copied).toBe(before.blobs);
      expect(await pgCounts(database)).toEqual(before);

      // What replicas will read: every tag resolves to its manifest, byte-exact, and every blob is
      // in the bucket with its bytes.
      const meta = await PostgresMetadataStore.open(database);
      const s3 = blobStore(bucket);
      try {
        for (const { repo, tag, image } of source.images) {
          const m = await meta.getTaggedManifest(repo, tag);
          expect(m?.digest).toBe(image.manifestDigest);
          expect(Buffer.compare(m!.content, image.manifest)).toBe(0);
          for (const [digest, bytes] of image.blobs) {
            expect(await meta.linkedBlobSize(repo, digest)).toBe(bytes.length);
            const stream = await s3.open(digest);
            const chunks: Buffer[] = [];
            for await (const c of stream!) chunks.push(c as Buffer);
            expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
          }
        }
        expect((await meta.listRepositories(100)).items.sort()).toEqual([...new Set(source.images.map((i) => i.repo))].sort());
        expect(await meta.totals()).toMatchObject({ manifests: before.manifests, blobs: before.blobs });
      } finally {
        await meta.close();
        s3.close();
      }
      // The source: same rows, same bytes.
      expect(sqliteCounts(source.storage)).toEqual(before);
      expect(readFileSync(join(source.storage, 'airlock.db')).equals(sourceDb)).toBe(true);

      // A second run finds everything there and writes nothing.
      const again = await runCli(['migrate', '--storage', source.storage, '--database', database, '--s3', `${ceph.endpoint}/${bucket}`, '--json'], {
        env: env(),
        timeoutMs: 60_000,
      });
      expect(again.code).toBe(0);
      const second = JSON.parse(again.stdout);
      expect(second.blobs).toMatchObject({ copied: 0, alreadyThere: before.blobs });
      expect(Object.values(second.rows).every((n) => n === 0)).toBe(true);
    } finally {
      rmSync(source.storage, { recursive: true, force: true });
    }
  }, 120_000);

  it('resumes after being killed mid-way and ends with the same result as one clean run', async () => {
    const source = await makeSource(12, 3, 2 * 1024 * 1024);
    const database = await postgres.createDatabase();
    const bucket = await ceph.createBucket();
    try {
      const args = ['migrate', '--storage', source.storage, '--database', database, '--s3', `${ceph.endpoint}/${bucket}`];
      // Killed once some blobs are in the bucket, before all are.
      const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env() }, stdio: 'ignore' });
      const s3 = blobStore(bucket);
      const digests = [...new Set(source.images.flatMap((i) => [...i.image.blobs.keys()]))];
      try {
        const deadline = Date.now() + 60_000;
        for (;;) {
          let present = 0;
          for (const d of digests) if ((await s3.size(d)) !== undefined) present++;
          if (present > 0 || child.exitCode !== null || Date.now() > deadline) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        const run = await runCli([...args, '--json'], { env: env(), timeoutMs: 90_000 });
        expect(run.code).toBe(0);
        expect(await pgCounts(database)).toEqual(sqliteCounts(source.storage));
        for (const { image } of source.images) {
          for (const [digest, bytes] of image.blobs) expect(await s3.size(digest)).toBe(bytes.length);
        }
      } finally {
        s3.close();
      }
    } finally {
      rmSync(source.storage, { recursive: true, force: true });
    }
  }, 180_000);

  it('names a corrupt blob, leaves its rows behind and exits 1; other content arrives', async () => {
    const source = await makeSource(2);
    const database = await postgres.createDatabase();
    const bucket = await ceph.createBucket();
    try {
      const victim = source.images[0]!.image.layerDigests[0]!;
      writeFileSync(new FsBlobStore(source.storage).blobPath(victim), 'not the bytes that were pushed');
      const run = await runCli(['migrate', '--storage', source.storage, '--database', database, '--s3', `${ceph.endpoint}/${bucket}`], {
        env: env(),
        timeoutMs: 60_000,
      });
      expect(run.code).toBe(1);
      expect(run.stdout).toContain(`not moved: ${victim}`);
      expect(run.stdout).toMatch(/airlock fsck/);
      const meta = await PostgresMetadataStore.open(database);
      try {
        expect(await meta.blobSize(victim)).toBeUndefined();
        const other = source.images[1]!;
        expect((await meta.getTaggedManifest(other.repo, other.tag))?.digest).toBe(other.image.manifestDigest);
      } finally {
        await meta.close();
      }
      const s3 = blobStore(bucket);
      expect(await s3.size(victim)).toBeUndefined();
      s3.close();
    } finally {
      rmSync(source.storage, { recursive: true, force: true });
    }
  }, 120_000);

  it('without --s3 verifies the blobs in place and moves only the metadata', async () => {
    const source = await makeSource(2);
    const database = await postgres.createDatabase();
    try {
      const run = await runCli(['migrate', '--storage', source.storage, '--database', database], { timeoutMs: 60_000 });
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/blobs: \d+ of \d+ verified in place/);
      expect(await pgCounts(database)).toEqual(sqliteCounts(source.storage));
    } finally {
      rmSync(source.storage, { recursive: true, force: true });
    }
  }, 120_000);

  it('refuses a database that holds another store, a running server, and bad targets', async () => {
    const first = await makeSource(1);
    const second = await makeSource(1);
    const database = await postgres.createDatabase();
    try {
      expect((await runCli(['migrate', '--storage', first.storage, '--database', database], { timeoutMs: 60_000 })).code).toBe(0);
      const refused = await runCli(['migrate', '--storage', second.storage, '--database', database], { timeoutMs: 60_000 });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('already holds the store migrated from');

      const noDb = await runCli(['migrate', '--storage', second.storage]);
      expect(noDb.code).toBe(2);
      expect(noDb.stderr).toContain('--database');
      const badS3 = await runCli(['migrate', '--storage', second.storage, '--database', database, '--s3', 'https://s3.example/Bad_Bucket']);
      expect(badS3.code).toBe(2);
      expect(badS3.stderr).toContain('bucket name "Bad_Bucket"');
      // A password never reaches the output, even when the database cannot be reached.
      const unreachable = await runCli(['migrate', '--storage', second.storage, '--database', 'postgres://airlock:hunter2@127.0.0.1:1/airlock'], { timeoutMs: 60_000 });
      expect(unreachable.code).toBe(1);
      expect(unreachable.stderr).not.toContain('hunter2');

      const server = await startTestServer({ storage: second.storage });
      try {
        const busy = await runCli(['migrate', '--storage', second.storage, '--database', database]);
        expect(busy.code).toBe(1);
        expect(busy.stderr).toContain('stop it first');
      } finally {
        await server.server.close();
      }
    } finally {
      rmSync(first.storage, { recursive: true, force: true });
      rmSync(second.storage, { recursive: true, force: true });
    }
  }, 120_000);
});

