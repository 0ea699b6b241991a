// The pull-through cache: what to do when a proxied repository lacks a manifest or blob, or holds
// a cached tag that may have moved. Local storage always answers first; the upstream is asked only
// on a miss (or to revalidate an expired tag), and when it cannot answer, cached content is served.

import type { Readable } from 'node:stream';
import type { UpstreamConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { CacheOutcome, Stats } from '../metrics.js';
import { RegistryError } from '../registry/errors.js';
import { manifestRecord, parseManifest } from '../registry/manifest.js';
import type { DigestAlgorithm } from '../registry/names.js';
import type { Lease, LeaseManager } from '../cluster/leases.js';
import type { ManifestRecord, MetadataStore, TagRecord } from '../storage/metadata.js';
import type { KeyedLock } from '../registry/keyed-lock.js';
import { ManifestCache } from '../registry/manifest-cache.js';
import { BlobFill, FillMemory, type FillStore } from './blob-fill.js';
import { CircuitBreaker } from './circuit.js';
import { UpstreamClient, type ManifestResult } from './client.js';
import { UpstreamError, isUpstreamDown, upstreamReason } from './errors.js';
import { NegativeCache } from './negative-cache.js';
import { selectUpstream } from './routing.js';
import { SingleFlight } from './singleflight.js';

/** How long a dead replica's fill lease keeps the others waiting; renewed every third of it while alive. */
const FILL_LEASE_TTL_MS = 15_000;
/** The longest a client waits for another replica's transfer of a blob (a layer of several GiB). */
const FILL_WAIT_MS = 30 * 60_000;

const MAX_REMEMBERED_ROUTES = 10_000;

/** An upstream with the state kept for it. */
interface Upstream {
  config: UpstreamConfig;
  client: UpstreamClient;
  circuit: CircuitBreaker;
}

export interface ProxyRoute {
  upstream: Upstream;
  remoteRepo: string;
}

/** A manifest answer: whole for GET, or only its description for a HEAD answered from upstream. */
export interface ManifestAnswer {
  digest: string;
  mediaType: string;
  size: number;
  content?: Buffer;
  outcome: CacheOutcome;
}

export interface BlobAnswer {
  size: number | undefined;
  outcome: CacheOutcome;
  /** Opens the bytes (or an inclusive range); undefined for a HEAD answered from upstream. */
  open?: (range?: { start: number; end: number }) => Promise<Readable>;
}

export class PullThroughCache {
  private readonly upstreams: Upstream[];
  private readonly byConfig = new Map<UpstreamConfig, Upstream>();
  /** Routes by repository name, as computed from the configuration. */
  private readonly routes = new Map<string, ProxyRoute | undefined>();
  private readonly manifestFlights = new SingleFlight<string, ManifestRecord>();
  /** Transfers under way here; undefined once another replica turned out to have stored the blob. */
  private readonly fills = new Map<string, Promise<BlobFill | undefined>>();
  /** The memory budget all blob fills share. */
  private readonly fillMemory = new FillMemory();
  /** Told of each blob a fill stored here, once its transfer is over (the server reads it back). */
  onFilled: ((digest: string) => void) | undefined;
  private readonly notFound = new NegativeCache();
  /** Repositories already reported as served stale, so the log gets one line per repository. */
  private readonly staleLogged = new Set<string>();

  constructor(
    private readonly configs: UpstreamConfig[],
    private readonly meta: MetadataStore,
    private readonly blobs: FillStore,
    private readonly stats: Stats,
    private readonly log: Logger,
    /** Per-digest lock shared with the registry, against eviction removing what is being linked. */
    private readonly blobLocks: KeyedLock,
    /** Hot manifests, shared with the registry (which invalidates them on every change). */
    private readonly manifests: ManifestCache = new ManifestCache(),
    /** With replicas: one upstream transfer per blob across all of them (fill leases in PostgreSQL). */
    private readonly leases?: LeaseManager,
  ) {
    this.upstreams = configs.map((config) => {
      const upstream = { config, client: new UpstreamClient(config, { userAgent: 'airlock', log }), circuit: new CircuitBreaker(config.url) };
      this.byConfig.set(config, upstream);
      return upstream;
    });
  }

  /** Each upstream's circuit, in configuration order, for the dashboard. */
  upstreamHealth(): { prefix: string; url: string; offline: boolean; circuit: ReturnType<CircuitBreaker['health']> }[] {
    return this.upstreams.map((u) => ({ prefix: u.config.prefix, url: u.config.url, offline: u.config.offline, circuit: u.circuit.health() }));
  }

  /** The local repository name a request addresses: with containerd's ?ns=, under that upstream's prefix. */
  localName(repo: string, ns: string | undefined): string {
    if (!ns) return repo;
    const route = selectUpstream(this.configs, repo, ns);
    if (!route || route.upstream.prefix === '') return repo;
    return `${route.upstream.prefix}/${repo}`;
  }

  /**
   * The upstream serving a local repository. With containerd's ?ns= naming a registry no upstream
   * points at, none: a catch-all upstream must not answer for another registry's images.
   */
  route(repo: string, ns?: string): ProxyRoute | undefined {
    if (ns && !this.configs.some((u) => selectUpstream([u], repo, ns))) return undefined;
    // Asked on every request to a repository, and the answer only depends on the configuration.
    if (this.routes.has(repo)) return this.routes.get(repo);
    const found = selectUpstream(this.configs, repo);
    const route = found && { upstream: this.byConfig.get(found.upstream)!, remoteRepo: found.remoteRepo };
    if (this.routes.size >= MAX_REMEMBERED_ROUTES) this.routes.clear();
    this.routes.set(repo, route);
    return route;
  }

  // ---- manifests -----------------------------------------------------------------------------

  /** By digest: cached forever once fetched and verified. */
  async manifestByDigest(route: ProxyRoute, repo: string, digest: string, head: boolean): Promise<ManifestAnswer> {
    const local = this.manifests.get(repo, digest) ?? (await this.localManifest(repo, digest));
    if (local) return this.answered(route, local, 'hit');
    this.checkNotFound(route, repo, digest, 'MANIFEST_UNKNOWN');
    if (head) return this.headManifest(route, repo, digest);
    const record = await this.manifestFlights.do(`${repo}@${digest}`, () => this.fetchManifest(route, repo, digest));
    return this.answered(route, record, 'miss');
  }

  /** By tag: a pushed tag is served as is; a cached one while younger than tagTTL, then revalidated. */
  async manifestByTag(route: ProxyRoute, repo: string, tag: string, head: boolean): Promise<ManifestAnswer> {
    // The hot path: tag and manifest remembered in memory answer without awaiting the store.
    const known = this.manifests.getTag(repo, tag) ?? (await this.knownTag(repo, tag));
    const cached = known && (this.manifests.get(repo, known.digest) ?? (await this.localManifest(repo, known.digest)));
    if (known && cached && (!known.cached || route.upstream.config.offline || Date.now() - known.updatedAt < route.upstream.config.tagTTL)) {
      return this.answered(route, cached, 'hit');
    }
    if (!cached) this.checkNotFound(route, repo, tag, 'MANIFEST_UNKNOWN');
    try {
      if (cached) {
        const current = await this.call(route, repo, tag, (c) => c.getManifest(route.remoteRepo, tag, { method: 'HEAD' }));
        if (current.digest === known.digest) {
          const generation = this.manifests.generation(repo);
          await this.meta.touchTag(repo, tag);
          this.manifests.setTag(repo, tag, { ...known, updatedAt: Date.now() }, generation);
          return this.answered(route, cached, 'hit');
        }
      } else if (head) {
        return await this.headManifest(route, repo, tag);
      }
      const record = await this.manifestFlights.do(`${repo}:${tag}`, () => this.fetchManifest(route, repo, tag));
      return this.answered(route, record, 'miss');
    } catch (e) {
      if (cached && isUpstreamDown(e)) return this.servedStale(route, repo, tag, known, cached);
      if (cached && e instanceof UpstreamError && e.kind === 'notfound') {
        await this.meta.deleteTag(repo, tag);
        this.manifests.invalidate(repo);
      }
      throw this.clientError(e, 'MANIFEST_UNKNOWN');
    }
  }

  /** The tag as stored here (pushed, or cached with the time the upstream last confirmed it). */
  private async knownTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const remembered = this.manifests.getTag(repo, tag);
    if (remembered) return remembered;
    const generation = this.manifests.generation(repo);
    const found = await this.meta.getTag(repo, tag);
    if (found) this.manifests.setTag(repo, tag, found, generation);
    return found;
  }

  /** A manifest stored here, by digest: content-addressed, so kept in memory once read. */
  private async localManifest(repo: string, digest: string): Promise<ManifestRecord | undefined> {
    const remembered = this.manifests.get(repo, digest);
    if (remembered) return remembered;
    const generation = this.manifests.generation(repo);
    const found = await this.meta.getManifest(repo, digest);
    if (found) this.manifests.set(repo, digest, found, generation);
    return found;
  }

  private servedStale(route: ProxyRoute, repo: string, tag: string, known: TagRecord, cached: ManifestRecord): ManifestAnswer {
    if (!this.staleLogged.has(repo)) {
      this.staleLogged.add(repo);
      this.log.warn(
        { repo, tag, upstream: route.upstream.config.url, cachedAt: new Date(known.updatedAt).toISOString() },
        'upstream unavailable: serving cached tags of this repository stale',
      );
    }
    return this.answered(route, cached, 'stale');
  }

  private async headManifest(route: ProxyRoute, repo: string, reference: string): Promise<ManifestAnswer> {
    try {
      const found = await this.call(route, repo, reference, (c) => c.getManifest(route.remoteRepo, reference, { method: 'HEAD' }));
      this.stats.outcome(route.upstream.config.prefix, 'miss');
      return { digest: found.digest, mediaType: found.mediaType, size: found.size, outcome: 'miss' };
    } catch (e) {
      throw this.clientError(e, 'MANIFEST_UNKNOWN');
    }
  }

  private async fetchManifest(route: ProxyRoute, repo: string, reference: string): Promise<ManifestRecord> {
    let found: ManifestResult;
    try {
      found = await this.call(route, repo, reference, (c) => c.getManifest(route.remoteRepo, reference));
    } catch (e) {
      throw this.clientError(e, 'MANIFEST_UNKNOWN');
    }
    const body = found.body!;
    const { record, blobRefs, manifestRefs } = this.describeManifest(found, body);
    // Cached content is stored exactly as the upstream sent it. Its blobs and children arrive
    // lazily when clients ask, so unlike a push nothing else has to be present yet; what it
    // references is recorded all the same, for eviction and garbage collection to keep images whole.
    const tag = reference.includes(':') ? undefined : reference;
    await this.meta.putManifest(repo, { ...record, blobRefs, manifestRefs, cached: true }, tag);
    // The tag may have moved: what is remembered of this repository must be read afresh.
    if (tag !== undefined) this.manifests.invalidate(repo);
    return record;
  }

  private describeManifest(found: ManifestResult, body: Buffer): { record: ManifestRecord; blobRefs: string[]; manifestRefs: string[] } {
    try {
      const parsed = parseManifest(body, found.mediaType);
      return { record: manifestRecord(found.digest, body, parsed), blobRefs: parsed.blobRefs, manifestRefs: parsed.manifestRefs };
    } catch {
      // Whatever the upstream serves is passed on unchanged, even a type airlock would not accept on push.
      const record = { digest: found.digest, mediaType: found.mediaType, size: body.length, content: body, subject: null, artifactType: null, annotations: null };
      return { record, blobRefs: [], manifestRefs: [] };
    }
  }

  private answered(route: ProxyRoute, m: ManifestRecord, outcome: CacheOutcome): ManifestAnswer {
    this.stats.outcome(route.upstream.config.prefix, outcome);
    return { digest: m.digest, mediaType: m.mediaType, size: m.size, content: m.content, outcome };
  }

  // ---- blobs ---------------------------------------------------------------------------------

  async blob(route: ProxyRoute, repo: string, digest: string, algorithm: DigestAlgorithm, head: boolean): Promise<BlobAnswer> {
    const prefix = route.upstream.config.prefix;
    const linked = await this.meta.linkedBlobSize(repo, digest);
    if (linked !== undefined) {
      this.stats.outcome(prefix, 'hit');
      return { size: linked, outcome: 'hit', open: (range) => this.openCached(digest, range ?? { start: 0, end: linked - 1 }) };
    }
    this.checkNotFound(route, repo, digest, 'BLOB_UNKNOWN');
    try {
      const elsewhere = await this.meta.blobSize(digest);
      if (head || elsewhere !== undefined) {
        // Either the client only asks about it, or the bytes are already here under another
        // repository: the upstream only has to confirm that this repository has the blob.
        const { size } = await this.call(route, repo, digest, (c) => c.headBlob(route.remoteRepo, digest));
        if (elsewhere !== undefined) {
          const stillHere = await this.blobLocks.run(digest, async () => {
            const size = await this.meta.blobSize(digest);
            if (size !== undefined) await this.meta.linkBlob(repo, digest, size, true);
            return size !== undefined;
          });
          if (!stillHere) return this.blob(route, repo, digest, algorithm, head);
          this.stats.outcome(prefix, 'hit');
          return { size: elsewhere, outcome: 'hit', open: (range) => this.openCached(digest, range ?? { start: 0, end: elsewhere - 1 }) };
        }
        this.stats.outcome(prefix, 'miss');
        return { size, outcome: 'miss' };
      }
      const fill = await this.fill(route, repo, digest, algorithm);
      // Another replica stored it meanwhile: served from the shared store like any blob stored elsewhere.
      if (!fill) return this.blob(route, repo, digest, algorithm, head);
      // Joining a transfer whose bytes are all here and verified (only being made durable) is
      // served locally: a hit, like the request right after it will be.
      const outcome = fill.verified ? 'hit' : 'miss';
      this.stats.outcome(prefix, outcome);
      return { size: fill.size, outcome, open: (range) => fill.reader(range) };
    } catch (e) {
      throw this.clientError(e, 'BLOB_UNKNOWN');
    }
  }

  private async openCached(digest: string, range?: { start: number; end: number }): Promise<Readable> {
    const stream = await this.blobs.open(digest, range);
    if (!stream) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is missing from storage; run airlock fsck`, { digest });
    return stream;
  }

  /**
   * Joins the transfer of this blob already under way, or starts one. With replicas, only the one
   * holding the blob's fill lease transfers it; undefined when another replica stored it instead.
   */
  private fill(route: ProxyRoute, repo: string, digest: string, algorithm: DigestAlgorithm): Promise<BlobFill | undefined> {
    const key = `${route.upstream.config.url}\0${route.remoteRepo}\0${digest}`;
    let pending = this.fills.get(key);
    if (!pending) {
      const prefix = route.upstream.config.prefix;
      const fetch = (from: number) => this.call(route, repo, digest, (c) => c.getBlob(route.remoteRepo, digest, from));
      let reserved = 0;
      let lease: Lease | undefined;
      pending = this.fillLease(digest).then(async (held) => {
        if (held === 'stored elsewhere') return undefined;
        lease = held;
        const response = await fetch(0);
        reserved = this.reserveSpace(digest, response.size, route.upstream.config.url, () => response.abort());
        return BlobFill.start(
          this.blobs,
          digest,
          algorithm,
          response,
          fetch,
          async (size, transferred) => {
            try {
              await this.meta.linkBlob(repo, digest, size, true);
            } catch (e) {
              // (A full disk fails the metadata write too.) A file nothing records is not left behind.
              const recorded = await this.meta.blobSize(digest).catch(() => undefined);
              if (recorded === undefined) void this.blobs.remove(digest).catch(() => undefined);
              throw e;
            }
            this.stats.bytesFromUpstream(prefix, transferred);
          },
          this.fillMemory,
        );
      });
      const release = () => {
        this.reservedBytes -= reserved;
        reserved = 0;
        // The blob is recorded (or the transfer failed): waiters on other replicas look now.
        lease?.release().catch((err: Error) => this.log.warn({ digest, err: err.message }, 'fill lease not released; it expires on its own'));
        lease = undefined;
      };
      pending.then((fill) => (fill ? fill.settled.then(release) : release()), release);
      this.fills.set(key, pending);
      pending.then(
        async (fill) => {
          if (fill) await fill.settled;
          this.fills.delete(key);
          if (fill?.committed) this.onFilled?.(digest);
          if (fill?.failure) {
            this.stats.upstreamError(prefix, fill.failure.message);
            this.log.warn({ digest, repo, upstream: route.upstream.config.url, err: fill.failure.message }, 'blob transfer from upstream failed; nothing was cached');
          }
        },
        () => this.fills.delete(key),
      );
    }
    return pending;
  }

  /**
   * Without replicas, nothing to wait for. With them: the blob's fill lease, or — when another
   * replica holds it — waiting until that replica stored the blob (or gave up or died: its lease
   * then expires, and this replica competes for it again).
   */
  private async fillLease(digest: string): Promise<Lease | undefined | 'stored elsewhere'> {
    const leases = this.leases;
    if (!leases) return undefined;
    const stored = async () => (await this.meta.blobSize(digest)) !== undefined;
    const deadline = Date.now() + FILL_WAIT_MS;
    for (;;) {
      const lease = await leases.tryAcquire(digest, FILL_LEASE_TTL_MS);
      if (lease) {
        // Stored between this request's look and the lease (its filler released just then).
        if (!(await stored())) return lease;
        await lease.release();
        return 'stored elsewhere';
      }
      const outcome = await leases.waitFor(digest, { timeoutMs: Math.max(deadline - Date.now(), 0), isDone: stored });
      if (outcome === 'done') return 'stored elsewhere';
      if (outcome === 'timeout') {
        throw new RegistryError('UNAVAILABLE', `another replica has been fetching blob ${digest} from the upstream for over ${FILL_WAIT_MS / 60_000} minutes; retry later`, { digest }, 503).withReason('blob being fetched by another replica');
      }
    }
  }

  // ---- tags ----------------------------------------------------------------------------------

  /** Upstream tags merged with the local ones; the local ones alone when the upstream cannot answer. */
  async tags(route: ProxyRoute, repo: string, localTags: () => Promise<string[]>): Promise<string[]> {
    const local = await localTags();
    try {
      const remote = await this.call(route, repo, 'tags/list', (c) => c.listTags(route.remoteRepo));
      return [...new Set([...remote, ...local])].sort();
    } catch (e) {
      if (local.length > 0 || (await this.meta.repositoryExists(repo))) {
        if (!(e instanceof UpstreamError && e.kind === 'notfound')) {
          this.log.warn({ repo, err: (e as Error).message }, 'listing cached tags only: upstream did not answer');
        }
        return local;
      }
      throw this.clientError(e, 'NAME_UNKNOWN');
    }
  }

  // ---- upstream calls ------------------------------------------------------------------------

  /** One upstream call: offline and circuit checks, error counting, 404 memory. */
  private async call<T>(route: ProxyRoute, repo: string, reference: string, fn: (client: UpstreamClient) => Promise<T>): Promise<T> {
    const { config, circuit, client } = route.upstream;
    if (config.offline) {
      throw new UpstreamError('unreachable', `upstream ${config.url} is configured offline`, {
        upstream: config.url,
        repository: route.remoteRepo,
        brief: 'configured offline',
      });
    }
    // A renewed CA or pull secret deserves a try at once, even if the old one made the upstream be skipped.
    if (client.checkFiles()) circuit.reset();
    try {
      return await circuit.run(() => fn(client));
    } catch (e) {
      if (e instanceof UpstreamError && e.kind === 'notfound') {
        this.notFound.remember(config.url, repo, reference);
      } else {
        this.stats.upstreamError(config.prefix, (e as Error).message);
      }
      throw e;
    }
  }

  private checkNotFound(route: ProxyRoute, repo: string, reference: string, code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN'): void {
    if (this.notFound.has(route.upstream.config.url, repo, reference)) {
      throw new RegistryError(code, `${reference} was not found at upstream ${route.upstream.config.url} (${route.remoteRepo}) moments ago`, {
        upstream: route.upstream.config.url,
      });
    }
  }

  /** Bytes that fills in progress are about to write: not free any more, whatever statfs says. */
  private reservedBytes = 0;

  /**
   * Refuses a fill that cannot fit on the storage volume, before the client is answered (a clear
   * 507 rather than a response cut short when the disk runs out); reserves its size otherwise.
   */
  private reserveSpace(digest: string, size: number | undefined, upstream: string, abort: () => void): number {
    if (size === undefined) return 0;
    const free = this.blobs.freeBytes() - this.reservedBytes;
    if (free < size) {
      abort();
      this.log.warn({ digest, size, free, upstream }, 'not caching a blob: the storage volume is too full');
      throw new RegistryError(
        'STORAGE_FULL',
        `the registry storage is full: blob ${digest} (${size} bytes) from ${upstream} cannot be cached, ${Math.max(free, 0)} bytes are free; an operator must free space`,
        { digest, size, free: Math.max(free, 0) },
      );
    }
    this.reservedBytes += size;
    return size;
  }

  /** True while an upstream transfer of this blob is being written. */
  isFilling(digest: string): boolean {
    for (const key of this.fills.keys()) if (key.endsWith(`\0${digest}`)) return true;
    return false;
  }

  /** Forgets a remembered 404 after a local push made the content exist. */
  forgetNotFound(repo: string, reference: string): void {
    const route = this.route(repo);
    if (route) this.notFound.forget(route.upstream.config.url, repo, reference);
  }

  /** Turns an upstream failure into what the client is told. */
  private clientError(e: unknown, notFoundCode: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN'): unknown {
    if (!(e instanceof UpstreamError)) return e;
    return this.toRegistryError(e, notFoundCode).withReason(upstreamReason(e));
  }

  private toRegistryError(e: UpstreamError, notFoundCode: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN'): RegistryError {
    const detail = { upstream: e.upstream, repository: e.repository };
    switch (e.kind) {
      case 'notfound':
        return new RegistryError(notFoundCode, e.message, detail);
      case 'ratelimited': {
        const err = new RegistryError('TOOMANYREQUESTS', e.message, detail);
        return e.retryAfterMs ? err.withHeaders({ 'Retry-After': String(Math.ceil(e.retryAfterMs / 1000)) }) : err;
      }
      case 'unreachable':
      case 'timeout':
      case 'server':
        return new RegistryError('UNAVAILABLE', `not cached, and the upstream cannot be reached: ${e.message}`, detail);
      default:
        return new RegistryError('UPSTREAM_ERROR', e.message, detail);
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.fills.values()].map((p) => p.then((f) => f?.settled)));
    await Promise.allSettled(this.upstreams.map((u) => u.client.close()));
  }
}
