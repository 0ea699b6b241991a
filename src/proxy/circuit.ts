// Stops airlock from waiting on an upstream that is known to be down. Without it every cache miss
// would sit through a full connect/headers timeout before serving stale content or failing; with it,
// after a few consecutive failures the upstream is skipped outright for a cool-down.

import { UpstreamError, isUpstreamDown } from './errors.js';

export interface CircuitBreakerOptions {
  /** Consecutive down-failures (see isUpstreamDown) that open the circuit; default 3. */
  failureThreshold?: number;
  /** How long an open circuit skips the upstream; default 30s (longer if a 429 asked for longer). */
  coolDownMs?: number;
  /** Clock, injectable for tests. */
  now?: () => number;
}

export type CircuitState = 'closed' | 'open' | 'half-open';

export class CircuitBreaker {
  private readonly failureThreshold: number;
  private readonly coolDownMs: number;
  private readonly now: () => number;
  private consecutiveFailures = 0;
  /** Longest Retry-After seen during the current run of failures. */
  private retryAfterMs = 0;
  private openUntil = 0;
  private lastFailure: UpstreamError | undefined;
  /** When the upstream last answered / last failed as down (ms), for the dashboard. */
  private lastSuccessAt: number | undefined;
  private lastFailureAt: number | undefined;

  constructor(
    /** The upstream URL, for messages. */
    readonly upstream: string,
    options: CircuitBreakerOptions = {},
  ) {
    this.failureThreshold = options.failureThreshold ?? 3;
    this.coolDownMs = options.coolDownMs ?? 30_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * closed: requests go through. open: skipped until the cool-down ends. half-open: the cool-down is
   * over and requests go through again, but a single further failure re-opens the circuit (the failure
   * count is not reset until a success).
   */
  get state(): CircuitState {
    if (this.now() < this.openUntil) return 'open';
    return this.consecutiveFailures >= this.failureThreshold ? 'half-open' : 'closed';
  }

  /** Throws UpstreamError 'unreachable' while the circuit is open. */
  check(): void {
    if (this.state !== 'open') return;
    if (this.lastFailure?.kind === 'ratelimited') {
      // Still rate limited: say so, with the time left, rather than "unreachable".
      throw new UpstreamError('ratelimited', `upstream ${this.upstream} asked to slow down; retrying after ${new Date(this.openUntil).toISOString()}`, {
        upstream: this.upstream,
        retryAfterMs: this.openUntil - this.now(),
        cause: this.lastFailure,
      });
    }
    const last = this.lastFailure === undefined ? '' : `; last error: ${this.lastFailure.message}`;
    throw new UpstreamError(
      'unreachable',
      `upstream ${this.upstream} is skipped until ${new Date(this.openUntil).toISOString()} after ${this.consecutiveFailures} consecutive failures${last}`,
      { upstream: this.upstream, cause: this.lastFailure, brief: `skipped after ${this.consecutiveFailures} failures, last ${this.lastFailure?.brief ?? 'unknown'}` },
    );
  }

  /** Forgets the failures: the next request goes through (e.g. after the upstream's settings changed). */
  reset(): void {
    this.recordSuccess();
  }

  /** What an operator wants to know about this upstream right now. */
  health(): { state: CircuitState; consecutiveFailures: number; lastSuccessAt?: number; lastFailureAt?: number; lastFailure?: string; openUntil?: number } {
    const state = this.state;
    return {
      state,
      consecutiveFailures: this.consecutiveFailures,
      lastSuccessAt: this.lastSuccessAt,
      lastFailureAt: this.lastFailureAt,
      lastFailure: this.lastFailure?.message,
      openUntil: state === 'open' ? this.openUntil : undefined,
    };
  }

  recordSuccess(): void {
    this.lastSuccessAt = this.now();
    this.consecutiveFailures = 0;
    this.retryAfterMs = 0;
    this.openUntil = 0;
    this.lastFailure = undefined;
  }

  /**
   * Counts a failure if it means the upstream is down; other failures (404, 401, bad content) prove
   * the upstream is answering, so they count as a success for the circuit.
   */
  recordFailure(err: unknown): void {
    if (!isUpstreamDown(err)) {
      this.recordSuccess();
      return;
    }
    const failure = err as UpstreamError;
    this.consecutiveFailures += 1;
    this.lastFailure = failure;
    this.lastFailureAt = this.now();
    this.retryAfterMs = Math.max(this.retryAfterMs, failure.retryAfterMs ?? 0);
    if (this.consecutiveFailures >= this.failureThreshold) {
      this.openUntil = this.now() + Math.max(this.coolDownMs, this.retryAfterMs);
    }
  }

  /** check(), run `fn`, and record its outcome. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    this.check();
    try {
      const result = await fn();
      this.recordSuccess();
      return result;
    } catch (err) {
      this.recordFailure(err);
      throw err;
    }
  }
}
