import type { MetadataStore } from '../storage/metadata.js';

/**
 * Remembers which blobs were served and writes that to the metadata in one transaction every few
 * seconds, instead of one database write per download on the hot path.
 */
export class AccessTracker {
  private served = new Set<string>();
  /** Batches being written: not in the metadata yet either. */
  private readonly writing = new Set<Set<string>>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly meta: MetadataStore,
    flushEveryMs = 5000,
  ) {
    this.timer = setInterval(() => void this.flush(), flushEveryMs);
    this.timer.unref();
  }

  readonly touch = (digest: string): void => {
    this.served.add(digest);
  };

  /** Served since the last flush (not yet visible in the metadata). */
  isPending(digest: string): boolean {
    if (this.served.has(digest)) return true;
    for (const batch of this.writing) if (batch.has(digest)) return true;
    return false;
  }

  /**
   * Writes what was served since the last flush; resolves once the metadata has it, with the time
   * written as those blobs' last access (undefined when there was nothing to write).
   */
  async flush(): Promise<number | undefined> {
    if (this.served.size === 0) return undefined;
    const batch = this.served;
    this.served = new Set();
    this.writing.add(batch);
    const at = Date.now();
    try {
      await this.meta.touchBlobs(batch, at);
      return at;
    } catch {
      // Tried again with the next batch (a busy or full database): a served blob must not look idle.
      for (const digest of batch) this.served.add(digest);
    } finally {
      this.writing.delete(batch);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
