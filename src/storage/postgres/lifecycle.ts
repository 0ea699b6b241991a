// The lifecycle blocks of the MetadataStore on PostgreSQL: integrity checks and crash recovery
// (fsck), and garbage collection and cache eviction. Same semantics as SqliteMetadataStore's
// `---- integrity checks … ----` and `---- garbage collection and cache eviction ----` blocks.
//
// SQLite has one writer at a time, so a check and the change it justifies could be two statements.
// Here other replicas keep writing while one of them collects or evicts, so every removal either
// re-checks its reason in the same statement (a conditional DELETE) or first locks the rows a
// writer would have to change to invalidate it (FOR UPDATE), then checks with a fresh snapshot.
//
// How the store delegates: every method of those two blocks is the function of the same name here,
// called with the pool first and the method's own arguments after it; collectManifests,
// blobSweepCandidates, sweepBlobs and endCollection also take the store's GcMemory (made once with
// createGcMemory()) right after the pool. backupTo is not here (pg_dump's job).
//
// A dry run's memory (the manifests a collection would remove, so the blob phase decides as if they
// were gone) lives in a GcMemory object that the store keeps, one per store: a temp table would
// belong to one pooled connection, and the phases of a collection run on whichever is free.

import type { BlobSweep, DanglingRow, EvictedImage, GcPolicy, GcRunRecord, ManifestKey, ManifestRef, UploadRecord } from '../metadata.js';
import { findRepoId, transaction } from './dashboard.js';
import type { Queryable } from './pool.js';

// ---- integrity checks, backup and crash recovery (fsck, backup) ----------------------------

export async function blobRowsAfter(db: Queryable, after: string, limit: number): Promise<{ digest: string; size: number }[]> {
  const { rows } = await db.query<{ digest: string; size: number }>({
    name: 'life_blob_rows_after',
    text: 'SELECT digest, size FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2',
    values: [after, limit],
  });
  return rows.map((r) => ({ digest: r.digest, size: Number(r.size) }));
}

export async function manifestRowsAfter(
  db: Queryable,
  after: ManifestKey | undefined,
  limit: number,
): Promise<(ManifestKey & { repo: string; content: Buffer })[]> {
  const { rows } = await db.query({
    name: 'life_manifest_rows_after',
    text: `SELECT m.repo_id, m.digest, r.name AS repo, m.content FROM manifests m JOIN repositories r ON r.id = m.repo_id
           WHERE (m.repo_id, m.digest) > ($1, $2) ORDER BY m.repo_id, m.digest LIMIT $3`,
    values: [after?.repoId ?? -1, after?.digest ?? '', limit],
  });
  return rows.map((r) => ({ repoId: Number(r.repo_id), digest: r.digest as string, repo: r.repo as string, content: r.content as Buffer }));
}

export async function danglingRows(db: Queryable, limit: number): Promise<DanglingRow[]> {
  const { rows } = await db.query({
    name: 'life_dangling_rows',
    text: `SELECT 'blob-ref' AS kind, mr.repo_id, r.name AS repo, mr.parent AS "from", mr.child AS "to"
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
           LIMIT $1`,
    values: [limit],
  });
  return rows.map((r) => ({
    kind: r.kind as DanglingRow['kind'],
    repoId: Number(r.repo_id),
    repo: r.repo as string,
    from: r.from as string,
    to: r.to as string,
  }));
}

export async function countReferences(db: Queryable): Promise<number> {
  const { rows } = await db.query({ name: 'life_count_refs', text: 'SELECT COUNT(*) AS n FROM manifest_refs' });
  return Number(rows[0]!.n);
}

/** Forgets a blob entirely (its row and every repository's link), e.g. when its file is lost. */
export async function forgetBlob(db: Queryable, digest: string): Promise<void> {
  await transaction(db, async (tx) => {
    // The row locked first: a replica linking the blob meanwhile waits on the foreign key, then
    // finds it gone, instead of this DELETE failing on its new link.
    await tx.query({ name: 'life_lock_blob', text: 'SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE', values: [digest] });
    await tx.query({
      name: 'life_forget_blob',
      text: `WITH links AS (DELETE FROM repo_blobs WHERE digest = $1)
             DELETE FROM blobs WHERE digest = $1`,
      values: [digest],
    });
  });
}

