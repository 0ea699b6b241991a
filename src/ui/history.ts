import type { Stats } from '../metrics.js';
import type { HistoryPoint, MetadataStore } from '../storage/metadata.js';

export const HISTORY_SPAN_MS = 24 * 60 * 60_000;
export const HISTORY_STEP_MS = 60_000;

/**
 * The rolling history behind the Overview chart: the cumulative cache counters, sampled once a
 * minute into the database and kept for a day, so the chart survives restarts. Rates per minute are
 * the differences between neighbouring points.
 */
export class HistorySampler {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly meta: MetadataStore,
    private readonly stats: Stats,
    private readonly stepMs = HISTORY_STEP_MS,
    private readonly now: () => number = Date.now,
  ) {
    this.sampling = this.sample();
    this.timer = setInterval(() => {
      this.sampling = this.sample();
    }, stepMs);
    this.timer.unref();
  }

  /** The figures now, as a point (not stored). */
  /** The sample being written, waited for at close. */
  private sampling: Promise<void>;

  async current(): Promise<HistoryPoint> {
    const { cache } = this.stats.counters();
    return {
      at: this.now(),
      hits: cache.hits,
      misses: cache.misses,
      staleServed: cache.staleServed,
      bytesFromCache: cache.bytesFromCache,
      bytesFromUpstream: cache.bytesFromUpstream,
      storageBytes: (await this.meta.blobTotals()).bytes,
    };
  }

  /** Stores the current figures under the current step (a later sample in the same step replaces it). */
  async sample(): Promise<void> {
    try {
      const point = await this.current();
      point.at = Math.floor(point.at / this.stepMs) * this.stepMs;
      await this.meta.addHistoryPoint(point);
      await this.meta.pruneHistory(point.at - HISTORY_SPAN_MS);
    } catch {
      // A busy or full database loses one point of a chart, nothing more.
    }
  }

  /** The stored day, oldest first. */
  points(): Promise<HistoryPoint[]> {
    return this.meta.history(this.now() - HISTORY_SPAN_MS);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.sampling;
  }
}
