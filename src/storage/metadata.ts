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

/** What a garbage collection keeps and removes (see lifecycle/gc.ts). */
export interface GcPolicy {
  /** Manifests, links and blobs written at or after this time are kept whatever refers to them (the grace period). */
  graceBefore: number;
  /** Untagged manifests pushed before this time go unless something kept needs them; undefined: never. */
  untaggedBefore?: number;
  /** Decide and report only; change nothing. */
  dryRun: boolean;
}

export interface ManifestRef {
  repo: string;
  digest: string;
  size: number;
}

/** What sweeping one blob did (or would do): links dropped, and whether the blob itself went. */
export interface BlobSweep {
  digest: string;
  size: number;
  links: number;
  removed: boolean;
}

export interface GcRunRecord {
  startedAt: number;
  durationMs: number;
  dryRun: boolean;
  removedManifests: number;
  removedBlobs: number;
  freedBytes: number;
  /** Repositories left without a manifest that the collection no longer lists. */
  forgottenRepositories: number;
}

/** A cached image removed by eviction: its manifests (with their cached tags) and its blobs. */
export interface EvictedImage {
  manifests: { repo: string; digest: string }[];
  blobs: { digest: string; size: number }[];
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
 * Everything the registry knows besides blob bytes; registry/ never sees SQL.
 *
 * Asynchronous because implementations differ in where the answer comes from: SQLite answers
 * synchronously underneath (its methods resolve at once), PostgreSQL over the network. Callers
 * must not assume that nothing else runs between two awaited calls: a sequence that has to be
 * atomic is one method here (putManifest, sweepBlobs, evictCachedImage, addAuditEvents, ...).
 */
export interface MetadataStore {
  /** Size of the blob if the repository links it. */
  linkedBlobSize(repo: string, digest: string): Promise<number | undefined>;
  /** Size of the blob if any repository (or an upload) committed it. */
  blobSize(digest: string): Promise<number | undefined>;
  /** Records a verified blob and links it into the repository. */
  linkBlob(repo: string, digest: string, size: number, cached?: boolean): Promise<void>;
  /** Removes the repository's link; true if there was one. */
  unlinkBlob(repo: string, digest: string): Promise<boolean>;
  /** Digests among the given ones that the repository does not link. */
  missingBlobs(repo: string, digests: string[]): Promise<string[]>;
  /** Digests among the given ones that the repository has no manifest for. */
  missingManifests(repo: string, digests: string[]): Promise<string[]>;

  getManifest(repo: string, digest: string): Promise<ManifestRecord | undefined>;
  /** Resolves a tag to its manifest in one query. */
  getTaggedManifest(repo: string, tag: string): Promise<ManifestRecord | undefined>;
  /**
   * Stores a manifest (and its references) and points `tags` at it (one, several, or none; a
   * repeated tag is one), in one transaction. A pushed (not cached) manifest is checked in the same
   * transaction: MissingReferencesError when its repository lacks a blob or child manifest it
   * references, so a concurrent removal cannot slip in before it lands.
   */
  putManifest(repo: string, manifest: NewManifest, tags?: string | readonly string[]): Promise<void>;
  /** Deletes the manifest and every tag pointing at it; true if it existed. */
  deleteManifest(repo: string, digest: string): Promise<boolean>;
  deleteTag(repo: string, tag: string): Promise<boolean>;
  getTag(repo: string, tag: string): Promise<TagRecord | undefined>;
  /** Records that an upstream confirmed the cached tag still points where it did. */
  touchTag(repo: string, tag: string): Promise<void>;

  /**
   * True once the repository has held a manifest, and still after its last one was deleted (it
   * lists no tags then), until garbage collection finds it empty. Uploads and blob links alone do
   * not make one: a repository row may exist for them, but the catalog and tags/list never show it.
   */
  repositoryExists(repo: string): Promise<boolean>;
  listTags(repo: string, limit: number, last?: string): Promise<Page<string>>;
  listRepositories(limit: number, last?: string): Promise<Page<string>>;
  referrers(repo: string, subject: string, artifactType?: string): Promise<ManifestRecord[]>;

  createUpload(id: string, repo: string, owner?: string): Promise<void>;
  /** Upload sessions currently open for an owner (user name, or anonymous@address). */
  countUploads(owner: string): Promise<number>;
  getUpload(id: string): Promise<UploadRecord | undefined>;
  touchUpload(id: string): Promise<void>;
  deleteUpload(id: string): Promise<void>;
  uploadsUpdatedBefore(time: number): Promise<UploadRecord[]>;

  totals(): Promise<StorageTotals>;
  /** Throws when the database cannot answer (readiness). */
  ping(): Promise<void>;
  readCounters(): Promise<Record<string, number>>;
  addCounters(deltas: Record<string, number>): Promise<void>;
  /** Records when blobs were last served (batched by the caller). */
  touchBlobs(digests: Iterable<string>, time: number): Promise<void>;
  /** Bytes of blobs that only pull-through links hold (what cache.maxBytes budgets). */
  cachedOnlyBytes(): Promise<number>;
  /** Cached-only blobs, least recently served first. */
  evictionCandidates(limit: number): Promise<{ digest: string; size: number }[]>;
  /**
   * Forgets a blob if it is still held only by cached links and was not served since `servedBefore`;
   * true if forgotten (the caller then removes the file).
   */
  forgetCachedBlob(digest: string, servedBefore: number): Promise<boolean>;
  /** Last error recorded per upstream prefix. */
  readUpstreamErrors(): Promise<Map<string, string>>;
  saveUpstreamErrors(errors: Map<string, string>): Promise<void>;

  /** Records that local repository `repo` mirrors `origin` (e.g. quay.io/openshift-release-dev/ocp-release). */
  setOrigin(repo: string, origin: string): Promise<void>;
  /** Every recorded origin, by local repository name. */
  listOrigins(): Promise<{ repo: string; origin: string }[]>;

  // ---- mounts without from= ----
  /** Repositories linking the blob, lazily (a base layer may be in thousands): stop reading early. */
  reposLinkingBlob(digest: string): AsyncIterable<string>;

