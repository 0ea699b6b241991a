import { describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../src/auth/login-throttle.js';

describe('LoginThrottle', () => {
  it('tolerates the free failures, then doubles the delay up to the cap', () => {
    let now = 0;
    const throttle = new LoginThrottle({ freeFailures: 5, baseDelayMs: 1_000, maxDelayMs: 8_000, forgetAfterMs: 60_000, now: () => now });
    for (let i = 0; i < 4; i++) throttle.recordFailure('u', 'a');
    expect(throttle.retryAfterMs('u', 'a')).toBe(0);
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      throttle.recordFailure('u', 'a');
      delays.push(throttle.retryAfterMs('u', 'a'));
      now += delays.at(-1)!;
    }
    expect(delays).toEqual([1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
  });

  it('forgets a pair after a quiet period', () => {
    let now = 0;
    const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 1_000, maxDelayMs: 1_000, forgetAfterMs: 10_000, now: () => now });
    throttle.recordFailure('u', 'a');
    throttle.recordFailure('u', 'a');
    expect(throttle.retryAfterMs('u', 'a')).toBe(1_000);
    now += 11_000;
    throttle.recordFailure('u', 'a');
    // Counting started over: one free failure, then the base delay again.
    expect(throttle.retryAfterMs('u', 'a')).toBe(1_000);
  });

  it('keeps pairs apart and forgets a pair on success', () => {
    const throttle = new LoginThrottle({ freeFailures: 0, now: () => 0 });
    throttle.recordFailure('u', 'a');
    expect(throttle.retryAfterMs('u', 'a')).toBeGreaterThan(0);
    expect(throttle.retryAfterMs('u', 'b')).toBe(0);
    expect(throttle.retryAfterMs('v', 'a')).toBe(0);
    throttle.recordSuccess('u', 'a');
    expect(throttle.retryAfterMs('u', 'a')).toBe(0);
  });

  it('remembers at most maxEntries pairs, dropping the stalest', () => {
    const throttle = new LoginThrottle({ freeFailures: 0, maxEntries: 2, now: () => 0 });
    throttle.recordFailure('a', 'x');
    throttle.recordFailure('b', 'x');
    throttle.recordFailure('c', 'x');
    expect(throttle.retryAfterMs('a', 'x')).toBe(0);
    expect(throttle.retryAfterMs('b', 'x')).toBeGreaterThan(0);
    expect(throttle.retryAfterMs('c', 'x')).toBeGreaterThan(0);
  });

  it('slows down one address trying many user names, without blocking other addresses', () => {
    const throttle = new LoginThrottle({ freeFailures: 5, addressFreeFailures: 10, now: () => 0 });
    for (let i = 0; i < 10; i++) throttle.recordFailure(`user${i}`, 'sprayer');
    // Each name failed once only, yet the address has used its allowance.
    expect(throttle.retryAfterMs('user0', 'sprayer')).toBeGreaterThan(0);
    expect(throttle.retryAfterMs('someone-else', 'sprayer')).toBeGreaterThan(0);
    expect(throttle.retryAfterMs('user0', 'elsewhere')).toBe(0);
  });
});
