import { Counter, Gauge, Registry as PromRegistry } from 'prom-client';
import type { UpstreamConfig } from './config/schema.js';
import type { GcRunRecord, MetadataStore } from './storage/metadata.js';

const CACHE_KEYS = ['hits', 'misses', 'staleServed', 'bytesFromCache', 'bytesFromUpstream', 'evictedBlobs', 'evictedBytes', 'evictedManifests'] as const;
const UPSTREAM_KEYS = ['hits', 'misses', 'errors', 'bytesFromUpstream'] as const;
type CacheKey = (typeof CACHE_KEYS)[number];
type UpstreamKey = (typeof UPSTREAM_KEYS)[number];

/** How a proxied request was served; also sent to clients in the X-Cache header. */
export type CacheOutcome = 'hit' | 'miss' | 'stale';

/**
 * Cache statistics. Counted in memory on the hot path and written to the metadata store in
 * batches (every few seconds and at shutdown), so counts survive restarts without a database
 * write per request.
 */
export class Stats {
  private readonly totals: Record<string, number>;
  private pending: Record<string, number> = {};
  private readonly lastErrors: Map<string, string>;
  private pendingErrors = new Map<string, string>();
  private readonly keysByPrefix = new Map<string, { hits: string; misses: string }>();
  private readonly timer: NodeJS.Timeout;
  /** The last garbage collection that removed (dry runs are not reported). */
  private lastGc: GcRunRecord | undefined;

  /** Statistics continuing from what the store recorded (counters, upstream errors, last GC). */
  /**
   * With `shared`, replicas count into one database: every flush also reads back the cluster-wide
   * figures, and a snapshot flushes and reads them first, so every replica reports the same.
   */
  static async open(meta: MetadataStore, upstreams: UpstreamConfig[], flushEveryMs = 5000, options: { shared?: boolean } = {}): Promise<Stats> {
    const saved = { totals: await meta.readCounters(), lastErrors: await meta.readUpstreamErrors(), lastGc: await meta.lastGcRun() };
    return new Stats(meta, upstreams, saved, flushEveryMs, options.shared ?? false);
  }

  private constructor(
    private readonly meta: MetadataStore,
    private readonly upstreams: UpstreamConfig[],
    saved: { totals: Record<string, number>; lastErrors: Map<string, string>; lastGc: GcRunRecord | undefined },
    flushEveryMs: number,
    private readonly shared: boolean,
  ) {
    this.totals = saved.totals;
    this.lastErrors = saved.lastErrors;
    this.lastGc = saved.lastGc;
    this.timer = setInterval(() => void (shared ? this.flush().then(() => this.readShared()) : this.flush()).catch(() => undefined), flushEveryMs);
    this.timer.unref();
  }

  /** The cluster-wide figures, plus what this replica counted since it last flushed. */
  private async readShared(): Promise<void> {
    const [counters, errors, lastGc] = await Promise.all([this.meta.readCounters(), this.meta.readUpstreamErrors(), this.meta.lastGcRun()]);
    for (const name of Object.keys(this.totals)) delete this.totals[name];
    Object.assign(this.totals, counters);
    for (const [name, value] of Object.entries(this.pending)) this.totals[name] = (this.totals[name] ?? 0) + value;
    for (const [prefix, note] of errors) if (!this.pendingErrors.has(prefix)) this.lastErrors.set(prefix, note);
    if (lastGc && (!this.lastGc || lastGc.startedAt >= this.lastGc.startedAt)) this.lastGc = lastGc;
  }

  private add(name: string, value = 1): void {
    if (!value) return;
    this.totals[name] = (this.totals[name] ?? 0) + value;
    this.pending[name] = (this.pending[name] ?? 0) + value;
  }

  private get(name: string): number {
    return this.totals[name] ?? 0;
  }

  /** A proxied request answered from local storage (hit/stale) or fetched upstream (miss). */
  outcome(prefix: string, outcome: CacheOutcome): void {
    // Stale answers come from local storage, so they are hits too (counted apart as well).
    const miss = outcome === 'miss';
    this.add(miss ? 'cache.misses' : 'cache.hits');
    const keys = this.upstreamKeys(prefix);
    this.add(miss ? keys.misses : keys.hits);
    if (outcome === 'stale') this.add('cache.staleServed');
  }

