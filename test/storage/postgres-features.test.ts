// The feature blocks of the metadata store on PostgreSQL (dashboard, air-gap listing, fsck rows,
// garbage collection and eviction) answer exactly as SQLite's do: each scenario runs the same
// calls against SqliteMetadataStore and against PostgresMetadataStore (which hands these blocks to
// dashboard.ts, airgap.ts and lifecycle.ts) on a real PostgreSQL, and checks both the answers
// named and that the two engines agree; the concurrent cases hold a second connection's
// uncommitted write (another replica) across the call.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteMetadataStore, type MetadataStore, type NewManifest } from '../../src/storage/metadata.js';
import { PostgresMetadataStore } from '../../src/storage/postgres/store.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';

/** The store as the tests drive it: every method awaited, whichever engine is behind it. */
type Api = Omit<MetadataStore, 'reposLinkingBlob'>;

interface Side {
  name: string;
  api: Api;
  /** Runs SQL written with `?` placeholders (turned into $1… on PostgreSQL). */
  exec(sql: string, params?: unknown[]): Promise<void>;
  close(): Promise<void>;
}

let server: Postgres;
const dirs: string[] = [];
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await server?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function sqliteSide(): Side {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-feat-'));
  dirs.push(dir);
  const store = new SqliteMetadataStore(join(dir, 'airlock.db'));
  const api = new Proxy({} as Api, {
    get: (_t, key: keyof MetadataStore) => async (...args: unknown[]) => (store[key] as (...a: unknown[]) => unknown).apply(store, args),
  });
  const db = (store as unknown as { db: { prepare(sql: string): { run(...p: unknown[]): unknown } } }).db;
  return {
    name: 'sqlite',
    api,
    exec: async (sql, params = []) => void db.prepare(sql).run(...params),
    close: async () => store.close(),
  };
}

async function postgresSide(): Promise<Side & { store: PostgresMetadataStore }> {
  const store = await PostgresMetadataStore.open(await server.createDatabase());
  return {
    name: 'postgres',
    store,
    api: store,
    exec: async (sql, params = []) => {
      let n = 0;
      await store.pool.query(sql.replace(/\?/g, () => `$${++n}`), params);
    },
    close: () => store.close(),
  };
}

const d = (c: string) => `sha256:${c.repeat(64)}`;
const IMAGE = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';

function manifest(digest: string, opts: Partial<NewManifest> = {}): NewManifest {
  const content = Buffer.from(`{"digest":"${digest}"}`);
  return {
    digest,
    mediaType: IMAGE,
    size: content.length,
    content,
    subject: null,
    artifactType: null,
    annotations: null,
    blobRefs: [],
    manifestRefs: [],
    ...opts,
  };
}

/** Runs `scenario` on both engines; returns both results for comparison. */
async function onBoth<T>(scenario: (side: Side) => Promise<T>): Promise<{ sqlite: T; postgres: T }> {
  const a = sqliteSide();
  const b = await postgresSide();
  try {
    return { sqlite: await scenario(a), postgres: await scenario(b) };
  } finally {
    await a.close();
    await b.close();
  }
}

const FUTURE = () => Date.now() + 60_000;

