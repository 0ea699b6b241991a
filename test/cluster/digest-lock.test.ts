// The per-digest lock across replicas: two ClusterKeyedLocks on one real PostgreSQL stand for two
// replicas. What one holds, the other waits for; other digests do not wait; a batch of many digests
// holds them on one connection; a holder's failure releases its digests.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterKeyedLock } from '../../src/cluster/digest-lock.js';
import { runAll } from '../../src/registry/keyed-lock.js';
import { startPostgres, type Postgres } from './support.js';

let postgres: Postgres;
let a: ClusterKeyedLock;
let b: ClusterKeyedLock;

beforeAll(async () => {
  postgres = await startPostgres();
  a = new ClusterKeyedLock(postgres.url, { max: 4 });
  b = new ClusterKeyedLock(postgres.url, { max: 4 });
}, 60_000);
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await postgres?.stop();
});

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('ClusterKeyedLock', () => {
  it('makes another replica wait for a digest held here, and not for other digests', async () => {
    const order: string[] = [];
    const held = deferred();
    const release = deferred();
    const first = a.run('sha256:aa', async () => {
      order.push('a holds');
      held.resolve();
      await release.promise;
      order.push('a releases');
    });
    await held.promise;
    const second = b.run('sha256:aa', async () => {
      order.push('b holds');
    });
    // Another digest is not held back by a's lock.
    await b.run('sha256:bb', async () => {
      order.push('b holds another');
    });
    expect(order).toEqual(['a holds', 'b holds another']);
    release.resolve();
    await Promise.all([first, second]);
    expect(order).toEqual(['a holds', 'b holds another', 'a releases', 'b holds']);
  });

  it('holds a batch of many digests on one connection (a pool of 4 is enough for 200)', async () => {
    const keys = Array.from({ length: 200 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
    let ran = false;
    await runAll(a, keys, async () => {
      ran = true;
    });
    expect(ran).toBe(true);
    // Two replicas taking overlapping batches in any order finish (sorted order: no cycle).
    const reversed = [...keys].reverse();
    const results = await Promise.all([
      runAll(a, keys.slice(0, 150), async () => 'a'),
      runAll(b, reversed.slice(0, 150), async () => 'b'),
    ]);
    expect(results.sort()).toEqual(['a', 'b']);
  });

  it('releases the digest when the task fails', async () => {
    await expect(a.run('sha256:cc', async () => Promise.reject(new Error('push failed')))).rejects.toThrow('push failed');
    let ran = false;
    await b.run('sha256:cc', async () => {
      ran = true;
    });
    expect(ran).toBe(true);
  });
});
