import type { Logger } from '../log.js';
import type { Registry } from '../registry/registry.js';
import type { MetadataStore } from '../storage/metadata.js';
import type { AccessTracker } from './access-tracker.js';

/** Evict down to this share of the budget, so one eviction buys room for a while. */
const LOW_WATER = 0.9;
const BATCH = 256;

export interface EvictionResult {
  blobs: number;
  bytes: number;
  /** Bytes of cached-only content left. */
  remaining: number;
}

/**
 * Keeps content fetched from upstreams within `cache.maxBytes` by removing the least recently
 * served cached blobs. Content pushed here is never evicted, whatever the budget: a blob stays as
 * long as any repository holds it through a push or mount. An evicted blob is fetched again from
 * its upstream when next asked for.
 */
export class CacheEvictor {
  private running: Promise<EvictionResult> | undefined;

  constructor(
    private readonly maxBytes: number,
    private readonly meta: MetadataStore,
    private readonly registry: Registry,
    private readonly tracker: AccessTracker,
    private readonly log: Logger,
    private readonly onEvicted: (blobs: number, bytes: number) => void = () => undefined,
  ) {}

  /** One pass; concurrent callers share the pass under way. */
  run(): Promise<EvictionResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<EvictionResult> {
    this.tracker.flush();
    const startedAt = Date.now();
    let remaining = this.meta.cachedOnlyBytes();
    const result = { blobs: 0, bytes: 0, remaining };
    if (remaining <= this.maxBytes) return result;
    const target = Math.floor(this.maxBytes * LOW_WATER);
    const skipped = new Set<string>();
    while (remaining > target) {
      const candidates = this.meta.evictionCandidates(BATCH + skipped.size).filter((c) => !skipped.has(c.digest));
      if (candidates.length === 0) break;
      for (const { digest, size } of candidates) {
        if (remaining <= target) break;
        // Served a moment ago (not yet written down) or being filled: keep it this time.
        if (this.tracker.isPending(digest) || !(await this.registry.evictCachedBlob(digest, startedAt))) {
          skipped.add(digest);
          continue;
        }
        remaining -= size;
        result.blobs++;
        result.bytes += size;
      }
    }
    result.remaining = remaining;
    if (result.blobs > 0) {
      this.onEvicted(result.blobs, result.bytes);
      this.log.info({ evictedBlobs: result.blobs, evictedBytes: result.bytes, cachedBytes: remaining, maxBytes: this.maxBytes }, 'cache eviction');
    } else {
      this.log.warn({ cachedBytes: remaining, maxBytes: this.maxBytes }, 'cache is over its budget but nothing could be evicted yet');
    }
    return result;
  }
}
