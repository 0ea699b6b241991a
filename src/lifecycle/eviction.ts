import type { Logger } from '../log.js';
import type { Registry } from '../registry/registry.js';
import type { MetadataStore } from '../storage/metadata.js';
import type { AccessTracker } from './access-tracker.js';

/** Evict down to this share of the budget, so one eviction buys room for a while. */
const LOW_WATER = 0.9;
const BATCH = 256;

/** A limit on cached bytes: the whole cache (`cache.maxBytes`) or one upstream's share (`upstreams[].maxBytes`). */
export interface EvictionBudget {
  /** The upstream's prefix; undefined for the whole cache. */
  prefix?: string;
  maxBytes: number;
}

export interface EvictionResult {
  blobs: number;
  bytes: number;
  manifests: number;
  /** Bytes of cached-only content left (the whole cache). */
  remaining: number;
}

/**
 * Keeps content fetched from upstreams within its budgets by removing the least recently served
 * cached images: a cached blob leaves with the cached manifests and tags that reference it and
 * their other cached blobs, unless something pushed needs them. Content pushed or imported here is
 * never evicted, whatever the budget: a blob stays as long as any repository holds it through a
 * push or mount, and a cached manifest stays while a pushed index lists it. Evicted content is
 * fetched again from its upstream when next asked for.
 */
export class CacheEvictor {
  private running: Promise<EvictionResult> | undefined;

  constructor(
    private readonly budgets: EvictionBudget[],
    private readonly meta: MetadataStore,
    private readonly registry: Registry,
    private readonly tracker: AccessTracker,
    private readonly log: Logger,
    private readonly onEvicted: (blobs: number, bytes: number, manifests: number) => void = () => undefined,
    /** The prefix of the upstream serving a repository (longest whole-component prefix). */
    private readonly upstreamOf: (repo: string) => string | undefined = () => undefined,
  ) {}

  /** One pass; concurrent callers share the pass under way. */
  run(): Promise<EvictionResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<EvictionResult> {
    // Written before the pass starts: what was served until now then counts against eviction.
    const flushedAt = await this.tracker.flush();
    // Blobs served before this instant may go; those served since are still pending in the tracker.
    // It lies after the flush's stamp even within the same millisecond, or what was just written
    // down would look served during the pass and be kept.
    const startedAt = Math.max(Date.now(), (flushedAt ?? 0) + 1);
    const result: EvictionResult = { blobs: 0, bytes: 0, manifests: 0, remaining: 0 };
    for (const budget of this.budgets) await this.withinBudget(budget, startedAt, result);
    result.remaining = await this.meta.cachedOnlyBytes();
    if (result.blobs > 0) this.onEvicted(result.blobs, result.bytes, result.manifests);
    return result;
  }

  private async usage(budget: EvictionBudget): Promise<number> {
    if (budget.prefix === undefined) return this.meta.cachedOnlyBytes();
    let bytes = 0;
    for (const { repo, bytes: b } of await this.meta.cachedBytesByRepo()) if (this.upstreamOf(repo) === budget.prefix) bytes += b;
    return bytes;
  }

  /** The next least recently served candidates; `exhausted` when the store has no more. */
  private async candidates(budget: EvictionBudget, skipped: Set<string>): Promise<{ items: { digest: string }[]; exhausted: boolean }> {
    const limit = BATCH + skipped.size;
    if (budget.prefix === undefined) {
      const rows = await this.meta.evictionCandidates(limit);
      return { items: rows.filter((c) => !skipped.has(c.digest)), exhausted: rows.length < limit };
    }
    const rows = await this.meta.evictionCandidatesUnder(budget.prefix, limit);
    const items: { digest: string }[] = [];
    for (const c of rows) {
      if (skipped.has(c.digest)) continue;
      // Under the prefix but served by an upstream with a longer one: not this budget's.
      if (this.upstreamOf(c.repo) !== budget.prefix) skipped.add(c.digest);
      else items.push(c);
    }
    return { items, exhausted: rows.length < limit };
  }

  private async withinBudget(budget: EvictionBudget, startedAt: number, result: EvictionResult): Promise<void> {
    let remaining = await this.usage(budget);
    if (remaining <= budget.maxBytes) return;
    const before = { blobs: result.blobs, bytes: result.bytes, manifests: result.manifests };
    const target = Math.floor(budget.maxBytes * LOW_WATER);
    const skipped = new Set<string>();
    while (remaining > target) {
      const { items, exhausted } = await this.candidates(budget, skipped);
      if (items.length === 0) {
        if (exhausted) break;
        continue;
      }
      for (const { digest } of items) {
        if (remaining <= target) break;
        // Served a moment ago (not yet written down) or being filled: keep it this time.
        const evicted = this.tracker.isPending(digest) ? undefined : await this.registry.evictCachedImage(digest, startedAt);
        if (!evicted) {
          skipped.add(digest);
          continue;
        }
        const bytes = evicted.blobs.reduce((sum, b) => sum + b.size, 0);
        remaining -= bytes;
        result.blobs += evicted.blobs.length;
        result.bytes += bytes;
        result.manifests += evicted.manifests.length;
      }
    }
    const label = budget.prefix === undefined ? 'cache.maxBytes' : `upstream ${budget.prefix || '""'} maxBytes`;
    if (result.blobs > before.blobs) {
      this.log.info(
        {
          budget: label,
          evictedBlobs: result.blobs - before.blobs,
          evictedBytes: result.bytes - before.bytes,
          evictedManifests: result.manifests - before.manifests,
          cachedBytes: remaining,
          maxBytes: budget.maxBytes,
        },
        'cache eviction',
      );
    } else {
      this.log.warn({ budget: label, cachedBytes: remaining, maxBytes: budget.maxBytes }, 'cache is over its budget but nothing could be evicted yet');
    }
  }
}
