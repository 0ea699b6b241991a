// What only the PostgreSQL store has to get right: the pool's transactions under contention
// between replicas, and writes interleaved with another replica's eviction at the worst moment.

import { createHash } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, inTransaction } from '../../src/storage/postgres/pool.js';
import { PostgresMetadataStore } from '../../src/storage/postgres/store.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';

let server: Postgres;
const cleanup: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await startPostgres();
}, 60_000);

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await server?.stop();
});

const sha = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;

async function store(url: string): Promise<PostgresMetadataStore> {
  const s = await PostgresMetadataStore.open(url);
  cleanup.push(() => s.close());
  return s;
}

describe('the pool', () => {
  it('parses BIGINT and SUMs as numbers for its own queries only', async () => {
    const pool = createPool(server.url);
    cleanup.push(() => pool.end());
    const { rows } = await pool.query('SELECT 9007199254740991::bigint AS big, SUM(x)::numeric AS total FROM (VALUES (1::bigint), (2::bigint)) v(x)');
    expect(rows[0]).toEqual({ big: Number.MAX_SAFE_INTEGER, total: 3 });
    // pg's global parsers are untouched: other pools (e.g. a library's) still get strings.
    expect(pg.types.getTypeParser(20, 'text')('42')).toBe('42');
  });

  it('runs a transaction again when it loses a deadlock, so both writers succeed', async () => {
    const pool = createPool(server.url);
    cleanup.push(() => pool.end());
    await pool.query('CREATE TABLE deadlock_demo (id INT PRIMARY KEY, v INT NOT NULL)');
    await pool.query('INSERT INTO deadlock_demo VALUES (1, 0), (2, 0)');
    let attempts = 0;
    // Each locks one row, waits for the other to lock its row, then wants the other's: a deadlock
    // on the first attempt, which PostgreSQL breaks by failing one of them (40P01).
    let arrived = 0;
    let release!: () => void;
    const bothLocked = new Promise<void>((resolve) => (release = resolve));
    const writer = (first: number, second: number) =>
      inTransaction(pool, async (tx) => {
        attempts++;
        await tx.query('UPDATE deadlock_demo SET v = v + 1 WHERE id = $1', [first]);
        if (++arrived === 2) release();
        await bothLocked;
        await tx.query('UPDATE deadlock_demo SET v = v + 1 WHERE id = $1', [second]);
      });
    await Promise.all([writer(1, 2), writer(2, 1)]);
    expect(attempts).toBe(3);
    const { rows } = await pool.query('SELECT id, v FROM deadlock_demo ORDER BY id');
    expect(rows).toEqual([
      { id: 1, v: 2 },
      { id: 2, v: 2 },
    ]);
  });

  it('rolls back and rethrows anything else, leaving no half-done work', async () => {
    const pool = createPool(server.url);
    cleanup.push(() => pool.end());
    await pool.query('CREATE TABLE rollback_demo (id INT PRIMARY KEY)');
    await expect(
      inTransaction(pool, async (tx) => {
        await tx.query('INSERT INTO rollback_demo VALUES (1)');
        await tx.query('INSERT INTO rollback_demo VALUES (1)');
      }),
    ).rejects.toMatchObject({ code: '23505' });
    expect((await pool.query('SELECT COUNT(*) AS n FROM rollback_demo')).rows[0].n).toBe(0);
    // The client went back to the pool usable.
    expect(pool.idleCount + pool.totalCount).toBeGreaterThan(0);
    await pool.query('INSERT INTO rollback_demo VALUES (2)');
  });
});

describe('a push racing another replica\'s eviction', () => {
  it('re-creates the blob row when the eviction deletes it under the push, and keeps the link', async () => {
    const url = await server.createDatabase();
    const replica = await store(url);
    const blob = sha('evicted under a push');
    await replica.linkBlob('mirror', blob, 77, true);
    // The other replica's eviction, held open at its worst moment: blob row locked, about to delete.
    const evictor = new pg.Client({ connectionString: url });
    await evictor.connect();
    cleanup.push(() => evictor.end());
    await evictor.query('BEGIN');
    await evictor.query('SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE', [blob]);
    const push = replica.linkBlob('local', blob, 77, false);
    // The push waits on the locked row (its foreign key check); now the eviction removes it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await evictor.query('DELETE FROM repo_blobs WHERE digest = $1', [blob]);
    await evictor.query('DELETE FROM blobs WHERE digest = $1', [blob]);
    await evictor.query('COMMIT');
    await push;
    expect(await replica.linkedBlobSize('local', blob)).toBe(77);
    expect(await replica.linkedBlobSize('mirror', blob)).toBeUndefined();
    expect(await replica.totals()).toMatchObject({ blobs: 1, bytes: 77 });
  });

  it('makes an eviction that starts after a push see the pushed link and keep the blob', async () => {
    const url = await server.createDatabase();
    const a = await store(url);
    const b = await store(url);
    const blob = sha('pushed first');
    await a.linkBlob('mirror', blob, 5, true);
    await b.linkBlob('local', blob, 5);
    expect(await a.forgetCachedBlob(blob, Date.now() + 60_000)).toBe(false);
    expect(await a.blobSize(blob)).toBe(5);
  });
});

describe('readiness', () => {
  it('ping fails within its timeout when the database stops answering', async () => {
    const own = await startPostgres();
    const s = await PostgresMetadataStore.open(own.url);
    try {
      await s.ping();
      await own.stop({ hard: true });
      const started = Date.now();
      await expect(s.ping()).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await s.close().catch(() => {});
      await own.stop().catch(() => {});
    }
  }, 60_000);
});
