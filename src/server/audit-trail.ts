import type { AuditEvent, MetadataStore } from '../storage/metadata.js';

/** How many audit events the database keeps (the log keeps them all). */
export const AUDIT_KEEP = 10_000;

/**
 * The recent audit events (pushes, mounts, deletes, refusals) for the dashboard's Activity page.
 * Recorded in memory on the request path and written in one transaction every few seconds, so an
 * audited push costs no extra database commit; the table keeps the last AUDIT_KEEP events.
 */
export class AuditTrail {
  private pending: AuditEvent[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly meta: MetadataStore,
    flushEveryMs = 2000,
    private readonly keep = AUDIT_KEEP,
  ) {
    this.timer = setInterval(() => void this.flush(), flushEveryMs);
    this.timer.unref();
  }

  record(event: Omit<AuditEvent, 'at' | 'repo' | 'digest' | 'tag' | 'code' | 'remote'> & Partial<AuditEvent>): void {
    this.pending.push({
      at: event.at ?? Date.now(),
      action: event.action,
      user: event.user,
      repo: event.repo ?? null,
      digest: event.digest ?? null,
      tag: event.tag ?? null,
      code: event.code ?? null,
      remote: event.remote ?? null,
    });
    // A burst of refusals must not grow memory without bound between flushes.
    if (this.pending.length > this.keep) this.pending.splice(0, this.pending.length - this.keep);
  }

  /** Most recent first, including events not yet written. */
  async recent(limit: number): Promise<AuditEvent[]> {
    // Events of a flush still in flight count as unsaved: until it commits, the store lacks them.
    const unsaved = [...this.flushing, ...this.pending].slice(-limit).reverse();
    if (unsaved.length >= limit) return unsaved;
    const saved = await this.meta.recentAuditEvents(limit - unsaved.length + this.flushing.length);
    // A flush that committed meanwhile puts its events in both lists: keep one copy.
    return [...unsaved, ...saved.filter((e) => !unsaved.some((u) => sameEvent(u, e)))].slice(0, limit);
  }

  /** The batch being written; a flush takes what is pending when it starts (one at a time). */
  private flushing: AuditEvent[] = [];

  async flush(): Promise<void> {
    if (this.pending.length === 0 || this.flushing.length > 0) return;
    const batch = this.pending;
    this.pending = [];
    this.flushing = batch;
    try {
      await this.meta.addAuditEvents(batch, this.keep);
    } catch {
      // Keep them for the next attempt (a full disk, a busy database); the log has them anyway.
      this.pending = [...batch, ...this.pending].slice(-this.keep);
    } finally {
      this.flushing = [];
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    // Waits for a flush in flight, then writes what came after it.
    while (this.flushing.length > 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await this.flush();
  }
}

function sameEvent(a: AuditEvent, b: AuditEvent): boolean {
  return a.at === b.at && a.action === b.action && a.user === b.user && a.repo === b.repo && a.digest === b.digest && a.tag === b.tag && a.code === b.code;
}
