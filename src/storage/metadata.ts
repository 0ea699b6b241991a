import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  size: number;
  content: Buffer;
  subject: string | null;
  artifactType: string | null;
  /** JSON text of the manifest's annotations, for referrers listings. */
  annotations: string | null;
}

export interface NewManifest extends ManifestRecord {
  blobRefs: string[];
  manifestRefs: string[];
  cached?: boolean;
}

export interface Page<T> {
  items: T[];
  /** True when more items follow the last one returned. */
  more: boolean;
}

export interface UploadRecord {
  id: string;
  repo: string;
  createdAt: number;
  updatedAt: number;
}

export interface TagRecord {
  digest: string;
  /** True when the tag was learnt from an upstream (and may be revalidated), false when pushed here. */
  cached: boolean;
  updatedAt: number;
}

export interface StorageTotals {
  repositories: number;
  manifests: number;
  blobs: number;
  bytes: number;
}

// ---- dashboard -------------------------------------------------------------------------------

/** One entry of a repository listing: a repository, a folder of deeper ones, or both. */
export interface RepositoryNode {
  name: string;
  /** The name itself holds manifests. */
  repository: boolean;
  /** Deeper repositories exist under name + "/". */
  children: boolean;
}

export interface RepositoryCounts {
  name: string;
  tags: number;
  manifests: number;
}

/** A manifest row as the dashboard shows it. */
export interface ManifestListing extends ManifestRecord {
  cached: boolean;
  /** When it was pushed or first cached (ms). */
  createdAt: number;
  /** Tags pointing at it. */
  tags: string[];
  /** Most recent time one of its blobs was served (ms), if ever. */
  lastServed: number | null;
}

/** One minute of the cache figures (cumulative counters at that minute). */
export interface HistoryPoint {
  at: number;
  hits: number;
  misses: number;
  staleServed: number;
  bytesFromCache: number;
  bytesFromUpstream: number;
  storageBytes: number;
}

export interface AuditEvent {
  at: number;
  /** push, mount, delete or denied. */
  action: string;
  user: string;
  repo: string | null;
  digest: string | null;
  tag: string | null;
  /** The error code of a refusal. */
  code: string | null;
  remote: string | null;
}

/** A manifest waiting to be classified (release, catalog or neither). */
export interface UnclassifiedManifest {
  repoId: number;
  repo: string;
  digest: string;
  mediaType: string;
  content: Buffer;
  createdAt: number;
}

export interface ClassifiedImage {
  repo: string;
  digest: string;
  kind: string;
  version: string | null;
  mediaType: string;
  cached: boolean;
  createdAt: number;
  tags: string[];
}

/** Where a walk over manifests stopped: (created_at, repo_id, digest). */
export type ManifestCursor = [number, number, string];

/**
 * Everything the registry knows besides blob bytes. A PostgreSQL implementation can slot in later
 * behind this interface; registry/ never sees SQL.
 */
export interface MetadataStore {
  /** Size of the blob if the repository links it. */
  linkedBlobSize(repo: string, digest: string): number | undefined;
  /** Size of the blob if any repository (or an upload) committed it. */
  blobSize(digest: string): number | undefined;
  /** Records a verified blob and links it into the repository. */
  linkBlob(repo: string, digest: string, size: number, cached?: boolean): void;
  /** Removes the repository's link; true if there was one. */
  unlinkBlob(repo: string, digest: string): boolean;
  /** Digests among the given ones that the repository does not link. */
  missingBlobs(repo: string, digests: string[]): string[];
  /** Digests among the given ones that the repository has no manifest for. */
  missingManifests(repo: string, digests: string[]): string[];

  getManifest(repo: string, digest: string): ManifestRecord | undefined;
  /** Resolves a tag to its manifest in one query. */
  getTaggedManifest(repo: string, tag: string): ManifestRecord | undefined;
  putManifest(repo: string, manifest: NewManifest, tag?: string): void;
  /** Deletes the manifest and every tag pointing at it; true if it existed. */
  deleteManifest(repo: string, digest: string): boolean;
  deleteTag(repo: string, tag: string): boolean;
  getTag(repo: string, tag: string): TagRecord | undefined;
  /** Records that an upstream confirmed the cached tag still points where it did. */
  touchTag(repo: string, tag: string): void;

  repositoryExists(repo: string): boolean;
  listTags(repo: string, limit: number, last?: string): Page<string>;
  listRepositories(limit: number, last?: string): Page<string>;
  referrers(repo: string, subject: string, artifactType?: string): ManifestRecord[];

