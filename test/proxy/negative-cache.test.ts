import { describe, expect, it } from 'vitest';
import { NegativeCache } from '../../src/proxy/negative-cache.js';

describe('NegativeCache', () => {
  it('remembers a 404 for 30s by default, then forgets it', () => {
    let now = 1_000;
    const cache = new NegativeCache({ now: () => now });
    cache.remember('https://quay.io', 'org/app', 'latest');
    expect(cache.has('https://quay.io', 'org/app', 'latest')).toBe(true);
    now += 29_999;
    expect(cache.has('https://quay.io', 'org/app', 'latest')).toBe(true);
    now += 1;
    expect(cache.has('https://quay.io', 'org/app', 'latest')).toBe(false);
    expect(cache.size).toBe(0);
  });

  it('keys on upstream, repository and reference together', () => {
    const cache = new NegativeCache();
    cache.remember('https://quay.io', 'org/app', 'v1');
    expect(cache.has('https://quay.io', 'org/app', 'v2')).toBe(false);
    expect(cache.has('https://quay.io', 'org/other', 'v1')).toBe(false);
    expect(cache.has('https://ghcr.io', 'org/app', 'v1')).toBe(false);
  });

  it('honours a custom TTL and explicit forget', () => {
    let now = 0;
    const cache = new NegativeCache({ ttlMs: 5_000, now: () => now });
    cache.remember('u', 'r', 't');
    now = 5_000;
    expect(cache.has('u', 'r', 't')).toBe(false);
    cache.remember('u', 'r', 't');
    cache.forget('u', 'r', 't');
    expect(cache.has('u', 'r', 't')).toBe(false);
  });

  it('drops the oldest entries beyond maxEntries', () => {
    const cache = new NegativeCache({ maxEntries: 2 });
    cache.remember('u', 'r', 'a');
    cache.remember('u', 'r', 'b');
    cache.remember('u', 'r', 'c');
    expect(cache.size).toBe(2);
    expect(cache.has('u', 'r', 'a')).toBe(false);
    expect(cache.has('u', 'r', 'c')).toBe(true);
  });
});
