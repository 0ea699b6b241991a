// MetadataStore on a shared PostgreSQL: what several replicas behind one load balancer read and
// write at once. Same semantics as SqliteMetadataStore (src/storage/metadata.ts), method by
// method; where SQLite relied on being the only writer, this relies on ON CONFLICT upserts,
// single-statement checks and row locks, so two replicas writing the same digest both succeed.
// The feature blocks (dashboard, air-gap, fsck/backup, gc/eviction) live in their own files and
// are delegated to.

import type pg from 'pg';
import type {
  AuditEvent,
  BlobSweep,
  ClassifiedImage,
  DanglingRow,
  EvictedImage,
  GcPolicy,
  GcRunRecord,
  HistoryPoint,
  MetadataStore,
  ImageRecord,
  ManifestCursor,
  ManifestKey,
  ManifestListing,
  ManifestRecord,
  ManifestRef,
  NewManifest,
  Page,
  RepositoryCounts,
  RepositoryNode,
  StorageTotals,
  TagRecord,
  UnclassifiedManifest,
  UploadRecord,
} from '../metadata.js';
import { LISTED_REPOSITORY, MissingReferencesError, tagsOf, toManifest } from '../metadata.js';
import { applyMigrations } from './migrations.js';
import { createPool, inTransaction, isRetryable, type Queryable } from './pool.js';
import * as dashboard from './dashboard.js';
import * as airgap from './airgap.js';
import * as lifecycle from './lifecycle.js';

const MANIFEST_COLUMNS = 'digest, media_type, size, content, subject, artifact_type, annotations';

/** How long ping() waits for the database before readiness reports it unreachable. */
const PING_TIMEOUT_MS = 2000;

/** Rows of reposLinkingBlob read per round trip: a caller usually stops after the first few. */
const LINKING_PAGE = 100;

type Row = Record<string, unknown>;


function toUpload(row: Row): UploadRecord {
  return { id: row.id as string, repo: row.repo as string, createdAt: row.created_at as number, updatedAt: row.updated_at as number };
}

/** A named (server-side prepared, per connection) statement: the hot paths parse their SQL once. */
function stmt(name: string, text: string, values: unknown[]): pg.QueryConfig<unknown[]> {
  return { name: `core_${name}`, text, values };
}

/** Runs a single-statement write again after a deadlock or serialization failure with another replica. */
async function retrying<T>(fn: () => Promise<T>, also?: (err: unknown) => boolean): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || !(isRetryable(err) || also?.(err))) throw err;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * attempt));
    }
  }
}

const isForeignKeyViolation = (err: unknown) => (err as { code?: string } | null)?.code === '23503';

export interface PostgresStoreOptions {
  /** Pool size; `?max=N` in the URL overrides it. */
  max?: number;
}

export class PostgresMetadataStore implements MetadataStore {
  /** Repository rows are never deleted and their ids never change: cached for the process lifetime. */
  private readonly repoIds = new Map<string, number>();
  /** What a garbage collection's dry run remembers between its phases (this store's own run). */
  private readonly gcMemory = lifecycle.createGcMemory();

  private constructor(readonly pool: pg.Pool) {}