export async function setBlobSize(db: Queryable, digest: string, size: number): Promise<void> {
  await db.query({ name: 'life_set_blob_size', text: 'UPDATE blobs SET size = $1 WHERE digest = $2', values: [size, digest] });
}

/** Removes one dangling row found by danglingRows if it still dangles; true if removed. */
export async function removeDanglingRow(db: Queryable, row: DanglingRow): Promise<boolean> {
  switch (row.kind) {
    case 'orphan-ref': {
      // Re-checked in the statement: the manifest may have been pushed again since the scan.
      const r = await db.query({
        name: 'life_remove_orphan_ref',
        text: `DELETE FROM manifest_refs mr WHERE mr.repo_id = $1 AND mr.parent = $2 AND mr.child = $3
               AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = mr.repo_id AND m.digest = mr.parent)`,
        values: [row.repoId, row.from, row.to],
      });
      return (r.rowCount ?? 0) > 0;
    }
    case 'tag': {
      const r = await db.query({
        name: 'life_remove_dangling_tag',
        text: `DELETE FROM tags t WHERE t.repo_id = $1 AND t.name = $2 AND t.digest = $3
               AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = t.repo_id AND m.digest = t.digest)`,
        values: [row.repoId, row.from, row.to],
      });
      return (r.rowCount ?? 0) > 0;
    }
    case 'link': {
      const r = await db.query({
        name: 'life_remove_dangling_link',
        text: 'DELETE FROM repo_blobs WHERE repo_id = $1 AND digest = $2 AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = $2)',
        values: [row.repoId, row.to],
      });
      return (r.rowCount ?? 0) > 0;
    }
    default:
      // A manifest's reference to content that is gone cannot be fixed by removing a row: the
      // manifest would claim less than it holds. Re-pushing the content (or deleting the manifest) is.
      return false;
  }
}

export async function allUploads(db: Queryable): Promise<UploadRecord[]> {
  const { rows } = await db.query({
    name: 'life_all_uploads',
    text: 'SELECT u.id, r.name AS repo, u.created_at, u.updated_at FROM uploads u JOIN repositories r ON r.id = u.repo_id ORDER BY u.id',
  });
  return rows.map((r) => ({ id: r.id as string, repo: r.repo as string, createdAt: Number(r.created_at), updatedAt: Number(r.updated_at) }));
}

export async function allBlobDigests(db: Queryable): Promise<Set<string>> {
  const { rows } = await db.query<{ digest: string }>({ name: 'life_all_blob_digests', text: 'SELECT digest FROM blobs' });
  return new Set(rows.map((r) => r.digest));
}

// ---- garbage collection and cache eviction ----

/** What a collection remembers between its phases: the manifests a dry run would have removed. */
export interface GcMemory {
  doomed: { repoId: number; digest: string }[];
}

export function createGcMemory(): GcMemory {
  return { doomed: [] };
}

/** The doomed manifests as two parallel arrays, for `unnest($n::bigint[], $m::text[])`. */
function doomedArrays(memory: GcMemory): [number[], string[]] {
  return [memory.doomed.map((d) => d.repoId), memory.doomed.map((d) => d.digest)];
}

/**
 * A reference counts unless its manifest is doomed; `d1`/`d2` are the placeholders of the doomed
 * (repo_id, digest) arrays (empty outside a dry run: a real collection has deleted them already).
 * NOT IN over an uncorrelated subquery: PostgreSQL hashes the doomed set once per statement (a
 * correlated NOT EXISTS scanned the whole array for every reference: quadratic in a dry run).
 */