  /** Counter names of an upstream, built once: this runs for every proxied request. */
  private upstreamKeys(prefix: string): { hits: string; misses: string } {
    let keys = this.keysByPrefix.get(prefix);
    if (!keys) {
      keys = { hits: `upstream.${prefix}.hits`, misses: `upstream.${prefix}.misses` };
      this.keysByPrefix.set(prefix, keys);
    }
    return keys;
  }

  bytesFromCache(bytes: number): void {
    this.add('cache.bytesFromCache', bytes);
  }

  bytesFromUpstream(prefix: string, bytes: number): void {
    this.add('cache.bytesFromUpstream', bytes);
    this.add(`upstream.${prefix}.bytesFromUpstream`, bytes);
  }

  /** Cached blobs (and the cached manifests that went with them) removed to stay within budget. */
  evicted(blobs: number, bytes: number, manifests = 0): void {
    this.add('cache.evictedBlobs', blobs);
    this.add('cache.evictedBytes', bytes);
    this.add('cache.evictedManifests', manifests);
  }

  /** A finished garbage collection (already recorded in the store by the collector). */
  collected(run: GcRunRecord): void {
    if (!run.dryRun) this.lastGc = run;
  }

  upstreamError(prefix: string, message: string): void {
    this.add(`upstream.${prefix}.errors`);
    const note = `${new Date().toISOString()} ${message}`;
    this.lastErrors.set(prefix, note);
    this.pendingErrors.set(prefix, note);
  }

  lastGcRun(): GcRunRecord | undefined {
    return this.lastGc;
  }

