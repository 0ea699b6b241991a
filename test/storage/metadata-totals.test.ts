// The storage totals (/api/v1/stats, /metrics) are kept by triggers rather than counted per
// request; they must always equal what counting would say, after any change, and from the moment
// the migration runs on a database that already holds content.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteMetadataStore, type NewManifest } from '../../src/storage/metadata.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

function manifest(digest: string, blobRefs: string[] = []): NewManifest {
  const content = Buffer.from(`{"digest":"${digest}"}`);
  return { digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: content.length, content, subject: null, artifactType: null, annotations: null, blobRefs, manifestRefs: [] };
}

/** What counting the tables says (the queries totals() ran before it read the kept row). */
function counted(path: string) {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare(
        `SELECT (SELECT COUNT(*) FROM repositories r WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)) AS repositories,
                (SELECT COUNT(DISTINCT digest) FROM manifests) AS manifests,
                (SELECT COUNT(*) FROM blobs) AS blobs,
                (SELECT COALESCE(SUM(size), 0) FROM blobs) AS bytes`,
      )
      .get();
  } finally {
    db.close();
  }
}

describe('storage totals', () => {
  let dir: string;
  let path: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-totals-'));
    path = join(dir, 'airlock.db');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('equal the counted figures after pushes, shared digests, re-pushes, deletions and blob removal', async () => {
    const store = new SqliteMetadataStore(path);
    const check = async () => expect(await store.totals()).toEqual(counted(path));
    try {
      await check();
      await store.linkBlob('a/app', d('1'), 100);
      await store.linkBlob('b/app', d('1'), 100); // one blob, linked twice
      await store.linkBlob('a/app', d('2'), 50, true);
      await check();
      await store.putManifest('a/app', manifest(d('a'), [d('1')]), 'v1');
      await store.putManifest('b/app', manifest(d('a'), [d('1')]), 'v1'); // the same digest in another repository
      await store.putManifest('a/app', manifest(d('b')), 'v2');
      await store.putManifest('a/app', manifest(d('b')), 'v3'); // again: an upsert, nothing new
      await store.createUpload('upload-only', 'c/app'); // a repository row without a manifest
      await check();
      expect(await store.totals()).toEqual({ repositories: 2, manifests: 2, blobs: 2, bytes: 150 });
      await store.deleteManifest('a/app', d('a')); // still held by b/app
      await check();
      await store.deleteManifest('b/app', d('a')); // gone, and b/app with it
      await check();
      await store.deleteManifest('a/app', d('b'));
      await check();
      expect(await store.totals()).toEqual({ repositories: 0, manifests: 0, blobs: 2, bytes: 150 });
      expect(await store.forgetCachedBlob(d('2'), Date.now() + 1000)).toBe(true);
      await check();
      expect(await store.totals()).toEqual({ repositories: 0, manifests: 0, blobs: 1, bytes: 100 });
    } finally {
      await store.close();
    }
  });

  it('start from what a database already holds when the migration runs', async () => {
    const step = MIGRATIONS.findIndex((m) => m.includes('CREATE TABLE storage_totals'));
    expect(step).toBeGreaterThan(0);
    // A database of the schema just before the totals, with content.
    const db = new Database(path);
    for (const migration of MIGRATIONS.slice(0, step)) db.exec(migration);
    db.pragma(`user_version = ${step}`);
    const now = Date.now();
    db.prepare('INSERT INTO repositories (id, name, created_at) VALUES (?, ?, ?)').run(1, 'a/app', now);
    db.prepare('INSERT INTO repositories (id, name, created_at) VALUES (?, ?, ?)').run(2, 'b/app', now);
    db.prepare('INSERT INTO repositories (id, name, created_at) VALUES (?, ?, ?)').run(3, 'empty/app', now);
    const put = db.prepare(
      'INSERT INTO manifests (repo_id, digest, media_type, size, content, created_at, last_access) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    put.run(1, d('a'), 'x', 1, Buffer.from('a'), now, now);
    put.run(2, d('a'), 'x', 1, Buffer.from('a'), now, now);
    put.run(2, d('b'), 'x', 1, Buffer.from('b'), now, now);
    db.prepare('INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?)').run(d('1'), 7, now, now);
    db.close();

    const store = new SqliteMetadataStore(path);
    try {
      expect(await store.totals()).toEqual({ repositories: 2, manifests: 2, blobs: 1, bytes: 7 });
      expect(await store.totals()).toEqual(counted(path));
      await store.putManifest('empty/app', manifest(d('c')));
      expect(await store.totals()).toEqual({ repositories: 3, manifests: 3, blobs: 1, bytes: 7 });
    } finally {
      await store.close();
    }
  });
});