describe('dashboard on PostgreSQL', () => {
  it('browses repositories by prefix and folder with keyset pages, as SQLite does', async () => {
    const names = ['a', 'a-b', 'a.b', 'a/x', 'a/y/z', 'b/c', 'b/d', 'c', 'ocp/release', 'ocp/release/sub', 'z/1/2/3'];
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      for (const [i, name] of names.entries()) {
        await api.linkBlob(name, d('a'), 1);
        await api.putManifest(name, manifest(d((i % 10).toString())));
      }
      await api.linkBlob('empty/only-blob', d('a'), 1); // no manifest: never listed
      const pages: unknown[] = [];
      for (const [prefix, delimiter] of [['', false], ['', true], ['a', true], ['a/', true], ['b/', false], ['ocp/', true]] as const) {
        let last: string | undefined;
        const all: unknown[] = [];
        for (;;) {
          const page = await api.browseRepositories(prefix, 2, last, delimiter);
          all.push(...page.items);
          if (!page.more) break;
          last = page.items.at(-1)!.name;
        }
        pages.push({ prefix, delimiter, all });
      }
      return pages;
    });
    expect(postgres).toEqual(sqlite);
    // What the folder view of the root shows: repositories, folders, both.
    expect((postgres[1] as { all: unknown[] }).all).toEqual([
      { name: 'a', repository: true, children: true },
      { name: 'a-b', repository: true, children: false },
      { name: 'a.b', repository: true, children: false },
      { name: 'b', repository: false, children: true },
      { name: 'c', repository: true, children: false },
      { name: 'ocp', repository: false, children: true },
      { name: 'z', repository: false, children: true },
    ]);
  });

  it('counts, lists manifests with tags and last serving, keeps history and audit', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      await api.linkBlob('r', d('b'), 10);
      await api.linkBlob('r', d('c'), 20);
      await api.putManifest('r', manifest(d('1'), { blobRefs: [d('b'), d('c')] }), 'v1');
      await api.putManifest('r', manifest(d('1'), { blobRefs: [d('b'), d('c')] }), 'latest');
      await api.putManifest('r', manifest(d('2'), { cached: true }));
      await api.touchBlobs([d('c')], Date.now() + 5000);
      const counts = await api.repositoryCounts(['r', 'missing', 'r']);
      const listed = (await api.repositoryManifests('r', 10)).map(({ createdAt, lastServed, ...rest }) => ({
        ...rest,
        content: rest.content.toString(),
        created: createdAt > 0,
        served: lastServed !== null,
      }));
      for (const at of [1000, 2000, 3000]) {
        await api.addHistoryPoint({ at, hits: at, misses: 1, staleServed: 2, bytesFromCache: 3, bytesFromUpstream: 4, storageBytes: 5 });
      }
      await api.addHistoryPoint({ at: 2000, hits: 7, misses: 7, staleServed: 7, bytesFromCache: 7, bytesFromUpstream: 7, storageBytes: 7 });
      await api.pruneHistory(1500);
      const history = await api.history(0);
      const event = (i: number) => ({ at: i, action: 'push', user: `u${i}`, repo: 'r', digest: null, tag: i % 2 ? 'v' : null, code: null, remote: '127.0.0.1' });
      await api.addAuditEvents([event(1), event(2), event(3)], 10);
      await api.addAuditEvents([event(4), event(5)], 3);
      const audit = await api.recentAuditEvents(10);
      return { counts, listed, history, audit, blobTotals: await api.blobTotals(), manifests: await api.repositoryManifests('missing', 5) };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.counts).toEqual([{ name: 'r', tags: 2, manifests: 2 }, { name: 'r', tags: 2, manifests: 2 }]);
    expect(postgres.listed.map((m) => [m.digest, m.tags, m.cached, m.served])).toEqual([
      [d('1'), ['latest', 'v1'], false, true],
      [d('2'), [], true, false],
    ]);
    expect(postgres.history.map((p) => [p.at, p.hits])).toEqual([[2000, 7], [3000, 3000]]);
    expect(postgres.audit.map((e) => e.user)).toEqual(['u5', 'u4', 'u3']);
    expect(postgres.blobTotals).toEqual({ blobs: 2, bytes: 30 });
  });

  it('walks manifests in arrival order and records image kinds', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      for (const c of ['1', '2', '3', '4']) {
        await api.putManifest(c < '3' ? 'ocp/release' : 'catalog', manifest(d(c)), c === '1' || c === '3' ? `t${c}` : undefined);
        await new Promise((r) => setTimeout(r, 3));
      }
      const seen: string[] = [];
      let cursor: [number, number, string] | undefined;
      for (;;) {
        const page = await api.manifestsAfter(cursor, 3);
        if (page.length === 0) break;
        seen.push(...page.map((m) => `${m.repo} ${m.digest.slice(7, 8)} ${m.content.toString().length}`));
        const lastRow = page.at(-1)!;
        cursor = [lastRow.createdAt, lastRow.repoId, lastRow.digest];
      }
      const release = (await api.repositoryImageKinds('ocp/release'))!;
      const catalog = (await api.repositoryImageKinds('catalog'))!;
      await api.saveImageKinds([
        { repoId: release.repoId, digest: d('1'), kind: 'release', version: '4.15.0' },
        { repoId: release.repoId, digest: d('2'), kind: '', version: null },
        { repoId: catalog.repoId, digest: d('3'), kind: 'catalog', version: null },
        { repoId: catalog.repoId, digest: d('4'), kind: 'catalog', version: 'v4.14' },
      ]);
      await api.saveImageKinds([{ repoId: catalog.repoId, digest: d('4'), kind: 'catalog', version: 'v4.15' }]);
      const images = (await api.classifiedImages(10)).map(({ createdAt, ...rest }) => rest);
      return {
        seen,
        kind: await api.imageKind(release.repoId, d('1')),
        none: await api.imageKind(release.repoId, d('9')),
        kinds: [...(await api.repositoryImageKinds('catalog'))!.kinds.entries()].sort(),
        images,
        missing: await api.repositoryImageKinds('nowhere'),
      };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.seen).toHaveLength(4);
    expect(postgres.kind).toEqual({ kind: 'release', version: '4.15.0' });
    expect(postgres.images.map((i) => [i.repo, i.kind, i.version, i.tags])).toEqual([
      ['ocp/release', 'release', '4.15.0', ['t1']],
      ['catalog', 'catalog', 'v4.15', []],
      ['catalog', 'catalog', null, ['t3']],
    ]);
  });
});