const liveRef = (repoCondition: string, child: string, d1: string, d2: string) =>
  `EXISTS (SELECT 1 FROM manifest_refs r WHERE ${repoCondition} r.child = ${child}
           AND (r.repo_id, r.parent) NOT IN (SELECT d.repo_id, d.digest FROM unnest(${d1}::bigint[], ${d2}::text[]) AS d(repo_id, digest)))`;

/**
 * Linked, served or asked about within the grace period: kept (a client that just found the blob
 * here may be about to push a manifest referencing it). `g` is graceBefore's placeholder.
 */
const removableLink = (g: string, d1: string, d2: string) =>
  `rb.created_at < ${g} AND b.last_access < ${g} AND NOT ${liveRef('r.repo_id = rb.repo_id AND', 'rb.digest', d1, d2)}`;

export async function manifestsWithoutRefs(db: Queryable): Promise<{ repo: string; digest: string; mediaType: string; content: Buffer }[]> {
  const { rows } = await db.query({
    name: 'life_without_refs',
    text: `SELECT r.name AS repo, m.digest, m.media_type, m.content FROM manifests m JOIN repositories r ON r.id = m.repo_id
           WHERE m.cached = 1 AND NOT EXISTS (SELECT 1 FROM manifest_refs x WHERE x.repo_id = m.repo_id AND x.parent = m.digest)`,
  });
  return rows.map((r) => ({ repo: r.repo as string, digest: r.digest as string, mediaType: r.media_type as string, content: r.content as Buffer }));
}

export async function addManifestRefs(db: Queryable, repo: string, digest: string, blobRefs: string[], manifestRefs: string[]): Promise<void> {
  const id = await findRepoId(db, repo);
  if (id === undefined) return;
  const children = [...blobRefs, ...manifestRefs];
  if (children.length === 0) return;
  const kinds = [...blobRefs.map(() => 'blob'), ...manifestRefs.map(() => 'manifest')];
  // One statement: all the references or none.
  await db.query({
    name: 'life_add_manifest_refs',
    text: `INSERT INTO manifest_refs (repo_id, parent, child, kind)
           SELECT $1, $2, c.child, c.kind FROM unnest($3::text[], $4::text[]) AS c(child, kind)
           ON CONFLICT DO NOTHING`,
    values: [id, digest, children, kinds],
  });
}

/**
 * Marks and sweeps manifests in one transaction: keeps every tagged, cached or recent manifest,
 * every untagged one unless `untaggedBefore` says otherwise (referrers only with their subject),
 * and every child and referrer of a kept one; removes the rest (a dry run only remembers them in
 * `memory`, so the blob phase decides as if they were gone). Returns what was (or would be) removed.
 *
 * Other replicas write meanwhile, so the DELETE re-checks each doomed manifest in the statement
 * itself: a manifest pushed again (its created_at moves), pulled into the cache, tagged, or made the
 * child of a manifest that is kept since the mark stays. Only those really removed are returned.
 */