  /** Writes counted-but-unsaved deltas; cheap when nothing happened. */
  async flush(): Promise<void> {
    // What is pending is taken before the first await: a flush running meanwhile takes only what
    // came after, and the counters are added (not set), so none is written twice or lost.
    const deltas = this.pending;
    this.pending = {};
    if (this.pendingErrors.size > 0) {
      const errors = this.pendingErrors;
      this.pendingErrors = new Map();
      try {
        await this.meta.saveUpstreamErrors(errors);
      } catch {
        for (const [k, v] of errors) if (!this.pendingErrors.has(k)) this.pendingErrors.set(k, v);
      }
    }
    if (Object.keys(deltas).length === 0) return;
    try {
      await this.meta.addCounters(deltas);
    } catch {
      // Keep the deltas for the next attempt rather than losing counts.
      for (const [k, v] of Object.entries(deltas)) this.pending[k] = (this.pending[k] ?? 0) + v;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  /** The counters alone, from memory (the storage totals cost a few COUNT queries). */
  counters() {
    const cache = Object.fromEntries(CACHE_KEYS.map((k) => [k, this.get(`cache.${k}`)])) as Record<CacheKey, number>;
    const lookups = cache.hits + cache.misses;
    return {
      cache: { ...cache, hitRatio: lookups ? cache.hits / lookups : 0 },
      upstreams: this.upstreams.map((u) => ({
        prefix: u.prefix,
        url: u.url,
        ...(Object.fromEntries(UPSTREAM_KEYS.map((k) => [k, this.get(`upstream.${u.prefix}.${k}`)])) as Record<UpstreamKey, number>),
        lastError: this.lastErrors.get(u.prefix) ?? null,
      })),
    };
  }

  /** The /api/v1/stats document. */
  async snapshot() {
    if (this.shared) {
      await this.flush();
      await this.readShared();
    }
    return {
      ...this.counters(),
      storage: await this.meta.totals(),
      gc: this.lastGc
        ? {
            lastRunAt: new Date(this.lastGc.startedAt).toISOString(),
            durationMs: this.lastGc.durationMs,
            removedManifests: this.lastGc.removedManifests,
            removedBlobs: this.lastGc.removedBlobs,
            freedBytes: this.lastGc.freedBytes,
            forgottenRepositories: this.lastGc.forgottenRepositories,
          }
        : null,
    };
  }
}

/** Prometheus exposition of the same figures, computed at scrape time from the snapshot. */
export function createPrometheusRegistry(stats: Stats): PromRegistry {
  const registry = new PromRegistry();
  // One snapshot serves all metrics of a scrape (it runs a few COUNT queries).
  let snap: ReturnType<Stats['snapshot']> | undefined;
  let takenAt = 0;
  const current = () => {
    if (!snap || Date.now() - takenAt > 1000) {
      snap = stats.snapshot();
      takenAt = Date.now();
    }
    return snap;
  };

  type Snapshot = Awaited<ReturnType<Stats['snapshot']>>;
  const counter = (name: string, help: string, read: (s: Snapshot) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      async collect() {
        const value = read(await current());
        this.reset();
        this.inc(value);
      },
    });
  counter('airlock_cache_hits_total', 'Proxied requests answered from local storage', (s) => s.cache.hits);
  counter('airlock_cache_misses_total', 'Proxied requests fetched from an upstream', (s) => s.cache.misses);
  counter('airlock_cache_stale_served_total', 'Cached content served because the upstream was unreachable', (s) => s.cache.staleServed);
  counter('airlock_cache_bytes_from_cache_total', 'Blob bytes of proxied repositories served from disk', (s) => s.cache.bytesFromCache);
  counter('airlock_cache_bytes_from_upstream_total', 'Blob bytes fetched from upstreams', (s) => s.cache.bytesFromUpstream);
  counter('airlock_cache_evicted_blobs_total', 'Cached blobs removed to stay within cache.maxBytes', (s) => s.cache.evictedBlobs);
  counter('airlock_cache_evicted_bytes_total', 'Bytes of cached blobs removed to stay within cache.maxBytes', (s) => s.cache.evictedBytes);
  counter('airlock_cache_evicted_manifests_total', 'Cached manifests removed with their blobs by cache eviction', (s) => s.cache.evictedManifests);

  const perUpstream = (name: string, help: string, key: UpstreamKey) =>
    new Counter({
      name,
      help,
      labelNames: ['prefix', 'url'],
      registers: [registry],
      async collect() {
        const { upstreams } = await current();
        this.reset();
        for (const u of upstreams) this.inc({ prefix: u.prefix, url: u.url }, u[key]);
      },
    });
  perUpstream('airlock_upstream_hits_total', 'Cache hits per upstream', 'hits');
  perUpstream('airlock_upstream_misses_total', 'Cache misses per upstream', 'misses');
  perUpstream('airlock_upstream_errors_total', 'Failed upstream requests', 'errors');
  perUpstream('airlock_upstream_bytes_total', 'Bytes fetched per upstream', 'bytesFromUpstream');

  const gauge = (name: string, help: string, read: (s: Snapshot) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        this.set(read(await current()));
      },
    });
  gauge('airlock_storage_repositories', 'Repositories holding at least one manifest', (s) => s.storage.repositories);
  gauge('airlock_storage_manifests', 'Distinct manifests stored', (s) => s.storage.manifests);
  gauge('airlock_storage_blobs', 'Blobs stored', (s) => s.storage.blobs);
  gauge('airlock_storage_bytes', 'Bytes of blobs stored', (s) => s.storage.bytes);
  // The last garbage collection (0 until one has run).
  const lastGc = stats.lastGcRun.bind(stats);
  gauge('airlock_gc_last_run_timestamp_seconds', 'When the last garbage collection started', () => (lastGc()?.startedAt ?? 0) / 1000);
  gauge('airlock_gc_last_duration_seconds', 'How long the last garbage collection took', () => (lastGc()?.durationMs ?? 0) / 1000);
  gauge('airlock_gc_last_removed_manifests', 'Manifests the last garbage collection removed', () => lastGc()?.removedManifests ?? 0);
  gauge('airlock_gc_last_removed_blobs', 'Blobs the last garbage collection removed', () => lastGc()?.removedBlobs ?? 0);
  gauge('airlock_gc_last_freed_bytes', 'Bytes the last garbage collection freed', () => lastGc()?.freedBytes ?? 0);
  gauge('airlock_gc_last_forgotten_repositories', 'Emptied repositories the last garbage collection stopped listing', () => lastGc()?.forgottenRepositories ?? 0);
  return registry;
}