describe('air-gap listing on PostgreSQL', () => {
  it('lists tagged manifests and tagless ones no index references', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      await api.putManifest('r', manifest(d('a')));
      await api.putManifest('r', manifest(d('b')));
      await api.putManifest('r', manifest(d('c'), { mediaType: INDEX, manifestRefs: [d('a'), d('b')] }), 'multi');
      await api.putManifest('r', manifest(d('b')), 'also');
      await api.putManifest('r', manifest(d('e')));
      await api.putManifest('r', manifest(d('e')), 'b-tag');
      await api.putManifest('r', manifest(d('f')));
      return { images: await api.listImages('r'), none: await api.listImages('nowhere') };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.images).toEqual([
      { digest: d('b'), mediaType: IMAGE, tags: ['also'] },
      { digest: d('c'), mediaType: INDEX, tags: ['multi'] },
      { digest: d('e'), mediaType: IMAGE, tags: ['b-tag'] },
      { digest: d('f'), mediaType: IMAGE, tags: [] },
    ]);
  });
});

describe('integrity checks on PostgreSQL', () => {
  it('pages rows, finds dangling ones and removes only those that still dangle', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api, exec }) => {
      await api.linkBlob('r', d('a'), 1);
      await api.linkBlob('r', d('b'), 2);
      await api.linkBlob('s', d('c'), 3);
      await api.putManifest('r', manifest(d('1'), { blobRefs: [d('a'), d('b')] }), 'v1');
      // References to content that is not there: a push is refused that (putManifest re-checks),
      // a cached copy from an upstream is not (its children arrive lazily).
      await api.putManifest('s', manifest(d('2'), { blobRefs: [d('c'), d('9')], cached: true }), 'v2');
      await api.putManifest('s', manifest(d('3'), { mediaType: INDEX, manifestRefs: [d('2'), d('8')], cached: true }));
      await api.createUpload('u2', 's');
      await api.createUpload('u1', 'r');
      // Damage as a crash or a hand edit would leave it.
      await exec('INSERT INTO manifest_refs (repo_id, parent, child, kind) SELECT id, ?, ?, ? FROM repositories WHERE name = ?', [d('7'), d('a'), 'blob', 'r']);
      await exec('INSERT INTO tags (repo_id, name, digest, cached, updated_at) SELECT id, ?, ?, 0, 1 FROM repositories WHERE name = ?', ['ghost', d('6'), 'r']);

      const blobPages: unknown[] = [];
      for (let after = ''; ; ) {
        const page = await api.blobRowsAfter(after, 2);
        if (page.length === 0) break;
        blobPages.push(page);
        after = page.at(-1)!.digest;
      }
      const manifestRows: string[] = [];
      for (let after: { repoId: number; digest: string } | undefined; ; ) {
        const page = await api.manifestRowsAfter(after, 2);
        if (page.length === 0) break;
        manifestRows.push(...page.map((m) => `${m.repo} ${m.digest} ${m.content.toString()}`));
        after = page.at(-1)!;
      }
      const dangling = (await api.danglingRows(100)).map(({ repoId, ...rest }) => rest).sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
      const rows = await api.danglingRows(100);
      const removed: boolean[] = [];
      for (const row of rows) removed.push(await api.removeDanglingRow(row));
      const again: boolean[] = [];
      for (const row of rows) again.push(await api.removeDanglingRow(row));
      const left = (await api.danglingRows(100)).map((r) => r.kind).sort();
      await api.setBlobSize(d('b'), 22);
      await api.forgetBlob(d('a'));
      return {
        blobPages,
        manifestRows,
        dangling,
        removed: removed.filter(Boolean).length,
        again: again.filter(Boolean).length,
        left,
        refs: await api.countReferences(),
        uploads: (await api.allUploads()).map((u) => [u.id, u.repo]),
        digests: [...(await api.allBlobDigests())].sort(),
        sizeB: await api.blobSize(d('b')),
        linkedA: await api.linkedBlobSize('r', d('a')),
      };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.dangling.map((r) => r.kind).sort()).toEqual(['blob-ref', 'manifest-ref', 'orphan-ref', 'tag']);
    expect(postgres.removed).toBe(2); // the orphan reference and the ghost tag; refs of live manifests stay
    expect(postgres.again).toBe(0);
    expect(postgres.left).toEqual(['blob-ref', 'manifest-ref']);
    expect(postgres.digests).toEqual([d('b'), d('c')]);
    expect(postgres.sizeB).toBe(22);
    expect(postgres.linkedA).toBeUndefined();
    expect(postgres.uploads).toEqual([['u1', 'r'], ['u2', 's']]);
  });

  it('removes a link to a blob that has no row', async () => {
    const side = await postgresSide();
    try {
      await side.api.linkBlob('r', d('a'), 1);
      // PostgreSQL keeps the foreign key that SQLite may not have enforced when the row went missing.
      await side.exec('ALTER TABLE repo_blobs DROP CONSTRAINT repo_blobs_digest_fkey');
      await side.exec('DELETE FROM blobs WHERE digest = ?', [d('a')]);
      const rows = await side.api.danglingRows(10);
      expect(rows.map((r) => [r.kind, r.repo, r.to])).toEqual([['link', 'r', d('a')]]);
      expect(await side.api.removeDanglingRow(rows[0]!)).toBe(true);
      expect(await side.api.danglingRows(10)).toEqual([]);
    } finally {
      await side.close();
    }
  });
});

