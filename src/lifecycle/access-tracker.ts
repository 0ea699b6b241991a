import type { MetadataStore } from '../storage/metadata.js';

/**
 * Remembers which blobs were served and writes that to the metadata in one transaction every few
 * seconds, instead of one database write per download on the hot path.
 */
export class AccessTracker {
  private served = new Set<string>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly meta: MetadataStore,
    flushEveryMs = 5000,
  ) {
    this.timer = setInterval(() => this.flush(), flushEveryMs);
    this.timer.unref();
  }

  readonly touch = (digest: string): void => {
    this.served.add(digest);
  };

  /** Served since the last flush (not yet visible in the metadata). */
  isPending(digest: string): boolean {
    return this.served.has(digest);
  }

  flush(): void {
    if (this.served.size === 0) return;
    const batch = this.served;
    this.served = new Set();
    this.meta.touchBlobs(batch, Date.now());
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