  // ---- dashboard ----
  /**
   * Repositories whose name starts with `prefix`, after `last`, in name order (keyset pagination).
   * With `delimiter`, one entry per next path component below the prefix (folders collapse).
   */
  browseRepositories(prefix: string, limit: number, last?: string, delimiter?: boolean): Promise<Page<RepositoryNode>>;
  /** Tag and manifest counts of the named repositories. */
  repositoryCounts(names: string[]): Promise<RepositoryCounts[]>;
  /** Every manifest of a repository (up to `limit`), with tags and last serving time. */
  repositoryManifests(repo: string, limit: number): Promise<ManifestListing[]>;
  addHistoryPoint(point: HistoryPoint): Promise<void>;
  /** Points at or after `since`, oldest first; older ones than `keepAfter` are removed. */
  history(since: number): Promise<HistoryPoint[]>;
  pruneHistory(before: number): Promise<void>;
  addAuditEvents(events: AuditEvent[], keep: number): Promise<void>;
  /** Most recent first. */
  recentAuditEvents(limit: number): Promise<AuditEvent[]>;
  /** Manifests after the cursor in arrival order, for the release/catalog classifier. */
  manifestsAfter(cursor: ManifestCursor | undefined, limit: number): Promise<UnclassifiedManifest[]>;
  saveImageKinds(kinds: { repoId: number; digest: string; kind: string; version: string | null }[]): Promise<void>;
  /** The kind recorded for a manifest of a repository, if classified. */
  imageKind(repoId: number, digest: string): Promise<{ kind: string; version: string | null } | undefined>;
  /** Releases and catalogs found so far, by repository and arrival. */
  classifiedImages(limit: number): Promise<ClassifiedImage[]>;
  /** Number and bytes of blobs (cheap, unlike totals()). */
  blobTotals(): Promise<{ blobs: number; bytes: number }>;
  /** A repository's id and the kinds recorded for its manifests, by digest. */
  repositoryImageKinds(repo: string): Promise<{ repoId: number; kinds: Map<string, { kind: string; version: string | null }> } | undefined>;
  // ---- air-gap import/export ----
  /**
   * The images a repository holds, as an export selects them: every tagged manifest and every
   * tagless one that no index in the repository references (an index's children travel with it).
   */
  listImages(repo: string): Promise<ImageRecord[]>;
  // ---- integrity checks, backup and crash recovery (fsck, backup) ----------------------------
  /** Blob rows in digest order after `after` (keyset paging keeps memory flat on large stores). */
  blobRowsAfter(after: string, limit: number): Promise<{ digest: string; size: number }[]>;
  /** Manifest rows (with their bytes) in key order after `after`, for re-hashing. */
  manifestRowsAfter(after: ManifestKey | undefined, limit: number): Promise<(ManifestKey & { repo: string; content: Buffer })[]>;
  /** Rows that point at nothing: references, links, tags (see IntegrityFinding). */
  danglingRows(limit: number): Promise<DanglingRow[]>;
  countReferences(): Promise<number>;
  /** Forgets a blob entirely (its row and every repository's link), e.g. when its file is lost. */
  forgetBlob(digest: string): Promise<void>;
  /** Corrects a blob row's size to what its verified file holds. */
  setBlobSize(digest: string, size: number): Promise<void>;
  /** Removes one dangling row found by danglingRows; true if removed. */
  removeDanglingRow(row: DanglingRow): Promise<boolean>;
  /** Every upload session. */
  allUploads(): Promise<UploadRecord[]>;
  /** A consistent copy of the whole database into `path` (SQLite's online backup API). */
  backupTo(path: string, onProgress?: (done: number, total: number) => void): Promise<void>;
  /** Every digest the metadata knows a blob for, for a backup's or a recovery's walk. */
  allBlobDigests(): Promise<Set<string>>;

  close(): Promise<void>;