/** One collection as lifecycle/gc.ts runs it: manifests, then blob pages in batches, then the end. */
async function collect(api: Api, policy: { graceBefore: number; untaggedBefore?: number; dryRun: boolean }) {
  const manifests = await api.collectManifests(policy);
  const blobs: unknown[] = [];
  for (let after = ''; ; ) {
    const page = await api.blobSweepCandidates(policy, after, 2);
    blobs.push(...(await api.sweepBlobs(page.digests, policy)));
    if (page.next === undefined) break;
    after = page.next;
  }
  await api.endCollection();
  return { manifests, blobs };
}

/** A repository's state as a collection leaves it. */
async function snapshot(api: Api) {
  const digests = [...(await api.allBlobDigests())].sort();
  const listed = (await api.repositoryManifests('r', 100)).map((m) => m.digest);
  return { digests, listed, linked: await api.missingBlobs('r', [d('a'), d('b'), d('c'), d('x'), d('y')]) };
}

async function seedForGc(api: Api) {
  for (const [c, size] of [['a', 1], ['b', 2], ['c', 3], ['x', 4], ['y', 5], ['z', 6]] as const) await api.linkBlob('r', d(c), size);
  await api.unlinkBlob('r', d('z')); // a blob no repository links
  await api.putManifest('r', manifest(d('1'), { blobRefs: [d('a'), d('b')] }), 'v1');
  await api.putManifest('r', manifest(d('2'), { blobRefs: [d('c')] }));
  await api.putManifest('r', manifest(d('4'), { blobRefs: [d('x')], subject: d('2'), artifactType: 'application/sbom' }));
  await api.putManifest('r', manifest(d('5'), { mediaType: INDEX, manifestRefs: [d('1')] }));
}

