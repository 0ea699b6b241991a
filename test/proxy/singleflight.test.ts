import { describe, expect, it } from 'vitest';
import { SingleFlight } from '../../src/proxy/singleflight.js';

/** A promise the test resolves or rejects by hand, to hold calls "in flight". */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('SingleFlight', () => {
  it('runs one call for concurrent callers of the same key and gives all the same result', async () => {
    const flight = new SingleFlight<string, number>();
    const gate = deferred<number>();
    let calls = 0;
    const fn = () => {
      calls += 1;
      return gate.promise;
    };
    const a = flight.do('k', fn);
    const b = flight.do('k', fn);
    expect(a).toBe(b);
    gate.resolve(42);
    expect(await Promise.all([a, b])).toEqual([42, 42]);
    expect(calls).toBe(1);
  });

  it('keeps different keys apart', async () => {
    const flight = new SingleFlight<string, string>();
    const results = await Promise.all([flight.do('a', async () => 'A'), flight.do('b', async () => 'B')]);
    expect(results).toEqual(['A', 'B']);
  });

  it('removes the entry when the call settles, so the next call runs again', async () => {
    const flight = new SingleFlight<string, number>();
    let calls = 0;
    await flight.do('k', async () => ++calls);
    expect(flight.has('k')).toBe(false);
    expect(await flight.do('k', async () => ++calls)).toBe(2);
  });

  it('shares a rejection with every waiter and forgets it', async () => {
    const flight = new SingleFlight<string, number>();
    const gate = deferred<number>();
    const a = flight.do('k', () => gate.promise);
    const b = flight.do('k', async () => 0);
    gate.reject(new Error('upstream down'));
    await expect(a).rejects.toThrow('upstream down');
    await expect(b).rejects.toThrow('upstream down');
    expect(flight.size).toBe(0);
  });
});
