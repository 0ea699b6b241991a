// Mirror sets: which source repositories a cluster may pull from which mirror locations, in the
// one shape every format shares (ImageDigestMirrorSet, ImageTagMirrorSet, ImageContentSourcePolicy,
// CRI-O registries.conf), derived from airlock's upstreams and the recorded origins of its content.

import type { UpstreamConfig } from '../config/schema.js';
import { DOCKER_HUB_HOSTS } from '../proxy/routing.js';

/** For which kind of pull a mirror may be used (CRI-O's `pull-from-mirror`). */
export type MirrorUse = 'all' | 'digest-only' | 'tag-only';

export interface Mirror {
  /** `host[:port]/path`, or for airlock's own sets a local repository path (no host). */
  location: string;
  use: MirrorUse;
}

/** One source (a registry, a namespace or a repository) and where its content is mirrored, in order of preference. */
export interface MirrorRule {
  source: string;
  mirrors: Mirror[];
  /** NeverContactSource / `blocked = true`: the source itself must not be tried. */
  blocked?: boolean;
}

export interface Origin {
  repo: string;
  origin: string;
}

/** The registry host (with port) an upstream URL names; Docker Hub's API host stands for docker.io. */
export function upstreamRegistryHost(url: string): string {
  const host = new URL(url).host.toLowerCase();
  return DOCKER_HUB_HOSTS.has(host) ? 'docker.io' : host;
}

function joinPath(...parts: string[]): string {
  return parts
    .map((p) => p.replace(/^\/+|\/+$/g, ''))
    .filter((p) => p !== '')
    .join('/');
}

/**
 * airlock's own mirror sets as local repository paths: every recorded origin (synced or imported
 * content: `quay.io/openshift-release-dev/ocp-release` → the local repository holding it) and every
 * upstream (`url` host + `remotePrefix` → `prefix`, which the pull-through cache fills on demand).
 * Content held locally comes first among a source's mirrors. Sorted by source for stable output.
 */
export function airlockMirrorRules(upstreams: readonly UpstreamConfig[], origins: readonly Origin[]): { source: string; repos: string[] }[] {
  const bySource = new Map<string, string[]>();
  const add = (source: string, repo: string) => {
    const repos = bySource.get(source) ?? [];
    if (!repos.includes(repo)) repos.push(repo);
    bySource.set(source, repos);
  };
  for (const { repo, origin } of origins) add(origin, repo);
  for (const upstream of upstreams) add(joinPath(upstreamRegistryHost(upstream.url), upstream.remotePrefix), upstream.prefix);
  return [...bySource.entries()]
    .filter(([source]) => source !== '')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([source, repos]) => ({ source, repos }));
}

/** A local repository path as clusters reach it through `host` ("" = the registry's root). */
export function mirrorLocation(host: string, repo: string): string {
  return joinPath(host, repo);
}

/** airlock's rules as seen from a cluster reaching it at `host`, for the given kind of pull. */
export function airlockRulesForHost(
  upstreams: readonly UpstreamConfig[],
  origins: readonly Origin[],
  host: string,
  use: MirrorUse,
): MirrorRule[] {
  return airlockMirrorRules(upstreams, origins).map(({ source, repos }) => ({
    source,
    mirrors: repos.map((repo) => ({ location: mirrorLocation(host, repo), use })),
  }));
}

/** `registry.example.com:5000`, `[::1]:5000`, `mirror.local` — what --host / ?host= accepts. */
export function isValidMirrorHost(host: string): boolean {
  return /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?)(:\d{1,5})?$/.test(host);
}
