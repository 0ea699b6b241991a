// Fill leases on a real PostgreSQL, between "replicas" that each have their own pool (and feed):
// one winner per digest, waiters woken by the release, and a dead holder's lease taken over.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { LeaseManager } from '../../src/cluster/leases.js';
import { ChangeFeed } from '../../src/cluster/notify.js';
import { ensureClusterSchema } from '../../src/cluster/schema.js';
import { eventually, newPool, startPostgres, type Postgres } from './support.js';

let postgres: Postgres;
let url: string;
const pools: pg.Pool[] = [];
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  postgres = await startPostgres();
  url = await postgres.createDatabase();
  // Several replicas starting at once all ensure the schema: none may fail.
  const starting = Array.from({ length: 4 }, () => newPool(url));
  pools.push(...starting);
  await Promise.all(starting.map((pool) => ensureClusterSchema(pool)));
});
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => {});
  for (const pool of pools) await pool.end().catch(() => {});
  await postgres?.stop();
});

let digests = 0;
const newDigest = (): string => `sha256:${String(++digests).padStart(64, '0')}`;

async function replica(replicaId: string, options: { pollMs?: number; feed?: boolean } = {}): Promise<{ leases: LeaseManager; pool: pg.Pool }> {
  const pool = newPool(url);
  pools.push(pool);
  const feed = options.feed === false ? undefined : await ChangeFeed.start(url, { replicaId, pool });
  const leases = new LeaseManager({ pool, replicaId, feed, pollMs: options.pollMs });
  closers.push(async () => {
    await leases.close();
    await feed?.close();
  });
  return { leases, pool };
}

describe('fill leases', () => {
  it('of two replicas racing for one digest, exactly one wins', async () => {
    const a = await replica('a');
    const b = await replica('b');
    const digest = newDigest();
    const attempts = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).leases.tryAcquire(digest, 30_000)));
    const winners = attempts.filter((lease) => lease !== undefined);
    expect(winners).toHaveLength(1);
    expect((await a.leases.holder(digest))?.owner).toBe(winners[0]!.owner);
    await winners[0]!.release();
    expect(await a.leases.holder(digest)).toBeUndefined();
  });

  it('the loser waits and wakes on the release notification, then finds the work done', async () => {
    const a = await replica('c');
    // Polling once every 10 minutes: only the notification can wake this waiter within the test.
    const b = await replica('d', { pollMs: 600_000 });
    const digest = newDigest();
    const lease = await a.leases.tryAcquire(digest, 600_000);
    expect(lease).toBeDefined();
    expect(await b.leases.tryAcquire(digest, 600_000)).toBeUndefined();

    let stored = false;
    let settled = false;
    const waiting = b.leases.waitFor(digest, { timeoutMs: 30_000, isDone: () => stored }).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled).toBe(false); // still held: still waiting
    stored = true;
    await lease!.release();
    expect(await waiting).toBe('done');
  });

  it('a waiter on the holder\'s own replica wakes on release too', async () => {
    const a = await replica('e', { pollMs: 600_000, feed: false });
    const digest = newDigest();
    const lease = await a.leases.tryAcquire(digest, 600_000);
    const waiting = a.leases.waitFor(digest, { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 100));
    await lease!.release();
    // Released without the work done (a failed fill): the waiter may fill it itself.
    expect(await waiting).toBe('free');
    expect(await a.leases.tryAcquire(digest, 1_000)).toBeDefined();
  });

  it('a waiter gives up after timeoutMs while the lease is still held', async () => {
    const a = await replica('f');
    const b = await replica('g', { pollMs: 50 });
    const digest = newDigest();
    const lease = await a.leases.tryAcquire(digest, 600_000);
    expect(await b.leases.waitFor(digest, { timeoutMs: 300 })).toBe('timeout');
    await lease!.release();
  });

  it('the heartbeat keeps a lease alive well past its TTL', async () => {
    const a = await replica('h');
    const b = await replica('i');
    const digest = newDigest();
    const lease = await a.leases.tryAcquire(digest, 1_000);
    await new Promise((r) => setTimeout(r, 3_500)); // three and a half TTLs
    expect(lease!.lost).toBe(false);
    expect(await b.leases.tryAcquire(digest, 1_000)).toBeUndefined();
    await lease!.release();
  });

  it('a holder that stops renewing (killed) loses the lease after the TTL, and another takes over', async () => {
    const a = await replica('j', { feed: false });
    const b = await replica('k', { pollMs: 100 });
    const digest = newDigest();
    const lease = await a.leases.tryAcquire(digest, 1_000);
    expect(lease).toBeDefined();
    // Like kill -9: A's connections are gone and nothing of it renews or releases any more.
    await a.pool.end();

    expect(await b.leases.tryAcquire(digest, 1_000)).toBeUndefined();
    expect(await b.leases.waitFor(digest, { timeoutMs: 30_000, isDone: () => false })).toBe('free');
    const takeover = await b.leases.tryAcquire(digest, 30_000);
    expect(takeover).toBeDefined();
    expect((await b.leases.holder(digest))?.owner).toBe(takeover!.owner);

    // A, cut off for a whole TTL, counts its lease lost too: its fill would stop.
    await eventually(() => lease!.lost, 20_000, 'the dead holder to notice');
    expect(lease!.signal.aborted).toBe(true);
    await takeover!.release();
  });

  it('a holder whose expired lease was taken over learns it at its next renewal, and its release leaves the new lease alone', async () => {
    const a = await replica('l');
    const b = await replica('m');
    const digest = newDigest();
    const lease = await a.leases.tryAcquire(digest, 30_000);
    // As if A had stalled past its TTL: the row expires and B takes it over.
    await a.pool.query("UPDATE fill_leases SET expires_at = clock_timestamp() - interval '1 second' WHERE digest = $1", [digest]);
    const takeover = await b.leases.tryAcquire(digest, 30_000);
    expect(takeover).toBeDefined();

    expect(await lease!.renew()).toBe(false);
    expect(lease!.lost).toBe(true);
    await lease!.release();
    expect((await b.leases.holder(digest))?.owner).toBe(takeover!.owner);
    await takeover!.release();
  });
});
