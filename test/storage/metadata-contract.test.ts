// One set of behaviours every MetadataStore keeps, run against the embedded SQLite store and the
// shared PostgreSQL one (a real server started for this file, a fresh database per store). Every
// call is awaited, so the same cases hold for today's synchronous store and the asynchronous one.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteMetadataStore, type MetadataStore, type NewManifest } from '../../src/storage/metadata.js';
import { PostgresMetadataStore } from '../../src/storage/postgres/store.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';

type Store = MetadataStore;

/** Opens stores on one backend; `shared()` gives a database (or file) two stores can open. */
interface Backend {
  name: string;
  /** A place for one metadata database. */
  fresh(): Promise<string>;
  open(where: string): Promise<Store>;
}

const dirs: string[] = [];
const opened: Store[] = [];
let postgres: Postgres | undefined;

const sqlite: Backend = {
  name: 'SQLite',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-contract-'));
    dirs.push(dir);
    return join(dir, 'airlock.db');
  },
  async open(where) {
    const store = new SqliteMetadataStore(where);
    opened.push(store);
    return store;
  },
};

const pgBackend: Backend = {
  name: 'PostgreSQL',
  async fresh() {
    return postgres!.createDatabase();
  },
  async open(where) {
    const store = await PostgresMetadataStore.open(where);
    opened.push(store);
    return store;
  },
};

beforeAll(async () => {
  postgres = await startPostgres();
}, 60_000);

