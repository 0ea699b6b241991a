import pg from 'pg';
import type { Logger } from '../log.js';
import { KeyedLock } from '../registry/keyed-lock.js';

/** First key of the two-key advisory locks taken per digest ("blob" in ASCII). */
const DIGEST_LOCK_SPACE = 0x626c6f62;

/**
 * The per-digest lock, across replicas: what one replica does under a blob's lock (commit an
 * upload and link it, mount it, evict it, sweep it in gc) no other replica does at the same time.
 * Without it, a push on one replica could link a blob whose object another replica's eviction is
 * deleting, leaving a row without its bytes.
 *
 * Tasks for one digest first queue in this process (no database round trip between them), then
 * the holder takes a PostgreSQL advisory lock on one pooled connection. Several keys (gc batches,
 * an image's blobs) are locked on ONE connection in sorted order: a connection per key would drain
 * the pool, and sorted order keeps two replicas from waiting on each other in a cycle.
 */
export class ClusterKeyedLock extends KeyedLock {
  /**
   * Its own connections: a holder runs queries on the store's pool while it holds the lock, so
   * holders drawing from that same pool could take every connection and then wait on each other.
   */
  private readonly pool: pg.Pool;

  constructor(url: string, options: { max?: number; log?: Logger } = {}) {
    super();
    const address = new URL(url);
    address.searchParams.delete('max'); // the store's pool size, not this one's
    this.pool = new pg.Pool({ connectionString: address.toString(), max: options.max ?? 32, keepAlive: true, application_name: 'airlock digest locks' });
    // An idle connection the server ends emits 'error' on the pool; unhandled, it would end the process.
    this.pool.on('error', (err) => options.log?.warn({ err: err.message }, 'digest lock: a pooled database connection failed'));
  }

  close(): Promise<void> {
    return this.pool.end();
  }

  override run<T>(key: string, task: () => Promise<T>): Promise<T> {
    return super.run(key, () => this.holding([key], task));
  }

  override runMany<T>(sortedKeys: string[], task: () => Promise<T>): Promise<T> {
    const take = (i: number): Promise<T> => (i === sortedKeys.length ? this.holding(sortedKeys, task) : super.run(sortedKeys[i]!, () => take(i + 1)));
    return take(0);
  }

  private async holding<T>(keys: string[], task: () => Promise<T>): Promise<T> {
    if (keys.length === 0) return task();
    const client = await this.pool.connect();
    let broken = false;
    try {
      for (const key of keys) await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [DIGEST_LOCK_SPACE, key]);
      return await task();
    } catch (e) {
      broken = true;
      throw e;
    } finally {
      // Session locks go with the connection: a connection that failed is discarded, which frees them.
      if (!broken) {
        await client.query('SELECT pg_advisory_unlock_all()').catch(() => {
          broken = true;
        });
      }
      client.release(broken);
    }
  }
}
