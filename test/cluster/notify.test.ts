// ChangeFeed on a real PostgreSQL: what one replica publishes reaches the others (not itself), and
// a listening connection killed by the server comes back by itself and reports a resync.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { ChangeFeed, type Change } from '../../src/cluster/notify.js';
import { syncManifestCache } from '../../src/cluster/manifest-sync.js';
import { ManifestCache } from '../../src/registry/manifest-cache.js';
import type { ManifestRecord } from '../../src/storage/metadata.js';
import { eventually, newPool, startPostgres, terminateBackends, type Postgres } from './support.js';

let postgres: Postgres;
let url: string;
const pools: pg.Pool[] = [];
const feeds: ChangeFeed[] = [];

beforeAll(async () => {
  postgres = await startPostgres();
  url = await postgres.createDatabase();
});
afterAll(async () => {
  for (const feed of feeds) await feed.close();
  for (const pool of pools) await pool.end();
  await postgres?.stop();
});

async function replica(replicaId: string, extra: { backoffMs?: number; checkEveryMs?: number } = {}): Promise<ChangeFeed> {
  const pool = newPool(url);
  pools.push(pool);
  const feed = await ChangeFeed.start(url, { replicaId, pool, ...extra });
  feeds.push(feed);
  return feed;
}

describe('ChangeFeed', () => {
  it('delivers a change published on one replica to the other, and not back to the publisher', async () => {
    const a = await replica('a');
    const b = await replica('b');
    const seenByA: Change[] = [];
    const seenByB: Change[] = [];
    a.on('repo', (_key, change) => seenByA.push(change));
    b.on('repo', (_key, change) => seenByB.push(change));
    const otherKinds: string[] = [];
    b.on('lease-released', (key) => otherKinds.push(key));

    await a.publish('repo', 'ocp4/openshift4');
    await b.publish('repo', 'library/busybox');
    await eventually(() => seenByB.length === 1 && seenByA.length === 1, 20_000, 'both notifications');

    expect(seenByB).toEqual([{ kind: 'repo', key: 'ocp4/openshift4', origin: 'a' }]);
    expect(seenByA).toEqual([{ kind: 'repo', key: 'library/busybox', origin: 'b' }]);
    expect(otherKinds).toEqual([]);
  });

  it('stops calling a listener once unsubscribed', async () => {
    const a = await replica('c');
    const b = await replica('d');
    const keys: string[] = [];
    const off = b.on('repo', (key) => keys.push(key));
    await a.publish('repo', 'first');
    await eventually(() => keys.length === 1, 20_000, 'the first notification');
    off();
    // A second subscriber proves the next notification did arrive, just not to the removed one.
    const later: string[] = [];
    b.on('repo', (key) => later.push(key));
    await a.publish('repo', 'second');
    await eventually(() => later.length === 1, 20_000, 'the second notification');
    expect(keys).toEqual(['first']);
  });

  it('reconnects after its listening connection is terminated, reports a resync, and delivers again', async () => {
    const a = await replica('e');
    const b = await replica('f', { backoffMs: 50 });
    let resyncs = 0;
    b.onResync(() => resyncs++);
    const keys: string[] = [];
    b.on('repo', (key) => keys.push(key));

    const killed = await terminateBackends(url, 'application_name = $1', ['airlock f changes']);
    expect(killed).toBe(1);
    await eventually(() => resyncs === 1 && b.connected, 20_000, 'the resync');

    await a.publish('repo', 'after-reconnect');
    await eventually(() => keys.length === 1, 20_000, 'a notification after the reconnect');
    expect(keys).toEqual(['after-reconnect']);
    expect(resyncs).toBe(1);
  });

  it('keeps retrying while the database refuses it, then resyncs', async () => {
    const a = await replica('g');
    const b = await replica('h', { backoffMs: 20 });
    let resyncs = 0;
    b.onResync(() => resyncs++);
    const keys: string[] = [];
    b.on('repo', (key) => keys.push(key));

    // Refuse new connections to this database for a while: the first reconnects fail.
    const dbName = new URL(url).pathname.slice(1);
    const adminUrl = new URL(url);
    adminUrl.pathname = '/postgres'; // a database cannot close itself to new connections
    const admin = newPool(adminUrl.toString());
    pools.push(admin);
    await admin.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS false`);
    await terminateBackends(adminUrl.toString(), 'application_name = $1', ['airlock h changes']);
    await eventually(() => !b.connected, 20_000, 'the drop');
    await new Promise((r) => setTimeout(r, 300)); // let a few reconnects fail
    expect(resyncs).toBe(0);
    await admin.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`);

    await eventually(() => resyncs === 1, 20_000, 'the resync');
    await a.publish('repo', 'back');
    await eventually(() => keys.includes('back'), 20_000, 'a notification after the outage');
  });
});

describe('ChangeFeed on a connection that stops answering', () => {
  it('notices at its next check, reconnects and reports a resync', async () => {
    const a = await replica('k');
    const b = await replica('l', { backoffMs: 20, checkEveryMs: 100 });
    let resyncs = 0;
    b.onResync(() => resyncs++);
    const keys: string[] = [];
    b.on('repo', (key) => keys.push(key));

    // Freeze the backend serving B's listening connection: the socket stays open but silent, as
    // behind a dead network path, so only the health check can tell.
    const admin = newPool(url);
    pools.push(admin);
    const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', ['airlock l changes']);
    const pid = rows[0]!.pid;
    // (On a loaded machine a slow check may already have cycled the connection: count from here.)
    const before = resyncs;
    process.kill(pid, 'SIGSTOP');
    try {
      await eventually(() => resyncs > before, 20_000, 'the resync');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await a.publish('repo', 'after-freeze');
    await eventually(() => keys.includes('after-freeze'), 20_000, 'a notification on the new connection');
  });
});

describe('syncManifestCache', () => {
  const manifest = (digest: string): ManifestRecord => ({
    digest,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    size: 2,
    content: Buffer.from('{}'),
    subject: null,
    artifactType: null,
    annotations: null,
  });

  it('announces changes made here, drops a repository another replica changed, and everything after a resync', async () => {
    const a = await replica('i');
    const b = await replica('j', { backoffMs: 20 });
    const cacheA = new ManifestCache();
    const cacheB = new ManifestCache();
    syncManifestCache(a, cacheA);
    syncManifestCache(b, cacheB);
    // Tags are never cached with replicas; content by digest is.
    cacheB.set('ocp4/release', '4.16.0', manifest('sha256:aa'));
    expect(cacheB.get('ocp4/release', '4.16.0')).toBeUndefined();

    cacheB.set('ocp4/release', 'sha256:aa', manifest('sha256:aa'));
    cacheB.set('other/repo', 'sha256:bb', manifest('sha256:bb'));
    cacheA.invalidate('ocp4/release'); // a push or delete on replica A
    await eventually(() => cacheB.get('ocp4/release', 'sha256:aa') === undefined, 20_000, 'the invalidation');
    expect(cacheB.get('other/repo', 'sha256:bb')?.digest).toBe('sha256:bb');

    await terminateBackends(url, 'application_name = $1', ['airlock j changes']);
    await eventually(() => cacheB.get('other/repo', 'sha256:bb') === undefined, 20_000, 'the resync clearing the cache');
  });
});