describe('garbage collection on PostgreSQL', () => {
  it('a dry run reports what a collection removes and changes nothing; the collection then removes it', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      await seedForGc(api);
      const policy = { graceBefore: FUTURE(), untaggedBefore: FUTURE(), dryRun: true };
      const before = await snapshot(api);
      const dry = await collect(api, policy);
      const afterDry = await snapshot(api);
      const real = await collect(api, { ...policy, dryRun: false });
      await api.recordGcRun({ startedAt: 5, durationMs: 6, dryRun: true, removedManifests: 0, removedBlobs: 0, freedBytes: 0, forgottenRepositories: 0 });
      const noRun = await api.lastGcRun();
      await api.recordGcRun({ startedAt: 7, durationMs: 8, dryRun: false, removedManifests: 2, removedBlobs: 4, freedBytes: 18, forgottenRepositories: 3 });
      await api.recordGcRun({ startedAt: 9, durationMs: 1, dryRun: true, removedManifests: 0, removedBlobs: 0, freedBytes: 0, forgottenRepositories: 0 });
      return { before, dry, afterDry, real, after: await snapshot(api), noRun, lastRun: await api.lastGcRun(), totals: await api.totals() };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.afterDry).toEqual(postgres.before);
    expect(postgres.dry).toEqual(postgres.real);
    // The untagged manifest 2, its referrer 4 and the untagged index 5 go; the tagged 1 stays.
    expect(postgres.real.manifests.map((m) => m.digest).sort()).toEqual([d('2'), d('4'), d('5')]);
    expect(postgres.real.blobs).toEqual([
      { digest: d('c'), size: 3, links: 1, removed: true },
      { digest: d('x'), size: 4, links: 1, removed: true },
      { digest: d('y'), size: 5, links: 1, removed: true },
      { digest: d('z'), size: 6, links: 0, removed: true },
    ]);
    expect(postgres.after.digests).toEqual([d('a'), d('b')]);
    expect(postgres.after.listed).toEqual([d('1')]);
    expect(postgres.noRun).toBeUndefined();
    expect(postgres.lastRun).toEqual({ startedAt: 7, durationMs: 8, dryRun: false, removedManifests: 2, removedBlobs: 4, freedBytes: 18, forgottenRepositories: 3 });
    expect(postgres.totals).toMatchObject({ manifests: 1, blobs: 2, bytes: 3 });
  });

  it('keeps what is recent, and every untagged manifest without untaggedBefore', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      await seedForGc(api);
      const recent = await collect(api, { graceBefore: Date.now() - 60_000, untaggedBefore: FUTURE(), dryRun: false });
      const noUntagged = await collect(api, { graceBefore: FUTURE(), dryRun: false });
      return { recent, noUntagged, after: await snapshot(api) };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.recent).toEqual({ manifests: [], blobs: [] });
    // Without untaggedBefore every untagged manifest stays, and the referrer with its kept subject;
    // only the blobs nothing references go (y, and z that nothing links).
    expect(postgres.after.listed).toEqual([d('1'), d('2'), d('4'), d('5')]);
    expect(postgres.after.digests).toEqual([d('a'), d('b'), d('c'), d('x')]);
  });

  it('a manifest pushed again while the collection runs is kept', async () => {
    const side = await postgresSide();
    const other = await side.store.pool.connect();
    try {
      await seedForGc(side.api);
      // Another replica re-pushes manifest 2 (its age starts anew) and has not committed yet.
      await other.query('BEGIN');
      await other.query('UPDATE manifests SET created_at = $1 WHERE digest = $2', [Date.now() + 120_000, d('2')]);
      const running = side.api.collectManifests({ graceBefore: FUTURE(), untaggedBefore: FUTURE(), dryRun: false });
      const settled = await Promise.race([running.then(() => 'done'), new Promise((r) => setTimeout(() => r('waiting'), 300))]);
      expect(settled).toBe('waiting');
      await other.query('COMMIT');
      const removed = await running;
      // Its referrer goes as if the collection had run just before the push: the end state of that order.
      expect(removed.map((m) => m.digest)).toEqual([d('4'), d('5')]);
      expect((await side.api.getManifest('r', d('2')))?.digest).toBe(d('2'));
    } finally {
      other.release();
      await side.close();
    }
  });

  it('a blob linked by another replica while its sweep runs is kept', async () => {
    const side = await postgresSide();
    const other = await side.store.pool.connect();
    try {
      await seedForGc(side.api);
      await side.api.linkBlob('elsewhere', d('a'), 1); // creates the repository row
      const policy = { graceBefore: FUTURE(), dryRun: false };
      await other.query('BEGIN');
      await other.query(
        'INSERT INTO repo_blobs (repo_id, digest, cached, created_at) SELECT id, $1, 0, $2 FROM repositories WHERE name = $3',
        [d('y'), Date.now() + 120_000, 'elsewhere'],
      );
      const running = side.api.sweepBlobs([d('y')], policy);
      const settled = await Promise.race([running.then(() => 'done'), new Promise((r) => setTimeout(() => r('waiting'), 300))]);
      expect(settled).toBe('waiting');
      await other.query('COMMIT');
      // r's old unreferenced link goes; the blob stays for the new link.
      expect(await running).toEqual([{ digest: d('y'), size: 5, links: 1, removed: false }]);
      expect(await side.api.linkedBlobSize('elsewhere', d('y'))).toBe(5);
    } finally {
      other.release();
      await side.close();
    }
  });
});

