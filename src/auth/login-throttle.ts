/**
 * Slows down password guessing: after `freeFailures` failed logins for one (user, remote address),
 * further attempts are refused for a delay that doubles with every further failure, up to `maxDelayMs`.
 * A pair that stays quiet for `forgetAfterMs` starts over. Keyed by the pair, not the user alone, so a
 * stranger cannot lock a legitimate user out from everywhere. Each address also has a larger
 * allowance across all user names, so spraying many names from one address is slowed down too.
 */

export interface ThrottleOptions {
  /** Failures tolerated before the first delay. */
  freeFailures: number;
  /** Failures tolerated from one address across all user names before it is slowed down. */
  addressFreeFailures: number;
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
  addressFreeFailures: 50,
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
  private readonly pairs = new Map<string, FailureRecord>();
  private readonly addresses = new Map<string, FailureRecord>();

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.options = { ...DEFAULT_THROTTLE_OPTIONS, ...options };
  }

  /** Milliseconds the pair must still wait, or 0 when it may try now. */
  retryAfterMs(user: string, remoteAddress: string): number {
    const now = this.options.now();
    const pair = this.current(this.pairs, keyOf(user, remoteAddress));
    const address = this.current(this.addresses, remoteAddress);
    return Math.max(0, (pair?.blockedUntil ?? 0) - now, (address?.blockedUntil ?? 0) - now);
  }

  recordFailure(user: string, remoteAddress: string): void {
    this.count(this.pairs, keyOf(user, remoteAddress), this.options.freeFailures);
    this.count(this.addresses, remoteAddress, this.options.addressFreeFailures);
  }

  private count(records: Map<string, FailureRecord>, key: string, freeFailures: number): void {
    const now = this.options.now();
    const record = this.current(records, key) ?? { failures: 0, lastFailureAt: now, blockedUntil: 0 };
    record.failures += 1;
    record.lastFailureAt = now;
    const beyondFree = record.failures - freeFailures;
    if (beyondFree >= 0) {
      const delay = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** Math.min(beyondFree, 40));
      record.blockedUntil = now + delay;
    }
    // Re-insert so Map order is least-recently-failed first, which is what eviction drops.
    records.delete(key);
    records.set(key, record);
    for (const stalest of records.keys()) {
      if (records.size <= this.options.maxEntries) break;
      records.delete(stalest);
    }
  }

  /** A success clears the pair; the address allowance only recovers with time. */
  recordSuccess(user: string, remoteAddress: string): void {
    this.pairs.delete(keyOf(user, remoteAddress));
  }

  private current(records: Map<string, FailureRecord>, key: string): FailureRecord | undefined {
    const record = records.get(key);
    if (record && this.options.now() - record.lastFailureAt > this.options.forgetAfterMs && this.options.now() >= record.blockedUntil) {
      records.delete(key);
      return undefined;
    }
    return record;
  }
}

function keyOf(user: string, remoteAddress: string): string {
  return `${user}\u0000${remoteAddress}`;
}
