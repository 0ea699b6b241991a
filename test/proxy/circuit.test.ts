import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../src/proxy/circuit.js';
import { UpstreamClient } from '../../src/proxy/client.js';
import { UpstreamError } from '../../src/proxy/errors.js';
import { freePort } from '../helpers/distribution.js';
import { upstreamConfig } from './fixtures.js';

const URL_ = 'https://quay.io';
const down = (retryAfterMs?: number) =>
  new UpstreamError(retryAfterMs === undefined ? 'server' : 'ratelimited', 'boom', { upstream: URL_, retryAfterMs });

function clock(start = Date.UTC(2030, 0, 1)) {
  const c = { now: start, tick: (ms: number) => (c.now += ms) };
  return c;
}

/** The error check() throws, or undefined when it lets the request through. */
function checkError(breaker: CircuitBreaker): UpstreamError | undefined {
  try {
    breaker.check();
    return undefined;
  } catch (e) {
    return e as UpstreamError;
  }
}

describe('CircuitBreaker', () => {
  it('opens after 3 consecutive down-failures and says until when it skips the upstream', () => {
    const c = clock();
    const breaker = new CircuitBreaker(URL_, { now: () => c.now });
    breaker.recordFailure(down());
    breaker.recordFailure(down());
    expect(breaker.state).toBe('closed');
    expect(checkError(breaker)).toBeUndefined();
    breaker.recordFailure(down());
    expect(breaker.state).toBe('open');
    const err = checkError(breaker);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err?.kind).toBe('unreachable');
    expect(err?.message).toContain(`upstream ${URL_} is skipped until ${new Date(c.now + 30_000).toISOString()}`);
  });

  it('lets requests through again after the cool-down, and re-opens on the next failure', () => {
    const c = clock();
    const breaker = new CircuitBreaker(URL_, { now: () => c.now, coolDownMs: 10_000 });
    for (let i = 0; i < 3; i++) breaker.recordFailure(down());
    c.tick(9_999);
    expect(breaker.state).toBe('open');
    c.tick(1);
    expect(breaker.state).toBe('half-open');
    expect(checkError(breaker)).toBeUndefined();
    breaker.recordFailure(down());
    expect(breaker.state).toBe('open');
  });

  it('closes on a success', () => {
    const c = clock();
    const breaker = new CircuitBreaker(URL_, { now: () => c.now });
    for (let i = 0; i < 3; i++) breaker.recordFailure(down());
    c.tick(30_000);
    breaker.recordSuccess();
    expect(breaker.state).toBe('closed');
    breaker.recordFailure(down());
    expect(breaker.state).toBe('closed'); // the count started over
  });

  it('stays open for a 429 Retry-After longer than the cool-down', () => {
    const c = clock();
    const breaker = new CircuitBreaker(URL_, { now: () => c.now });
    breaker.recordFailure(down());
    breaker.recordFailure(down(120_000));
    breaker.recordFailure(down());
    c.tick(119_999);
    expect(breaker.state).toBe('open');
    c.tick(1);
    expect(breaker.state).toBe('half-open');
  });

  it('does not count answers like 404 as the upstream being down', () => {
    const breaker = new CircuitBreaker(URL_, { failureThreshold: 2 });
    breaker.recordFailure(down());
    breaker.recordFailure(new UpstreamError('notfound', 'no such manifest', { upstream: URL_ }));
    breaker.recordFailure(down());
    expect(breaker.state).toBe('closed');
  });

  it('run() skips a refused upstream once open, without contacting it', async () => {
    const port = await freePort(); // nothing listens there
    const client = new UpstreamClient(upstreamConfig({ prefix: 'x', url: `http://127.0.0.1:${port}`, insecure: true }));
    const breaker = new CircuitBreaker(client.url);
    const pull = () => breaker.run(() => client.getManifest('team/app', 'latest'));
    for (let i = 0; i < 3; i++) await expect(pull()).rejects.toMatchObject({ kind: 'unreachable', message: expect.stringContaining('ECONNREFUSED') });
    await expect(pull()).rejects.toMatchObject({ kind: 'unreachable', message: expect.stringContaining('is skipped until') });
    await client.close();
  });
});
