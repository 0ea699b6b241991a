// The dashboard block of the MetadataStore on PostgreSQL: repository browsing, per-repository
// listings, the stats history, the audit trail and the release/catalog classifier's rows. Same
// semantics as SqliteMetadataStore's `---- dashboard ----` block; each function takes the pool (or
// a client) as its first argument and the method's own arguments after it.
//
// Repository names are compared and ordered with COLLATE "C" (byte order): the browse below relies
// on every name under a prefix lying in [prefix, prefix + U+007F), which holds in byte order only,
// not in a linguistic collation a database may default to.

import type {
  AuditEvent,
  ClassifiedImage,
  HistoryPoint,
  ManifestCursor,
  ManifestListing,
  Page,
  RepositoryCounts,
  RepositoryNode,
  UnclassifiedManifest,
} from '../metadata.js';
import { LISTED_REPOSITORY } from '../metadata.js';
import pg from 'pg';
import { inTransaction, type Queryable } from './pool.js';

const MANIFEST_COLUMNS = 'digest, media_type, size, content, subject, artifact_type, annotations';

/**
 * Up to `limit` listed repositories with from < name < end, in byte order: those holding manifests
 * and those emptied by deletes that garbage collection has not forgotten yet, as in the catalog.
 */
async function namesBetween(db: Queryable, from: string, end: string, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>({
    name: 'dash_names_between',
    text: `SELECT r.name FROM repositories r
           WHERE r.name COLLATE "C" > $1 AND r.name COLLATE "C" < $2
             AND ${LISTED_REPOSITORY}
           ORDER BY r.name COLLATE "C" LIMIT $3`,
    values: [from, end, limit],
  });
  return rows.map((r) => r.name);
}

async function isListed(db: Queryable, name: string): Promise<boolean> {
  const { rows } = await db.query({
    name: 'dash_is_listed',
    text: `SELECT 1 FROM repositories r WHERE r.name = $1 AND ${LISTED_REPOSITORY}`,
    values: [name],
  });
  return rows.length > 0;
}

/**
 * Runs `fn` in one transaction: on the pool through inTransaction (retried on serialization
 * failures and deadlocks), or directly on a client that is already inside one.
 */
export async function transaction<T>(db: Queryable, fn: (tx: Queryable) => Promise<T>): Promise<T> {
  return db instanceof pg.Pool ? inTransaction(db, fn) : fn(db);
}

export async function findRepoId(db: Queryable, name: string): Promise<number | undefined> {
  const { rows } = await db.query<{ id: string | number }>({ name: 'dash_repo_id', text: 'SELECT id FROM repositories WHERE name = $1', values: [name] });
  return rows[0] ? Number(rows[0].id) : undefined;
}