export async function collectManifests(db: Queryable, memory: GcMemory, policy: GcPolicy): Promise<ManifestRef[]> {
  return transaction(db, async (tx) => {
    memory.doomed = [];
    const { rows } = await tx.query({
      name: 'life_mark_doomed',
      text: `WITH RECURSIVE kept(repo_id, digest) AS (
               SELECT m.repo_id, m.digest FROM manifests m
               WHERE m.cached = 1 OR m.created_at >= $1
                  OR EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
                  OR (m.subject IS NULL AND ($2::bigint IS NULL OR m.created_at >= $2::bigint))
               UNION
               -- PostgreSQL takes one recursive term: children and referrers of a kept manifest together.
               SELECT x.repo_id, x.digest FROM kept k CROSS JOIN LATERAL (
                 SELECT r.repo_id, r.child AS digest FROM manifest_refs r WHERE r.repo_id = k.repo_id AND r.parent = k.digest AND r.kind = 'manifest'
                 UNION ALL
                 SELECT m.repo_id, m.digest FROM manifests m WHERE m.repo_id = k.repo_id AND m.subject = k.digest
               ) x
             )
             SELECT m.repo_id, r.name AS repo, m.digest, m.size FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE NOT EXISTS (SELECT 1 FROM kept k WHERE k.repo_id = m.repo_id AND k.digest = m.digest)
             ORDER BY r.name COLLATE "C", m.digest COLLATE "C"`,
      values: [policy.graceBefore, policy.untaggedBefore ?? null],
    });
    const doomed = rows.map((r) => ({ repoId: Number(r.repo_id), repo: r.repo as string, digest: r.digest as string, size: Number(r.size) }));
    if (policy.dryRun) {
      memory.doomed = doomed.map(({ repoId, digest }) => ({ repoId, digest }));
      return doomed.map(({ repo, digest, size }) => ({ repo, digest, size }));
    }
    if (doomed.length === 0) return [];
    // The doomed set goes into a table of this transaction, analysed, so the planner knows its
    // size: given as an array it guesses a handful of rows and checks each against every tag
    // (quadratic: 14 s for 10,000 manifests). Unnamed statements: the table is new each time.
    await tx.query('CREATE TEMP TABLE gc_doomed (repo_id BIGINT NOT NULL, digest TEXT COLLATE "C" NOT NULL, PRIMARY KEY (repo_id, digest)) ON COMMIT DROP');
    await tx.query('INSERT INTO gc_doomed SELECT * FROM unnest($1::bigint[], $2::text[])', [doomed.map((d) => d.repoId), doomed.map((d) => d.digest)]);
    await tx.query('ANALYZE gc_doomed');
    // A fresh snapshot (READ COMMITTED: one per statement) sees what other replicas committed since
    // the mark; a row another writer holds is re-checked against its new version once it commits.
    const gone = await tx.query(
      `WITH gone AS (
         DELETE FROM manifests m USING gc_doomed d
         WHERE m.repo_id = d.repo_id AND m.digest = d.digest
           AND m.cached = 0 AND m.created_at < $1
           AND (m.subject IS NOT NULL OR ($2::bigint IS NOT NULL AND m.created_at < $2::bigint))
           AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
           AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.repo_id = m.repo_id AND r.child = m.digest AND r.kind = 'manifest'
                           AND NOT EXISTS (SELECT 1 FROM gc_doomed x WHERE x.repo_id = r.repo_id AND x.digest = r.parent))
           AND NOT (m.subject IS NOT NULL AND EXISTS (SELECT 1 FROM manifests s WHERE s.repo_id = m.repo_id AND s.digest = m.subject
                           AND NOT EXISTS (SELECT 1 FROM gc_doomed x WHERE x.repo_id = s.repo_id AND x.digest = s.digest)))
         RETURNING m.repo_id, m.digest
       ),
       refs AS (DELETE FROM manifest_refs r USING gone g WHERE r.repo_id = g.repo_id AND r.parent = g.digest),
       tags AS (DELETE FROM tags t USING gone g WHERE t.repo_id = g.repo_id AND t.digest = g.digest)
       SELECT repo_id, digest FROM gone`,
      [policy.graceBefore, policy.untaggedBefore ?? null],
    );
    const removed = new Set(gone.rows.map((r) => `${Number(r.repo_id)} ${r.digest as string}`));
    return doomed.filter((d) => removed.has(`${d.repoId} ${d.digest}`)).map(({ repo, digest, size }) => ({ repo, digest, size }));
  });
}

/**
 * Unlists the repositories left without a manifest; a dry run names those it would, the manifests
 * it would remove counted as gone. Readers still list a repository holding a manifest: this
 * statement cannot see one another replica has not committed yet.
 */
export async function forgetEmptiedRepositories(db: Queryable, memory: GcMemory, policy: GcPolicy): Promise<string[]> {
  const { rows } = policy.dryRun
    ? await db.query<{ name: string }>({
        name: 'life_emptied_by_doomed',
        text: `SELECT r.name FROM repositories r
               WHERE r.listed = 1 AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id
                 AND NOT EXISTS (SELECT 1 FROM unnest($1::bigint[], $2::text[]) AS d(repo_id, digest)
                                 WHERE d.repo_id = m.repo_id AND d.digest = m.digest))`,
        values: doomedArrays(memory),
      })
    : await db.query<{ name: string }>({
        name: 'life_unlist_emptied',
        text: 'UPDATE repositories r SET listed = 0 WHERE r.listed = 1 AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) RETURNING r.name',
      });
  return rows.map((r) => r.name).sort();
}

