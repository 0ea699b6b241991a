// The connection pool to the shared PostgreSQL, and the one way to run a transaction on it.
//
// Hot queries are named prepared statements (`{ name, text, values }`): each connection parses a
// name's SQL once. A name must always carry the same text, so each file prefixes its own
// (store.ts `core_`, dashboard.ts `dash_`, ...).

import pg from 'pg';

/** What a query can run on: the pool (one statement, autocommit) or a client inside a transaction. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(config: pg.QueryConfig<unknown[]>): Promise<pg.QueryResult<R>>;
}

/** Pool size when the URL does not say (`?max=N`). */
export const DEFAULT_POOL_SIZE = 10;

/**
 * Type parsers of this pool only (never pg's global ones, which other code may rely on):
 * BIGINT (sizes, times in ms, COUNT) and NUMERIC (SUM of BIGINT) as JS numbers. Byte counts and
 * millisecond times stay far below 2^53.
 */
function numberTypes(): pg.CustomTypesConfig {
  const types = new pg.TypeOverrides();
  types.setTypeParser(20, Number); // int8
  types.setTypeParser(1700, Number); // numeric
  return types;
}

/** A pool for `url`; `?max=N` in the URL sets its size (removed before pg reads the URL). */
export function createPool(url: string, options: { max?: number } = {}): pg.Pool {
  const parsed = new URL(url);
  const maxParam = parsed.searchParams.get('max');
  parsed.searchParams.delete('max');
  let max = options.max ?? DEFAULT_POOL_SIZE;
  if (maxParam !== null) {
    max = Number(maxParam);
    if (!Number.isInteger(max) || max < 1) throw new Error(`database.url: max=${maxParam} is not a positive whole number of connections`);
  }
  const pool = new pg.Pool({
    connectionString: parsed.toString(),
    max,
    types: numberTypes(),
    // A replica that cannot reach the database answers 503 soon instead of queueing forever.
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its connection (database restart) must not crash the process; the
  // pool drops it and the next query connects afresh.
  pool.on('error', () => {});
  return pool;
}

/** SQLSTATEs after which the whole transaction can simply run again. */
const RETRYABLE = new Set(['40001', '40P01']); // serialization_failure, deadlock_detected
const MAX_ATTEMPTS = 5;

export function isRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && RETRYABLE.has((err as { code?: string }).code ?? '');
}

/**
 * Runs `fn` in BEGIN … COMMIT on one client of the pool; ROLLBACK if it throws. A serialization
 * failure or deadlock (another replica writing the same rows) runs `fn` again from the start, a few
 * times with a short random pause, so `fn` must have no effects outside the transaction.
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    let failure: unknown;
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (err) {
      failure = err;
      // The connection is gone when even ROLLBACK fails: do not hand it back to the pool.
      broken = await client.query('ROLLBACK').then(() => false, () => true);
    }
    client.release(broken);
    if (attempt >= MAX_ATTEMPTS || !isRetryable(failure)) throw failure;
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * attempt));
  }
}