afterAll(async () => {
  for (const store of opened) await store.close();
  await postgres?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const sha = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function manifest(name: string, extra: Partial<NewManifest> = {}): NewManifest {
  const content = Buffer.from(JSON.stringify({ schemaVersion: 2, name }));
  return {
    digest: sha(content.toString()),
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    size: content.length,
    content,
    subject: null,
    artifactType: null,
    annotations: null,
    blobRefs: [],
    manifestRefs: [],
    ...extra,
  };
}

async function collect(iterable: Iterable<string> | AsyncIterable<string>, max = Infinity): Promise<string[]> {
  const out: string[] = [];
  for await (const item of iterable) {
    out.push(item);
    if (out.length >= max) break;
  }
  return out;
}

describe.each([sqlite, pgBackend])('MetadataStore contract on $name', (backend) => {
  const open = async () => backend.open(await backend.fresh());

  describe('blobs', () => {
    it('are linked per repository and sized only where linked', async () => {
      const store = await open();
      const blob = sha('layer');
      expect(await store.blobSize(blob)).toBeUndefined();
      await store.linkBlob('a/one', blob, 123);
      expect(await store.linkedBlobSize('a/one', blob)).toBe(123);
      expect(await store.linkedBlobSize('a/two', blob)).toBeUndefined();
      expect(await store.linkedBlobSize('never/seen', blob)).toBeUndefined();
      expect(await store.blobSize(blob)).toBe(123);
      // A second link records no new blob and keeps the verified size.
      await store.linkBlob('a/two', blob, 123);
      expect(await store.linkedBlobSize('a/two', blob)).toBe(123);
      expect((await store.totals()).blobs).toBe(1);
    });

    it('unlinks one repository only, and says whether there was a link', async () => {
      const store = await open();
      const blob = sha('unlink');
      await store.linkBlob('r1', blob, 5);
      await store.linkBlob('r2', blob, 5);
      expect(await store.unlinkBlob('r1', blob)).toBe(true);
      expect(await store.unlinkBlob('r1', blob)).toBe(false);
      expect(await store.unlinkBlob('nowhere', blob)).toBe(false);
      expect(await store.linkedBlobSize('r1', blob)).toBeUndefined();
      expect(await store.linkedBlobSize('r2', blob)).toBe(5);
      expect(await store.blobSize(blob)).toBe(5);
    });

    it('reports missing blobs in the order asked, duplicates included', async () => {
      const store = await open();
      const [a, b, c] = [sha('a'), sha('b'), sha('c')];
      await store.linkBlob('repo', b, 1);
      await store.linkBlob('other', c, 1);
      expect(await store.missingBlobs('repo', [c, a, b, a])).toEqual([c, a, a]);
      expect(await store.missingBlobs('repo', [])).toEqual([]);
      expect(await store.missingBlobs('unknown', [a, b])).toEqual([a, b]);
    });

    it('turn a cached link into pushed content, never the other way', async () => {
      const store = await open();
      const blob = sha('cached-then-pushed');
      await store.linkBlob('mirror', blob, 100, true);
      expect(await store.cachedOnlyBytes()).toBe(100);
      expect(await store.evictionCandidates(10)).toEqual([{ digest: blob, size: 100 }]);
      await store.linkBlob('mirror', blob, 100, false);
      expect(await store.cachedOnlyBytes()).toBe(0);
      await store.linkBlob('mirror', blob, 100, true);
      expect(await store.cachedOnlyBytes()).toBe(0);
      expect(await store.evictionCandidates(10)).toEqual([]);
    });

    it('list the repositories linking a blob in name order, all of them, and stop when asked', async () => {
      const store = await open();
      const blob = sha('base layer');
      const names = Array.from({ length: 230 }, (_, i) => `team/app-${String(i).padStart(3, '0')}`);
      for (const name of [...names].reverse()) await store.linkBlob(name, blob, 7);
      await store.linkBlob('unrelated', sha('other'), 7);
      expect(await collect(store.reposLinkingBlob(blob))).toEqual(names);
      expect(await collect(store.reposLinkingBlob(blob), 3)).toEqual(names.slice(0, 3));
      expect(await collect(store.reposLinkingBlob(sha('nobody')))).toEqual([]);
    });
  });

  describe('repositories', () => {
    it('exist only once they hold a manifest: blob links and uploads alone do not show', async () => {
      const store = await open();
      await store.linkBlob('only/blobs', sha('x'), 1);
      await store.createUpload('u1', 'only/uploads');
      expect(await store.repositoryExists('only/blobs')).toBe(false);
      expect(await store.repositoryExists('only/uploads')).toBe(false);
      expect(await store.repositoryExists('never')).toBe(false);
      expect((await store.listRepositories(10)).items).toEqual([]);
      await store.putManifest('only/blobs', manifest('m'));
      expect(await store.repositoryExists('only/blobs')).toBe(true);
      expect(await store.listRepositories(10)).toEqual({ items: ['only/blobs'], more: false });
      expect((await store.totals()).repositories).toBe(1);
    });

    it('are listed in byte order, page by page after `last`', async () => {
      const store = await open();
      const names = ['b', 'a/b', 'a', 'B', 'a-b', 'a.b', 'a/a', 'z9'];
      for (const name of names) await store.putManifest(name, manifest(name));
      const sorted = [...names].sort(); // JS string order = byte order for ASCII names
      expect(sorted[0]).toBe('B');
      const first = await store.listRepositories(3);
      expect(first).toEqual({ items: sorted.slice(0, 3), more: true });
      const second = await store.listRepositories(3, first.items[2]);
      expect(second).toEqual({ items: sorted.slice(3, 6), more: true });
      const third = await store.listRepositories(3, second.items[2]);
      expect(third).toEqual({ items: sorted.slice(6), more: false });
      expect(await store.listRepositories(100, 'z9')).toEqual({ items: [], more: false });
    });
  });

  describe('manifests and tags', () => {
    it('keep manifest bytes exact and resolve tags in one step', async () => {
      const store = await open();
      const bytes = Buffer.from([0x7b, 0x00, 0xff, 0x0a, 0xe2, 0x82, 0xac, 0x7d]);
      const m = manifest('exact', { content: bytes, size: bytes.length, annotations: '{"k":"v"}', artifactType: 'application/x' });
      await store.putManifest('repo', m, 'v1');
      const got = await store.getManifest('repo', m.digest);
      expect(got).toEqual({
        digest: m.digest,
        mediaType: m.mediaType,
        size: bytes.length,
        content: bytes,
        subject: null,
        artifactType: 'application/x',
        annotations: '{"k":"v"}',
      });
      expect(Buffer.compare(got!.content, bytes)).toBe(0);
      expect(await store.getTaggedManifest('repo', 'v1')).toEqual(got);
      expect(await store.getTaggedManifest('repo', 'v2')).toBeUndefined();
      expect(await store.getManifest('other', m.digest)).toBeUndefined();
      expect(await store.getTaggedManifest('other', 'v1')).toBeUndefined();
    });

    it('move a tag to the manifest pushed last and keep the old manifest', async () => {
      const store = await open();
      const one = manifest('one');
      const two = manifest('two');
      await store.putManifest('repo', one, 'latest');
      await store.putManifest('repo', two, 'latest');
      expect((await store.getTag('repo', 'latest'))?.digest).toBe(two.digest);
      expect((await store.getTaggedManifest('repo', 'latest'))?.digest).toBe(two.digest);
      expect(await store.getManifest('repo', one.digest)).toBeDefined();
      // Putting the same manifest again without a tag leaves the tag alone.
      await store.putManifest('repo', one);
      expect((await store.getTag('repo', 'latest'))?.digest).toBe(two.digest);
    });

    it('record whether a tag was learnt from an upstream, and when it was confirmed', async () => {
      const store = await open();
      const m = manifest('cached', { cached: true });
      const before = Date.now();
      await store.putManifest('mirror', m, 'v1');
      const tag = await store.getTag('mirror', 'v1');
      expect(tag).toMatchObject({ digest: m.digest, cached: true });
      expect(tag!.updatedAt).toBeGreaterThanOrEqual(before);
      await sleep(5);
      await store.touchTag('mirror', 'v1');
      expect((await store.getTag('mirror', 'v1'))!.updatedAt).toBeGreaterThan(tag!.updatedAt);
      await store.touchTag('mirror', 'missing');
      await store.touchTag('no-repo', 'v1');
      expect(await store.getTag('mirror', 'missing')).toBeUndefined();
      // Pushed over it: a pushed tag.
      await store.putManifest('mirror', { ...m, cached: false }, 'v1');
      expect((await store.getTag('mirror', 'v1'))?.cached).toBe(false);
    });

    it('put a manifest with several tags at once (a repeated tag is one), moving one from another manifest', async () => {
      const store = await open();
      const old = manifest('old');
      const m = manifest('multi');
      await store.putManifest('repo', old, 'latest');
      await store.putManifest('repo', m, ['1.2.3', '1.2', 'latest', '1.2']);
      expect((await store.listTags('repo', 10)).items).toEqual(['1.2', '1.2.3', 'latest']);
      for (const tag of ['1.2.3', '1.2', 'latest']) expect((await store.getTag('repo', tag))?.digest).toBe(m.digest);
      await store.putManifest('repo', m, []);
      expect((await store.listTags('repo', 10)).items).toEqual(['1.2', '1.2.3', 'latest']);
    });

    it('delete a manifest with every tag pointing at it, once', async () => {
      const store = await open();
      const m = manifest('doomed');
      const keep = manifest('kept');
      await store.putManifest('repo', m, 'a');
      await store.putManifest('repo', m, 'b');
      await store.putManifest('repo', keep, 'c');
      expect(await store.deleteManifest('repo', m.digest)).toBe(true);
      expect(await store.deleteManifest('repo', m.digest)).toBe(false);
      expect(await store.deleteManifest('nowhere', m.digest)).toBe(false);
      expect(await store.getManifest('repo', m.digest)).toBeUndefined();
      expect(await store.getTag('repo', 'a')).toBeUndefined();
      expect((await store.listTags('repo', 10)).items).toEqual(['c']);
      expect(await store.repositoryExists('repo')).toBe(true);
      expect(await store.deleteManifest('repo', keep.digest)).toBe(true);
      // Emptied, it is still listed (no tags) until a collection, though it counts no more.
      expect(await store.repositoryExists('repo')).toBe(true);
      expect((await store.listTags('repo', 10)).items).toEqual([]);
      expect((await store.listRepositories(10)).items).toEqual(['repo']);
      // The dashboard's browsing agrees with the catalog, by prefix and by folder.
      const browse = async (prefix: string, delimiter: boolean) => (await store.browseRepositories(prefix, 10, undefined, delimiter)).items.map((n) => n.name);
      expect(await browse('', false)).toEqual(['repo']);
      expect(await browse('', true)).toEqual(['repo']);
      expect(await browse('repo', false)).toEqual(['repo']);
      expect((await store.totals()).repositories).toBe(0);
      const collect = async (dryRun: boolean) => {
        await store.collectManifests({ graceBefore: 0, dryRun });
        const forgotten = await store.forgetEmptiedRepositories({ graceBefore: 0, dryRun });
        await store.endCollection();
        return forgotten;
      };
      expect(await collect(true)).toEqual(['repo']);
      expect(await store.repositoryExists('repo')).toBe(true);
      expect(await collect(false)).toEqual(['repo']);
      expect(await store.repositoryExists('repo')).toBe(false);
      expect((await store.listRepositories(10)).items).toEqual([]);
      expect(await browse('', true)).toEqual([]);
      expect(await collect(false)).toEqual([]);
      await store.putManifest('repo', keep, 'c');
      expect(await store.repositoryExists('repo')).toBe(true);
    });

    it('a collection that removes a repository\'s last manifest forgets the repository; a dry run names it', async () => {
      const store = await open();
      await store.putManifest('untagged', manifest('old untagged'));
      await store.putManifest('tagged', manifest('kept'), 'v1');
      const policy = (dryRun: boolean) => ({ graceBefore: Date.now() + 60_000, untaggedBefore: Date.now() + 60_000, dryRun });
      const collect = async (dryRun: boolean) => {
        const removed = await store.collectManifests(policy(dryRun));
        const forgotten = await store.forgetEmptiedRepositories(policy(dryRun));
        await store.endCollection();
        return { removed: removed.map((m) => m.repo), forgotten };
      };
      expect(await collect(true)).toEqual({ removed: ['untagged'], forgotten: ['untagged'] });
      expect((await store.listRepositories(10)).items).toEqual(['tagged', 'untagged']);
      expect(await collect(false)).toEqual({ removed: ['untagged'], forgotten: ['untagged'] });
      expect((await store.listRepositories(10)).items).toEqual(['tagged']);
    });

    it('delete single tags and list tags in byte order by page', async () => {
      const store = await open();
      const m = manifest('tagged');
      for (const tag of ['v2', 'v10', 'latest', 'V1', 'v1']) await store.putManifest('repo', m, tag);
      const all = ['V1', 'latest', 'v1', 'v10', 'v2'];
      expect(await store.listTags('repo', 10)).toEqual({ items: all, more: false });
      expect(await store.listTags('repo', 2)).toEqual({ items: all.slice(0, 2), more: true });
      expect(await store.listTags('repo', 2, 'latest')).toEqual({ items: ['v1', 'v10'], more: true });
      expect(await store.listTags('repo', 2, 'v10')).toEqual({ items: ['v2'], more: false });
      expect(await store.listTags('nowhere', 2)).toEqual({ items: [], more: false });
      expect(await store.deleteTag('repo', 'v1')).toBe(true);
      expect(await store.deleteTag('repo', 'v1')).toBe(false);
      expect(await store.deleteTag('nowhere', 'v1')).toBe(false);
      expect(await store.getManifest('repo', m.digest)).toBeDefined();
    });

    it('report missing manifests in the order asked', async () => {
      const store = await open();
      const [a, b] = [manifest('a'), manifest('b')];
      await store.putManifest('repo', a);
      expect(await store.missingManifests('repo', [b.digest, a.digest, b.digest])).toEqual([b.digest, b.digest]);
      expect(await store.missingManifests('unknown', [a.digest])).toEqual([a.digest]);
      expect(await store.missingManifests('repo', [])).toEqual([]);
    });

    it('refuse a pushed manifest whose references are missing at the moment it is written, and write nothing', async () => {
      const store = await open();
      const child = manifest('child');
      const present = sha('present layer');
      const absent = sha('absent layer');
      await store.linkBlob('repo', present, 10);
      const image = manifest('image', { blobRefs: [present, absent] });
      await expect(store.putManifest('repo', image, 'v1')).rejects.toMatchObject({ blobs: [absent], manifests: [] });
      const index = manifest('index', { manifestRefs: [child.digest] });
      await expect(store.putManifest('repo', index, 'v2')).rejects.toMatchObject({ blobs: [], manifests: [child.digest] });
      expect(await store.getManifest('repo', image.digest)).toBeUndefined();
      expect(await store.getTag('repo', 'v1')).toBeUndefined();
      expect(await store.getTag('repo', 'v2')).toBeUndefined();
      // Cached copies are stored as they come (an index's children arrive lazily).
      await store.putManifest('repo', { ...index, cached: true }, 'v2');
      expect((await store.getTaggedManifest('repo', 'v2'))?.digest).toBe(index.digest);
    });

    it('list referrers of a subject in arrival order, filtered by artifact type', async () => {
      const store = await open();
      const subject = manifest('subject');
      await store.putManifest('repo', subject);
      const sig = manifest('sig', { subject: subject.digest, artifactType: 'application/vnd.dev.cosign' });
      await sleep(2);
      const sbom = manifest('sbom', { subject: subject.digest, artifactType: 'application/spdx+json', annotations: '{"a":"b"}' });
      const elsewhere = manifest('elsewhere', { subject: sha('another subject'), artifactType: 'application/spdx+json' });
      await store.putManifest('repo', sig);
      await sleep(2);
      await store.putManifest('repo', sbom);
      await store.putManifest('repo', elsewhere);
      await store.putManifest('other', manifest('other-ref', { subject: subject.digest }));
      expect((await store.referrers('repo', subject.digest)).map((m) => m.digest)).toEqual([sig.digest, sbom.digest]);
      const filtered = await store.referrers('repo', subject.digest, 'application/spdx+json');
      expect(filtered.map((m) => m.digest)).toEqual([sbom.digest]);
      expect(filtered[0]!.annotations).toBe('{"a":"b"}');
      expect(await store.referrers('repo', subject.digest, 'none')).toEqual([]);
      expect(await store.referrers('nowhere', subject.digest)).toEqual([]);
    });

    it('pin the cached blobs a pushed manifest uses; a cached manifest pins nothing', async () => {
      const store = await open();
      const [layer, config] = [sha('pin layer'), sha('pin config')];
      await store.linkBlob('repo', layer, 1000, true);
      await store.linkBlob('repo', config, 10, true);
      await store.putManifest('repo', manifest('cached', { blobRefs: [layer, config], cached: true }));
      expect(await store.cachedOnlyBytes()).toBe(1010);
      await store.putManifest('repo', manifest('pushed', { blobRefs: [layer] }));
      expect(await store.cachedOnlyBytes()).toBe(10);
      expect((await store.evictionCandidates(10)).map((c) => c.digest)).toEqual([config]);
    });

    it('count repositories holding manifests, distinct manifest digests, blobs and bytes', async () => {
      const store = await open();
      const m = manifest('shared');
      await store.putManifest('r1', m);
      await store.putManifest('r2', m);
      await store.putManifest('r2', manifest('own'));
      await store.linkBlob('r1', sha('b1'), 10);
      await store.linkBlob('r2', sha('b1'), 10);
      await store.linkBlob('r3', sha('b2'), 32);
      expect(await store.totals()).toEqual({ repositories: 2, manifests: 2, blobs: 2, bytes: 42 });
      await store.deleteManifest('r1', m.digest);
      expect(await store.totals()).toEqual({ repositories: 1, manifests: 2, blobs: 2, bytes: 42 });
      await store.deleteManifest('r2', m.digest);
      expect(await store.totals()).toEqual({ repositories: 1, manifests: 1, blobs: 2, bytes: 42 });
    });
  });

  describe('uploads', () => {
    it('are shared sessions with an owner, a repository and a last-touched time', async () => {
      const store = await open();
      const before = Date.now();
      await store.createUpload('u-1', 'repo/a', 'alice');
      await store.createUpload('u-2', 'repo/b', 'alice');
      await store.createUpload('u-3', 'repo/a');
      expect(await store.countUploads('alice')).toBe(2);
      expect(await store.countUploads('')).toBe(1);
      expect(await store.countUploads('bob')).toBe(0);
      const upload = await store.getUpload('u-1');
      expect(upload).toMatchObject({ id: 'u-1', repo: 'repo/a' });
      expect(upload!.createdAt).toBeGreaterThanOrEqual(before);
      expect(upload!.updatedAt).toBe(upload!.createdAt);
      expect(await store.getUpload('u-none')).toBeUndefined();
      await sleep(5);
      const cut = Date.now();
      await sleep(5);
      await store.touchUpload('u-1');
      expect((await store.getUpload('u-1'))!.updatedAt).toBeGreaterThan(cut);
      expect((await store.uploadsUpdatedBefore(cut)).map((u) => u.id).sort()).toEqual(['u-2', 'u-3']);
      await store.deleteUpload('u-2');
      await store.deleteUpload('u-none');
      expect(await store.getUpload('u-2')).toBeUndefined();
      expect(await store.countUploads('alice')).toBe(1);
    });
  });

  describe('counters, access times and eviction basics', () => {
    it('add counters up and skip zero deltas', async () => {
      const store = await open();
      expect(await store.readCounters()).toEqual({});
      await store.addCounters({ hits: 2, bytes: 5_000_000_000, misses: 0 });
      await store.addCounters({ hits: 3 });
      await store.addCounters({});
      expect(await store.readCounters()).toEqual({ hits: 5, bytes: 5_000_000_000 });
    });

    it('evict least recently served first, and forget only idle cached-only blobs', async () => {
      const store = await open();
      const [old, fresh, pushed] = [sha('old'), sha('fresh'), sha('pushed')];
      await store.linkBlob('mirror', old, 1, true);
      await store.linkBlob('mirror', fresh, 2, true);
      await store.linkBlob('mirror', pushed, 4, true);
      await store.linkBlob('local', pushed, 4, false);
      const now = Date.now();
      await store.touchBlobs([fresh, old], now + 2000);
      await store.touchBlobs(new Set([old]), now + 1000); // older than recorded: ignored
      await store.touchBlobs([], now);
      await store.touchBlobs([fresh], now + 3000);
      expect(await store.evictionCandidates(10)).toEqual([
        { digest: old, size: 1 },
        { digest: fresh, size: 2 },
      ]);
      expect(await store.evictionCandidates(1)).toEqual([{ digest: old, size: 1 }]);
      // Served since the cut: kept.
      expect(await store.forgetCachedBlob(fresh, now + 2500)).toBe(false);
      // Pushed content is never forgotten.
      expect(await store.forgetCachedBlob(pushed, now + 10_000)).toBe(false);
      expect(await store.forgetCachedBlob(old, now + 2500)).toBe(true);
      expect(await store.forgetCachedBlob(old, now + 2500)).toBe(false);
      expect(await store.blobSize(old)).toBeUndefined();
      expect(await store.linkedBlobSize('mirror', old)).toBeUndefined();
      expect(await store.totals()).toMatchObject({ blobs: 2, bytes: 6 });
      // Forgotten, it can be cached again.
      await store.linkBlob('mirror', old, 1, true);
      expect(await store.linkedBlobSize('mirror', old)).toBe(1);
    });
  });

  describe('notes and origins', () => {
    it('remember the last error per upstream and the origin per repository', async () => {
      const store = await open();
      expect((await store.readUpstreamErrors()).size).toBe(0);
      await store.saveUpstreamErrors(new Map([['quay.io', 'timeout'], ['docker.io', '429']]));
      await store.saveUpstreamErrors(new Map([['quay.io', 'connection refused']]));
      await store.saveUpstreamErrors(new Map());
      expect(await store.readUpstreamErrors()).toEqual(new Map([['quay.io', 'connection refused'], ['docker.io', '429']]));
      await store.setOrigin('ocp/release', 'quay.io/openshift-release-dev/ocp-release');
      await store.setOrigin('ocp/art', 'quay.io/old');
      await store.setOrigin('ocp/art', 'quay.io/openshift-release-dev/ocp-v4.0-art-dev');
      expect(await store.listOrigins()).toEqual([
        { repo: 'ocp/art', origin: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev' },
        { repo: 'ocp/release', origin: 'quay.io/openshift-release-dev/ocp-release' },
      ]);
    });

    it('answers ping while open', async () => {
      const store = await open();
      await expect(Promise.resolve(store.ping())).resolves.toBeUndefined();
    });
  });

  describe('two stores on one database', () => {
    it('see each other\'s writes at once: a tag moved by one is resolved moved by the other', async () => {
      const where = await backend.fresh();
      const a = await backend.open(where);
      const b = await backend.open(where);
      const [one, two] = [manifest('v1'), manifest('v2')];
      await a.putManifest('app', one, 'latest');
      expect((await b.getTaggedManifest('app', 'latest'))?.digest).toBe(one.digest);
      expect(await b.repositoryExists('app')).toBe(true);
      await a.putManifest('app', two, 'latest');
      expect((await b.getTaggedManifest('app', 'latest'))?.digest).toBe(two.digest);
      await b.deleteTag('app', 'latest');
      expect(await a.getTag('app', 'latest')).toBeUndefined();
      // An upload opened on one continues on the other.
      await a.createUpload('shared-upload', 'app', 'alice');
      expect((await b.getUpload('shared-upload'))?.repo).toBe('app');
      await b.touchUpload('shared-upload');
      await b.deleteUpload('shared-upload');
      expect(await a.getUpload('shared-upload')).toBeUndefined();
      // Counters are summed across both.
      await a.addCounters({ hits: 1 });
      await b.addCounters({ hits: 2 });
      expect((await a.readCounters()).hits).toBe(3);
      // A blob linked by one is mountable through the other.
      await b.linkBlob('base', sha('shared blob'), 9);
      expect(await collect(a.reposLinkingBlob(sha('shared blob')))).toEqual(['base']);
    });

    it('store the same manifest and blobs at the same time without failing, and count them once', async () => {
      const where = await backend.fresh();
      const a = await backend.open(where);
      const b = await backend.open(where);
      const layers = Array.from({ length: 4 }, (_, i) => sha(`concurrent layer ${i}`));
      const m = manifest('concurrent', { blobRefs: layers });
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 12; i++) {
        const store = i % 2 === 0 ? a : b;
        const repo = `app${i % 3}`;
        writes.push(
          (async () => {
            for (const layer of layers) await store.linkBlob(repo, layer, 1000, i % 4 === 1);
            await store.putManifest(repo, { ...m, cached: i % 4 === 1 }, `t${i % 2}`);
            await store.addCounters({ pushes: 1 });
            await store.touchBlobs(layers, Date.now());
          })(),
        );
      }
      await Promise.all(writes);
      expect(await a.totals()).toEqual({ repositories: 3, manifests: 1, blobs: 4, bytes: 4000 });
      expect(await b.totals()).toEqual({ repositories: 3, manifests: 1, blobs: 4, bytes: 4000 });
      for (const repo of ['app0', 'app1', 'app2']) {
        expect(await b.missingBlobs(repo, layers)).toEqual([]);
        expect((await a.getTaggedManifest(repo, 't0'))?.digest).toBe(m.digest);
      }
      expect((await a.readCounters()).pushes).toBe(12);
      // Pushed at least once in every repository: nothing cached-only remains.
      expect(await a.cachedOnlyBytes()).toBe(0);
    });

    it('never lose a pushed link to an eviction racing it on the other store', async () => {
      const where = await backend.fresh();
      const a = await backend.open(where);
      const b = await backend.open(where);
      for (let round = 0; round < 15; round++) {
        const blob = sha(`raced ${round}`);
        await a.linkBlob('mirror', blob, 50, true);
        const [forgotten] = await Promise.all([
          Promise.resolve(a.forgetCachedBlob(blob, Date.now() + 60_000)),
          Promise.resolve(b.linkBlob('local', blob, 50, false)),
        ]);
        // Whichever came first, the push was acknowledged: its link and the blob row hold.
        expect(await a.linkedBlobSize('local', blob)).toBe(50);
        expect(await b.blobSize(blob)).toBe(50);
        // The cached link survives exactly when the eviction lost the race.
        expect((await a.linkedBlobSize('mirror', blob)) !== undefined).toBe(!forgotten);
      }
      const stored = await a.totals();
      expect(stored).toMatchObject({ blobs: 15, bytes: 750 });
    });

    it('keep totals exact while both stores put and delete manifests of shared repositories', async () => {
      const where = await backend.fresh();
      const a = await backend.open(where);
      const b = await backend.open(where);
      const ms = Array.from({ length: 6 }, (_, i) => manifest(`churn ${i}`));
      const work: Promise<unknown>[] = [];
      for (let i = 0; i < 24; i++) {
        const store = i % 2 === 0 ? a : b;
        const m = ms[i % ms.length]!;
        const repo = `churn${i % 3}`;
        work.push(
          (async () => {
            await store.putManifest(repo, m, `t${i % 4}`);
            if (i % 3 === 0) await store.deleteManifest(repo, m.digest);
          })(),
        );
      }
      await Promise.all(work);
      // Recount from what is stored, through the public reads.
      let repositories = 0;
      const digests = new Set<string>();
      for (const repo of ['churn0', 'churn1', 'churn2']) {
        const missing = new Set(await a.missingManifests(repo, ms.map((m) => m.digest)));
        if (missing.size < ms.length) repositories++;
        for (const m of ms) if (!missing.has(m.digest)) digests.add(m.digest);
      }
      expect(await b.totals()).toMatchObject({ repositories, manifests: digests.size });
    });
  });
});

describe('PostgreSQL store opening', () => {
  it('lets two stores open one fresh database at the same time', async () => {
    const url = await postgres!.createDatabase();
    const [a, b] = await Promise.all([PostgresMetadataStore.open(url), PostgresMetadataStore.open(url)]);
    opened.push(a, b);
    await a.putManifest('r', manifest('after migration'), 'x');
    expect((await b.getTag('r', 'x'))?.digest).toBe(manifest('after migration').digest);
  });

  it('refuses backupTo with a hint to use pg_dump', async () => {
    const store = await pgBackend.open(await pgBackend.fresh());
    await expect(store.backupTo('/tmp/never')).rejects.toThrow(/pg_dump/);
  });

  it('reports an unreachable database on ping', async () => {
    const store = await pgBackend.open(await pgBackend.fresh());
    await store.close();
    await expect(store.ping()).rejects.toThrow();
  });
});