/**
 * Among the next `pageSize` blobs by digest after `after`, those that may have something to
 * remove: links no manifest of their repository references, or no link at all. `next` is where the
 * following page starts; absent after the last page.
 */
export async function blobSweepCandidates(
  db: Queryable,
  memory: GcMemory,
  policy: GcPolicy,
  after: string,
  pageSize: number,
): Promise<{ digests: string[]; next?: string }> {
  const end = await db.query<{ digest: string }>({
    name: 'life_page_end',
    text: 'SELECT digest FROM blobs WHERE digest > $1 ORDER BY digest LIMIT 1 OFFSET $2',
    values: [after, pageSize - 1],
  });
  const upto = end.rows[0]?.digest;
  const [d1, d2] = doomedArrays(memory);
  const { rows } = await db.query<{ digest: string }>({
    name: 'life_sweep_candidates',
    // The page is the next pageSize blobs by digest (one index range), whatever plan is cached; its
    // two kinds of candidates are two queries, so each check is a join the planner can probe by
    // index (under one OR, the unlinked check became a hash of every link, built for every page).
    text: `WITH page AS MATERIALIZED (SELECT digest, created_at, last_access FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2)
           SELECT b.digest FROM page b
           WHERE EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND ${removableLink('$3', '$4', '$5')})
           UNION
           SELECT b.digest FROM page b
           WHERE b.created_at < $3 AND b.last_access < $3 AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)
           ORDER BY digest`,
    values: [after, pageSize, policy.graceBefore, d1, d2],
  });
  return { digests: rows.map((r) => r.digest), next: upto };
}

/**
 * Re-checks each blob against the current state and removes (unless a dry run) what is still
 * unneeded. Each blob row is locked first (FOR UPDATE): a replica linking it meanwhile waits on the
 * foreign key until this transaction ends, and one serving it cannot move last_access under the
 * check; the links go in a DELETE that re-checks them, and the blob only if no link is left.
 */
export async function sweepBlobs(db: Queryable, memory: GcMemory, digests: string[], policy: GcPolicy): Promise<BlobSweep[]> {
  if (digests.length === 0) return [];
  const [d1, d2] = doomedArrays(memory);
  return transaction(db, async (tx) => {
    const out: BlobSweep[] = [];
    // Locked in digest order, as every sweep does, so two sweeps cannot deadlock on each other.
    const locked = await tx.query({
      name: 'life_lock_blobs',
      text: 'SELECT digest, size, created_at, last_access FROM blobs WHERE digest = ANY($1::text[]) ORDER BY digest FOR UPDATE',
      values: [digests],
    });
    const blobs = new Map(locked.rows.map((r) => [r.digest as string, { size: Number(r.size), createdAt: Number(r.created_at), lastAccess: Number(r.last_access) }]));
    for (const digest of digests) {
      const blob = blobs.get(digest);
      if (!blob) continue;
      const linkQuery = policy.dryRun
        ? `SELECT rb.repo_id FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.digest = $1 AND ${removableLink('$2', '$3', '$4')}`
        : `DELETE FROM repo_blobs rb USING blobs b WHERE b.digest = rb.digest AND rb.digest = $1 AND ${removableLink('$2', '$3', '$4')}
           RETURNING rb.repo_id`;
      const links = await tx.query({
        name: policy.dryRun ? 'life_removable_links' : 'life_remove_links',
        text: linkQuery,
        values: [digest, policy.graceBefore, d1, d2],
      });
      const state = await tx.query({
        name: 'life_blob_left',
        text: `SELECT (SELECT COUNT(*) FROM repo_blobs WHERE digest = $1) AS links, ${liveRef('', '$1', '$2', '$3')} AS referenced`,
        values: [digest, d1, d2],
      });
      const left = Number(state.rows[0]!.links) - (policy.dryRun ? links.rows.length : 0);
      let removed =
        left === 0 && blob.createdAt < policy.graceBefore && blob.lastAccess < policy.graceBefore && state.rows[0]!.referenced === false;
      if (removed && !policy.dryRun) {
        const gone = await tx.query({
          name: 'life_delete_unlinked_blob',
          text: 'DELETE FROM blobs WHERE digest = $1 AND NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = $1)',
          values: [digest],
        });
        removed = (gone.rowCount ?? 0) > 0;
      }
      if (removed || links.rows.length > 0) out.push({ digest, size: blob.size, links: links.rows.length, removed });
    }
    return out;
  });
}

