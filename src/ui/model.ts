// What the dashboard and its JSON endpoints say about a repository's manifests, computed from the
// stored manifest documents (sizes and platforms are in their descriptors; no blob is read).

import { isIndexMediaType } from '../registry/manifest.js';
import type { ManifestListing } from '../storage/metadata.js';

export interface ReferrerView {
  digest: string;
  artifactType: string | null;
}

export interface ManifestView {
  digest: string;
  mediaType: string;
  /** index, image, or artifact (an image manifest with an artifactType or a subject). */
  kind: 'index' | 'image' | 'artifact';
  artifactType: string | null;
  tags: string[];
  /** Bytes of the manifest document itself. */
  size: number;
  /** Manifest, config and layers; for an index, the sum over its platform images stored here. */
  totalSize: number;
  /** Layer count of an image; for an index, of its first platform image. */
  layers: number | null;
  /** os/architecture[/variant] of an index's entries, or of an image's config when known. */
  platforms: string[];
  /** Entries of an index (digest and platform). */
  children: { digest: string; platform: string | null }[];
  /** Index digests in this repository that list this manifest. */
  parents: string[];
  subject: string | null;
  referrers: ReferrerView[];
  source: 'pushed' | 'cached';
  createdAt: string;
  lastPulled: string | null;
}

interface Doc {
  config?: { size?: number };
  layers?: { size?: number }[];
  manifests?: { digest?: string; size?: number; platform?: { os?: string; architecture?: string; variant?: string } }[];
  artifactType?: string;
}

function parse(content: Buffer): Doc {
  try {
    return JSON.parse(content.toString('utf8')) as Doc;
  } catch {
    return {};
  }
}

function platformName(p: { os?: string; architecture?: string; variant?: string } | undefined): string | null {
  if (!p?.os || !p.architecture) return null;
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Config media types of runnable images; any other artifactType makes the manifest an artifact. */
const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

const sum = (values: (number | undefined)[]) => values.reduce<number>((a, v) => a + (typeof v === 'number' && v > 0 ? v : 0), 0);

/** Views of every manifest of a repository, newest first. */
export function manifestViews(rows: ManifestListing[]): ManifestView[] {
  const docs = new Map(rows.map((r) => [r.digest, parse(r.content)]));
  const parents = new Map<string, string[]>();
  const referrers = new Map<string, ReferrerView[]>();
  for (const row of rows) {
    for (const child of docs.get(row.digest)!.manifests ?? []) {
      if (typeof child.digest !== 'string') continue;
      parents.set(child.digest, [...(parents.get(child.digest) ?? []), row.digest]);
    }
    if (row.subject) referrers.set(row.subject, [...(referrers.get(row.subject) ?? []), { digest: row.digest, artifactType: row.artifactType }]);
  }
  const imageTotal = (digest: string, size: number): number => {
    const doc = docs.get(digest);
    return doc ? size + sum([doc.config?.size, ...(doc.layers ?? []).map((l) => l.size)]) : size;
  };
  return rows
    .map((row): ManifestView => {
      const doc = docs.get(row.digest)!;
      const index = isIndexMediaType(row.mediaType);
      const entries = doc.manifests ?? [];
      const children = index ? entries.filter((e) => typeof e.digest === 'string').map((e) => ({ digest: e.digest!, platform: platformName(e.platform) })) : [];
      const firstChild = children[0] ? docs.get(children[0].digest) : undefined;
      return {
        digest: row.digest,
        mediaType: row.mediaType,
        kind: index ? 'index' : row.subject || (row.artifactType && !IMAGE_CONFIG_TYPES.has(row.artifactType)) ? 'artifact' : 'image',
        artifactType: row.artifactType,
        tags: row.tags,
        size: row.size,
        totalSize: index ? row.size + sum(entries.map((e) => (typeof e.digest === 'string' ? imageTotal(e.digest, e.size ?? 0) : 0))) : imageTotal(row.digest, row.size),
        layers: index ? (firstChild?.layers?.length ?? null) : (doc.layers?.length ?? null),
        platforms: children.map((c) => c.platform).filter((p): p is string => p !== null),
        children,
        parents: parents.get(row.digest) ?? [],
        subject: row.subject,
        referrers: referrers.get(row.digest) ?? [],
        source: row.cached ? 'cached' : 'pushed',
        createdAt: new Date(row.createdAt).toISOString(),
        lastPulled: row.lastServed === null ? null : new Date(row.lastServed).toISOString(),
      };
    })
    .reverse();
}

/** Index children get the platform their index gives them. */
export function platformsOfChildren(views: ManifestView[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of views) for (const c of v.children) if (c.platform) out.set(c.digest, c.platform);
  return out;
}

/** Copyable commands that fetch one manifest by digest from this registry. */
export function pullCommands(host: string, repo: string, digest: string, release: boolean): { tool: string; command: string }[] {
  const ref = `${host}/${repo}@${digest}`;
  return [
    { tool: 'podman', command: `podman pull ${ref}` },
    { tool: 'skopeo', command: `skopeo copy --all docker://${ref} oci:./${repo.slice(repo.lastIndexOf('/') + 1)}` },
    { tool: 'oc', command: release ? `oc adm release info ${ref}` : `oc image info ${ref}` },
  ];
}

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function formatAgo(iso: string | number | null | undefined, now = Date.now()): string {
  if (iso === null || iso === undefined) return 'never';
  const t = typeof iso === 'number' ? iso : Date.parse(iso);
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export const shortDigest = (digest: string) => {
  const colon = digest.indexOf(':');
  return `${digest.slice(0, colon + 1)}${digest.slice(colon + 1, colon + 13)}`;
};
