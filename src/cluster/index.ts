import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import type { Logger } from '../log.js';
import { redactUrl } from '../config/redact-url.js';
import { LeaderElection } from './leader.js';
import { LeaseManager } from './leases.js';
import { ChangeFeed } from './notify.js';
import { ensureClusterSchema } from './schema.js';

export { ChangeFeed, CHANGES_CHANNEL, type Change, type ChangeKind } from './notify.js';
export { Lease, LeaseManager, type WaitOptions, type WaitResult } from './leases.js';
export { LeaderElection, type LeaderRole, type LeaderRun } from './leader.js';
export { syncManifestCache } from './manifest-sync.js';
export { ensureClusterSchema } from './schema.js';

export interface ClusterOptions {
  /** Names this replica in notifications, lease owners and pg_stat_activity; default hostname:pid:random. */
  replicaId?: string;
  log?: Logger;
  /** Reuse the metadata store's pool (then close() leaves it open); default a pool of our own. */
  pool?: pg.Pool;
  /** Size of our own pool (leases and notifications are short queries). */
  poolSize?: number;
  /** How long ping() and a new connection may take before the database counts as unreachable. */
  timeoutMs?: number;
}

/** hostname:pid:random — unique even for two replicas on one host, or a restarted one. */
export function defaultReplicaId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

/**
 * Everything replicas coordinate through PostgreSQL, wired in a few lines:
 *
 *   const cluster = await Cluster.connect(config.database.url, { log });
 *   syncManifestCache(cluster.feed, manifests);                 // other replicas' pushes
 *   const lease = await cluster.leases.tryAcquire(digest, 30_000); // one upstream fill per blob
 *   await cluster.leader.runIfLeader('gc', (signal) => gc.run(signal));
 *   await cluster.ping();                                        // /readyz
 *   await cluster.close();
 */
export class Cluster {
  private constructor(
    readonly replicaId: string,
    readonly pool: pg.Pool,
    readonly feed: ChangeFeed,
    readonly leases: LeaseManager,
    readonly leader: LeaderElection,
    private readonly ownPool: boolean,
    private readonly timeoutMs: number,
    private readonly url: string,
  ) {}

  /** Connects, creates the coordination tables if missing and starts listening for changes. */
  static async connect(url: string, options: ClusterOptions = {}): Promise<Cluster> {
    const replicaId = options.replicaId ?? defaultReplicaId();
    const timeoutMs = options.timeoutMs ?? 5_000;
    const log = options.log;
    const pool =
      options.pool ??
      new pg.Pool({
        connectionString: url,
        max: options.poolSize ?? 10,
        connectionTimeoutMillis: timeoutMs,
        keepAlive: true,
        application_name: `airlock ${replicaId}`.slice(0, 63),
      });
    // An idle pooled connection the server ends emits 'error' here; unhandled, it would crash us.
    if (!options.pool) pool.on('error', (err) => log?.warn({ err: err.message }, 'cluster: a pooled database connection failed'));
    let feed: ChangeFeed | undefined;
    try {
      await ensureClusterSchema(pool);
      feed = await ChangeFeed.start(url, { replicaId, pool, log });
    } catch (e) {
      if (!options.pool) await pool.end().catch(() => {});
      throw new Error(`cannot use the database at ${redactUrl(url)}: ${(e as Error).message}`, { cause: e });
    }
    const leases = new LeaseManager({ pool, replicaId, feed, log });
    const leader = new LeaderElection(url, { replicaId, log });
    log?.info({ replica: replicaId, database: redactUrl(url) }, 'cluster: connected');
    return new Cluster(replicaId, pool, feed, leases, leader, !options.pool, timeoutMs, url);
  }

  /** Resolves when the database answers within the timeout; throws a message fit for /readyz. */
  async ping(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      await Promise.race([this.pool.query('SELECT 1'), timeout]);
    } catch (e) {
      throw new Error(`database ${redactUrl(this.url)} unreachable: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Releases held leases and leadership, stops listening, and ends our own pool. */
  async close(): Promise<void> {
    await this.leases.close().catch(() => {});
    await this.leader.close();
    await this.feed.close();
    if (this.ownPool) await this.pool.end().catch(() => {});
  }
}
