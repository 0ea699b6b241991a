// The air-gap import/export block of the MetadataStore on PostgreSQL (see SqliteMetadataStore's
// `---- air-gap import/export ----`).

import type { ImageRecord } from '../metadata.js';
import { findRepoId } from './dashboard.js';
import type { Queryable } from './pool.js';

/**
 * The images a repository holds, as an export selects them: every tagged manifest and every
 * tagless one that no index in the repository references (an index's children travel with it).
 */
export async function listImages(db: Queryable, repo: string): Promise<ImageRecord[]> {
  const id = await findRepoId(db, repo);
  if (id === undefined) return [];
  const { rows } = await db.query<{ digest: string; media_type: string; tags: string[] | null }>({
    name: 'airgap_list_images',
    text: `SELECT m.digest, m.media_type,
                  (SELECT array_agg(t.name ORDER BY t.name COLLATE "C") FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) AS tags
           FROM manifests m
           WHERE m.repo_id = $1
             AND (EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
                  OR NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.repo_id = m.repo_id AND r.child = m.digest AND r.kind = 'manifest'))
           ORDER BY m.digest COLLATE "C"`,
    values: [id],
  });
  return rows.map((r) => ({ digest: r.digest, mediaType: r.media_type, tags: r.tags ?? [] }));
}
