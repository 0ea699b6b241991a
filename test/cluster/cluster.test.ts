// The Cluster facade as start.ts will use it: two replicas connected to one real PostgreSQL see
// each other's changes, share fill leases and one leader per role; ping() is /readyz's probe.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, defaultReplicaId } from '../../src/cluster/index.js';
import { eventually, startPostgres, type Postgres } from './support.js';

let postgres: Postgres;
let url: string;
const clusters: Cluster[] = [];

beforeAll(async () => {
  postgres = await startPostgres();
  url = await postgres.createDatabase();
});
afterAll(async () => {
  for (const cluster of clusters) await cluster.close();
  await postgres?.stop();
});

async function connect(replicaId?: string): Promise<Cluster> {
  const cluster = await Cluster.connect(url, { replicaId, timeoutMs: 2_000 });
  clusters.push(cluster);
  return cluster;
}

describe('Cluster', () => {
  it('names each replica hostname:pid:random by default', async () => {
    const a = await connect();
    const b = await connect();
    expect(a.replicaId).toMatch(/^.+:\d+:[0-9a-f]{6}$/);
    expect(a.replicaId).not.toBe(b.replicaId);
    expect(defaultReplicaId()).toContain(`:${process.pid}:`);
  });

  it('connects two replicas that share changes, leases and leadership', async () => {
    const a = await connect('replica-a');
    const b = await connect('replica-b');
    await a.ping();

    const changed: string[] = [];
    b.feed.on('repo', (repo) => changed.push(repo));
    await a.feed.publish('repo', 'ocp4/openshift4');
    await eventually(() => changed.length === 1, 20_000, 'the change on B');
    expect(changed).toEqual(['ocp4/openshift4']);

    const digest = `sha256:${'ab'.repeat(32)}`;
    const lease = await a.leases.tryAcquire(digest, 60_000);
    expect(lease).toBeDefined();
    expect(await b.leases.tryAcquire(digest, 60_000)).toBeUndefined();
    let stored = false;
    const waiting = b.leases.waitFor(digest, { timeoutMs: 30_000, isDone: () => stored });
    stored = true;
    await lease!.release();
    expect(await waiting).toBe('done');

    expect((await a.leader.runIfLeader('gc', () => 'a')).leader).toBe(true);
    expect((await b.leader.runIfLeader('gc', () => 'b')).leader).toBe(false);
  });

  it('close() gives up what the replica held: its leases and its roles', async () => {
    const a = await Cluster.connect(url, { replicaId: 'closing-a' });
    const b = await connect('closing-b');
    const digest = `sha256:${'cd'.repeat(32)}`;
    expect(await a.leases.tryAcquire(digest, 600_000)).toBeDefined();
    expect((await a.leader.runIfLeader('eviction', () => 1)).leader).toBe(true);
    await a.close();
    expect(await b.leases.tryAcquire(digest, 1_000)).toBeDefined();
    expect((await b.leader.runIfLeader('eviction', () => 2)).leader).toBe(true);
  });

  it('fails to connect with a message that names the database without its password', async () => {
    const err = await Cluster.connect('postgres://airlock:hunter2@127.0.0.1:1/airlock', { timeoutMs: 2_000 }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^cannot use the database at postgres:\/\/airlock:\*\*\*@127\.0\.0\.1:1\/airlock: /);
    expect((err as Error).message).not.toContain('hunter2');
  });

  it('ping() fails, without the password, once the database is gone', async () => {
    const a = await connect('pinging');
    await a.ping();
    await postgres.stop({ hard: true });
    const err = await a.ping().catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^database postgres:\/\/airlock:\*\*\*@127\.0\.0\.1:\d+\/\w+ unreachable: /);
  });
});
