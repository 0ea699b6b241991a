// Resolves an image reference through mirror rules the way CRI-O (containers/image's
// sysregistriesv2) does: the rule whose source is the longest prefix of the reference, ending at a
// path, tag or digest boundary, wins; each of its mirrors usable for this kind of pull (digest or
// tag) is tried in order with the source prefix replaced by the mirror location.

import type { MirrorRule } from './mirror-sets.js';

export interface ImageReference {
  /** Fully qualified repository name: `quay.io/openshift-release-dev/ocp-v4.0-art-dev`. */
  name: string;
  tag?: string;
  digest?: string;
}

const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * Parses `host/path:tag`, `host/path@sha256:…` or `host/path:tag@sha256:…` (the digest wins for
 * pulling). A name without a registry host is Docker Hub's, as every client reads it.
 */
export function parseImageReference(text: string): ImageReference | undefined {
  const trimmed = text.trim();
  const at = trimmed.indexOf('@');
  const digest = at === -1 ? undefined : trimmed.slice(at + 1);
  if (digest !== undefined && !DIGEST.test(digest)) return undefined;
  let name = at === -1 ? trimmed : trimmed.slice(0, at);
  let tag: string | undefined;
  const colon = name.lastIndexOf(':');
  if (colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!/^[\w][\w.-]{0,127}$/.test(tag)) return undefined;
  }
  if (!/^[a-zA-Z0-9]/.test(name) || /\s|\/\/|\/$/.test(name)) return undefined;
  const [first, ...rest] = name.split('/');
  if (!rest.length || !(first!.includes('.') || first!.includes(':') || first === 'localhost')) {
    name = rest.length ? `docker.io/${name}` : `docker.io/library/${name}`;
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { name, tag, digest };
}

export function formatReference(ref: ImageReference): string {
  return ref.digest ? `${ref.name}@${ref.digest}` : `${ref.name}:${ref.tag}`;
}

/** containers/image: a prefix matches at the start of the name, followed by nothing, `/`, `:` or `@`. */
function prefixMatches(prefix: string, name: string): boolean {
  if (!name.startsWith(prefix)) return false;
  return name.length === prefix.length || '/:@'.includes(name[prefix.length]!) || prefix.endsWith('/');
}

export interface MirrorCandidate {
  /** The mirror location as the rule states it (`mirror.example.com:5000/ocp4/openshift4`). */
  mirror: string;
  /** The repository to pull from on that mirror (location + the rest of the name). */
  repository: string;
}

export type Resolution =
  | { kind: 'mirrored'; source: string; candidates: MirrorCandidate[] }
  | { kind: 'unmapped' }
  /** A rule covers the name, but none of its mirrors serves this kind of pull (e.g. a tag through an IDMS). */
  | { kind: 'no-usable-mirror'; source: string; reason: string };

/** Rules with the same source merged (an IDMS and an ITMS for one source become one registries.conf entry). */
export function mergeRules(rules: readonly MirrorRule[]): MirrorRule[] {
  const bySource = new Map<string, MirrorRule>();
  for (const rule of rules) {
    const existing = bySource.get(rule.source);
    if (!existing) bySource.set(rule.source, { source: rule.source, mirrors: [...rule.mirrors], blocked: rule.blocked });
    else {
      for (const m of rule.mirrors) if (!existing.mirrors.some((e) => e.location === m.location && e.use === m.use)) existing.mirrors.push(m);
      existing.blocked = existing.blocked || rule.blocked;
    }
  }
  return [...bySource.values()];
}

export function resolveThroughMirrors(ref: ImageReference, rules: readonly MirrorRule[]): Resolution {
  let best: MirrorRule | undefined;
  for (const rule of rules) {
    if (prefixMatches(rule.source, ref.name) && (best === undefined || rule.source.length > best.source.length)) best = rule;
  }
  if (!best) return { kind: 'unmapped' };
  const byDigest = ref.digest !== undefined;
  const usable = best.mirrors.filter((m) => (byDigest ? m.use !== 'tag-only' : m.use !== 'digest-only'));
  if (!usable.length) {
    const reason = byDigest
      ? `the mirror sets for ${best.source} only mirror tag pulls (ImageTagMirrorSet / tag-only)`
      : `the mirror sets for ${best.source} only mirror digest pulls (ImageDigestMirrorSet / ImageContentSourcePolicy / digest-only): a tag reference needs an ImageTagMirrorSet`;
    return { kind: 'no-usable-mirror', source: best.source, reason };
  }
  const rest = ref.name.slice(best.source.length).replace(/^\/+/, '');
  return {
    kind: 'mirrored',
    source: best.source,
    candidates: usable.map((m) => ({ mirror: m.location, repository: [m.location.replace(/\/+$/, ''), rest].filter((p) => p !== '').join('/') })),
  };
}

/**
 * The local repository a mirror repository names, when that mirror is this airlock: the mirror
 * locations in a cluster's files carry the registry host (`mirror.example.com:5000/ocp4/openshift4`),
 * which is dropped. The first component is a host when it has a dot, a colon or is localhost.
 */
export function stripRegistryHost(repository: string): string {
  const slash = repository.indexOf('/');
  const first = slash === -1 ? repository : repository.slice(0, slash);
  const isHost = first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[');
  if (!isHost) return repository;
  return slash === -1 ? '' : repository.slice(slash + 1);
}
