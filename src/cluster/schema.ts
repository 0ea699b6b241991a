import type pg from 'pg';

/**
 * Advisory lock keys are (namespace, key) pairs: this namespace keeps airlock's locks apart from
 * any other application's on the same database. Key 0 serializes schema changes; leader roles use
 * hashtext(role) (see leader.ts).
 */
export const ADVISORY_NAMESPACE = 0x6169724c; // "airL"
const SCHEMA_LOCK_KEY = 0;

/**
 * The tables coordination needs, created if missing. Several replicas start at once, and two
 * concurrent CREATE TABLE IF NOT EXISTS can still collide on the catalog, so it runs under a
 * transaction-scoped advisory lock. (PostgreSQL migrations may take this over later; IF NOT EXISTS
 * keeps both orders working.)
 */
export async function ensureClusterSchema(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [ADVISORY_NAMESPACE, SCHEMA_LOCK_KEY]);
    // expires_at is compared with the database's clock only, so replicas' clocks need not agree.
    await client.query(`CREATE TABLE IF NOT EXISTS fill_leases (
      digest text PRIMARY KEY,
      owner text NOT NULL,
      expires_at timestamptz NOT NULL
    )`);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}
