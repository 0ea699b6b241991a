import type pg from 'pg';
import type { Logger } from '../log.js';
import type { ChangeFeed } from './notify.js';

/**
 * Fill leases: one upstream transfer per blob across the cluster. The replica that takes the lease
 * for a digest fetches it; the others wait for it to be released (then serve the stored blob) or to
 * expire (its holder died: then one of them takes over).
 *
 * A lease lives in the row fill_leases(digest, owner, expires_at) (see ensureClusterSchema). Expiry
 * is judged by the database's clock alone, so replicas' clocks need not agree.
 */

export interface LeaseManagerOptions {
  pool: pg.Pool;
  replicaId: string;
  /** Wakes waiters on other replicas the moment a lease is released; without it they poll. */
  feed?: ChangeFeed;
  log?: Logger;
  /** How often a waiter re-reads the lease when no notification comes (a lost one, say). */
  pollMs?: number;
}

export type WaitResult =
  /** isDone() said so: the holder's work is there (the blob is stored). */
  | 'done'
  /** No live lease any more and not done (the holder failed or died): the waiter may tryAcquire. */
  | 'free'
  /** timeoutMs passed with the lease still held. */
  | 'timeout';

export interface WaitOptions {
  timeoutMs: number;
  /** Checked first and after every wake-up, e.g. "is the blob in the store now?". */
  isDone?: () => boolean | Promise<boolean>;
  signal?: AbortSignal;
}

const ACQUIRE = `
  INSERT INTO fill_leases AS l (digest, owner, expires_at)
  VALUES ($1, $2, clock_timestamp() + $3::float8 * interval '1 millisecond')
  ON CONFLICT (digest) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= clock_timestamp()
  RETURNING owner`;
const RENEW = `UPDATE fill_leases SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond' WHERE digest = $1 AND owner = $2`;
const RELEASE = 'DELETE FROM fill_leases WHERE digest = $1 AND owner = $2';
const READ = `SELECT owner, GREATEST(0, EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000)::float8 AS remaining_ms
  FROM fill_leases WHERE digest = $1`;

/** A held lease. Its heartbeat renews it every ttl/3 until release() or until it is lost. */
export class Lease {
  private readonly lostController = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  /** Local time before the last successful renewal was sent: the row lives at least ttl past it. */
  private renewedAt: number;