  // ---- garbage collection and cache eviction ----
  /** Cached manifests stored before their references were recorded (the caller parses them). */
  manifestsWithoutRefs(): Promise<{ repo: string; digest: string; mediaType: string; content: Buffer }[]>;
  /** Records what a stored manifest references. */
  addManifestRefs(repo: string, digest: string, blobRefs: string[], manifestRefs: string[]): Promise<void>;
  /**
   * Marks and sweeps manifests in one transaction: keeps every tagged, cached or recent manifest,
   * every untagged one unless `untaggedBefore` says otherwise (referrers only with their subject),
   * and every child and referrer of a kept one; removes the rest (a dry run only remembers them,
   * so the blob phase decides as if they were gone). Returns what was (or would be) removed.
   */
  collectManifests(policy: GcPolicy): Promise<ManifestRef[]>;
  /**
   * Among the next `pageSize` blobs by digest after `after`, those that may have something to
   * remove: links no manifest of their repository references, or no link at all. `next` is where
   * the following page starts; absent after the last page.
   */
  blobSweepCandidates(policy: GcPolicy, after: string, pageSize: number): Promise<{ digests: string[]; next?: string }>;
  /** Re-checks each blob against the current state and removes (unless a dry run) what is still unneeded. */
  sweepBlobs(digests: string[], policy: GcPolicy): Promise<BlobSweep[]>;
  /**
   * After collectManifests: unlists the repositories left without a manifest (their last one
   * deleted through the API, or by this collection), so they leave the catalog and their tags/list
   * answers NAME_UNKNOWN again. A dry run changes nothing and names those it would unlist, counting
   * the manifests the collection would remove as gone. Returns their names, sorted.
   */
  forgetEmptiedRepositories(policy: GcPolicy): Promise<string[]>;
  /** Forgets what a dry run remembered. */
  endCollection(): Promise<void>;
  recordGcRun(run: GcRunRecord): Promise<void>;
  /** The last collection that removed (not a dry run). */
  lastGcRun(): Promise<GcRunRecord | undefined>;
  /** Blobs of the cached manifests (that nothing pushed needs) referencing `digest`, to lock before evicting. */
  cachedImageBlobs(digest: string): Promise<string[]>;
  /**
   * Evicts a cached-only, idle blob with the cached manifests that reference it (and their cached
   * tags, and cached indexes left with no child), and those manifests' other blobs among `companions`
   * that are cached-only, idle and referenced by nothing else. Undefined when the blob is no longer evictable.
   */
  evictCachedImage(digest: string, companions: string[], servedBefore: number): Promise<EvictedImage | undefined>;
  /** Bytes of cached-only blobs per repository holding a cached link (for per-upstream budgets). */
  cachedBytesByRepo(): Promise<{ repo: string; bytes: number }[]>;
  /** Cached-only blobs linked in repositories under `prefix` ("" = all), least recently served first. */
  evictionCandidatesUnder(prefix: string, limit: number): Promise<{ digest: string; size: number; repo: string }[]>;
}

/** Identifies a manifest row. */
export interface ManifestKey {
  repoId: number;
  digest: string;
}

/**
 * A row pointing at something that is not there:
 * - `blob-ref`: a manifest references a blob its repository does not link (or nobody has);
 * - `manifest-ref`: an index references a child manifest its repository does not hold;
 * - `orphan-ref`: a reference row of a manifest that no longer exists;
 * - `tag`: a tag naming a manifest its repository does not hold;
 * - `link`: a repository's blob link to a blob with no row.
 */
export interface DanglingRow {
  kind: 'blob-ref' | 'manifest-ref' | 'orphan-ref' | 'tag' | 'link';
  repoId: number;
  repo: string;
  /** The manifest (refs), tag name (tag) or blob digest (link) holding the row. */
  from: string;
  /** What it points at. */
  to: string;
}

/** A manifest of a repository with the tags pointing at it (air-gap export). */
export interface ImageRecord {
  digest: string;
  mediaType: string;
  tags: string[];
}

/** putManifest's tags as a list without repeats (a tag given twice is one tag). */
export function tagsOf(tags: string | readonly string[] | undefined): string[] {
  if (tags === undefined) return [];
  return typeof tags === 'string' ? [tags] : [...new Set(tags)];
}

/** A pushed manifest references blobs or manifests its repository does not hold (see putManifest). */
export class MissingReferencesError extends Error {
  constructor(
    readonly blobs: string[],
    readonly manifests: string[],
  ) {
    super(`manifest references ${blobs.length} missing blob(s) and ${manifests.length} missing manifest(s)`);
  }
}

type Row = Record<string, unknown>;

/**
 * The condition (the same SQL in SQLite and PostgreSQL) on a repository row `r` that the catalog,
 * tags/list and the dashboard's browsing list: from its first manifest on (an insert trigger sets
 * `listed`), and after its last one is deleted until a collection forgets it. The manifest probe
 * covers a manifest committed while a collection unlisted its repository (on PostgreSQL the two
 * interleave), which leaves `listed` at 0 on a repository holding one.
 */
export const LISTED_REPOSITORY = '(r.listed = 1 OR EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id))';

/** Repository names read per query by reposLinkingBlob. */
const REPOS_LINKING_PAGE = 100;

/** A manifests row (snake_case columns, as both SQLite and PostgreSQL return them) as a record. */
export function toManifest(row: Record<string, unknown> | undefined): ManifestRecord | undefined {
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
  /** Statements of garbage collection and eviction (they use this connection's temp tables). */
  private readonly g;

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
        // created_at is when the blob was last linked: a re-upload or mount starts its GC grace anew.
        `INSERT INTO repo_blobs (repo_id, digest, cached, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(repo_id, digest) DO UPDATE SET cached = MIN(cached, excluded.cached), created_at = excluded.created_at`,
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
      isListed: db
        .prepare(`SELECT 1 FROM repositories r WHERE r.id = ? AND ${LISTED_REPOSITORY}`)
        .pluck(),
      // Pushed over a cached copy, a manifest becomes pushed content; pushed again, its age for
      // GC's untagged policy starts anew.
      insertManifest: db.prepare(
        `INSERT INTO manifests (repo_id, digest, media_type, size, content, subject, artifact_type, annotations, cached, created_at, last_access)
         VALUES (@repoId, @digest, @mediaType, @size, @content, @subject, @artifactType, @annotations, @cached, @now, @now)
         ON CONFLICT(repo_id, digest) DO UPDATE SET cached = MIN(cached, excluded.cached),
           created_at = CASE WHEN excluded.cached = 0 THEN excluded.created_at ELSE created_at END`,
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
           WHERE r.name > ? AND ${LISTED_REPOSITORY}
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
      // Kept by triggers (see the storage_totals migration): one row read, whatever is stored.
      totals: db.prepare('SELECT repositories, manifests, blobs, bytes FROM storage_totals WHERE id = 1'),
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
      reposLinkingBlob: db
        .prepare(
          'SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id WHERE rb.digest = ? AND r.name > ? ORDER BY r.name LIMIT ?',
        )
        .pluck(),
      addCounter: db.prepare(
        'INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value',
      ),
      // ---- dashboard ----
      nextRepoIn: db
        .prepare(
          `SELECT r.name FROM repositories r
           WHERE r.name > ? AND r.name < ? AND ${LISTED_REPOSITORY}
           ORDER BY r.name LIMIT ?`,
        )
        .pluck(),
      repoListedByName: db
        .prepare(`SELECT 1 FROM repositories r WHERE r.name = ? AND ${LISTED_REPOSITORY}`)
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
    this.g = this.prepareCollection();
  }

  private prepareCollection() {
    const db = this.db;
    // Per connection: the manifests a collection keeps, and those it removes (remembered through a
    // dry run so the blob phase decides as if they were gone).
    db.exec(`CREATE TEMP TABLE IF NOT EXISTS gc_kept (repo_id INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo_id, digest)) WITHOUT ROWID;
             CREATE TEMP TABLE IF NOT EXISTS gc_doomed (repo_id INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo_id, digest)) WITHOUT ROWID;`);
    // A reference counts unless its manifest is doomed.
    const liveRef = (repoCondition: string, child: string) =>
      `EXISTS (SELECT 1 FROM manifest_refs r WHERE ${repoCondition} r.child = ${child}
               AND NOT EXISTS (SELECT 1 FROM temp.gc_doomed d WHERE d.repo_id = r.repo_id AND d.digest = r.parent))`;
    // Linked, served or asked about within the grace period: kept (a client that just found the
    // blob here may be about to push a manifest referencing it).
    const removableLink = `rb.created_at < @graceBefore AND b.last_access < @graceBefore
                           AND NOT ${liveRef('r.repo_id = rb.repo_id AND', 'rb.digest')}`;
    return {
      clearKept: db.prepare('DELETE FROM temp.gc_kept'),
      clearDoomed: db.prepare('DELETE FROM temp.gc_doomed'),
      // A repository emptied by deletes (or by this collection) stops being listed.
      unlistEmptied: db
        .prepare('UPDATE repositories SET listed = 0 WHERE listed = 1 AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = repositories.id) RETURNING name')
        .pluck(),
      // A repository that eviction left without a manifest: cache housekeeping, not a delete.
      unlistIfEmpty: db.prepare(
        'UPDATE repositories SET listed = 0 WHERE id = ? AND listed = 1 AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = repositories.id)',
      ),
      // What a dry run would unlist: no manifest left but doomed ones.
      emptiedByDoomed: db
        .prepare(
          `SELECT r.name FROM repositories r
           WHERE r.listed = 1 AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id
             AND NOT EXISTS (SELECT 1 FROM temp.gc_doomed d WHERE d.repo_id = m.repo_id AND d.digest = m.digest))`,
        )
        .pluck(),
      // Roots: tagged, cached (eviction's business), recent, and untagged ones the policy keeps
      // (a referrer only with its subject). Then everything a kept manifest needs, transitively.
      markKept: db.prepare(
        `INSERT INTO temp.gc_kept (repo_id, digest)
         WITH RECURSIVE kept(repo_id, digest) AS (
           SELECT m.repo_id, m.digest FROM manifests m
           WHERE m.cached = 1 OR m.created_at >= @graceBefore
              OR EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
              OR (m.subject IS NULL AND (@untaggedBefore IS NULL OR m.created_at >= @untaggedBefore))
           UNION
           SELECT r.repo_id, r.child FROM kept k JOIN manifest_refs r ON r.repo_id = k.repo_id AND r.parent = k.digest WHERE r.kind = 'manifest'
           UNION
           SELECT m.repo_id, m.digest FROM kept k JOIN manifests m ON m.repo_id = k.repo_id AND m.subject = k.digest
         )
         SELECT repo_id, digest FROM kept WHERE true
         ON CONFLICT DO NOTHING`,
      ),
      markDoomed: db.prepare(
        `INSERT INTO temp.gc_doomed (repo_id, digest)
         SELECT m.repo_id, m.digest FROM manifests m
         WHERE NOT EXISTS (SELECT 1 FROM temp.gc_kept k WHERE k.repo_id = m.repo_id AND k.digest = m.digest)`,
      ),
      doomed: db.prepare(
        `SELECT d.repo_id AS repoId, r.name AS repo, d.digest, m.size FROM temp.gc_doomed d
         JOIN repositories r ON r.id = d.repo_id JOIN manifests m ON m.repo_id = d.repo_id AND m.digest = d.digest
         ORDER BY r.name, d.digest`,
      ),
      // Candidates are found one page of blobs (by digest) at a time, so no single query holds
      // the event loop for long on a large store.
      pageEnd: db.prepare('SELECT digest FROM blobs WHERE digest > ? ORDER BY digest LIMIT 1 OFFSET ?').pluck(),
      candidates: db
        .prepare(
          `SELECT b.digest FROM blobs b
           WHERE b.digest > @after AND (@upto IS NULL OR b.digest <= @upto)
             AND (EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND ${removableLink})
                  OR (b.created_at < @graceBefore AND b.last_access < @graceBefore AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)))
           ORDER BY b.digest`,
        )
        .pluck(),
      removableLinks: db
        .prepare(`SELECT rb.repo_id FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.digest = @digest AND ${removableLink}`)
        .pluck(),
      linkCount: db.prepare('SELECT COUNT(*) FROM repo_blobs WHERE digest = ?').pluck(),
      blobRow: db.prepare('SELECT size, created_at AS createdAt, last_access AS lastAccess FROM blobs WHERE digest = ?'),
      referencedAnywhere: db.prepare(`SELECT ${liveRef('', '@digest')}`).pluck(),
      // Eviction ignores what a collection may be deciding: any stored reference counts.
      referencedByAny: db.prepare('SELECT 1 FROM manifest_refs WHERE child = ? LIMIT 1').pluck(),
      withoutRefs: db.prepare(
        `SELECT r.name AS repo, m.digest, m.media_type AS mediaType, m.content FROM manifests m JOIN repositories r ON r.id = m.repo_id
         WHERE m.cached = 1 AND NOT EXISTS (SELECT 1 FROM manifest_refs x WHERE x.repo_id = m.repo_id AND x.parent = m.digest)`,
      ),
      recordRun: db.prepare(
        `INSERT INTO gc_runs (started_at, duration_ms, dry_run, removed_manifests, removed_blobs, freed_bytes, forgotten_repositories)
         VALUES (@startedAt, @durationMs, @dryRun, @removedManifests, @removedBlobs, @freedBytes, @forgottenRepositories)`,
      ),
      lastRun: db.prepare(
        `SELECT started_at AS startedAt, duration_ms AS durationMs, dry_run AS dryRun, removed_manifests AS removedManifests,
                removed_blobs AS removedBlobs, freed_bytes AS freedBytes, forgotten_repositories AS forgottenRepositories
         FROM gc_runs WHERE dry_run = 0 ORDER BY id DESC LIMIT 1`,
      ),
      // Cached manifests referencing a blob that no pushed manifest of their repository needs.
      evictableManifests: db.prepare(
        `SELECT m.repo_id AS repoId, rp.name AS repo, m.digest FROM manifest_refs r
         JOIN manifests m ON m.repo_id = r.repo_id AND m.digest = r.parent
         JOIN repositories rp ON rp.id = m.repo_id
         WHERE r.child = ? AND r.kind = 'blob' AND m.cached = 1
           AND NOT EXISTS (SELECT 1 FROM manifest_refs p JOIN manifests pm ON pm.repo_id = p.repo_id AND pm.digest = p.parent
                           WHERE p.repo_id = m.repo_id AND p.child = m.digest AND pm.cached = 0)`,
      ),
      refsOf: db.prepare('SELECT child, kind FROM manifest_refs WHERE repo_id = ? AND parent = ?'),
      // Cached indexes pointing at a manifest, with how many of their children are still stored.
      cachedParents: db.prepare(
        `SELECT p.parent AS digest,
                (SELECT COUNT(*) FROM manifest_refs c JOIN manifests cm ON cm.repo_id = c.repo_id AND cm.digest = c.child
                 WHERE c.repo_id = p.repo_id AND c.parent = p.parent AND c.kind = 'manifest') AS children
         FROM manifest_refs p JOIN manifests pm ON pm.repo_id = p.repo_id AND pm.digest = p.parent
         WHERE p.repo_id = ? AND p.child = ? AND p.kind = 'manifest' AND pm.cached = 1
           AND NOT EXISTS (SELECT 1 FROM manifest_refs g JOIN manifests gm ON gm.repo_id = g.repo_id AND gm.digest = g.parent
                           WHERE g.repo_id = p.repo_id AND g.child = p.parent AND gm.cached = 0)`,
      ),
      cachedBytesByRepo: db.prepare(
        `SELECT r.name AS repo, SUM(b.size) AS bytes FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest JOIN repositories r ON r.id = rb.repo_id
         WHERE rb.cached = 1 AND NOT EXISTS (SELECT 1 FROM repo_blobs p WHERE p.digest = rb.digest AND p.cached = 0)
         GROUP BY r.name`,
      ),
      candidatesUnder: db.prepare(
        `SELECT b.digest, b.size, r.name AS repo FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest JOIN repositories r ON r.id = rb.repo_id
         WHERE rb.cached = 1 AND (@prefix = '' OR r.name = @prefix OR substr(r.name, 1, length(@prefix) + 1) = @prefix || '/')
           AND NOT EXISTS (SELECT 1 FROM repo_blobs p WHERE p.digest = rb.digest AND p.cached = 0)
         ORDER BY b.last_access LIMIT @limit`,
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

  async linkedBlobSize(repo: string, digest: string): Promise<number | undefined> {
    const id = this.findRepoId(repo);
    return id === undefined ? undefined : (this.q.linkedBlobSize.get(id, digest) as number | undefined);
  }

  async blobSize(digest: string): Promise<number | undefined> {
    return this.q.blobSize.get(digest) as number | undefined;
  }

  async linkBlob(repo: string, digest: string, size: number, cached = false): Promise<void> {
    const now = Date.now();
    this.db.transaction(() => {
      const id = this.ensureRepoId(repo);
      this.q.insertBlob.run(digest, size, now, now);
      this.q.linkBlob.run(id, digest, cached ? 1 : 0, now);
    })();
  }

  async unlinkBlob(repo: string, digest: string): Promise<boolean> {
    const id = this.findRepoId(repo);
    return id !== undefined && this.q.unlinkBlob.run(id, digest).changes > 0;
  }

  async missingBlobs(repo: string, digests: string[]): Promise<string[]> {
    const id = this.findRepoId(repo);
    if (id === undefined) return [...digests];
    return digests.filter((d) => this.q.linkedBlobSize.get(id, d) === undefined);
  }

  async missingManifests(repo: string, digests: string[]): Promise<string[]> {
    const id = this.findRepoId(repo);
    if (id === undefined) return [...digests];
    return digests.filter((d) => this.q.hasManifest.get(id, d) === undefined);
  }

  async getManifest(repo: string, digest: string): Promise<ManifestRecord | undefined> {
    const id = this.findRepoId(repo);
    return id === undefined ? undefined : toManifest(this.q.getManifest.get(id, digest) as Row | undefined);
  }

  async getTaggedManifest(repo: string, tag: string): Promise<ManifestRecord | undefined> {
    const id = this.findRepoId(repo);
    return id === undefined ? undefined : toManifest(this.q.getTaggedManifest.get(id, tag) as Row | undefined);
  }

  async putManifest(repo: string, m: NewManifest, tags?: string | readonly string[]): Promise<void> {
    const now = Date.now();
    const cached = m.cached ? 1 : 0;
    const tagList = tagsOf(tags);
    this.db.transaction(() => {
      const repoId = this.ensureRepoId(repo);
      if (!cached) {
        // Checked in the same transaction as the write: nothing (eviction, a blob DELETE) can
        // remove a referenced blob between the registry's check and the manifest landing.
        const missingBlobs = m.blobRefs.filter((d) => this.q.linkedBlobSize.get(repoId, d) === undefined);
        const missingManifests = m.manifestRefs.filter((d) => this.q.hasManifest.get(repoId, d) === undefined);
        if (missingBlobs.length || missingManifests.length) throw new MissingReferencesError(missingBlobs, missingManifests);
      }
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
      for (const tag of tagList) this.q.upsertTag.run(repoId, tag, m.digest, cached, now);
    })();
  }

  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const id = this.findRepoId(repo);
    if (id === undefined) return false;
    return this.db.transaction(() => {
      const existed = this.q.deleteManifest.run(id, digest).changes > 0;
      this.q.deleteRefs.run(id, digest);
      this.q.deleteTagsOf.run(id, digest);
      return existed;
    })();
  }

  async deleteTag(repo: string, tag: string): Promise<boolean> {
    const id = this.findRepoId(repo);
    return id !== undefined && this.q.deleteTag.run(id, tag).changes > 0;
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const id = this.findRepoId(repo);
    const row = id === undefined ? undefined : (this.q.getTag.get(id, tag) as Row | undefined);
    return row && { digest: row.digest as string, cached: row.cached === 1, updatedAt: row.updated_at as number };
  }

  async touchTag(repo: string, tag: string): Promise<void> {
    const id = this.findRepoId(repo);
    if (id !== undefined) this.q.touchTag.run(Date.now(), id, tag);
  }

  async repositoryExists(repo: string): Promise<boolean> {
    const id = this.findRepoId(repo);
    return id !== undefined && this.q.isListed.get(id) !== undefined;
  }

  async listTags(repo: string, limit: number, last = ''): Promise<Page<string>> {
    const id = this.findRepoId(repo);
    if (id === undefined) return { items: [], more: false };
    const rows = this.q.listTags.all(id, last, limit + 1) as string[];
    return { items: rows.slice(0, limit), more: rows.length > limit };
  }

  async listRepositories(limit: number, last = ''): Promise<Page<string>> {
    const rows = this.q.listRepos.all(last, limit + 1) as string[];
    return { items: rows.slice(0, limit), more: rows.length > limit };
  }

  async referrers(repo: string, subject: string, artifactType?: string): Promise<ManifestRecord[]> {
    const id = this.findRepoId(repo);
    if (id === undefined) return [];
    const all = (this.q.referrers.all(id, subject) as Row[]).map((r) => toManifest(r)!);
    return artifactType === undefined ? all : all.filter((m) => m.artifactType === artifactType);
  }

  async createUpload(id: string, repo: string, owner = ''): Promise<void> {
    const now = Date.now();
    this.db.transaction(() => {
      this.q.createUpload.run(id, this.ensureRepoId(repo), owner, now, now);
    })();
  }

  async countUploads(owner: string): Promise<number> {
    return this.q.countUploads.get(owner) as number;
  }

  async getUpload(id: string): Promise<UploadRecord | undefined> {
    const row = this.q.getUpload.get(id) as Row | undefined;
    return row && { id: row.id as string, repo: row.repo as string, createdAt: row.created_at as number, updatedAt: row.updated_at as number };
  }

  async touchUpload(id: string): Promise<void> {
    this.q.touchUpload.run(Date.now(), id);
  }

  async deleteUpload(id: string): Promise<void> {
    this.q.deleteUpload.run(id);
  }

  async uploadsUpdatedBefore(time: number): Promise<UploadRecord[]> {
    return (this.q.uploadsBefore.all(time) as Row[]).map((row) => ({
      id: row.id as string,
      repo: row.repo as string,
      createdAt: row.created_at as number,
      updatedAt: row.updated_at as number,
    }));
  }

  async totals(): Promise<StorageTotals> {
    return this.q.totals.get() as StorageTotals;
  }

  async ping(): Promise<void> {
    this.q.ping.get();
  }

  async readCounters(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const row of this.q.readCounters.all() as { name: string; value: number }[]) out[row.name] = row.value;
    return out;
  }

  async addCounters(deltas: Record<string, number>): Promise<void> {
    this.db.transaction(() => {
      for (const [name, value] of Object.entries(deltas)) if (value) this.q.addCounter.run(name, value);
    })();
  }

  async touchBlobs(digests: Iterable<string>, time: number): Promise<void> {
    this.db.transaction(() => {
      for (const digest of digests) this.q.touchBlob.run(time, digest, time);
    })();
  }

  async cachedOnlyBytes(): Promise<number> {
    return this.q.cachedOnlyBytes.get() as number;
  }

  async evictionCandidates(limit: number): Promise<{ digest: string; size: number }[]> {
    return this.q.evictionCandidates.all(limit) as { digest: string; size: number }[];
  }

  async forgetCachedBlob(digest: string, servedBefore: number): Promise<boolean> {
    return this.db.transaction(() => {
      if (this.q.isCachedOnlyAndIdle.get(digest, servedBefore) === undefined) return false;
      this.q.deleteBlobLinks.run(digest);
      this.q.deleteBlob.run(digest);
      return true;
    })();
  }

  async readUpstreamErrors(): Promise<Map<string, string>> {
    const rows = this.q.readUpstreamErrors.all() as { prefix: string; last_error: string }[];
    return new Map(rows.map((r) => [r.prefix, r.last_error]));
  }

  async saveUpstreamErrors(errors: Map<string, string>): Promise<void> {
    this.db.transaction(() => {
      for (const [prefix, text] of errors) this.q.saveUpstreamError.run(prefix, text);
    })();
  }

  async setOrigin(repo: string, origin: string): Promise<void> {
    this.q.setOrigin.run(repo, origin, Date.now());
  }

  async listOrigins(): Promise<{ repo: string; origin: string }[]> {
    return this.q.listOrigins.all() as { repo: string; origin: string }[];
  }

  // ---- mounts without from= ----

  async *reposLinkingBlob(digest: string): AsyncIterable<string> {
    // Pages, not one open cursor: the caller awaits between names, and other requests must be able
    // to use the connection meanwhile (better-sqlite3 refuses while an iterator is open).
    let last = '';
    for (;;) {
      const names = this.q.reposLinkingBlob.all(digest, last, REPOS_LINKING_PAGE) as string[];
      yield* names;
      if (names.length < REPOS_LINKING_PAGE) return;
      last = names[names.length - 1]!;
    }
  }

  // ---- dashboard -----------------------------------------------------------------------------

  async browseRepositories(prefix: string, limit: number, last?: string, delimiter = false): Promise<Page<RepositoryNode>> {
    // Valid names use only characters below 0x7f, so [prefix, prefix + 0x7f) holds every name under it.
    const end = `${prefix}\u007f`;
    if (!delimiter) {
      const from = last !== undefined && last > prefix ? last : prefix;
      const names = this.q.nextRepoIn.all(from, end, limit + 1) as string[];
      // A repository named exactly `prefix` sorts first but is not > prefix: add it on the first page.
      if (last === undefined && prefix !== '' && this.q.repoListedByName.get(prefix) !== undefined) names.unshift(prefix);
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
      cursor = this.q.repoListedByName.get(skipComponent) !== undefined ? skipComponent : subtreeEnd(skipComponent);
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
        if (this.q.repoListedByName.get(node) === undefined) items.push({ name: node, repository: false, children: true });
        cursor = subtreeEnd(node);
      }
    }
    return { items: items.slice(0, limit), more: items.length > limit };
  }

  async repositoryCounts(names: string[]): Promise<RepositoryCounts[]> {
    return names.flatMap((name) => {
      const row = this.q.repoCounts.get(name) as RepositoryCounts | undefined;
      return row ? [row] : [];
    });
  }

  async repositoryManifests(repo: string, limit: number): Promise<ManifestListing[]> {
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

  async addHistoryPoint(point: HistoryPoint): Promise<void> {
    this.q.addHistory.run(point);
  }

  async history(since: number): Promise<HistoryPoint[]> {
    return this.q.history.all(since) as HistoryPoint[];
  }

  async pruneHistory(before: number): Promise<void> {
    this.q.pruneHistory.run(before);
  }

  async addAuditEvents(events: AuditEvent[], keep: number): Promise<void> {
    this.db.transaction(() => {
      for (const event of events) this.q.addAudit.run(event);
      this.q.pruneAudit.run(keep);
    })();
  }

  async recentAuditEvents(limit: number): Promise<AuditEvent[]> {
    return this.q.recentAudit.all(limit) as AuditEvent[];
  }

  async manifestsAfter(cursor: ManifestCursor | undefined, limit: number): Promise<UnclassifiedManifest[]> {
    const [at, repoId, digest] = cursor ?? [-1, -1, ''];
    return this.q.manifestsAfter.all(at, repoId, digest, limit) as UnclassifiedManifest[];
  }

  async saveImageKinds(kinds: { repoId: number; digest: string; kind: string; version: string | null }[]): Promise<void> {
    this.db.transaction(() => {
      for (const k of kinds) this.q.saveImageKind.run(k.repoId, k.digest, k.kind, k.version);
    })();
  }

  async imageKind(repoId: number, digest: string): Promise<{ kind: string; version: string | null } | undefined> {
    return this.q.imageKind.get(repoId, digest) as { kind: string; version: string | null } | undefined;
  }

  async classifiedImages(limit: number): Promise<ClassifiedImage[]> {
    return (this.q.classifiedImages.all(limit) as (Omit<ClassifiedImage, 'tags' | 'cached'> & { tags: string | null; cached: number })[]).map(
      (row) => ({ ...row, cached: row.cached === 1, tags: row.tags ? row.tags.split(' ') : [] }),
    );
  }

  async blobTotals(): Promise<{ blobs: number; bytes: number }> {
    return this.q.blobTotals.get() as { blobs: number; bytes: number };
  }

  async repositoryImageKinds(repo: string): Promise<{ repoId: number; kinds: Map<string, { kind: string; version: string | null }> } | undefined> {
    const repoId = this.findRepoId(repo);
    if (repoId === undefined) return undefined;
    const rows = this.q.repoImageKinds.all(repoId) as { digest: string; kind: string; version: string | null }[];
    return { repoId, kinds: new Map(rows.map((r) => [r.digest, { kind: r.kind, version: r.version }])) };
  }

  // ---- air-gap import/export ----
  private listImagesQuery?: Database.Statement;

  async listImages(repo: string): Promise<ImageRecord[]> {
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

  // ---- integrity checks, backup and crash recovery (fsck, backup) ----------------------------

  private lifecycleQueries?: ReturnType<SqliteMetadataStore['prepareLifecycle']>;

  /** Prepared on first use: a serving registry that never runs fsck does not pay for them. */
  private get lq() {
    this.lifecycleQueries ??= this.prepareLifecycle();
    return this.lifecycleQueries;
  }

  private prepareLifecycle() {
    const db = this.db;
    return {
      blobRowsAfter: db.prepare('SELECT digest, size FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?'),
      manifestRowsAfter: db.prepare(
        `SELECT m.repo_id AS repoId, m.digest, r.name AS repo, m.content FROM manifests m JOIN repositories r ON r.id = m.repo_id
         WHERE (m.repo_id, m.digest) > (?, ?) ORDER BY m.repo_id, m.digest LIMIT ?`,
      ),
      dangling: db.prepare(
        `SELECT 'blob-ref' AS kind, mr.repo_id AS repoId, r.name AS repo, mr.parent AS "from", mr.child AS "to"
           FROM manifest_refs mr JOIN repositories r ON r.id = mr.repo_id
           WHERE mr.kind = 'blob'
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = mr.repo_id AND m.digest = mr.parent)
             AND NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = mr.repo_id AND rb.digest = mr.child)
         UNION ALL
         SELECT 'manifest-ref', mr.repo_id, r.name, mr.parent, mr.child
           FROM manifest_refs mr JOIN repositories r ON r.id = mr.repo_id
           WHERE mr.kind = 'manifest'
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = mr.repo_id AND m.digest = mr.parent)
             AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = mr.repo_id AND m.digest = mr.child)
         UNION ALL
         SELECT 'orphan-ref', mr.repo_id, r.name, mr.parent, mr.child
           FROM manifest_refs mr JOIN repositories r ON r.id = mr.repo_id
           WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = mr.repo_id AND m.digest = mr.parent)
         UNION ALL
         SELECT 'tag', t.repo_id, r.name, t.name, t.digest
           FROM tags t JOIN repositories r ON r.id = t.repo_id
           WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = t.repo_id AND m.digest = t.digest)
         UNION ALL
         SELECT 'link', rb.repo_id, r.name, rb.digest, rb.digest
           FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
           WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = rb.digest)
         LIMIT ?`,
      ),
      countReferences: db.prepare('SELECT COUNT(*) FROM manifest_refs').pluck(),
      setBlobSize: db.prepare('UPDATE blobs SET size = ? WHERE digest = ?'),
      deleteRef: db.prepare('DELETE FROM manifest_refs WHERE repo_id = ? AND parent = ? AND child = ?'),
      deleteTagPointing: db.prepare('DELETE FROM tags WHERE repo_id = ? AND name = ? AND digest = ?'),
      deleteLink: db.prepare('DELETE FROM repo_blobs WHERE repo_id = ? AND digest = ? AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = ?)'),
      allUploads: db.prepare('SELECT u.id, r.name AS repo, u.created_at, u.updated_at FROM uploads u JOIN repositories r ON r.id = u.repo_id ORDER BY u.id'),
      allBlobDigests: db.prepare('SELECT digest FROM blobs').pluck(),
    };
  }

  async blobRowsAfter(after: string, limit: number): Promise<{ digest: string; size: number }[]> {
    return this.lq.blobRowsAfter.all(after, limit) as { digest: string; size: number }[];
  }

  async manifestRowsAfter(after: ManifestKey | undefined, limit: number): Promise<(ManifestKey & { repo: string; content: Buffer })[]> {
    return this.lq.manifestRowsAfter.all(after?.repoId ?? -1, after?.digest ?? '', limit) as (ManifestKey & { repo: string; content: Buffer })[];
  }

  async danglingRows(limit: number): Promise<DanglingRow[]> {
    return this.lq.dangling.all(limit) as DanglingRow[];
  }

  async countReferences(): Promise<number> {
    return this.lq.countReferences.get() as number;
  }

  async forgetBlob(digest: string): Promise<void> {
    this.db.transaction(() => {
      this.q.deleteBlobLinks.run(digest);
      this.q.deleteBlob.run(digest);
    })();
  }

  async setBlobSize(digest: string, size: number): Promise<void> {
    this.lq.setBlobSize.run(size, digest);
  }

  async removeDanglingRow(row: DanglingRow): Promise<boolean> {
    switch (row.kind) {
      case 'orphan-ref':
        return this.lq.deleteRef.run(row.repoId, row.from, row.to).changes > 0;
      case 'tag':
        return this.lq.deleteTagPointing.run(row.repoId, row.from, row.to).changes > 0;
      case 'link':
        return this.lq.deleteLink.run(row.repoId, row.to, row.to).changes > 0;
      default:
        // A manifest's reference to content that is gone cannot be fixed by removing a row: the
        // manifest would claim less than it holds. Re-pushing the content (or deleting the manifest) is.
        return false;
    }
  }

  async allUploads(): Promise<UploadRecord[]> {
    return (this.lq.allUploads.all() as Row[]).map((row) => ({
      id: row.id as string,
      repo: row.repo as string,
      createdAt: row.created_at as number,
      updatedAt: row.updated_at as number,
    }));
  }

  async backupTo(path: string, onProgress?: (done: number, total: number) => void): Promise<void> {
    await this.db.backup(path, {
      progress: ({ totalPages, remainingPages }) => {
        onProgress?.(totalPages - remainingPages, totalPages);
        // Pages per step: large steps finish sooner, small ones let requests in between.
        return 1000;
      },
    });
  }

  async allBlobDigests(): Promise<Set<string>> {
    return new Set(this.lq.allBlobDigests.all() as string[]);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  // ---- garbage collection and cache eviction ----

  async manifestsWithoutRefs(): Promise<{ repo: string; digest: string; mediaType: string; content: Buffer }[]> {
    return this.g.withoutRefs.all() as { repo: string; digest: string; mediaType: string; content: Buffer }[];
  }

  async addManifestRefs(repo: string, digest: string, blobRefs: string[], manifestRefs: string[]): Promise<void> {
    const id = this.findRepoId(repo);
    if (id === undefined) return;
    this.db.transaction(() => {
      for (const child of blobRefs) this.q.insertRef.run(id, digest, child, 'blob');
      for (const child of manifestRefs) this.q.insertRef.run(id, digest, child, 'manifest');
    })();
  }

  async collectManifests(policy: GcPolicy): Promise<ManifestRef[]> {
    return this.db.transaction(() => {
      this.g.clearKept.run();
      this.g.clearDoomed.run();
      this.g.markKept.run({ graceBefore: policy.graceBefore, untaggedBefore: policy.untaggedBefore ?? null });
      this.g.markDoomed.run();
      this.g.clearKept.run();
      const doomed = this.g.doomed.all() as (ManifestRef & { repoId: number })[];
      if (!policy.dryRun) {
        for (const m of doomed) {
          this.q.deleteManifest.run(m.repoId, m.digest);
          this.q.deleteRefs.run(m.repoId, m.digest);
          this.q.deleteTagsOf.run(m.repoId, m.digest);
        }
        // Gone for real: a manifest pushed again from now on must count in full.
        this.g.clearDoomed.run();
      }
      return doomed.map(({ repo, digest, size }) => ({ repo, digest, size }));
    })();
  }

  async blobSweepCandidates(policy: GcPolicy, after: string, pageSize: number): Promise<{ digests: string[]; next?: string }> {
    const upto = this.g.pageEnd.get(after, pageSize - 1) as string | undefined;
    const digests = this.g.candidates.all({ graceBefore: policy.graceBefore, after, upto: upto ?? null }) as string[];
    return { digests, next: upto };
  }

  async sweepBlobs(digests: string[], policy: GcPolicy): Promise<BlobSweep[]> {
    return this.db.transaction(() => {
      const out: BlobSweep[] = [];
      for (const digest of digests) {
        const blob = this.g.blobRow.get(digest) as { size: number; createdAt: number; lastAccess: number } | undefined;
        if (!blob) continue;
        const links = this.g.removableLinks.all({ digest, graceBefore: policy.graceBefore }) as number[];
        if (!policy.dryRun) for (const repoId of links) this.q.unlinkBlob.run(repoId, digest);
        const left = (this.g.linkCount.get(digest) as number) - (policy.dryRun ? links.length : 0);
        const removed =
          left === 0 && blob.createdAt < policy.graceBefore && blob.lastAccess < policy.graceBefore && this.g.referencedAnywhere.get({ digest }) === 0;
        if (removed && !policy.dryRun) this.q.deleteBlob.run(digest);
        if (removed || links.length > 0) out.push({ digest, size: blob.size, links: links.length, removed });
      }
      return out;
    })();
  }

  async forgetEmptiedRepositories(policy: GcPolicy): Promise<string[]> {
    const names = (policy.dryRun ? this.g.emptiedByDoomed.all() : this.g.unlistEmptied.all()) as string[];
    return names.sort();
  }

  async endCollection(): Promise<void> {
    this.g.clearDoomed.run();
    this.g.clearKept.run();
  }

  async recordGcRun(run: GcRunRecord): Promise<void> {
    this.g.recordRun.run({ ...run, dryRun: run.dryRun ? 1 : 0 });
  }

  async lastGcRun(): Promise<GcRunRecord | undefined> {
    const row = this.g.lastRun.get() as (Omit<GcRunRecord, 'dryRun'> & { dryRun: number }) | undefined;
    return row && { ...row, dryRun: row.dryRun === 1 };
  }

  async cachedImageBlobs(digest: string): Promise<string[]> {
    const found = new Set<string>();
    for (const m of this.g.evictableManifests.all(digest) as { repoId: number; digest: string }[]) {
      for (const ref of this.g.refsOf.all(m.repoId, m.digest) as { child: string; kind: string }[]) {
        if (ref.kind === 'blob' && ref.child !== digest) found.add(ref.child);
      }
    }
    return [...found];
  }

  async evictCachedImage(digest: string, companions: string[], servedBefore: number): Promise<EvictedImage | undefined> {
    return this.db.transaction(() => {
      if (this.q.isCachedOnlyAndIdle.get(digest, servedBefore) === undefined) return undefined;
      const result: EvictedImage = { manifests: [], blobs: [] };
      const allowed = new Set(companions);
      const others = new Set<string>();
      const emptied = new Set<number>();
      const drop = (repoId: number, repo: string, manifest: string) => {
        this.q.deleteManifest.run(repoId, manifest);
        this.q.deleteRefs.run(repoId, manifest);
        this.q.deleteTagsOf.run(repoId, manifest);
        result.manifests.push({ repo, digest: manifest });
        emptied.add(repoId);
      };
      for (const m of this.g.evictableManifests.all(digest) as { repoId: number; repo: string; digest: string }[]) {
        for (const ref of this.g.refsOf.all(m.repoId, m.digest) as { child: string; kind: string }[]) {
          if (ref.kind === 'blob' && allowed.has(ref.child)) others.add(ref.child);
        }
        const parents = this.g.cachedParents.all(m.repoId, m.digest) as { digest: string; children: number }[];
        drop(m.repoId, m.repo, m.digest);
        // An index whose last stored child just left goes with it (with its cached tags).
        for (const p of parents) if (p.children <= 1) drop(m.repoId, m.repo, p.digest);
      }
      // A repository that held only the evicted images leaves the catalog, as it came: with them.
      for (const repoId of emptied) this.g.unlistIfEmpty.run(repoId);
      const size = this.q.blobSize.get(digest) as number;
      this.q.deleteBlobLinks.run(digest);
      this.q.deleteBlob.run(digest);
      result.blobs.push({ digest, size });
      for (const other of others) {
        if (this.q.isCachedOnlyAndIdle.get(other, servedBefore) === undefined) continue;
        if (this.g.referencedByAny.get(other) !== undefined) continue;
        const otherSize = this.q.blobSize.get(other) as number;
        this.q.deleteBlobLinks.run(other);
        this.q.deleteBlob.run(other);
        result.blobs.push({ digest: other, size: otherSize });
      }
      return result;
    })();
  }

  async cachedBytesByRepo(): Promise<{ repo: string; bytes: number }[]> {
    return this.g.cachedBytesByRepo.all() as { repo: string; bytes: number }[];
  }

  async evictionCandidatesUnder(prefix: string, limit: number): Promise<{ digest: string; size: number; repo: string }[]> {
    return this.g.candidatesUnder.all({ prefix, limit }) as { digest: string; size: number; repo: string }[];
  }
}