export async function browseRepositories(
  db: Queryable,
  prefix: string,
  limit: number,
  last?: string,
  delimiter = false,
): Promise<Page<RepositoryNode>> {
  // Valid names use only characters below 0x7f, so [prefix, prefix + 0x7f) holds every name under it.
  const end = `${prefix}\u007f`;
  if (!delimiter) {
    const from = last !== undefined && last > prefix ? last : prefix;
    const names = await namesBetween(db, from, end, limit + 1);
    // A repository named exactly `prefix` sorts first but is not > prefix: add it on the first page.
    if (last === undefined && prefix !== '' && (await isListed(db, prefix))) names.unshift(prefix);
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
  const hasChildren = async (node: string) => (await namesBetween(db, `${node}/`, subtreeEnd(node), 1)).length > 0;
  let cursor = prefix;
  let skipComponent: string | undefined;
  if (last !== undefined && last >= prefix) {
    // Resume as the loop below would have gone on after listing `last`.
    skipComponent = componentOf(last);
    cursor = (await isListed(db, skipComponent)) ? skipComponent : subtreeEnd(skipComponent);
  }
  while (items.length <= limit) {
    const found = (await namesBetween(db, cursor, end, 1))[0];
    if (found === undefined) break;
    const node = componentOf(found);
    if (node === skipComponent) {
      cursor = subtreeEnd(node);
      continue;
    }
    if (node === found) {
      // A repository that may also have deeper ones: "a" sorts before "a-b" and "a.b", which sort before "a/…".
      items.push({ name: node, repository: true, children: await hasChildren(node) });
      skipComponent = node;
      cursor = node;
    } else {
      // A folder, unless the repository of that name exists (then it was listed already, before its siblings).
      if (!(await isListed(db, node))) items.push({ name: node, repository: false, children: true });
      cursor = subtreeEnd(node);
    }
  }
  return { items: items.slice(0, limit), more: items.length > limit };
}

export async function repositoryCounts(db: Queryable, names: string[]): Promise<RepositoryCounts[]> {
  if (names.length === 0) return [];
  // One round trip for the whole page; the answer keeps the order (and repeats) of `names`.
  const { rows } = await db.query<{ name: string; tags: number; manifests: number }>({
    name: 'dash_repo_counts',
    text: `SELECT r.name, (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id) AS tags,
                  (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id) AS manifests
           FROM repositories r WHERE r.name = ANY($1::text[])`,
    values: [names],
  });
  const byName = new Map(rows.map((r) => [r.name, { name: r.name, tags: Number(r.tags), manifests: Number(r.manifests) }]));
  return names.flatMap((name) => {
    const row = byName.get(name);
    return row ? [{ ...row }] : [];
  });
}

export async function repositoryManifests(db: Queryable, repo: string, limit: number): Promise<ManifestListing[]> {
  const id = await findRepoId(db, repo);
  if (id === undefined) return [];
  const [tagRows, servedRows, manifestRows] = await Promise.all([
    db.query<{ name: string; digest: string }>({
      name: 'dash_repo_tags',
      text: 'SELECT name, digest FROM tags WHERE repo_id = $1 ORDER BY name COLLATE "C"',
      values: [id],
    }),
    db.query<{ digest: string; served: number | null }>({
      name: 'dash_repo_last_served',
      text: `SELECT mr.parent AS digest, MAX(CASE WHEN b.last_access > b.created_at THEN b.last_access END) AS served
             FROM manifest_refs mr JOIN blobs b ON b.digest = mr.child
             WHERE mr.repo_id = $1 AND mr.kind = 'blob' GROUP BY mr.parent`,
      values: [id],
    }),
    db.query({
      name: 'dash_repo_manifests',
      text: `SELECT ${MANIFEST_COLUMNS}, cached, created_at FROM manifests WHERE repo_id = $1 ORDER BY created_at, digest COLLATE "C" LIMIT $2`,
      values: [id, limit],
    }),
  ]);
  const tags = new Map<string, string[]>();
  for (const row of tagRows.rows) {
    const list = tags.get(row.digest);
    if (list) list.push(row.name);
    else tags.set(row.digest, [row.name]);
  }
  const served = new Map<string, number | null>();
  for (const row of servedRows.rows) served.set(row.digest, row.served === null ? null : Number(row.served));
  return manifestRows.rows.map((row) => ({
    digest: row.digest as string,
    mediaType: row.media_type as string,
    size: Number(row.size),
    content: row.content as Buffer,
    subject: (row.subject as string | null) ?? null,
    artifactType: (row.artifact_type as string | null) ?? null,
    annotations: (row.annotations as string | null) ?? null,
    cached: Number(row.cached) === 1,
    createdAt: Number(row.created_at),
    tags: tags.get(row.digest as string) ?? [],
    lastServed: served.get(row.digest as string) ?? null,
  }));
}

export async function addHistoryPoint(db: Queryable, point: HistoryPoint): Promise<void> {
  await db.query({
    name: 'dash_add_history',
    text: `INSERT INTO stats_history (at, hits, misses, stale_served, bytes_from_cache, bytes_from_upstream, storage_bytes)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (at) DO UPDATE SET hits = excluded.hits, misses = excluded.misses, stale_served = excluded.stale_served,
             bytes_from_cache = excluded.bytes_from_cache, bytes_from_upstream = excluded.bytes_from_upstream,
             storage_bytes = excluded.storage_bytes`,
    values: [point.at, point.hits, point.misses, point.staleServed, point.bytesFromCache, point.bytesFromUpstream, point.storageBytes],
  });
}

export async function history(db: Queryable, since: number): Promise<HistoryPoint[]> {
  const { rows } = await db.query({
    name: 'dash_history',
    text: `SELECT at, hits, misses, stale_served, bytes_from_cache, bytes_from_upstream, storage_bytes
           FROM stats_history WHERE at >= $1 ORDER BY at`,
    values: [since],
  });
  return rows.map((r) => ({
    at: Number(r.at),
    hits: Number(r.hits),
    misses: Number(r.misses),
    staleServed: Number(r.stale_served),
    bytesFromCache: Number(r.bytes_from_cache),
    bytesFromUpstream: Number(r.bytes_from_upstream),
    storageBytes: Number(r.storage_bytes),
  }));
}

export async function pruneHistory(db: Queryable, before: number): Promise<void> {
  await db.query({ name: 'dash_prune_history', text: 'DELETE FROM stats_history WHERE at < $1', values: [before] });
}

export async function addAuditEvents(db: Queryable, events: AuditEvent[], keep: number): Promise<void> {
  await transaction(db, async (tx) => {
    if (events.length > 0) {
      // One statement for the batch, in the order given (ids follow it).
      await tx.query(
        `INSERT INTO audit_events (at, action, "user", repo, digest, tag, code, remote)
         SELECT at, action, "user", repo, digest, tag, code, remote
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
           WITH ORDINALITY AS e(at, action, "user", repo, digest, tag, code, remote, n)
         ORDER BY n`,
        [
          events.map((e) => e.at),
          events.map((e) => e.action),
          events.map((e) => e.user),
          events.map((e) => e.repo),
          events.map((e) => e.digest),
          events.map((e) => e.tag),
          events.map((e) => e.code),
          events.map((e) => e.remote),
        ],
      );
    }
    await tx.query('DELETE FROM audit_events WHERE id <= (SELECT MAX(id) FROM audit_events) - $1', [keep]);
  });
}

export async function recentAuditEvents(db: Queryable, limit: number): Promise<AuditEvent[]> {
  const { rows } = await db.query<AuditEvent & { at: number }>({
    name: 'dash_recent_audit',
    text: 'SELECT at, action, "user", repo, digest, tag, code, remote FROM audit_events ORDER BY id DESC LIMIT $1',
    values: [limit],
  });
  return rows.map((r) => ({ ...r, at: Number(r.at) }));
}

export async function manifestsAfter(db: Queryable, cursor: ManifestCursor | undefined, limit: number): Promise<UnclassifiedManifest[]> {
  const [at, repoId, digest] = cursor ?? [-1, -1, ''];
  // The ORDER BY matches the index manifests_by_created, and the row comparison lets it seek.
  const { rows } = await db.query({
    name: 'dash_manifests_after',
    text: `SELECT m.repo_id, r.name AS repo, m.digest, m.media_type, m.content, m.created_at
           FROM manifests m JOIN repositories r ON r.id = m.repo_id
           WHERE (m.created_at, m.repo_id, m.digest) > ($1, $2, $3)
           ORDER BY m.created_at, m.repo_id, m.digest LIMIT $4`,
    values: [at, repoId, digest, limit],
  });
  return rows.map((r) => ({
    repoId: Number(r.repo_id),
    repo: r.repo as string,
    digest: r.digest as string,
    mediaType: r.media_type as string,
    content: r.content as Buffer,
    createdAt: Number(r.created_at),
  }));
}

export async function saveImageKinds(
  db: Queryable,
  kinds: { repoId: number; digest: string; kind: string; version: string | null }[],
): Promise<void> {
  if (kinds.length === 0) return;
  // One statement, so all of the batch lands or none; a later entry for the same manifest wins.
  const last = new Map(kinds.map((k) => [`${k.repoId} ${k.digest}`, k]));
  const rows = [...last.values()];
  await db.query(
    `INSERT INTO image_kinds (repo_id, digest, kind, version)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
     ON CONFLICT (repo_id, digest) DO UPDATE SET kind = excluded.kind, version = excluded.version`,
    [rows.map((k) => k.repoId), rows.map((k) => k.digest), rows.map((k) => k.kind), rows.map((k) => k.version)],
  );
}

export async function imageKind(db: Queryable, repoId: number, digest: string): Promise<{ kind: string; version: string | null } | undefined> {
  const { rows } = await db.query<{ kind: string; version: string | null }>({
    name: 'dash_image_kind',
    text: 'SELECT kind, version FROM image_kinds WHERE repo_id = $1 AND digest = $2',
    values: [repoId, digest],
  });
  return rows[0] ? { kind: rows[0].kind, version: rows[0].version } : undefined;
}

export async function classifiedImages(db: Queryable, limit: number): Promise<ClassifiedImage[]> {
  const { rows } = await db.query({
    name: 'dash_classified_images',
    text: `SELECT r.name AS repo, k.digest, k.kind, k.version, m.media_type, m.cached, m.created_at,
                  (SELECT string_agg(t.name, ' ' ORDER BY t.name COLLATE "C") FROM tags t WHERE t.repo_id = k.repo_id AND t.digest = k.digest) AS tags
           FROM image_kinds k
           JOIN manifests m ON m.repo_id = k.repo_id AND m.digest = k.digest
           JOIN repositories r ON r.id = k.repo_id
           WHERE k.kind <> ''
           ORDER BY k.kind COLLATE "C" DESC, r.name COLLATE "C", m.created_at DESC LIMIT $1`,
    values: [limit],
  });
  return rows.map((r) => ({
    repo: r.repo as string,
    digest: r.digest as string,
    kind: r.kind as string,
    version: (r.version as string | null) ?? null,
    mediaType: r.media_type as string,
    cached: Number(r.cached) === 1,
    createdAt: Number(r.created_at),
    tags: r.tags ? (r.tags as string).split(' ') : [],
  }));
}

export async function blobTotals(db: Queryable): Promise<{ blobs: number; bytes: number }> {
  const { rows } = await db.query({
    name: 'dash_blob_totals',
    text: 'SELECT COUNT(*) AS blobs, COALESCE(SUM(size), 0) AS bytes FROM blobs',
  });
  return { blobs: Number(rows[0]!.blobs), bytes: Number(rows[0]!.bytes) };
}

export async function repositoryImageKinds(
  db: Queryable,
  repo: string,
): Promise<{ repoId: number; kinds: Map<string, { kind: string; version: string | null }> } | undefined> {
  const repoId = await findRepoId(db, repo);
  if (repoId === undefined) return undefined;
  const { rows } = await db.query<{ digest: string; kind: string; version: string | null }>({
    name: 'dash_repo_image_kinds',
    text: 'SELECT digest, kind, version FROM image_kinds WHERE repo_id = $1',
    values: [repoId],
  });
  return { repoId, kinds: new Map(rows.map((r) => [r.digest, { kind: r.kind, version: r.version }])) };
}