  createUpload(id: string, repo: string, owner?: string): void;
  /** Upload sessions currently open for an owner (user name, or anonymous@address). */
  countUploads(owner: string): number;
  getUpload(id: string): UploadRecord | undefined;
  touchUpload(id: string): void;
  deleteUpload(id: string): void;
  uploadsUpdatedBefore(time: number): UploadRecord[];

  totals(): StorageTotals;
  /** Throws when the database cannot answer (readiness). */
  ping(): void;
  readCounters(): Record<string, number>;
  addCounters(deltas: Record<string, number>): void;
  /** Records when blobs were last served (batched by the caller). */
  touchBlobs(digests: Iterable<string>, time: number): void;
  /** Bytes of blobs that only pull-through links hold (what cache.maxBytes budgets). */
  cachedOnlyBytes(): number;
  /** Cached-only blobs, least recently served first. */
  evictionCandidates(limit: number): { digest: string; size: number }[];
  /**
   * Forgets a blob if it is still held only by cached links and was not served since `servedBefore`;
   * true if forgotten (the caller then removes the file).
   */
  forgetCachedBlob(digest: string, servedBefore: number): boolean;
  /** Last error recorded per upstream prefix. */
  readUpstreamErrors(): Map<string, string>;
  saveUpstreamErrors(errors: Map<string, string>): void;

  /** Records that local repository `repo` mirrors `origin` (e.g. quay.io/openshift-release-dev/ocp-release). */
  setOrigin(repo: string, origin: string): void;
  /** Every recorded origin, by local repository name. */
  listOrigins(): { repo: string; origin: string }[];

  // ---- dashboard ----
  /**
   * Repositories whose name starts with `prefix`, after `last`, in name order (keyset pagination).
   * With `delimiter`, one entry per next path component below the prefix (folders collapse).
   */
  browseRepositories(prefix: string, limit: number, last?: string, delimiter?: boolean): Page<RepositoryNode>;
  /** Tag and manifest counts of the named repositories. */
  repositoryCounts(names: string[]): RepositoryCounts[];
  /** Every manifest of a repository (up to `limit`), with tags and last serving time. */
  repositoryManifests(repo: string, limit: number): ManifestListing[];
  addHistoryPoint(point: HistoryPoint): void;
  /** Points at or after `since`, oldest first; older ones than `keepAfter` are removed. */
  history(since: number): HistoryPoint[];
  pruneHistory(before: number): void;
  addAuditEvents(events: AuditEvent[], keep: number): void;
  /** Most recent first. */
  recentAuditEvents(limit: number): AuditEvent[];
  /** Manifests after the cursor in arrival order, for the release/catalog classifier. */
  manifestsAfter(cursor: ManifestCursor | undefined, limit: number): UnclassifiedManifest[];
  saveImageKinds(kinds: { repoId: number; digest: string; kind: string; version: string | null }[]): void;
  /** The kind recorded for a manifest of a repository, if classified. */
  imageKind(repoId: number, digest: string): { kind: string; version: string | null } | undefined;
  /** Releases and catalogs found so far, by repository and arrival. */
  classifiedImages(limit: number): ClassifiedImage[];
  /** Number and bytes of blobs (cheap, unlike totals()). */
  blobTotals(): { blobs: number; bytes: number };
  /** A repository's id and the kinds recorded for its manifests, by digest. */
  repositoryImageKinds(repo: string): { repoId: number; kinds: Map<string, { kind: string; version: string | null }> } | undefined;
  // ---- air-gap import/export ----
  /**
   * The images a repository holds, as an export selects them: every tagged manifest and every
   * tagless one that no index in the repository references (an index's children travel with it).
   */
  listImages(repo: string): ImageRecord[];

  close(): void;
}

/** A manifest of a repository with the tags pointing at it (air-gap export). */
export interface ImageRecord {
  digest: string;
  mediaType: string;
  tags: string[];
}

type Row = Record<string, unknown>;

function toManifest(row: Row | undefined): ManifestRecord | undefined {
  if (!row) return undefined;
  return {
    digest: row.digest as string,
    mediaType: row.media_type as string,
    size: row.size as number,
    content: row.content as Buffer,
    subject: (row.subject as string | null) ?? null,
    artifactType: (row.artifact_type as string | null) ?? null,
    annotations: (row.annotations as string | null) ?? null,
  };
}

export class SqliteMetadataStore implements MetadataStore {
  private readonly db: Database.Database;
  /** Repository ids never change once created, so they are cached for the process lifetime. */
  private readonly repoIds = new Map<string, number>();
  private readonly q;

