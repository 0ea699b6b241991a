// A database written by the oldest airlock (only the first migration applied) opens, migrates to
// the current schema with its data intact, and works with what later versions added.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteMetadataStore } from '../../src/storage/metadata.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { startTestServer } from '../helpers/server.js';
import { runCli } from '../server/cli.js';

const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** What the first airlock wrote: schema version 1 and a pushed image in it. */
function writeVersion1Store(storage: string) {
  const layer = randomBytes(4096);
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
    }),
  );
  for (const blob of [layer, config]) {
    const hex = sha256(blob).slice(7);
    mkdirSync(join(storage, 'blobs', 'sha256', hex.slice(0, 2)), { recursive: true });
    writeFileSync(join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex), blob);
  }
  mkdirSync(join(storage, 'uploads'), { recursive: true });
  writeFileSync(join(storage, 'uploads', '0b9e6bb4-8e5a-4f0e-9a0e-4a4cbb0b0a01'), 'resumable bytes');

  const db = new Database(join(storage, 'airlock.db'));
  db.pragma('journal_mode = WAL');
  db.exec(MIGRATIONS[0]!);
  db.pragma('user_version = 1');
  const t = 1_600_000_000_000;
  db.prepare('INSERT INTO repositories (id, name, created_at) VALUES (1, ?, ?)').run('legacy/app', t);
  for (const blob of [layer, config]) {
    db.prepare('INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?)').run(sha256(blob), blob.length, t, t);
    db.prepare('INSERT INTO repo_blobs (repo_id, digest, cached, created_at) VALUES (1, ?, 0, ?)').run(sha256(blob), t);
    db.prepare("INSERT INTO manifest_refs (repo_id, parent, child, kind) VALUES (1, ?, ?, 'blob')").run(sha256(manifest), sha256(blob));
  }
  db.prepare(
    `INSERT INTO manifests (repo_id, digest, media_type, size, content, subject, artifact_type, annotations, cached, created_at, last_access)
     VALUES (1, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, NULL, NULL, NULL, 0, ?, ?)`,
  ).run(sha256(manifest), manifest.length, manifest, t, t);
  db.prepare('INSERT INTO tags (repo_id, name, digest, cached, updated_at) VALUES (1, ?, ?, 0, ?)').run('v1', sha256(manifest), t);
  // A session of today: it survives the upload TTL and stays resumable.
  db.prepare('INSERT INTO uploads (id, repo_id, created_at, updated_at) VALUES (?, 1, ?, ?)').run('0b9e6bb4-8e5a-4f0e-9a0e-4a4cbb0b0a01', Date.now(), Date.now());
  db.prepare("INSERT INTO counters (name, value) VALUES ('cache.hits', 42)").run();
  // A repository that only ever had a blob pushed: it was never listed, and must not be now.
  db.prepare('INSERT INTO repositories (id, name, created_at) VALUES (2, ?, ?)').run('legacy/blobs-only', t);
  db.prepare('INSERT INTO repo_blobs (repo_id, digest, cached, created_at) VALUES (2, ?, 0, ?)').run(sha256(layer), t);
  db.close();
  return { layer, config, manifest };
}

describe('schema upgrades', () => {
  it('opens a database from the oldest schema, migrates it and keeps every row', async () => {
    const storage = mkdtempSync(join(tmpdir(), 'airlock-v1-'));
    dirs.push(storage);
    const { layer, manifest } = writeVersion1Store(storage);

    const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
    try {
      const db = new Database(join(storage, 'airlock.db'), { readonly: true });
      expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
      db.close();
      const found = await meta.getTaggedManifest('legacy/app', 'v1');
      expect(found?.digest).toBe(sha256(manifest));
      expect(found?.content.equals(manifest)).toBe(true);
      expect(await meta.linkedBlobSize('legacy/app', sha256(layer))).toBe(layer.length);
      expect((await meta.readCounters())['cache.hits']).toBe(42);
      expect((await meta.getUpload('0b9e6bb4-8e5a-4f0e-9a0e-4a4cbb0b0a01'))?.repo).toBe('legacy/app');
      // Listing: the repository holding a manifest is listed, the one with only a blob is not.
      expect((await meta.listRepositories(10)).items).toEqual(['legacy/app']);
      expect(await meta.repositoryExists('legacy/blobs-only')).toBe(false);
      // Later features on old rows: upload owners (old sessions have none), origins, upstream notes, eviction.
      expect(await meta.countUploads('')).toBe(1);
      await meta.setOrigin('legacy/app', 'quay.io/legacy/app');
      expect(await meta.listOrigins()).toEqual([{ repo: 'legacy/app', origin: 'quay.io/legacy/app' }]);
      await meta.saveUpstreamErrors(new Map([['quay.io', 'timeout']]));
      expect((await meta.readUpstreamErrors()).get('quay.io')).toBe('timeout');
      expect(await meta.evictionCandidates(10)).toEqual([]); // pushed content is never a candidate
      expect(await meta.totals()).toEqual({ repositories: 1, manifests: 1, blobs: 2, bytes: layer.length + 37 });
    } finally {
      await meta.close();
    }
  });

  it('serves an old store after the upgrade, and fsck finds it clean', async () => {
    const storage = mkdtempSync(join(tmpdir(), 'airlock-v1-serve-'));
    dirs.push(storage);
    const { layer, manifest } = writeVersion1Store(storage);
    const t = await startTestServer({ storage });
    try {
      const got = await fetch(`${t.url}/v2/legacy/app/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
      expect(Buffer.from(await got.arrayBuffer()).equals(manifest)).toBe(true);
      const blob = await fetch(`${t.url}/v2/legacy/app/blobs/${sha256(layer)}`);
      expect(Buffer.from(await blob.arrayBuffer()).equals(layer)).toBe(true);
      const check = await runCli(['fsck', '--storage', storage], { timeoutMs: 30_000 });
      expect(check.code, check.stdout).toBe(0);
      expect(check.stdout).toMatch(/unfinished upload\s+uploads\/0b9e6bb4-8e5a-4f0e-9a0e-4a4cbb0b0a01: 15 B for legacy\/app/);
    } finally {
      await t.close();
    }
  });
});
