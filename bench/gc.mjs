#!/usr/bin/env node
// Garbage collection time for a large store, printed as items/s.
//
//   npm run build && node bench/gc.mjs [--blobs 100000] [--manifests 20000] [--repos 200]
//
// Seeds a fresh storage directory straight through the metadata store's database (one
// transaction) and the blob directory (one small file per blob): --manifests image manifests
// (every 10th an index over the two before it; 70% tagged, the rest tagless), each referencing
// 4 blobs of its repository, and --blobs blobs of which 80% are referenced and 20% are linked but
// referenced by nothing — the garbage. Everything is two hours old (past the grace period). Then
// runs a dry run and a real collection with the same code the server runs (dist/lifecycle/gc.js)
// and prints each one's time and items/s (items = manifests + blobs examined). Checks that exactly
// the garbage went; then a collection of the clean store and one with --untagged-older-than 1h
// (which removes the untagged manifests no index lists, and their blobs). A few minutes on 2 cores,
// most of it writing the blob files.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { GarbageCollector } from '../dist/lifecycle/gc.js';
import { KeyedLock } from '../dist/registry/keyed-lock.js';
import { FsBlobStore } from '../dist/storage/blobstore.js';
import { SqliteMetadataStore } from '../dist/storage/metadata.js';

const { values } = parseArgs({
  options: { blobs: { type: 'string', default: '100000' }, manifests: { type: 'string', default: '20000' }, repos: { type: 'string', default: '200' } },
});
const BLOBS = Number(values.blobs);
const MANIFESTS = Number(values.manifests);
const REPOS = Number(values.repos);
const REFS_PER_MANIFEST = 4;
const referenced = Math.min(BLOBS, Math.floor(BLOBS * 0.8));
const OLD = Date.now() - 2 * 3_600_000;

const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-gc-'));
const cleanup = () => rmSync(dir, { recursive: true, force: true });
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

try {
  const t0 = performance.now();
  new SqliteMetadataStore(join(dir, 'airlock.db')).close(); // creates the schema
  const db = new Database(join(dir, 'airlock.db'));
  db.pragma('journal_mode = WAL');
  const digests = [];
  const sizes = [];
  for (let i = 0; i < 256; i++) mkdirSync(join(dir, 'blobs', 'sha256', i.toString(16).padStart(2, '0')), { recursive: true });
  for (let i = 0; i < BLOBS; i++) {
    const data = randomBytes(64 + (i % 64));
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex), data);
    digests.push(`sha256:${hex}`);
    sizes.push(data.length);
  }
  // Blob i belongs to the repository of the manifest that references it (the garbage to any).
  const repoOfBlob = (i) => (i < referenced ? Math.floor(i / REFS_PER_MANIFEST) % REPOS : i % REPOS) + 1;
  db.transaction(() => {
    const repo = db.prepare('INSERT INTO repositories (id, name, created_at) VALUES (?, ?, ?)');
    for (let r = 1; r <= REPOS; r++) repo.run(r, `bench/repo${r}`, OLD);
    const blob = db.prepare('INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?)');
    const link = db.prepare('INSERT INTO repo_blobs (repo_id, digest, cached, created_at) VALUES (?, ?, 0, ?)');
    for (let i = 0; i < BLOBS; i++) {
      blob.run(digests[i], sizes[i], OLD, OLD);
      link.run(repoOfBlob(i), digests[i], OLD);
    }
    const manifest = db.prepare(
      `INSERT INTO manifests (repo_id, digest, media_type, size, content, cached, created_at, last_access) VALUES (?, ?, ?, ?, ?, 0, ?, ?)`,
    );
    const ref = db.prepare('INSERT OR IGNORE INTO manifest_refs (repo_id, parent, child, kind) VALUES (?, ?, ?, ?)');
    const tag = db.prepare('INSERT INTO tags (repo_id, name, digest, cached, updated_at) VALUES (?, ?, ?, 0, ?)');
    const manifestDigests = [];
    for (let m = 0; m < MANIFESTS; m++) {
      const repoId = (m % REPOS) + 1;
      const isIndex = m % 10 === 9 && m >= 2 && (m - 1) % REPOS === m % REPOS;
      const content = Buffer.from(JSON.stringify({ schemaVersion: 2, n: m, index: isIndex }));
      const digest = `sha256:${createHash('sha256').update(content).digest('hex')}`;
      manifestDigests.push(digest);
      manifest.run(repoId, digest, 'application/vnd.oci.image.manifest.v1+json', content.length, content, OLD, OLD);
      for (let k = 0; k < REFS_PER_MANIFEST; k++) {
        const b = (m * REFS_PER_MANIFEST + k) % Math.max(referenced, 1);
        if (repoOfBlob(b) === repoId) ref.run(repoId, digest, digests[b], 'blob');
      }
      if (m % 10 < 7) tag.run(repoId, `t${m}`, digest, OLD);
    }
  })();
  db.close();
  const seeded = performance.now();
  console.log(`seeded ${BLOBS} blobs and ${MANIFESTS} manifests in ${REPOS} repositories in ${((seeded - t0) / 1000).toFixed(1)}s`);

  const meta = new SqliteMetadataStore(join(dir, 'airlock.db'));
  const blobs = new FsBlobStore(dir);
  const gc = new GarbageCollector({ meta, blobs, blobLocks: new KeyedLock(), log: pino({ level: 'silent' }), graceMs: 3_600_000 });
  const items = BLOBS + MANIFESTS;
  for (const dryRun of [true, false]) {
    const start = performance.now();
    const r = await gc.run({ dryRun });
    const seconds = (performance.now() - start) / 1000;
    console.log(
      `gc${dryRun ? ' --dry-run' : ''}: ${items} items in ${seconds.toFixed(2)}s = ${Math.round(items / seconds)} items/s ` +
        `(${r.removedManifests} manifests, ${r.removedBlobs} blobs, ${(r.freedBytes / 1e6).toFixed(1)} MB ${dryRun ? 'would go' : 'removed'})`,
    );
    if (r.removedBlobs !== BLOBS - referenced) throw new Error(`expected ${BLOBS - referenced} blobs to go, not ${r.removedBlobs}`);
  }
  const again = performance.now();
  const r = await gc.run({});
  const seconds = (performance.now() - again) / 1000;
  const left = items - (BLOBS - referenced);
  console.log(`gc on the collected store: ${left} items in ${seconds.toFixed(2)}s = ${Math.round(left / seconds)} items/s (${r.removedBlobs} removed)`);
  const untaggedStart = performance.now();
  const u = await gc.run({ untaggedOlderThan: 3_600_000 });
  const untaggedSeconds = (performance.now() - untaggedStart) / 1000;
  console.log(
    `gc --untagged-older-than 1h: ${left} items in ${untaggedSeconds.toFixed(2)}s = ${Math.round(left / untaggedSeconds)} items/s ` +
      `(${u.removedManifests} manifests, ${u.removedBlobs} blobs removed)`,
  );
  meta.close();
} finally {
  cleanup();
}