  /**
   * `readonly`: for commands that only look (verify, mirrorsets) beside whichever process owns the
   * storage: WAL lets them read while it writes. Nothing is migrated; a schema other than this
   * airlock's is refused.
   */
  constructor(path: string, options: { readonly?: boolean } = {}) {
    if (options.readonly) {
      this.db = new Database(path, { readonly: true, fileMustExist: true });
      this.db.pragma('busy_timeout = 5000');
      const version = this.db.pragma('user_version', { simple: true }) as number;
      if (version !== MIGRATIONS.length) {
        this.db.close();
        throw new Error(
          `the metadata database ${path} has schema version ${version}, this airlock reads ${MIGRATIONS.length}: ` +
            (version < MIGRATIONS.length ? 'start `airlock serve` on it once to upgrade it' : 'upgrade airlock'),
        );
      }
    } else {
      this.db = new Database(path);
      this.db.pragma('journal_mode = WAL');
      // FULL: a commit acknowledged to a client survives power loss, not just a process crash.
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      this.migrate();
    }
    const db = this.db;
    const manifestColumns = 'digest, media_type, size, content, subject, artifact_type, annotations';
    this.q = {
      repoId: db.prepare('SELECT id FROM repositories WHERE name = ?').pluck(),
      insertRepo: db.prepare('INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING'),
      linkedBlobSize: db
        .prepare('SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = ? AND rb.digest = ?')
        .pluck(),
      blobSize: db.prepare('SELECT size FROM blobs WHERE digest = ?').pluck(),
      insertBlob: db.prepare(
        'INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?) ON CONFLICT(digest) DO NOTHING',
      ),
      linkBlob: db.prepare(
        // A push over a cached link makes it pushed content (never evicted); never the other way.
        `INSERT INTO repo_blobs (repo_id, digest, cached, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(repo_id, digest) DO UPDATE SET cached = MIN(cached, excluded.cached)`,
      ),
      unlinkBlob: db.prepare('DELETE FROM repo_blobs WHERE repo_id = ? AND digest = ?'),
      pinBlob: db.prepare('UPDATE repo_blobs SET cached = 0 WHERE repo_id = ? AND digest = ? AND cached = 1'),
      getManifest: db.prepare(`SELECT ${manifestColumns} FROM manifests WHERE repo_id = ? AND digest = ?`),
      getTaggedManifest: db.prepare(
        `SELECT m.digest, m.media_type, m.size, m.content, m.subject, m.artifact_type, m.annotations
         FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
         WHERE t.repo_id = ? AND t.name = ?`,
      ),
      hasManifest: db.prepare('SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?').pluck(),
      insertManifest: db.prepare(
        `INSERT INTO manifests (repo_id, digest, media_type, size, content, subject, artifact_type, annotations, cached, created_at, last_access)
         VALUES (@repoId, @digest, @mediaType, @size, @content, @subject, @artifactType, @annotations, @cached, @now, @now)
         ON CONFLICT(repo_id, digest) DO UPDATE SET cached = MIN(cached, excluded.cached)`,
      ),
      insertRef: db.prepare(
        'INSERT INTO manifest_refs (repo_id, parent, child, kind) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
      ),
      upsertTag: db.prepare(
        `INSERT INTO tags (repo_id, name, digest, cached, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(repo_id, name) DO UPDATE SET digest = excluded.digest, cached = excluded.cached, updated_at = excluded.updated_at`,
      ),
      getTag: db.prepare('SELECT digest, cached, updated_at FROM tags WHERE repo_id = ? AND name = ?'),
      touchTag: db.prepare('UPDATE tags SET updated_at = ? WHERE repo_id = ? AND name = ?'),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE repo_id = ? AND digest = ?'),
      deleteRefs: db.prepare('DELETE FROM manifest_refs WHERE repo_id = ? AND parent = ?'),
      deleteTagsOf: db.prepare('DELETE FROM tags WHERE repo_id = ? AND digest = ?'),
      deleteTag: db.prepare('DELETE FROM tags WHERE repo_id = ? AND name = ?'),
      listTags: db.prepare('SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?').pluck(),
      listRepos: db
        .prepare(
          `SELECT r.name FROM repositories r
           WHERE r.name > ? AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
           ORDER BY r.name LIMIT ?`,
        )
        .pluck(),
      referrers: db.prepare(`SELECT ${manifestColumns} FROM manifests WHERE repo_id = ? AND subject = ? ORDER BY created_at, digest`),
      createUpload: db.prepare('INSERT INTO uploads (id, repo_id, owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?)'),
      countUploads: db.prepare('SELECT COUNT(*) FROM uploads WHERE owner = ?').pluck(),
      getUpload: db.prepare(
        'SELECT u.id, r.name AS repo, u.created_at, u.updated_at FROM uploads u JOIN repositories r ON r.id = u.repo_id WHERE u.id = ?',
      ),
      touchUpload: db.prepare('UPDATE uploads SET updated_at = ? WHERE id = ?'),
      deleteUpload: db.prepare('DELETE FROM uploads WHERE id = ?'),
      uploadsBefore: db.prepare(
        'SELECT u.id, r.name AS repo, u.created_at, u.updated_at FROM uploads u JOIN repositories r ON r.id = u.repo_id WHERE u.updated_at < ?',
      ),
      totals: db.prepare(
        `SELECT (SELECT COUNT(*) FROM repositories r WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)) AS repositories,
                (SELECT COUNT(DISTINCT digest) FROM manifests) AS manifests,
                (SELECT COUNT(*) FROM blobs) AS blobs,
                (SELECT COALESCE(SUM(size), 0) FROM blobs) AS bytes`,
      ),
      readCounters: db.prepare('SELECT name, value FROM counters'),
      ping: db.prepare('SELECT 1').pluck(),
      touchBlob: db.prepare('UPDATE blobs SET last_access = ? WHERE digest = ? AND last_access < ?'),
      cachedOnlyBytes: db
        .prepare(
          `SELECT COALESCE(SUM(b.size), 0) FROM blobs b
           WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)`,
        )
        .pluck(),
      evictionCandidates: db.prepare(
        `SELECT b.digest, b.size FROM blobs b
         WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)
         ORDER BY b.last_access LIMIT ?`,
      ),
      isCachedOnlyAndIdle: db
        .prepare(
          `SELECT 1 FROM blobs b WHERE b.digest = ? AND b.last_access < ?
           AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)`,
        )
        .pluck(),
      deleteBlobLinks: db.prepare('DELETE FROM repo_blobs WHERE digest = ?'),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      readUpstreamErrors: db.prepare('SELECT prefix, last_error FROM upstream_notes WHERE last_error IS NOT NULL'),
      saveUpstreamError: db.prepare(
        'INSERT INTO upstream_notes (prefix, last_error) VALUES (?, ?) ON CONFLICT(prefix) DO UPDATE SET last_error = excluded.last_error',
      ),
      setOrigin: db.prepare(
        'INSERT INTO repo_origins (repo, origin, updated_at) VALUES (?, ?, ?) ON CONFLICT(repo) DO UPDATE SET origin = excluded.origin, updated_at = excluded.updated_at',
      ),
      listOrigins: db.prepare('SELECT repo, origin FROM repo_origins ORDER BY repo'),
      addCounter: db.prepare(
        'INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value',
      ),
      // ---- dashboard ----
      nextRepoIn: db
        .prepare(
          `SELECT r.name FROM repositories r
           WHERE r.name > ? AND r.name < ? AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
           ORDER BY r.name LIMIT ?`,
        )
        .pluck(),
      repoHasManifests: db
        .prepare('SELECT 1 FROM repositories r WHERE r.name = ? AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)')
        .pluck(),
      repoCounts: db.prepare(
        `SELECT r.name, (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id) AS tags,
                (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id) AS manifests
         FROM repositories r WHERE r.name = ?`,
      ),
      repoManifests: db.prepare(
        `SELECT ${manifestColumns}, cached, created_at FROM manifests WHERE repo_id = ? ORDER BY created_at, digest LIMIT ?`,
      ),
      repoTags: db.prepare('SELECT name, digest FROM tags WHERE repo_id = ? ORDER BY name'),
      repoLastServed: db.prepare(
        `SELECT mr.parent AS digest, MAX(CASE WHEN b.last_access > b.created_at THEN b.last_access END) AS served
         FROM manifest_refs mr JOIN blobs b ON b.digest = mr.child
         WHERE mr.repo_id = ? AND mr.kind = 'blob' GROUP BY mr.parent`,
      ),
      addHistory: db.prepare(
        `INSERT INTO stats_history (at, hits, misses, stale_served, bytes_from_cache, bytes_from_upstream, storage_bytes)
         VALUES (@at, @hits, @misses, @staleServed, @bytesFromCache, @bytesFromUpstream, @storageBytes)
         ON CONFLICT(at) DO UPDATE SET hits = excluded.hits, misses = excluded.misses, stale_served = excluded.stale_served,
           bytes_from_cache = excluded.bytes_from_cache, bytes_from_upstream = excluded.bytes_from_upstream,
           storage_bytes = excluded.storage_bytes`,
      ),
      history: db.prepare(
        `SELECT at, hits, misses, stale_served AS staleServed, bytes_from_cache AS bytesFromCache,
                bytes_from_upstream AS bytesFromUpstream, storage_bytes AS storageBytes
         FROM stats_history WHERE at >= ? ORDER BY at`,
      ),
      pruneHistory: db.prepare('DELETE FROM stats_history WHERE at < ?'),
      addAudit: db.prepare(
        'INSERT INTO audit_events (at, action, user, repo, digest, tag, code, remote) VALUES (@at, @action, @user, @repo, @digest, @tag, @code, @remote)',
      ),
      pruneAudit: db.prepare('DELETE FROM audit_events WHERE id <= (SELECT MAX(id) FROM audit_events) - ?'),
      recentAudit: db.prepare('SELECT at, action, user, repo, digest, tag, code, remote FROM audit_events ORDER BY id DESC LIMIT ?'),
      manifestsAfter: db.prepare(
        `SELECT m.repo_id AS repoId, r.name AS repo, m.digest, m.media_type AS mediaType, m.content, m.created_at AS createdAt
         FROM manifests m JOIN repositories r ON r.id = m.repo_id
         WHERE (m.created_at, m.repo_id, m.digest) > (?, ?, ?)
         ORDER BY m.created_at, m.repo_id, m.digest LIMIT ?`,
      ),
      saveImageKind: db.prepare(
        'INSERT INTO image_kinds (repo_id, digest, kind, version) VALUES (?, ?, ?, ?) ON CONFLICT(repo_id, digest) DO UPDATE SET kind = excluded.kind, version = excluded.version',
      ),
      imageKind: db.prepare('SELECT kind, version FROM image_kinds WHERE repo_id = ? AND digest = ?'),
      blobTotals: db.prepare('SELECT COUNT(*) AS blobs, COALESCE(SUM(size), 0) AS bytes FROM blobs'),
      repoImageKinds: db.prepare('SELECT digest, kind, version FROM image_kinds WHERE repo_id = ?'),
      classifiedImages: db.prepare(
        `SELECT r.name AS repo, k.digest, k.kind, k.version, m.media_type AS mediaType, m.cached, m.created_at AS createdAt,
                (SELECT group_concat(t.name, ' ') FROM tags t WHERE t.repo_id = k.repo_id AND t.digest = k.digest) AS tags
         FROM image_kinds k
         JOIN manifests m ON m.repo_id = k.repo_id AND m.digest = k.digest
         JOIN repositories r ON r.id = k.repo_id
         WHERE k.kind <> ''
         ORDER BY k.kind DESC, r.name, m.created_at DESC LIMIT ?`,
      ),
    };
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new Error(
        `the metadata database has schema version ${version}, newer than this airlock understands (${MIGRATIONS.length}); upgrade airlock`,
      );
    }
    for (let i = version; i < MIGRATIONS.length; i++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[i]!);
        this.db.pragma(`user_version = ${i + 1}`);
      })();
    }
  }

  private findRepoId(name: string): number | undefined {
    let id = this.repoIds.get(name);
    if (id === undefined) {
      id = this.q.repoId.get(name) as number | undefined;
      if (id !== undefined) this.repoIds.set(name, id);
    }
    return id;
  }

  private ensureRepoId(name: string): number {
    const existing = this.findRepoId(name);
    if (existing !== undefined) return existing;
    this.q.insertRepo.run(name, Date.now());
    return this.findRepoId(name)!;
  }

  linkedBlobSize(repo: string, digest: string): number | undefined {
    const id = this.findRepoId(repo);
    return id === undefined ? undefined : (this.q.linkedBlobSize.get(id, digest) as number | undefined);
  }

  blobSize(digest: string): number | undefined {
    return this.q.blobSize.get(digest) as number | undefined;
  }

  linkBlob(repo: string, digest: string, size: number, cached = false): void {
    const now = Date.now();
    this.db.transaction(() => {
      const id = this.ensureRepoId(repo);
      this.q.insertBlob.run(digest, size, now, now);
      this.q.linkBlob.run(id, digest, cached ? 1 : 0, now);
    })();
  }

  unlinkBlob(repo: string, digest: string): boolean {
    const id = this.findRepoId(repo);
    return id !== undefined && this.q.unlinkBlob.run(id, digest).changes > 0;
  }

  missingBlobs(repo: string, digests: string[]): string[] {
    const id = this.findRepoId(repo);
    if (id === undefined) return [...digests];
    return digests.filter((d) => this.q.linkedBlobSize.get(id, d) === undefined);
  }

  missingManifests(repo: string, digests: string[]): string[] {
    const id = this.findRepoId(repo);
    if (id === undefined) return [...digests];
    return digests.filter((d) => this.q.hasManifest.get(id, d) === undefined);
  }

  getManifest(repo: string, digest: string): ManifestRecord | undefined {
    const id = this.findRepoId(repo);
    return id === undefined ? undefined : toManifest(this.q.getManifest.get(id, digest) as Row | undefined);
  }

  getTaggedManifest(repo: string, tag: string): ManifestRecord | undefined {
    const id = this.findRepoId(repo);
    return id === undefined ? undefined : toManifest(this.q.getTaggedManifest.get(id, tag) as Row | undefined);
  }

  putManifest(repo: string, m: NewManifest, tag?: string): void {
    const now = Date.now();
    const cached = m.cached ? 1 : 0;
    this.db.transaction(() => {
      const repoId = this.ensureRepoId(repo);
      this.q.insertManifest.run({
        repoId,
        digest: m.digest,
        mediaType: m.mediaType,
        size: m.size,
        content: m.content,
        subject: m.subject,
        artifactType: m.artifactType,
        annotations: m.annotations,
        cached,
        now,
      });
      for (const child of m.blobRefs) {
        this.q.insertRef.run(repoId, m.digest, child, 'blob');
        // Pushed content keeps what it references: a cached blob it uses is no longer evictable.
        if (!cached) this.q.pinBlob.run(repoId, child);
      }
      for (const child of m.manifestRefs) this.q.insertRef.run(repoId, m.digest, child, 'manifest');
      if (tag !== undefined) this.q.upsertTag.run(repoId, tag, m.digest, cached, now);
    })();
  }

  deleteManifest(repo: string, digest: string): boolean {
    const id = this.findRepoId(repo);
    if (id === undefined) return false;
    return this.db.transaction(() => {
      const existed = this.q.deleteManifest.run(id, digest).changes > 0;
      this.q.deleteRefs.run(id, digest);
      this.q.deleteTagsOf.run(id, digest);
      return existed;
    })();
  }

  deleteTag(repo: string, tag: string): boolean {
    const id = this.findRepoId(repo);
    return id !== undefined && this.q.deleteTag.run(id, tag).changes > 0;
  }

  getTag(repo: string, tag: string): TagRecord | undefined {
    const id = this.findRepoId(repo);
    const row = id === undefined ? undefined : (this.q.getTag.get(id, tag) as Row | undefined);
    return row && { digest: row.digest as string, cached: row.cached === 1, updatedAt: row.updated_at as number };
  }

  touchTag(repo: string, tag: string): void {
    const id = this.findRepoId(repo);
    if (id !== undefined) this.q.touchTag.run(Date.now(), id, tag);
  }

  repositoryExists(repo: string): boolean {
    return this.findRepoId(repo) !== undefined;
  }

  listTags(repo: string, limit: number, last = ''): Page<string> {
    const id = this.findRepoId(repo);
    if (id === undefined) return { items: [], more: false };
    const rows = this.q.listTags.all(id, last, limit + 1) as string[];
    return { items: rows.slice(0, limit), more: rows.length > limit };
  }

  listRepositories(limit: number, last = ''): Page<string> {
    const rows = this.q.listRepos.all(last, limit + 1) as string[];
    return { items: rows.slice(0, limit), more: rows.length > limit };
  }

  referrers(repo: string, subject: string, artifactType?: string): ManifestRecord[] {
    const id = this.findRepoId(repo);
    if (id === undefined) return [];
    const all = (this.q.referrers.all(id, subject) as Row[]).map((r) => toManifest(r)!);
    return artifactType === undefined ? all : all.filter((m) => m.artifactType === artifactType);
  }

  createUpload(id: string, repo: string, owner = ''): void {
    const now = Date.now();
    this.db.transaction(() => {
      this.q.createUpload.run(id, this.ensureRepoId(repo), owner, now, now);
    })();
  }

  countUploads(owner: string): number {
    return this.q.countUploads.get(owner) as number;
  }

  getUpload(id: string): UploadRecord | undefined {
    const row = this.q.getUpload.get(id) as Row | undefined;
    return row && { id: row.id as string, repo: row.repo as string, createdAt: row.created_at as number, updatedAt: row.updated_at as number };
  }

  touchUpload(id: string): void {
    this.q.touchUpload.run(Date.now(), id);
  }

  deleteUpload(id: string): void {
    this.q.deleteUpload.run(id);
  }

  uploadsUpdatedBefore(time: number): UploadRecord[] {
    return (this.q.uploadsBefore.all(time) as Row[]).map((row) => ({
      id: row.id as string,
      repo: row.repo as string,
      createdAt: row.created_at as number,
      updatedAt: row.updated_at as number,
    }));
  }

  totals(): StorageTotals {
    return this.q.totals.get() as StorageTotals;
  }

  ping(): void {
    this.q.ping.get();
  }

  readCounters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const row of this.q.readCounters.all() as { name: string; value: number }[]) out[row.name] = row.value;
    return out;
  }

  addCounters(deltas: Record<string, number>): void {
    this.db.transaction(() => {
      for (const [name, value] of Object.entries(deltas)) if (value) this.q.addCounter.run(name, value);
    })();
  }

  touchBlobs(digests: Iterable<string>, time: number): void {
    this.db.transaction(() => {
      for (const digest of digests) this.q.touchBlob.run(time, digest, time);
    })();
  }

  cachedOnlyBytes(): number {
    return this.q.cachedOnlyBytes.get() as number;
  }

  evictionCandidates(limit: number): { digest: string; size: number }[] {
    return this.q.evictionCandidates.all(limit) as { digest: string; size: number }[];
  }

  forgetCachedBlob(digest: string, servedBefore: number): boolean {
    return this.db.transaction(() => {
      if (this.q.isCachedOnlyAndIdle.get(digest, servedBefore) === undefined) return false;
      this.q.deleteBlobLinks.run(digest);
      this.q.deleteBlob.run(digest);
      return true;
    })();
  }

  readUpstreamErrors(): Map<string, string> {
    const rows = this.q.readUpstreamErrors.all() as { prefix: string; last_error: string }[];
    return new Map(rows.map((r) => [r.prefix, r.last_error]));
  }

  saveUpstreamErrors(errors: Map<string, string>): void {
    this.db.transaction(() => {
      for (const [prefix, text] of errors) this.q.saveUpstreamError.run(prefix, text);
    })();
  }

  setOrigin(repo: string, origin: string): void {
    this.q.setOrigin.run(repo, origin, Date.now());
  }

  listOrigins(): { repo: string; origin: string }[] {
    return this.q.listOrigins.all() as { repo: string; origin: string }[];
  }

  // ---- dashboard -----------------------------------------------------------------------------

  browseRepositories(prefix: string, limit: number, last?: string, delimiter = false): Page<RepositoryNode> {
    // Valid names use only characters below 0x7f, so [prefix, prefix + 0x7f) holds every name under it.
    const end = `${prefix}\u007f`;
    if (!delimiter) {
      const from = last !== undefined && last > prefix ? last : prefix;
      const names = this.q.nextRepoIn.all(from, end, limit + 1) as string[];
      // A repository named exactly `prefix` sorts first but is not > prefix: add it on the first page.
      if (last === undefined && prefix !== '' && this.q.repoHasManifests.get(prefix) !== undefined) names.unshift(prefix);
      const items = names.slice(0, limit).map((name) => ({ name, repository: true, children: false }));
      return { items, more: names.length > limit };
    }
    // One node per next path component: each step is one index seek, and a folder's whole subtree is
    // skipped at once, so a page costs O(page size) seeks however many repositories lie beneath.
    const items: RepositoryNode[] = [];
    const componentOf = (name: string) => {
      const slash = name.indexOf('/', prefix.length);
      return slash === -1 ? name : name.slice(0, slash);
    };
    const subtreeEnd = (node: string) => `${node}/\u007f`;
    const hasChildren = (node: string) => (this.q.nextRepoIn.all(`${node}/`, subtreeEnd(node), 1) as string[]).length > 0;
    let cursor = prefix;
    let skipComponent: string | undefined;
    if (last !== undefined && last >= prefix) {
      // Resume as the loop below would have gone on after listing `last`.
      skipComponent = componentOf(last);
      cursor = this.q.repoHasManifests.get(skipComponent) !== undefined ? skipComponent : subtreeEnd(skipComponent);
    }
    while (items.length <= limit) {
      const found = (this.q.nextRepoIn.all(cursor, end, 1) as string[])[0];
      if (found === undefined) break;
      const node = componentOf(found);
      if (node === skipComponent) {
        cursor = subtreeEnd(node);
        continue;
      }
      if (node === found) {
        // A repository that may also have deeper ones: "a" sorts before "a-b" and "a.b", which sort before "a/…".
        items.push({ name: node, repository: true, children: hasChildren(node) });
        skipComponent = node;
        cursor = node;
      } else {
        // A folder, unless the repository of that name exists (then it was listed already, before its siblings).
        if (this.q.repoHasManifests.get(node) === undefined) items.push({ name: node, repository: false, children: true });
        cursor = subtreeEnd(node);
      }
    }
    return { items: items.slice(0, limit), more: items.length > limit };
  }

  repositoryCounts(names: string[]): RepositoryCounts[] {
    return names.flatMap((name) => {
      const row = this.q.repoCounts.get(name) as RepositoryCounts | undefined;
      return row ? [row] : [];
    });
  }

  repositoryManifests(repo: string, limit: number): ManifestListing[] {
    const id = this.findRepoId(repo);
    if (id === undefined) return [];
    const tags = new Map<string, string[]>();
    for (const row of this.q.repoTags.all(id) as { name: string; digest: string }[]) {
      const list = tags.get(row.digest);
      if (list) list.push(row.name);
      else tags.set(row.digest, [row.name]);
    }
    const served = new Map<string, number | null>();
    for (const row of this.q.repoLastServed.all(id) as { digest: string; served: number | null }[]) served.set(row.digest, row.served);
    return (this.q.repoManifests.all(id, limit) as Row[]).map((row) => ({
      ...toManifest(row)!,
      cached: row.cached === 1,
      createdAt: row.created_at as number,
      tags: tags.get(row.digest as string) ?? [],
      lastServed: served.get(row.digest as string) ?? null,
    }));
  }

  addHistoryPoint(point: HistoryPoint): void {
    this.q.addHistory.run(point);
  }

  history(since: number): HistoryPoint[] {
    return this.q.history.all(since) as HistoryPoint[];
  }

  pruneHistory(before: number): void {
    this.q.pruneHistory.run(before);
  }

  addAuditEvents(events: AuditEvent[], keep: number): void {
    this.db.transaction(() => {
      for (const event of events) this.q.addAudit.run(event);
      this.q.pruneAudit.run(keep);
    })();
  }

  recentAuditEvents(limit: number): AuditEvent[] {
    return this.q.recentAudit.all(limit) as AuditEvent[];
  }

  manifestsAfter(cursor: ManifestCursor | undefined, limit: number): UnclassifiedManifest[] {
    const [at, repoId, digest] = cursor ?? [-1, -1, ''];
    return this.q.manifestsAfter.all(at, repoId, digest, limit) as UnclassifiedManifest[];
  }

  saveImageKinds(kinds: { repoId: number; digest: string; kind: string; version: string | null }[]): void {
    this.db.transaction(() => {
      for (const k of kinds) this.q.saveImageKind.run(k.repoId, k.digest, k.kind, k.version);
    })();
  }

  imageKind(repoId: number, digest: string): { kind: string; version: string | null } | undefined {
    return this.q.imageKind.get(repoId, digest) as { kind: string; version: string | null } | undefined;
  }

  classifiedImages(limit: number): ClassifiedImage[] {
    return (this.q.classifiedImages.all(limit) as (Omit<ClassifiedImage, 'tags' | 'cached'> & { tags: string | null; cached: number })[]).map(
      (row) => ({ ...row, cached: row.cached === 1, tags: row.tags ? row.tags.split(' ') : [] }),
    );
  }

  blobTotals(): { blobs: number; bytes: number } {
    return this.q.blobTotals.get() as { blobs: number; bytes: number };
  }

  repositoryImageKinds(repo: string): { repoId: number; kinds: Map<string, { kind: string; version: string | null }> } | undefined {
    const repoId = this.findRepoId(repo);
    if (repoId === undefined) return undefined;
    const rows = this.q.repoImageKinds.all(repoId) as { digest: string; kind: string; version: string | null }[];
    return { repoId, kinds: new Map(rows.map((r) => [r.digest, { kind: r.kind, version: r.version }])) };
  }

  // ---- air-gap import/export ----
  private listImagesQuery?: Database.Statement;

  listImages(repo: string): ImageRecord[] {
    const id = this.findRepoId(repo);
    if (id === undefined) return [];
    this.listImagesQuery ??= this.db.prepare(
      `SELECT m.digest, m.media_type,
              (SELECT group_concat(t.name, char(10)) FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) AS tags
       FROM manifests m
       WHERE m.repo_id = ?
         AND (EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
              OR NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.repo_id = m.repo_id AND r.child = m.digest AND r.kind = 'manifest'))
       ORDER BY m.digest`,
    );
    return (this.listImagesQuery.all(id) as { digest: string; media_type: string; tags: string | null }[]).map((r) => ({
      digest: r.digest,
      mediaType: r.media_type,
      tags: r.tags ? r.tags.split('\n').sort() : [],
    }));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