async function seedForEviction(api: Api) {
  await api.linkBlob('cache/r', d('p'), 10, true);
  await api.linkBlob('cache/r', d('q'), 20, true);
  await api.linkBlob('cache/r', d('s'), 30, true);
  await api.linkBlob('cache/other', d('t'), 40, true);
  await api.putManifest('cache/r', manifest(d('1'), { blobRefs: [d('p'), d('q'), d('s')], cached: true }));
  await api.putManifest('cache/r', manifest(d('2'), { mediaType: INDEX, manifestRefs: [d('1')], cached: true }), 'latest');
  await api.putManifest('cache/other', manifest(d('3'), { blobRefs: [d('t')], cached: true }), 'v');
  // q was also pushed to a repository of our own: never evicted.
  await api.linkBlob('mine', d('q'), 20);
}

describe('cache eviction on PostgreSQL', () => {
  it('evicts a cached image with its index and its idle cached-only blobs', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api }) => {
      await seedForEviction(api);
      const companions = (await api.cachedImageBlobs(d('p'))).sort();
      const byRepo = (await api.cachedBytesByRepo()).sort((a, b) => a.repo.localeCompare(b.repo));
      const under = await api.evictionCandidatesUnder('cache/r', 10);
      const all = await api.evictionCandidatesUnder('', 10);
      const busy = await api.evictCachedImage(d('p'), companions, 0); // served since: not idle
      const listedBefore = (await api.listRepositories(10)).items;
      const evicted = await api.evictCachedImage(d('p'), companions, FUTURE());
      const again = await api.evictCachedImage(d('p'), companions, FUTURE());
      return {
        companions,
        byRepo,
        under: under.map((c) => c.digest).sort(),
        all: all.length,
        busy,
        evicted,
        again,
        left: [...(await api.allBlobDigests())].sort(),
        tag: await api.getTag('cache/r', 'latest'),
        withoutRefs: await api.manifestsWithoutRefs(),
        listedBefore,
        listedAfter: (await api.listRepositories(10)).items,
      };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.companions).toEqual([d('q'), d('s')]);
    expect(postgres.byRepo).toEqual([{ repo: 'cache/other', bytes: 40 }, { repo: 'cache/r', bytes: 40 }]);
    expect(postgres.under).toEqual([d('p'), d('s')]);
    expect(postgres.all).toBe(3);
    expect(postgres.busy).toBeUndefined();
    expect(postgres.evicted).toEqual({
      manifests: [{ repo: 'cache/r', digest: d('1') }, { repo: 'cache/r', digest: d('2') }],
      blobs: [{ digest: d('p'), size: 10 }, { digest: d('s'), size: 30 }],
    });
    expect(postgres.again).toBeUndefined();
    expect(postgres.left).toEqual([d('q'), d('t')]);
    expect(postgres.tag).toBeUndefined();
    // The repository held only the evicted image: it leaves the catalog with it.
    expect(postgres.listedBefore).toEqual(['cache/other', 'cache/r']);
    expect(postgres.listedAfter).toEqual(['cache/other']);
  });

  it('records references of cached manifests stored without them', async () => {
    const { sqlite, postgres } = await onBoth(async ({ api, exec }) => {
      await api.linkBlob('cache/r', d('p'), 10, true);
      await api.putManifest('cache/r', manifest(d('1'), { cached: true }));
      await api.putManifest('cache/r', manifest(d('9')));
      await exec('DELETE FROM manifest_refs');
      const before = (await api.manifestsWithoutRefs()).map((m) => [m.repo, m.digest, m.mediaType, m.content.toString()]);
      await api.addManifestRefs('cache/r', d('1'), [d('p')], [d('8')]);
      await api.addManifestRefs('cache/r', d('1'), [d('p')], []);
      await api.addManifestRefs('nowhere', d('1'), [d('p')], []);
      return { before, after: await api.manifestsWithoutRefs(), refs: await api.countReferences(), blobs: await api.cachedImageBlobs(d('p')) };
    });
    expect(postgres).toEqual(sqlite);
    expect(postgres.before).toEqual([['cache/r', d('1'), IMAGE, `{"digest":"${d('1')}"}`]]);
    expect(postgres.after).toEqual([]);
    expect(postgres.refs).toBe(2);
  });

  it('leaves a blob that another replica pushes while the eviction waits for it', async () => {
    const side = await postgresSide();
    const other = await side.store.pool.connect();
    try {
      await seedForEviction(side.api);
      // Another replica pushes p into cache/r (the cached link becomes pushed) and has not committed yet.
      await other.query('BEGIN');
      await other.query('UPDATE repo_blobs SET cached = 0 WHERE digest = $1', [d('p')]);
      const running = side.api.evictCachedImage(d('p'), [d('s')], FUTURE());
      const settled = await Promise.race([running.then(() => 'done'), new Promise((r) => setTimeout(() => r('waiting'), 300))]);
      expect(settled).toBe('waiting');
      await other.query('COMMIT');
      expect(await running).toBeUndefined();
      expect(await side.api.linkedBlobSize('cache/r', d('p'))).toBe(10);
      expect((await side.api.getManifest('cache/r', d('1')))?.digest).toBe(d('1'));
    } finally {
      other.release();
      await side.close();
    }
  });

  it('rolls back when a manifest it would drop was pushed meanwhile', async () => {
    const side = await postgresSide();
    const other = await side.store.pool.connect();
    try {
      await seedForEviction(side.api);
      await other.query('BEGIN');
      await other.query('UPDATE manifests SET cached = 0 WHERE digest = $1', [d('2')]);
      const running = side.api.evictCachedImage(d('p'), [d('s')], FUTURE());
      await new Promise((r) => setTimeout(r, 200));
      await other.query('COMMIT');
      // Either the eviction saw the index pushed (1 is then needed) or it waited on the index row
      // and rolled back: both leave every row in place.
      expect(await running).toBeUndefined();
      expect((await side.api.getManifest('cache/r', d('1')))?.digest).toBe(d('1'));
      expect(await side.api.linkedBlobSize('cache/r', d('s'))).toBe(30);
    } finally {
      other.release();
      await side.close();
    }
  });
});

