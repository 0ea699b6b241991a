// The metadata store is asynchronous: callers await between calls, so other requests run in
// between. What has to be atomic is one store call; what is read lazily must not hold the
// connection while the caller awaits.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AccessTracker } from '../../src/lifecycle/access-tracker.js';
import { AuditTrail } from '../../src/server/audit-trail.js';
import { MissingReferencesError, SqliteMetadataStore, type NewManifest } from '../../src/storage/metadata.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

function manifest(digest: string, blobRefs: string[] = [], manifestRefs: string[] = [], cached = false): NewManifest {
  const content = Buffer.from(`{"digest":"${digest}"}`);
  return { digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: content.length, content, subject: null, artifactType: null, annotations: null, blobRefs, manifestRefs, cached };
}

describe('the asynchronous metadata store', () => {
  let dir: string;
  let store: SqliteMetadataStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-async-meta-'));
    store = new SqliteMetadataStore(join(dir, 'airlock.db'));
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists the repositories linking a blob lazily, in name order, while the store takes writes in between', async () => {
    // More than one page of names (pages are read as the caller goes).
    const repos = Array.from({ length: 250 }, (_, i) => `team/app-${String(i).padStart(3, '0')}`);
    for (const repo of repos) await store.linkBlob(repo, d('1'), 10);
    const seen: string[] = [];
    for await (const repo of store.reposLinkingBlob(d('1'))) {
      seen.push(repo);
      // Another request writing between two names (an open cursor would make SQLite refuse this).
      await store.linkBlob('other/app', d(String(2 + (seen.length % 7))), 10);
    }
    expect(seen).toEqual(repos);

    // A caller may stop at the first acceptable repository.
    const first = store.reposLinkingBlob(d('1'))[Symbol.asyncIterator]();
    expect((await first.next()).value).toBe('team/app-000');
    await first.return?.();
    await store.linkBlob('late/app', d('1'), 10);
    expect(await store.linkedBlobSize('late/app', d('1'))).toBe(10);
  });

  it('refuses a pushed manifest whose blobs or children the repository does not hold, in the same transaction as the write', async () => {
    await store.linkBlob('a/app', d('1'), 10);
    const refused = await store.putManifest('a/app', manifest(d('a'), [d('1'), d('2')], [d('c')]), 'v1').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MissingReferencesError);
    expect((refused as MissingReferencesError).blobs).toEqual([d('2')]);
    expect((refused as MissingReferencesError).manifests).toEqual([d('c')]);
    // Nothing of it was written.
    expect(await store.getManifest('a/app', d('a'))).toBeUndefined();
    expect(await store.getTag('a/app', 'v1')).toBeUndefined();

    // Complete, it is stored.
    await store.putManifest('a/app', manifest(d('a'), [d('1')]), 'v1');
    expect((await store.getTaggedManifest('a/app', 'v1'))?.digest).toBe(d('a'));
    // Cached content arrives before its blobs (pull-through fills them lazily): not checked.
    await store.putManifest('b/app', manifest(d('b'), [d('9')], [], true), 'v1');
    expect((await store.getTaggedManifest('b/app', 'v1'))?.digest).toBe(d('b'));
  });

  it('the access tracker reports a served blob as pending until its write has landed', async () => {
    await store.linkBlob('a/app', d('1'), 10);
    const tracker = new AccessTracker(store, 60_000);
    try {
      tracker.touch(d('1'));
      const flushing = tracker.flush();
      // Taken off the pending set but not yet awaited as written: eviction must still see it as served.
      expect(tracker.isPending(d('1'))).toBe(true);
      await flushing;
      expect(tracker.isPending(d('1'))).toBe(false);
    } finally {
      await tracker.close();
    }
  });

  it('the audit trail lists each event once while a flush is writing it', async () => {
    const audit = new AuditTrail(store, 60_000);
    try {
      audit.record({ action: 'push', user: 'alice', repo: 'a/app', tag: 'v1' });
      audit.record({ action: 'delete', user: 'bob', repo: 'a/app', tag: 'v1' });
      const flushing = audit.flush();
      const during = await audit.recent(10);
      await flushing;
      const after = await audit.recent(10);
      expect(during.map((e) => e.action)).toEqual(['delete', 'push']);
      expect(after.map((e) => e.action)).toEqual(['delete', 'push']);
      expect((await store.recentAuditEvents(10)).map((e) => e.user)).toEqual(['bob', 'alice']);
    } finally {
      await audit.close();
    }
  });
});
