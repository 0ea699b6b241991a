// Which upstream serves a local repository, and under which name the upstream knows it.
// Contract (ARCHITECTURE.md, `upstreams:`): the longest `prefix` that is a whole-component prefix of
// the repository wins; the upstream repository is `remotePrefix` + the rest of the name.

import type { UpstreamConfig } from '../config/schema.js';

export interface UpstreamRoute {
  upstream: UpstreamConfig;
  /** The repository name to use in requests to the upstream. */
  remoteRepo: string;
}

/** Host names under which Docker Hub is known; pull secrets and containerd use all of them. */
export const DOCKER_HUB_HOSTS: ReadonlySet<string> = new Set(['docker.io', 'registry-1.docker.io', 'index.docker.io']);

/**
 * Picks the upstream for `repo`.
 *
 * `ns` is containerd's `?ns=<registry host>` query, sent when airlock is configured as a mirror for
 * that host: the whole repository name is then a path on that registry, so the upstream is chosen by
 * host (or by a prefix spelled exactly like the host) and no prefix is stripped. When `ns` names a
 * registry no upstream points at, the answer is undefined rather than the catch-all upstream: serving
 * another registry's image under that name would hand out the wrong content.
 */
export function selectUpstream(upstreams: UpstreamConfig[], repo: string, ns?: string): UpstreamRoute | undefined {
  if (ns !== undefined && ns !== '') return selectByNamespace(upstreams, repo, ns);

  let best: UpstreamConfig | undefined;
  for (const upstream of upstreams) {
    if (!isComponentPrefix(upstream.prefix, repo)) continue;
    if (best === undefined || upstream.prefix.length > best.prefix.length) best = upstream;
  }
  if (best === undefined) return undefined;
  const rest = repo.slice(best.prefix.length);
  return route(best, rest);
}

function selectByNamespace(upstreams: UpstreamConfig[], repo: string, ns: string): UpstreamRoute | undefined {
  const wanted = normalizeHost(ns);
  // A prefix written exactly as the host is the most explicit statement of intent, so it wins over a URL match.
  const upstream =
    upstreams.find((u) => u.prefix === ns) ?? upstreams.find((u) => sameRegistryHost(hostOf(u.url), wanted));
  return upstream === undefined ? undefined : route(upstream, repo);
}

function route(upstream: UpstreamConfig, rest: string): UpstreamRoute | undefined {
  let remoteRepo = joinPath(upstream.remotePrefix, rest);
  // The local name was exactly the prefix and there is no remotePrefix: there is nothing to ask for.
  if (remoteRepo === '') return undefined;
  // Docker Hub keeps official images under library/ ("alpine" is really "library/alpine"); clients
  // add it themselves, so a mirror must too.
  if (DOCKER_HUB_HOSTS.has(hostOf(upstream.url)) && !remoteRepo.includes('/')) remoteRepo = `library/${remoteRepo}`;
  return { upstream, remoteRepo };
}

/** `quay.io` is a prefix of `quay.io` and `quay.io/a/b`, not of `quay.iox/a`; "" is a prefix of everything. */
function isComponentPrefix(prefix: string, repo: string): boolean {
  if (prefix === '') return true;
  return repo === prefix || repo.startsWith(`${prefix}/`);
}

/** Joins path parts with single slashes, ignoring empty parts and stray leading/trailing slashes. */
function joinPath(...parts: string[]): string {
  return parts
    .map((p) => p.replace(/^\/+|\/+$/g, ''))
    .filter((p) => p !== '')
    .join('/');
}

function hostOf(url: string): string {
  try {
    return new URL(url).host.toLowerCase();
  } catch {
    return '';
  }
}

function normalizeHost(host: string): string {
  return host.trim().toLowerCase();
}

function sameRegistryHost(a: string, b: string): boolean {
  return a === b || (DOCKER_HUB_HOSTS.has(a) && DOCKER_HUB_HOSTS.has(b));
}