  /** Connects to `url` and brings its schema up to date (once, whichever replica gets there first). */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresMetadataStore> {
    const pool = createPool(url, options);
    try {
      await applyMigrations(pool);
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
    return new PostgresMetadataStore(pool);
  }

  private async findRepoId(name: string): Promise<number | undefined> {
    let id = this.repoIds.get(name);
    if (id === undefined) {
      const { rows } = await this.pool.query(stmt('repo_id', 'SELECT id FROM repositories WHERE name = $1', [name]));
      id = rows[0]?.id as number | undefined;
      if (id !== undefined) this.repoIds.set(name, id);
    }
    return id;
  }

  /**
   * Creates the repository row if needed, committed at once (outside any caller's transaction):
   * a bare repository row is invisible (repositoryExists needs a manifest), and committing it
   * first keeps the id cacheable even if the caller's transaction rolls back.
   */
  private async ensureRepoId(name: string): Promise<number> {
    const existing = await this.findRepoId(name);
    if (existing !== undefined) return existing;
    await this.pool.query(
      stmt('insert_repo', 'INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, Date.now()]),
    );
    // A separate statement: its snapshot sees the row whichever replica inserted it.
    const id = await this.findRepoId(name);
    if (id === undefined) throw new Error(`repository ${name} could not be created`);
    return id;
  }

  async linkedBlobSize(repo: string, digest: string): Promise<number | undefined> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return undefined;
    const { rows } = await this.pool.query(
      stmt(
        'linked_blob_size',
        'SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = $1 AND rb.digest = $2',
        [id, digest],
      ),
    );
    return rows[0]?.size as number | undefined;
  }

  async blobSize(digest: string): Promise<number | undefined> {
    const { rows } = await this.pool.query(stmt('blob_size', 'SELECT size FROM blobs WHERE digest = $1', [digest]));
    return rows[0]?.size as number | undefined;
  }

  async linkBlob(repo: string, digest: string, size: number, cached = false): Promise<void> {
    const now = Date.now();
    const id = await this.ensureRepoId(repo);
    // One statement, one round trip. A push over a cached link makes it pushed content (never
    // evicted), never the other way; created_at is when the blob was last linked (GC grace anew).
    // A foreign-key failure means eviction removed the blob row between the two inserts: again.
    await retrying(
      () =>
        this.pool.query(
          stmt(
            'link_blob',
            `WITH blob AS (
               INSERT INTO blobs (digest, size, created_at, last_access) VALUES ($2, $3, $5, $5) ON CONFLICT (digest) DO NOTHING
             )
             INSERT INTO repo_blobs (repo_id, digest, cached, created_at) VALUES ($1, $2, $4, $5)
             ON CONFLICT (repo_id, digest) DO UPDATE SET cached = LEAST(repo_blobs.cached, excluded.cached), created_at = excluded.created_at`,
            [id, digest, size, cached ? 1 : 0, now],
          ),
        ),
      isForeignKeyViolation,
    );
  }

  async unlinkBlob(repo: string, digest: string): Promise<boolean> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return false;
    const result = await this.pool.query(stmt('unlink_blob', 'DELETE FROM repo_blobs WHERE repo_id = $1 AND digest = $2', [id, digest]));
    return (result.rowCount ?? 0) > 0;
  }

  async missingBlobs(repo: string, digests: string[]): Promise<string[]> {
    const id = await this.findRepoId(repo);
    if (id === undefined || digests.length === 0) return [...digests];
    const { rows } = await this.pool.query(
      stmt(
        'missing_blobs',
        `SELECT t.d FROM unnest($2::text[]) WITH ORDINALITY AS t(d, i)
         WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = $1 AND rb.digest = t.d)
         ORDER BY t.i`,
        [id, digests],
      ),
    );
    return rows.map((r) => r.d as string);
  }

  async missingManifests(repo: string, digests: string[]): Promise<string[]> {
    const id = await this.findRepoId(repo);
    if (id === undefined || digests.length === 0) return [...digests];
    const { rows } = await this.pool.query(
      stmt(
        'missing_manifests',
        `SELECT t.d FROM unnest($2::text[]) WITH ORDINALITY AS t(d, i)
         WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = $1 AND m.digest = t.d)
         ORDER BY t.i`,
        [id, digests],
      ),
    );
    return rows.map((r) => r.d as string);
  }