/** Forgets what a dry run remembered. */
export async function endCollection(_db: Queryable, memory: GcMemory): Promise<void> {
  memory.doomed = [];
}

export async function recordGcRun(db: Queryable, run: GcRunRecord): Promise<void> {
  await db.query({
    name: 'life_record_gc_run',
    text: `INSERT INTO gc_runs (started_at, duration_ms, dry_run, removed_manifests, removed_blobs, freed_bytes, forgotten_repositories)
           VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    values: [run.startedAt, run.durationMs, run.dryRun ? 1 : 0, run.removedManifests, run.removedBlobs, run.freedBytes, run.forgottenRepositories],
  });
}

export async function lastGcRun(db: Queryable): Promise<GcRunRecord | undefined> {
  const { rows } = await db.query({
    name: 'life_last_gc_run',
    text: `SELECT started_at, duration_ms, dry_run, removed_manifests, removed_blobs, freed_bytes, forgotten_repositories
           FROM gc_runs WHERE dry_run = 0 ORDER BY id DESC LIMIT 1`,
  });
  const r = rows[0];
  return (
    r && {
      startedAt: Number(r.started_at),
      durationMs: Number(r.duration_ms),
      dryRun: Number(r.dry_run) === 1,
      removedManifests: Number(r.removed_manifests),
      removedBlobs: Number(r.removed_blobs),
      freedBytes: Number(r.freed_bytes),
      forgottenRepositories: Number(r.forgotten_repositories),
    }
  );
}

/** Cached manifests referencing a blob that no pushed manifest of their repository needs. */
const EVICTABLE_MANIFESTS = `SELECT m.repo_id, rp.name AS repo, m.digest FROM manifest_refs r
   JOIN manifests m ON m.repo_id = r.repo_id AND m.digest = r.parent
   JOIN repositories rp ON rp.id = m.repo_id
   WHERE r.child = $1 AND r.kind = 'blob' AND m.cached = 1
     AND NOT EXISTS (SELECT 1 FROM manifest_refs p JOIN manifests pm ON pm.repo_id = p.repo_id AND pm.digest = p.parent
                     WHERE p.repo_id = m.repo_id AND p.child = m.digest AND pm.cached = 0)`;

/** Blobs of the cached manifests (that nothing pushed needs) referencing `digest`, to lock before evicting. */
export async function cachedImageBlobs(db: Queryable, digest: string): Promise<string[]> {
  const { rows } = await db.query<{ child: string }>({
    name: 'life_cached_image_blobs',
    text: `SELECT DISTINCT x.child FROM (${EVICTABLE_MANIFESTS}) e
           JOIN manifest_refs x ON x.repo_id = e.repo_id AND x.parent = e.digest
           WHERE x.kind = 'blob' AND x.child <> $1`,
    values: [digest],
  });
  return rows.map((r) => r.child);
}

/** Raised inside the eviction transaction to roll it back when a re-check fails. */
class NoLongerEvictable extends Error {}

/** True when the blob exists, was not served since `servedBefore`, and no repository pushed it. */
async function cachedOnlyAndIdle(tx: Queryable, digest: string, servedBefore: number): Promise<{ size: number } | undefined> {
  const { rows } = await tx.query({
    name: 'life_cached_only_idle',
    text: `SELECT b.size FROM blobs b WHERE b.digest = $1 AND b.last_access < $2
           AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.cached = 0)`,
    values: [digest, servedBefore],
  });
  return rows[0] ? { size: Number(rows[0].size) } : undefined;
}

/**
 * Evicts a cached-only, idle blob with the cached manifests that reference it (and their cached
 * tags, and cached indexes left with no child), and those manifests' other blobs among
 * `companions` that are cached-only, idle and referenced by nothing else. Undefined when the blob
 * is no longer evictable.
 *
 * The blob rows and their links are locked before anything is checked: a replica linking or pushing
 * one of them (which would make it no longer cached-only) or serving it waits until this ends, and
 * then finds it gone (its insert fails on the foreign key, so nothing is acknowledged over a hole).
 * A manifest that another replica pushed meanwhile (cached no longer 1) rolls the whole eviction back.
 */
export async function evictCachedImage(db: Queryable, digest: string, companions: string[], servedBefore: number): Promise<EvictedImage | undefined> {
  try {
    return await transaction(db, async (tx) => {
      const all = [...new Set([digest, ...companions])].sort();
      await tx.query({ name: 'life_evict_lock_blobs', text: 'SELECT 1 FROM blobs WHERE digest = ANY($1::text[]) ORDER BY digest FOR UPDATE', values: [all] });
      await tx.query({
        name: 'life_evict_lock_links',
        text: 'SELECT 1 FROM repo_blobs WHERE digest = ANY($1::text[]) ORDER BY digest, repo_id FOR UPDATE',
        values: [all],
      });
      const blob = await cachedOnlyAndIdle(tx, digest, servedBefore);
      if (!blob) return undefined;
      const result: EvictedImage = { manifests: [], blobs: [] };
      const allowed = new Set(companions);
      const others = new Set<string>();
      const drop = async (repoId: number, repo: string, manifest: string) => {
        const gone = await tx.query({
          name: 'life_evict_manifest',
          text: `WITH gone AS (DELETE FROM manifests WHERE repo_id = $1 AND digest = $2 AND cached = 1 RETURNING repo_id, digest),
                 refs AS (DELETE FROM manifest_refs r USING gone g WHERE r.repo_id = g.repo_id AND r.parent = g.digest),
                 tags AS (DELETE FROM tags t USING gone g WHERE t.repo_id = g.repo_id AND t.digest = g.digest)
                 SELECT 1 FROM gone`,
          values: [repoId, manifest],
        });
        if (gone.rows.length === 0) {
          // Gone already (an index dropped earlier in this eviction): nothing to do. Still there but
          // no longer cached: another replica pushed it meanwhile, and it must keep its blobs.
          const still = await tx.query({ name: 'life_manifest_exists', text: 'SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2', values: [repoId, manifest] });
          if (still.rows.length > 0) throw new NoLongerEvictable();
          return;
        }
        result.manifests.push({ repo, digest: manifest });
      };
      const manifests = await tx.query({ name: 'life_evictable_manifests', text: EVICTABLE_MANIFESTS, values: [digest] });
      for (const row of manifests.rows) {
        const m = { repoId: Number(row.repo_id), repo: row.repo as string, digest: row.digest as string };
        const refs = await tx.query<{ child: string; kind: string }>({
          name: 'life_refs_of',
          text: 'SELECT child, kind FROM manifest_refs WHERE repo_id = $1 AND parent = $2',
          values: [m.repoId, m.digest],
        });
        for (const ref of refs.rows) if (ref.kind === 'blob' && allowed.has(ref.child)) others.add(ref.child);
        // Cached indexes pointing at the manifest, with how many of their children are still stored.
        const parents = await tx.query({
          name: 'life_cached_parents',
          text: `SELECT p.parent AS digest,
                        (SELECT COUNT(*) FROM manifest_refs c JOIN manifests cm ON cm.repo_id = c.repo_id AND cm.digest = c.child
                         WHERE c.repo_id = p.repo_id AND c.parent = p.parent AND c.kind = 'manifest') AS children
                 FROM manifest_refs p JOIN manifests pm ON pm.repo_id = p.repo_id AND pm.digest = p.parent
                 WHERE p.repo_id = $1 AND p.child = $2 AND p.kind = 'manifest' AND pm.cached = 1
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs g JOIN manifests gm ON gm.repo_id = g.repo_id AND gm.digest = g.parent
                                   WHERE g.repo_id = p.repo_id AND g.child = p.parent AND gm.cached = 0)`,
          values: [m.repoId, m.digest],
        });
        await drop(m.repoId, m.repo, m.digest);
        // An index whose last stored child just left goes with it (with its cached tags).
        for (const p of parents.rows) if (Number(p.children) <= 1) await drop(m.repoId, m.repo, p.digest as string);
      }
      // A repository that held only the evicted images leaves the catalog, as it came: with them.
      // (Readers still list one holding a manifest another replica has not committed yet.)
      const emptied = [...new Set(manifests.rows.map((row) => Number(row.repo_id)))];
      if (emptied.length > 0) {
        await tx.query({
          name: 'life_evict_unlist',
          text: 'UPDATE repositories r SET listed = 0 WHERE r.id = ANY($1::bigint[]) AND r.listed = 1 AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)',
          values: [emptied],
        });
      }
      await tx.query({
        name: 'life_evict_blob',
        text: 'WITH links AS (DELETE FROM repo_blobs WHERE digest = $1) DELETE FROM blobs WHERE digest = $1',
        values: [digest],
      });
      result.blobs.push({ digest, size: blob.size });
      for (const other of [...others].sort()) {
        const companion = await cachedOnlyAndIdle(tx, other, servedBefore);
        if (!companion) continue;
        const referenced = await tx.query({ name: 'life_referenced_by_any', text: 'SELECT 1 FROM manifest_refs WHERE child = $1 LIMIT 1', values: [other] });
        if (referenced.rows.length > 0) continue;
        await tx.query({
          name: 'life_evict_blob',
          text: 'WITH links AS (DELETE FROM repo_blobs WHERE digest = $1) DELETE FROM blobs WHERE digest = $1',
          values: [other],
        });
        result.blobs.push({ digest: other, size: companion.size });
      }
      return result;
    });
  } catch (err) {
    if (err instanceof NoLongerEvictable) return undefined;
    throw err;
  }
}

/** Bytes of cached-only blobs per repository holding a cached link (for per-upstream budgets). */
export async function cachedBytesByRepo(db: Queryable): Promise<{ repo: string; bytes: number }[]> {
  const { rows } = await db.query({
    name: 'life_cached_bytes_by_repo',
    text: `SELECT r.name AS repo, SUM(b.size) AS bytes FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest JOIN repositories r ON r.id = rb.repo_id
           WHERE rb.cached = 1 AND NOT EXISTS (SELECT 1 FROM repo_blobs p WHERE p.digest = rb.digest AND p.cached = 0)
           GROUP BY r.name`,
  });
  return rows.map((r) => ({ repo: r.repo as string, bytes: Number(r.bytes) }));
}

/** Cached-only blobs linked in repositories under `prefix` ("" = all), least recently served first. */
export async function evictionCandidatesUnder(db: Queryable, prefix: string, limit: number): Promise<{ digest: string; size: number; repo: string }[]> {
  const { rows } = await db.query({
    name: 'life_candidates_under',
    text: `SELECT b.digest, b.size, r.name AS repo FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest JOIN repositories r ON r.id = rb.repo_id
           WHERE rb.cached = 1 AND ($1 = '' OR r.name = $1 OR left(r.name, length($1) + 1) = $1 || '/')
             AND NOT EXISTS (SELECT 1 FROM repo_blobs p WHERE p.digest = rb.digest AND p.cached = 0)
           ORDER BY b.last_access LIMIT $2`,
    values: [prefix, limit],
  });
  return rows.map((r) => ({ digest: r.digest as string, size: Number(r.size), repo: r.repo as string }));
}