describe('two replicas on one PostgreSQL', () => {
  it('share audit, history and listings, and keep their collections apart', async () => {
    const url = await server.createDatabase();
    const [a, b] = await Promise.all([PostgresMetadataStore.open(url), PostgresMetadataStore.open(url)]);
    try {
      await seedForGc(a);
      const event = (user: string, at: number) => ({ at, action: 'push', user, repo: 'r', digest: null, tag: null, code: null, remote: null });
      await Promise.all([a.addAuditEvents([event('on-a', 1)], 100), b.addAuditEvents([event('on-b', 2)], 100)]);
      expect((await a.recentAuditEvents(10)).map((e) => e.user).sort()).toEqual(['on-a', 'on-b']);
      await b.addHistoryPoint({ at: 60_000, hits: 1, misses: 0, staleServed: 0, bytesFromCache: 0, bytesFromUpstream: 0, storageBytes: 0 });
      expect((await a.history(0)).map((p) => p.at)).toEqual([60_000]);
      expect((await b.listImages('r')).map((i) => i.tags)).toEqual([['v1'], [], [], []]);

      // A dry run remembered on A does not leak into B's collection, which removes for real.
      const policy = { graceBefore: FUTURE(), untaggedBefore: FUTURE(), dryRun: true };
      const dry = await a.collectManifests(policy);
      expect(dry.map((m) => m.digest).sort()).toEqual([d('2'), d('4'), d('5')]);
      const real = await collect(b, { ...policy, dryRun: false });
      expect(real.manifests.map((m) => m.digest).sort()).toEqual([d('2'), d('4'), d('5')]);
      await a.endCollection();
      expect((await a.repositoryManifests('r', 10)).map((m) => m.digest)).toEqual([d('1')]);
      expect(await a.blobTotals()).toEqual({ blobs: 2, bytes: 3 });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
