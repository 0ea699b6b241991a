/**
 * Slows down password guessing: after `freeFailures` failed logins for one (user, remote address),
 * further attempts are refused for a delay that doubles with every further failure, up to `maxDelayMs`.
 * A pair that stays quiet for `forgetAfterMs` starts over. Keyed by the pair, not the user alone, so a
 * stranger cannot lock a legitimate user out from everywhere.
 */

export interface ThrottleOptions {
  /** Failures tolerated before the first delay. */
  freeFailures: number;
  /** Delay after the first failure beyond the free ones; doubles with each further failure. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Quiet time after which a pair's failures are forgotten; longer than maxDelayMs, or the cap resets the count. */
  forgetAfterMs: number;
  /** Bound on remembered pairs, so spraying user names cannot exhaust memory. */
  maxEntries: number;
  now: () => number;
}

export const DEFAULT_THROTTLE_OPTIONS: ThrottleOptions = {
  freeFailures: 5,
  baseDelayMs: 1_000,
  maxDelayMs: 15 * 60_000,
  forgetAfterMs: 60 * 60_000,
  maxEntries: 10_000,
  now: Date.now,
};

interface FailureRecord {
  failures: number;
  lastFailureAt: number;
  blockedUntil: number;
}

export class LoginThrottle {
  private readonly options: ThrottleOptions;
  private readonly records = new Map<string, FailureRecord>();

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.options = { ...DEFAULT_THROTTLE_OPTIONS, ...options };
  }

  /** Milliseconds the pair must still wait, or 0 when it may try now. */
  retryAfterMs(user: string, remoteAddress: string): number {
    const record = this.current(keyOf(user, remoteAddress));
    return record ? Math.max(0, record.blockedUntil - this.options.now()) : 0;
  }

  recordFailure(user: string, remoteAddress: string): void {
    const key = keyOf(user, remoteAddress);
    const now = this.options.now();
    const record = this.current(key) ?? { failures: 0, lastFailureAt: now, blockedUntil: 0 };
    record.failures += 1;
    record.lastFailureAt = now;
    const beyondFree = record.failures - this.options.freeFailures;
    if (beyondFree >= 0) {
      const delay = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** Math.min(beyondFree, 40));
      record.blockedUntil = now + delay;
    }
    // Re-insert so Map order is least-recently-failed first, which is what eviction drops.
    this.records.delete(key);
    this.records.set(key, record);
    this.evictOverflow();
  }

  recordSuccess(user: string, remoteAddress: string): void {
    this.records.delete(keyOf(user, remoteAddress));
  }

  private current(key: string): FailureRecord | undefined {
    const record = this.records.get(key);
    if (record && this.options.now() - record.lastFailureAt > this.options.forgetAfterMs && this.options.now() >= record.blockedUntil) {
      this.records.delete(key);
      return undefined;
    }
    return record;
  }

  private evictOverflow(): void {
    for (const key of this.records.keys()) {
      if (this.records.size <= this.options.maxEntries) break;
      this.records.delete(key);
    }
  }
}

function keyOf(user: string, remoteAddress: string): string {
  return `${user}\u0000${remoteAddress}`;
}
