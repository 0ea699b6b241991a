// Whether the shared backends answer. A replica that cannot reach its database or its bucket stops
// taking writes with a clear 503 (a push half-recorded is worse than one refused), keeps serving
// what it can from memory and from whichever backend still answers, and reports the cause on /readyz.

import type { Logger } from '../log.js';
import { RegistryError } from '../registry/errors.js';

export interface Probe {
  /** What the operator reads, e.g. "database" or "object store". */
  name: string;
  /** Throws when the backend cannot answer. */
  check(): Promise<void>;
}

export class BackendHealth {
  private readonly down = new Map<string, string>();
  private readonly timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly probes: Probe[],
    private readonly log: Logger,
    everyMs = 2000,
  ) {
    if (probes.length > 0) {
      this.timer = setInterval(() => void this.checkNow(), everyMs);
      this.timer.unref();
    }
  }

  /** Runs every probe (one round at a time) and records which failed. */
  checkNow(): Promise<void> {
    this.running ??= Promise.all(
      this.probes.map(async (probe) => {
        try {
          await probe.check();
          if (this.down.delete(probe.name)) this.log.info({ backend: probe.name }, 'backend reachable again; taking writes');
        } catch (e) {
          const reason = (e as Error).message;
          if (!this.down.has(probe.name)) this.log.error({ backend: probe.name, err: reason }, 'backend unreachable; refusing writes until it answers');
          this.down.set(probe.name, reason);
        }
      }),
    ).then(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Why this replica cannot take writes now, or undefined. */
  problem(): string | undefined {
    if (this.down.size === 0) return undefined;
    return [...this.down].map(([name, reason]) => `${name} unreachable: ${reason}`).join('; ');
  }

  /** For writes: refuses with 503 UNAVAILABLE while a backend is down. */
  assertWritable(): void {
    const problem = this.problem();
    if (problem) throw new RegistryError('UNAVAILABLE', `this replica is not taking writes: ${problem}; retry once it is back`, undefined, 503).withReason(
        'backend unreachable, not taking writes',
      );
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/**
 * A failure to reach PostgreSQL or the bucket, as a 503 UNAVAILABLE naming it, so a client sees
 * "retry later" rather than an internal error; undefined for any other error.
 */
export function unavailableError(err: unknown): RegistryError | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const name = err.constructor?.name ?? '';
  // Connection-level failures of the pg driver, and PostgreSQL shutting down or refusing connections.
  const database =
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', '57P01', '57P02', '57P03', '53300', '08006', '08001', '08003', '08004'].includes(code) ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/.test(err.message);
  if (name === 'S3StoreError') return new RegistryError('UNAVAILABLE', `object store unavailable: ${err.message}`, undefined, 503).withReason('object store unavailable');
  if (database) return new RegistryError('UNAVAILABLE', `database unavailable: ${err.message}`, undefined, 503).withReason('database unavailable');
  return undefined;
}