  async getManifest(repo: string, digest: string): Promise<ManifestRecord | undefined> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return undefined;
    const { rows } = await this.pool.query(
      stmt('get_manifest', `SELECT ${MANIFEST_COLUMNS} FROM manifests WHERE repo_id = $1 AND digest = $2`, [id, digest]),
    );
    return toManifest(rows[0]);
  }

  async getTaggedManifest(repo: string, tag: string): Promise<ManifestRecord | undefined> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return undefined;
    const { rows } = await this.pool.query(
      stmt(
        'get_tagged_manifest',
        `SELECT m.digest, m.media_type, m.size, m.content, m.subject, m.artifact_type, m.annotations
         FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
         WHERE t.repo_id = $1 AND t.name = $2`,
        [id, tag],
      ),
    );
    return toManifest(rows[0]);
  }

  async putManifest(repo: string, m: NewManifest, tags?: string | readonly string[]): Promise<void> {
    const now = Date.now();
    const cached = m.cached ? 1 : 0;
    const repoId = await this.ensureRepoId(repo);
    const children = [...m.blobRefs, ...m.manifestRefs];
    const kinds = [...m.blobRefs.map(() => 'blob'), ...m.manifestRefs.map(() => 'manifest')];
    // One statement (atomic, one round trip): the storage_totals trigger locks the totals row
    // until commit, so a multi-statement transaction would hold every other writer back for
    // several round trips. Pushed over a cached copy, a manifest becomes pushed content; pushed
    // again, its age for GC's untagged policy starts anew; two replicas storing it at once: the
    // second updates. Pushed content pins the cached blobs it uses (no longer evictable).
    // Pushed content must find every reference in the repository at the moment it is written (a
    // blob evicted or collected since the registry's own check): the same statement checks, and
    // writes nothing when one is missing.
    const { rows: missing } = await retrying(() =>
      this.pool.query(
        stmt(
          'put_manifest',
          `WITH missing AS (
             SELECT t.child, t.kind FROM unnest($11::text[], $12::text[]) AS t(child, kind)
             WHERE $9 = 0 AND CASE WHEN t.kind = 'blob'
               THEN NOT EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = $1 AND b.digest = t.child)
               ELSE NOT EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $1 AND c.digest = t.child) END
           ), manifest AS (
             INSERT INTO manifests (repo_id, digest, media_type, size, content, subject, artifact_type, annotations, cached, created_at, last_access)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10 WHERE NOT EXISTS (SELECT 1 FROM missing)
             ON CONFLICT (repo_id, digest) DO UPDATE SET cached = LEAST(manifests.cached, excluded.cached),
               created_at = CASE WHEN excluded.cached = 0 THEN excluded.created_at ELSE manifests.created_at END
           ), refs AS (
             INSERT INTO manifest_refs (repo_id, parent, child, kind)
             SELECT $1, $2, t.child, t.kind FROM unnest($11::text[], $12::text[]) AS t(child, kind) WHERE NOT EXISTS (SELECT 1 FROM missing)
             ON CONFLICT DO NOTHING
           ), pinned AS (
             UPDATE repo_blobs SET cached = 0 WHERE $9 = 0 AND repo_id = $1 AND digest = ANY($13::text[]) AND cached = 1
               AND NOT EXISTS (SELECT 1 FROM missing)
           ), tagged AS (
             INSERT INTO tags (repo_id, name, digest, cached, updated_at) SELECT $1, t.name, $2, $9, $10
             FROM unnest($14::text[]) AS t(name) WHERE NOT EXISTS (SELECT 1 FROM missing)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, cached = excluded.cached, updated_at = excluded.updated_at
           )
           SELECT child, kind FROM missing`,
          [repoId, m.digest, m.mediaType, m.size, m.content, m.subject, m.artifactType, m.annotations, cached, now, children, kinds, m.blobRefs, tagsOf(tags)],
        ),
      ),
    );
    if (missing.length > 0) {
      throw new MissingReferencesError(
        missing.filter((r) => r.kind === 'blob').map((r) => r.child as string),
        missing.filter((r) => r.kind !== 'blob').map((r) => r.child as string),
      );
    }
  }

  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return false;
    // One statement: the manifest, its references and every tag pointing at it go together.
    const { rows } = await retrying(() =>
      this.pool.query(
        stmt(
          'delete_manifest',
          `WITH manifest AS (DELETE FROM manifests WHERE repo_id = $1 AND digest = $2 RETURNING 1),
                refs AS (DELETE FROM manifest_refs WHERE repo_id = $1 AND parent = $2),
                tagged AS (DELETE FROM tags WHERE repo_id = $1 AND digest = $2)
           SELECT COUNT(*) AS n FROM manifest`,
          [id, digest],
        ),
      ),
    );
    return (rows[0]!.n as number) > 0;
  }

  async deleteTag(repo: string, tag: string): Promise<boolean> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return false;
    const result = await this.pool.query(stmt('delete_tag', 'DELETE FROM tags WHERE repo_id = $1 AND name = $2', [id, tag]));
    return (result.rowCount ?? 0) > 0;
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return undefined;
    const { rows } = await this.pool.query(
      stmt('get_tag', 'SELECT digest, cached, updated_at FROM tags WHERE repo_id = $1 AND name = $2', [id, tag]),
    );
    const row = rows[0];
    return row && { digest: row.digest as string, cached: row.cached === 1, updatedAt: row.updated_at as number };
  }

  async touchTag(repo: string, tag: string): Promise<void> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return;
    await this.pool.query(stmt('touch_tag', 'UPDATE tags SET updated_at = $1 WHERE repo_id = $2 AND name = $3', [Date.now(), id, tag]));
  }

  async repositoryExists(repo: string): Promise<boolean> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return false;
    const { rows } = await this.pool.query(
      stmt(
        'repo_listed',
        `SELECT 1 FROM repositories r WHERE r.id = $1 AND ${LISTED_REPOSITORY}`,
        [id],
      ),
    );
    return rows.length > 0;
  }

  async listTags(repo: string, limit: number, last = ''): Promise<Page<string>> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return { items: [], more: false };
    const { rows } = await this.pool.query(
      stmt('list_tags', 'SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3', [id, last, limit + 1]),
    );
    const names = rows.map((r) => r.name as string);
    return { items: names.slice(0, limit), more: names.length > limit };
  }

  async listRepositories(limit: number, last = ''): Promise<Page<string>> {
    const { rows } = await this.pool.query(
      stmt(
        'list_repos',
        `SELECT r.name FROM repositories r
         WHERE r.name > $1 AND ${LISTED_REPOSITORY}
         ORDER BY r.name LIMIT $2`,
        [last, limit + 1],
      ),
    );
    const names = rows.map((r) => r.name as string);
    return { items: names.slice(0, limit), more: names.length > limit };
  }

  async referrers(repo: string, subject: string, artifactType?: string): Promise<ManifestRecord[]> {
    const id = await this.findRepoId(repo);
    if (id === undefined) return [];
    const { rows } = await this.pool.query(
      stmt('referrers', `SELECT ${MANIFEST_COLUMNS} FROM manifests WHERE repo_id = $1 AND subject = $2 ORDER BY created_at, digest`, [
        id,
        subject,
      ]),
    );
    const all = rows.map((r) => toManifest(r)!);
    return artifactType === undefined ? all : all.filter((m) => m.artifactType === artifactType);
  }

  // ---- upload sessions: shared, so a chunk may land on any replica ----

  async createUpload(id: string, repo: string, owner = ''): Promise<void> {
    const now = Date.now();
    const repoId = await this.ensureRepoId(repo);
    await this.pool.query(
      stmt('create_upload', 'INSERT INTO uploads (id, repo_id, owner, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)', [
        id,
        repoId,
        owner,
        now,
      ]),
    );
  }

  async countUploads(owner: string): Promise<number> {
    const { rows } = await this.pool.query(stmt('count_uploads', 'SELECT COUNT(*) AS n FROM uploads WHERE owner = $1', [owner]));
    return rows[0]!.n as number;
  }

  async getUpload(id: string): Promise<UploadRecord | undefined> {
    const { rows } = await this.pool.query(
      stmt(
        'get_upload',
        'SELECT u.id, r.name AS repo, u.created_at, u.updated_at FROM uploads u JOIN repositories r ON r.id = u.repo_id WHERE u.id = $1',
        [id],
      ),
    );
    return rows[0] && toUpload(rows[0]);
  }

  async touchUpload(id: string): Promise<void> {
    await this.pool.query(stmt('touch_upload', 'UPDATE uploads SET updated_at = $1 WHERE id = $2', [Date.now(), id]));
  }

  async deleteUpload(id: string): Promise<void> {
    await this.pool.query(stmt('delete_upload', 'DELETE FROM uploads WHERE id = $1', [id]));
  }

  async uploadsUpdatedBefore(time: number): Promise<UploadRecord[]> {
    const { rows } = await this.pool.query(
      stmt(
        'uploads_before',
        'SELECT u.id, r.name AS repo, u.created_at, u.updated_at FROM uploads u JOIN repositories r ON r.id = u.repo_id WHERE u.updated_at < $1',
        [time],
      ),
    );
    return rows.map(toUpload);
  }

  // ---- totals, counters, readiness ----

  async totals(): Promise<StorageTotals> {
    // Kept by triggers (see the storage_totals migration): one row read, whatever is stored.
    const { rows } = await this.pool.query(stmt('totals', 'SELECT repositories, manifests, blobs, bytes FROM storage_totals WHERE id = 1', []));
    return rows[0] as StorageTotals;
  }

  async ping(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the database did not answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.pool.query('SELECT 1'), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async readCounters(): Promise<Record<string, number>> {
    const { rows } = await this.pool.query(stmt('read_counters', 'SELECT name, value FROM counters', []));
    const out: Record<string, number> = {};
    for (const row of rows) out[row.name as string] = row.value as number;
    return out;
  }

  async addCounters(deltas: Record<string, number>): Promise<void> {
    // Sorted: replicas adding the same counters lock their rows in one order (no deadlock).
    const entries = Object.entries(deltas)
      .filter(([, value]) => value)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (entries.length === 0) return;
    await retrying(() =>
      this.pool.query(
        stmt(
          'add_counters',
          `INSERT INTO counters (name, value) SELECT * FROM unnest($1::text[], $2::bigint[])
           ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value`,
          [entries.map(([name]) => name), entries.map(([, value]) => value)],
        ),
      ),
    );
  }

  async touchBlobs(digests: Iterable<string>, time: number): Promise<void> {
    const list = [...new Set(digests)].sort();
    if (list.length === 0) return;
    // Rows locked in digest order, so two replicas touching overlapping batches do not deadlock.
    await retrying(() =>
      this.pool.query(
        stmt(
          'touch_blobs',
          `UPDATE blobs b SET last_access = $1
           FROM (SELECT digest FROM blobs WHERE digest = ANY($2::text[]) AND last_access < $1 ORDER BY digest FOR UPDATE) s
           WHERE b.digest = s.digest AND b.last_access < $1`,
          [time, list],
        ),
      ),
    );
  }

  // ---- cache eviction basics ----

  async cachedOnlyBytes(): Promise<number> {
    const { rows } = await this.pool.query(
      stmt(
        'cached_only_bytes',
        `SELECT COALESCE(SUM(b.size), 0) AS bytes FROM blobs b
         WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)`,
        [],
      ),
    );
    return rows[0]!.bytes as number;
  }

  async evictionCandidates(limit: number): Promise<{ digest: string; size: number }[]> {
    const { rows } = await this.pool.query(
      stmt(
        'eviction_candidates',
        `SELECT b.digest, b.size FROM blobs b
         WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)
         ORDER BY b.last_access LIMIT $1`,
        [limit],
      ),
    );
    return rows as { digest: string; size: number }[];
  }

  async forgetCachedBlob(digest: string, servedBefore: number): Promise<boolean> {
    return inTransaction(this.pool, async (tx) => {
      // Lock the blob row first: a replica linking it (its foreign key check) or touching it waits
      // for this transaction; the check below then reads what committed before the lock.
      const locked = await tx.query(stmt('lock_blob', 'SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE', [digest]));
      if (locked.rows.length === 0) return false;
      if (!(await isCachedOnlyAndIdle(tx, digest, servedBefore))) return false;
      await tx.query(stmt('delete_blob_links', 'DELETE FROM repo_blobs WHERE digest = $1', [digest]));
      await tx.query(stmt('delete_blob', 'DELETE FROM blobs WHERE digest = $1', [digest]));
      return true;
    });
  }

  // ---- upstream notes and origins ----

  async readUpstreamErrors(): Promise<Map<string, string>> {
    const { rows } = await this.pool.query(
      stmt('read_upstream_errors', 'SELECT prefix, last_error FROM upstream_notes WHERE last_error IS NOT NULL', []),
    );
    return new Map(rows.map((r) => [r.prefix as string, r.last_error as string]));
  }

  async saveUpstreamErrors(errors: Map<string, string>): Promise<void> {
    const entries = [...errors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (entries.length === 0) return;
    await retrying(() =>
      this.pool.query(
        stmt(
          'save_upstream_errors',
          `INSERT INTO upstream_notes (prefix, last_error) SELECT * FROM unnest($1::text[], $2::text[])
           ON CONFLICT (prefix) DO UPDATE SET last_error = excluded.last_error`,
          [entries.map(([p]) => p), entries.map(([, e]) => e)],
        ),
      ),
    );
  }

  async setOrigin(repo: string, origin: string): Promise<void> {
    await this.pool.query(
      stmt(
        'set_origin',
        `INSERT INTO repo_origins (repo, origin, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (repo) DO UPDATE SET origin = excluded.origin, updated_at = excluded.updated_at`,
        [repo, origin, Date.now()],
      ),
    );
  }

  async listOrigins(): Promise<{ repo: string; origin: string }[]> {
    const { rows } = await this.pool.query(stmt('list_origins', 'SELECT repo, origin FROM repo_origins ORDER BY repo', []));
    return rows as { repo: string; origin: string }[];
  }

  // ---- mounts without from= ----

  /** Pages through the linking repositories by name, so a caller that stops early reads little. */
  async *reposLinkingBlob(digest: string): AsyncIterable<string> {
    let last = '';
    for (;;) {
      const { rows } = await this.pool.query(
        stmt(
          'repos_linking_blob',
          `SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
           WHERE rb.digest = $1 AND r.name > $2 ORDER BY r.name LIMIT $3`,
          [digest, last, LINKING_PAGE],
        ),
      );
      for (const row of rows) yield row.name as string;
      if (rows.length < LINKING_PAGE) return;
      last = rows[rows.length - 1]!.name as string;
    }
  }

  // ---- dashboard (dashboard.ts) ----

  browseRepositories(prefix: string, limit: number, last?: string, delimiter?: boolean): Promise<Page<RepositoryNode>> {
    return dashboard.browseRepositories(this.pool, prefix, limit, last, delimiter);
  }

  repositoryCounts(names: string[]): Promise<RepositoryCounts[]> {
    return dashboard.repositoryCounts(this.pool, names);
  }

  repositoryManifests(repo: string, limit: number): Promise<ManifestListing[]> {
    return dashboard.repositoryManifests(this.pool, repo, limit);
  }

  addHistoryPoint(point: HistoryPoint): Promise<void> {
    return dashboard.addHistoryPoint(this.pool, point);
  }

  history(since: number): Promise<HistoryPoint[]> {
    return dashboard.history(this.pool, since);
  }

  pruneHistory(before: number): Promise<void> {
    return dashboard.pruneHistory(this.pool, before);
  }

  addAuditEvents(events: AuditEvent[], keep: number): Promise<void> {
    return dashboard.addAuditEvents(this.pool, events, keep);
  }

  recentAuditEvents(limit: number): Promise<AuditEvent[]> {
    return dashboard.recentAuditEvents(this.pool, limit);
  }

  manifestsAfter(cursor: ManifestCursor | undefined, limit: number): Promise<UnclassifiedManifest[]> {
    return dashboard.manifestsAfter(this.pool, cursor, limit);
  }

  saveImageKinds(kinds: { repoId: number; digest: string; kind: string; version: string | null }[]): Promise<void> {
    return dashboard.saveImageKinds(this.pool, kinds);
  }

  imageKind(repoId: number, digest: string): Promise<{ kind: string; version: string | null } | undefined> {
    return dashboard.imageKind(this.pool, repoId, digest);
  }

  classifiedImages(limit: number): Promise<ClassifiedImage[]> {
    return dashboard.classifiedImages(this.pool, limit);
  }

  blobTotals(): Promise<{ blobs: number; bytes: number }> {
    return dashboard.blobTotals(this.pool);
  }

  repositoryImageKinds(repo: string): Promise<{ repoId: number; kinds: Map<string, { kind: string; version: string | null }> } | undefined> {
    return dashboard.repositoryImageKinds(this.pool, repo);
  }

  // ---- air-gap import/export (airgap.ts) ----

  listImages(repo: string): Promise<ImageRecord[]> {
    return airgap.listImages(this.pool, repo);
  }

  // ---- integrity checks, backup and crash recovery (lifecycle.ts) ----

  blobRowsAfter(after: string, limit: number): Promise<{ digest: string; size: number }[]> {
    return lifecycle.blobRowsAfter(this.pool, after, limit);
  }

  manifestRowsAfter(after: ManifestKey | undefined, limit: number): Promise<(ManifestKey & { repo: string; content: Buffer })[]> {
    return lifecycle.manifestRowsAfter(this.pool, after, limit);
  }

  danglingRows(limit: number): Promise<DanglingRow[]> {
    return lifecycle.danglingRows(this.pool, limit);
  }

  countReferences(): Promise<number> {
    return lifecycle.countReferences(this.pool);
  }

  forgetBlob(digest: string): Promise<void> {
    return lifecycle.forgetBlob(this.pool, digest);
  }

  setBlobSize(digest: string, size: number): Promise<void> {
    return lifecycle.setBlobSize(this.pool, digest, size);
  }

  removeDanglingRow(row: DanglingRow): Promise<boolean> {
    return lifecycle.removeDanglingRow(this.pool, row);
  }

  allUploads(): Promise<UploadRecord[]> {
    return lifecycle.allUploads(this.pool);
  }

  async backupTo(_path: string, _onProgress?: (done: number, total: number) => void): Promise<void> {
    throw new Error(
      'airlock backup copies the embedded SQLite database only; with database.url on PostgreSQL, back the metadata up with pg_dump ' +
        '(e.g. `pg_dump --format=custom --file=airlock.dump "$DATABASE_URL"`) and the blobs with the object store\'s own tools',
    );
  }

  allBlobDigests(): Promise<Set<string>> {
    return lifecycle.allBlobDigests(this.pool);
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }

  // ---- garbage collection and cache eviction (lifecycle.ts) ----

  manifestsWithoutRefs(): Promise<{ repo: string; digest: string; mediaType: string; content: Buffer }[]> {
    return lifecycle.manifestsWithoutRefs(this.pool);
  }

  addManifestRefs(repo: string, digest: string, blobRefs: string[], manifestRefs: string[]): Promise<void> {
    return lifecycle.addManifestRefs(this.pool, repo, digest, blobRefs, manifestRefs);
  }

  collectManifests(policy: GcPolicy): Promise<ManifestRef[]> {
    return lifecycle.collectManifests(this.pool, this.gcMemory, policy);
  }

  blobSweepCandidates(policy: GcPolicy, after: string, pageSize: number): Promise<{ digests: string[]; next?: string }> {
    return lifecycle.blobSweepCandidates(this.pool, this.gcMemory, policy, after, pageSize);
  }

  sweepBlobs(digests: string[], policy: GcPolicy): Promise<BlobSweep[]> {
    return lifecycle.sweepBlobs(this.pool, this.gcMemory, digests, policy);
  }

  forgetEmptiedRepositories(policy: GcPolicy): Promise<string[]> {
    return lifecycle.forgetEmptiedRepositories(this.pool, this.gcMemory, policy);
  }

  endCollection(): Promise<void> {
    return lifecycle.endCollection(this.pool, this.gcMemory);
  }

  recordGcRun(run: GcRunRecord): Promise<void> {
    return lifecycle.recordGcRun(this.pool, run);
  }

  lastGcRun(): Promise<GcRunRecord | undefined> {
    return lifecycle.lastGcRun(this.pool);
  }

  cachedImageBlobs(digest: string): Promise<string[]> {
    return lifecycle.cachedImageBlobs(this.pool, digest);
  }

  evictCachedImage(digest: string, companions: string[], servedBefore: number): Promise<EvictedImage | undefined> {
    return lifecycle.evictCachedImage(this.pool, digest, companions, servedBefore);
  }

  cachedBytesByRepo(): Promise<{ repo: string; bytes: number }[]> {
    return lifecycle.cachedBytesByRepo(this.pool);
  }

  evictionCandidatesUnder(prefix: string, limit: number): Promise<{ digest: string; size: number; repo: string }[]> {
    return lifecycle.evictionCandidatesUnder(this.pool, prefix, limit);
  }
}

/** Held only by cached links and not served since `servedBefore` (read in the caller's transaction). */
async function isCachedOnlyAndIdle(db: Queryable, digest: string, servedBefore: number): Promise<boolean> {
  const { rows } = await db.query(
    stmt(
      'cached_only_idle',
      `SELECT 1 FROM blobs b WHERE b.digest = $1 AND b.last_access < $2
       AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)`,
      [digest, servedBefore],
    ),
  );
  return rows.length > 0;
}