  constructor(
    private readonly manager: LeaseManager,
    readonly digest: string,
    readonly owner: string,
    readonly ttlMs: number,
    startedAt: number,
  ) {
    this.renewedAt = startedAt;
    this.timer = setInterval(() => void this.renew(), Math.max(10, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  /**
   * Aborted when the lease is lost: taken over after it expired, or not renewed for a whole TTL
   * (the database unreachable). The fill should then stop writing under this lease's name.
   */
  get signal(): AbortSignal {
    return this.lostController.signal;
  }

  get lost(): boolean {
    return this.lostController.signal.aborted;
  }

  /** Extends the lease by ttlMs from now; false once lost. The heartbeat calls it, callers may too. */
  async renew(): Promise<boolean> {
    if (this.lost || this.released) return !this.lost;
    const sentAt = Date.now();
    try {
      const { rowCount } = await this.manager.pool.query(RENEW, [this.digest, this.owner, this.ttlMs]);
      if (this.released) return true;
      if (rowCount === 0) {
        this.lose('the lease was taken over by another replica after it expired');
        return false;
      }
      this.renewedAt = sentAt;
      return true;
    } catch (e) {
      // Unknown whether the row still lives: count it lost once a whole TTL has gone unrenewed.
      if (Date.now() - this.renewedAt >= this.ttlMs) this.lose(`the lease could not be renewed for ${this.ttlMs} ms: ${(e as Error).message}`);
      return false;
    }
  }

  /** Ends the lease and wakes its waiters, here and on other replicas. Safe to call twice. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    this.manager.forget(this);
    if (this.lost) return;
    await this.manager.pool.query(RELEASE, [this.digest, this.owner]);
    await this.manager.announceRelease(this.digest);
  }

  private lose(reason: string): void {
    if (this.lost) return;
    clearInterval(this.timer);
    this.manager.forget(this);
    this.manager.log?.warn({ digest: this.digest, owner: this.owner, reason }, 'fill lease lost');
    this.lostController.abort(new Error(`fill lease for ${this.digest} lost: ${reason}`));
  }
}

export class LeaseManager {
  readonly pool: pg.Pool;
  readonly log: Logger | undefined;
  private readonly held = new Set<Lease>();
  /** Waiters on this replica, by digest: woken by a local release or another replica's notification. */
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly unsubscribe: (() => void)[] = [];
  private sequence = 0;

  constructor(private readonly options: LeaseManagerOptions) {
    this.pool = options.pool;
    this.log = options.log;
    if (options.feed) {
      this.unsubscribe.push(options.feed.on('lease-released', (digest) => this.wake(digest)));
      // Releases announced while the feed was cut off are gone: every waiter re-reads its lease.
      this.unsubscribe.push(options.feed.onResync(() => this.wakeAll()));
    }
  }

  /**
   * Takes the lease on `digest` for ttlMs (renewed automatically while held), or undefined when a
   * live lease is held elsewhere. An expired lease is taken over in the same single statement, so
   * of any number of replicas racing, exactly one wins.
   */
  async tryAcquire(digest: string, ttlMs: number): Promise<Lease | undefined> {
    const owner = `${this.options.replicaId}#${++this.sequence}`;
    const startedAt = Date.now();
    const { rows } = await this.pool.query(ACQUIRE, [digest, owner, ttlMs]);
    if (rows.length === 0) return undefined;
    const lease = new Lease(this, digest, owner, ttlMs, startedAt);
    this.held.add(lease);
    return lease;
  }

  /** Who holds `digest` and for how much longer (per the database's clock), if anyone does. */
  async holder(digest: string): Promise<{ owner: string; remainingMs: number } | undefined> {
    const { rows } = await this.pool.query<{ owner: string; remaining_ms: number }>(READ, [digest]);
    const row = rows[0];
    return row && row.remaining_ms > 0 ? { owner: row.owner, remainingMs: row.remaining_ms } : undefined;
  }

  /**
   * Waits while another replica holds `digest`: until isDone(), until the lease is gone without
   * being done ('free': the caller may tryAcquire), or timeoutMs ('timeout'). Wakes on the release
   * notification; re-reads every pollMs in case one was lost, and at the holder's expiry time.
   */
  async waitFor(digest: string, options: WaitOptions): Promise<WaitResult> {
    const isDone = options.isDone ?? (() => false);
    const deadline = Date.now() + options.timeoutMs;
    const pollMs = this.options.pollMs ?? 1_000;
    let wake: () => void = () => {};
    let woken = false;
    const waiter = (): void => {
      woken = true;
      wake();
    };
    // Registered before the first read, so a release between the read and the sleep is not missed.
    let set = this.waiters.get(digest);
    if (!set) this.waiters.set(digest, (set = new Set()));
    set.add(waiter);
    const onAbort = (): void => wake();
    options.signal?.addEventListener('abort', onAbort);
    try {
      for (;;) {
        options.signal?.throwIfAborted();
        woken = false;
        if (await isDone()) return 'done';
        const holder = await this.holder(digest);
        // The holder stores, then releases: a release seen here may be of work now done.
        if (!holder) return (await isDone()) ? 'done' : 'free';
        const left = deadline - Date.now();
        if (left <= 0) return 'timeout';
        if (woken) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(pollMs, left, holder.remainingMs + 5));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = () => {};
      }
    } finally {
      set.delete(waiter);
      if (set.size === 0 && this.waiters.get(digest) === set) this.waiters.delete(digest);
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Stops every heartbeat and releases what this replica holds (graceful shutdown). */
  async close(): Promise<void> {
    for (const off of this.unsubscribe.splice(0)) off();
    await Promise.all([...this.held].map((lease) => lease.release().catch(() => {})));
    this.wakeAll();
  }

  /** @internal A lease that ended or was lost. */
  forget(lease: Lease): void {
    this.held.delete(lease);
  }

  /** @internal Wakes this replica's waiters for `digest` and tells the others. */
  async announceRelease(digest: string): Promise<void> {
    this.wake(digest);
    try {
      await this.options.feed?.publish('lease-released', digest);
    } catch (e) {
      // The waiters elsewhere still find out by polling.
      this.log?.warn({ digest, err: (e as Error).message }, 'fill lease: could not announce its release');
    }
  }

  private wake(digest: string): void {
    for (const waiter of this.waiters.get(digest) ?? []) waiter();
  }

  private wakeAll(): void {
    for (const set of this.waiters.values()) for (const waiter of set) waiter();
  }
}
