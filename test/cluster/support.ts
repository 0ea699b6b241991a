// Shared by the cluster tests: one real PostgreSQL per test file, a pool per "replica", and a way
// to wait for something that happens asynchronously (a notification, a reconnect) without timing it.
import pg from 'pg';
import { startPostgres, type Postgres } from '../helpers/postgres.js';

export { startPostgres, type Postgres };

export function newPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  // An idle pooled connection that the server terminates emits 'error' on the pool; ignore it here.
  pool.on('error', () => {});
  return pool;
}

/** Resolves once `check` returns true; fails after a generous `timeoutMs` (not a timing assertion). */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Ends every backend whose application_name is `name` (as the server does to a dying replica). */
export async function terminateBackends(url: string, where: string, params: unknown[] = []): Promise<number> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    const { rows } = await admin.query(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ${where}`, params);
    return rows.length;
  } finally {
    await admin.end();
  }
}
