// Leader election by advisory lock on a real PostgreSQL, with two replicas: one leader per role,
// kept across runs, lost with its connection, then taken by the other.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaderElection } from '../../src/cluster/leader.js';
import { eventually, startPostgres, terminateBackends, type Postgres } from './support.js';

let postgres: Postgres;
let url: string;
const elections: LeaderElection[] = [];

beforeAll(async () => {
  postgres = await startPostgres();
  url = await postgres.createDatabase();
});
// Each test starts with no leader: the previous test's replicas give their roles up.
afterEach(async () => {
  for (const election of elections.splice(0)) await election.close();
});
afterAll(async () => {
  await postgres?.stop();
});

function replica(replicaId: string): LeaderElection {
  const election = new LeaderElection(url, { replicaId });
  elections.push(election);
  return election;
}

describe('LeaderElection', () => {
  it('runs a role on one replica only, and keeps it there across runs', async () => {
    const a = replica('a1');
    const b = replica('b1');
    const ran: string[] = [];
    expect(await a.runIfLeader('gc', () => ran.push('a'))).toEqual({ leader: true, value: 1 });
    expect(await b.runIfLeader('gc', () => ran.push('b'))).toEqual({ leader: false });
    expect(await b.runIfLeader('gc', () => ran.push('b'))).toEqual({ leader: false });
    expect(await a.runIfLeader('gc', () => ran.push('a'))).toEqual({ leader: true, value: 2 });
    expect(ran).toEqual(['a', 'a']);
    expect(a.isLeader('gc')).toBe(true);
    expect(b.isLeader('gc')).toBe(false);
  });

  it('elects each role separately', async () => {
    const a = replica('a2');
    const b = replica('b2');
    expect((await a.runIfLeader('eviction', () => 'a')).leader).toBe(true);
    expect(await b.runIfLeader('upload-expiry', () => 'b')).toEqual({ leader: true, value: 'b' });
    expect((await b.runIfLeader('eviction', () => 'b')).leader).toBe(false);
    expect((await a.runIfLeader('upload-expiry', () => 'a')).leader).toBe(false);
  });

  it('lets only one of two replicas in when both try at once', async () => {
    const a = replica('a3');
    const b = replica('b3');
    const results = await Promise.all([a, b, a, b].map((r) => r.runIfLeader('race', () => true)));
    const leaders = new Set(results.flatMap((result, i) => (result.leader ? [i % 2] : [])));
    expect(leaders.size).toBe(1);
  });

  it('a replica whose connection dies loses leadership mid-run (its job is told), and the other takes it', async () => {
    const a = replica('a4');
    const b = replica('b4');
    let aborted: unknown;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const job = a.runIfLeader('gc', (signal) =>
      new Promise<string>((resolve) => {
        started();
        signal.addEventListener('abort', () => {
          aborted = signal.reason;
          resolve('stopped');
        });
      }),
    );
    await running;
    expect((await b.runIfLeader('gc', () => 'b')).leader).toBe(false);

    // The server ends A's session (as when A is killed or cut off): its advisory lock goes with it.
    expect(await terminateBackends(url, 'application_name = $1', ['airlock a4 leader:gc'])).toBe(1);
    expect(await job).toEqual({ leader: true, value: 'stopped' });
    expect(String(aborted)).toMatch(/leadership of gc lost/);
    expect(a.isLeader('gc')).toBe(false);

    await eventually(async () => (await b.runIfLeader('gc', () => 'b')).leader, 20_000, 'B to take over');
    expect(b.isLeader('gc')).toBe(true);
    // A comes back (new connection) but B now leads.
    expect((await a.runIfLeader('gc', () => 'a')).leader).toBe(false);
  });

  it('resign hands the role over; a database that cannot be reached means "not leader", not an error', async () => {
    const a = replica('a5');
    const b = replica('b5');
    expect((await a.runIfLeader('eviction', () => 1)).leader).toBe(true);
    await a.resign('eviction');
    expect((await b.runIfLeader('eviction', () => 2)).leader).toBe(true);

    const unreachable = new LeaderElection('postgres://airlock:airlock@127.0.0.1:1/airlock', { replicaId: 'c5' });
    elections.push(unreachable);
    expect(await unreachable.runIfLeader('gc', () => 3)).toEqual({ leader: false });
  });
});
