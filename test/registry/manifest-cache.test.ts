import { describe, expect, it } from 'vitest';
import { ManifestCache } from '../../src/registry/manifest-cache.js';
import type { ManifestRecord, TagRecord } from '../../src/storage/metadata.js';

const manifest = (digest: string, size = 100): ManifestRecord => ({
  digest,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  size,
  content: Buffer.alloc(size),
  subject: null,
  artifactType: null,
  annotations: null,
});

describe('ManifestCache', () => {
  it('answers what was stored, per repository and reference', () => {
    const cache = new ManifestCache();
    cache.set('a/b', 'v1', manifest('sha256:1'));
    expect(cache.get('a/b', 'v1')?.digest).toBe('sha256:1');
    expect(cache.get('a/c', 'v1')).toBeUndefined();
    expect(cache.get('a/b', 'v2')).toBeUndefined();
  });

  it('a change to a repository hides all its entries, and only its entries', () => {
    const cache = new ManifestCache();
    cache.set('a/b', 'v1', manifest('sha256:1'));
    cache.set('a/b', 'sha256:1', manifest('sha256:1'));
    cache.set('x/y', 'v1', manifest('sha256:2'));
    cache.invalidate('a/b');
    expect(cache.get('a/b', 'v1')).toBeUndefined();
    expect(cache.get('a/b', 'sha256:1')).toBeUndefined();
    expect(cache.get('x/y', 'v1')?.digest).toBe('sha256:2');
  });

  it('stays within its byte budget, dropping the least recently used first', () => {
    const cache = new ManifestCache(16 * 1000);
    for (let i = 0; i < 16; i++) cache.set('r', `t${i}`, manifest(`sha256:${i}`, 1000));
    cache.get('r', 't0'); // t0 is now the most recently used
    cache.set('r', 't16', manifest('sha256:16', 1000));
    expect(cache.get('r', 't1')).toBeUndefined();
    expect(cache.get('r', 't0')?.digest).toBe('sha256:0');
    expect(cache.get('r', 't16')?.digest).toBe('sha256:16');
  });

  it('does not keep manifests too large to be worth it', () => {
    const cache = new ManifestCache(16 * 1000);
    cache.set('r', 'big', manifest('sha256:big', 2000));
    expect(cache.get('r', 'big')).toBeUndefined();
  });

  it('keeps tag records per repository, replaced by a later set, hidden by a change to the repository', () => {
    const cache = new ManifestCache();
    const tag = (digest: string, updatedAt: number): TagRecord => ({ digest, cached: true, updatedAt });
    cache.setTag('a/b', 'v1', tag('sha256:1', 1000));
    cache.setTag('x/y', 'v1', tag('sha256:2', 1000));
    expect(cache.getTag('a/b', 'v1')).toEqual(tag('sha256:1', 1000));
    expect(cache.getTag('a/b', 'v2')).toBeUndefined();
    cache.setTag('a/b', 'v1', tag('sha256:1', 2000));
    expect(cache.getTag('a/b', 'v1')?.updatedAt).toBe(2000);
    cache.invalidate('a/b');
    expect(cache.getTag('a/b', 'v1')).toBeUndefined();
    expect(cache.getTag('x/y', 'v1')?.digest).toBe('sha256:2');
  });

  it('keeps at most maxTags tag records, dropping the least recently used first', () => {
    const cache = new ManifestCache(undefined, 3);
    for (const t of ['t0', 't1', 't2']) cache.setTag('r', t, { digest: `sha256:${t}`, cached: true, updatedAt: 0 });
    cache.getTag('r', 't0');
    cache.setTag('r', 't3', { digest: 'sha256:t3', cached: true, updatedAt: 0 });
    expect(cache.getTag('r', 't1')).toBeUndefined();
    expect(cache.getTag('r', 't0')).toBeDefined();
    expect(cache.getTag('r', 't3')).toBeDefined();
  });

  it('keeps out an answer read before a change landed (a store read awaited across a push)', () => {
    const cache = new ManifestCache();
    const asOf = cache.generation('a/b');
    // While the read of v1 was in flight, a push moved the tag.
    cache.invalidate('a/b');
    cache.set('a/b', 'v1', manifest('sha256:old'), asOf);
    cache.setTag('a/b', 'v1', { digest: 'sha256:old', cached: true, updatedAt: 1 }, asOf);
    expect(cache.get('a/b', 'v1')).toBeUndefined();
    expect(cache.getTag('a/b', 'v1')).toBeUndefined();
    // Read after the change: kept.
    const now = cache.generation('a/b');
    cache.set('a/b', 'v1', manifest('sha256:new'), now);
    expect(cache.get('a/b', 'v1')?.digest).toBe('sha256:new');
  });
});

describe('ManifestCache across replicas (read stamps, clear)', () => {
  it('does not cache a read that a change overtook while it was in flight', () => {
    const cache = new ManifestCache();
    const stamp = cache.generation('a/b'); // taken before an asynchronous read of a/b
    cache.invalidate('a/b'); // another replica moved the tag meanwhile
    cache.set('a/b', 'v1', manifest('sha256:old'), stamp);
    cache.setTag('a/b', 'v1', { digest: 'sha256:old', cached: true, updatedAt: 1 }, stamp);
    expect(cache.get('a/b', 'v1')).toBeUndefined();
    expect(cache.getTag('a/b', 'v1')).toBeUndefined();

    const fresh = cache.generation('a/b');
    cache.invalidate('x/y'); // a change elsewhere does not matter
    cache.set('a/b', 'v1', manifest('sha256:new'), fresh);
    expect(cache.get('a/b', 'v1')?.digest).toBe('sha256:new');
  });

  it('clear() forgets everything and refuses reads stamped before it', () => {
    const cache = new ManifestCache();
    cache.set('a/b', 'v1', manifest('sha256:1'));
    cache.setTag('a/b', 'v1', { digest: 'sha256:1', cached: true, updatedAt: 1 });
    const stamp = cache.generation('x/y');
    cache.clear();
    expect(cache.get('a/b', 'v1')).toBeUndefined();
    expect(cache.getTag('a/b', 'v1')).toBeUndefined();
    cache.set('x/y', 'v1', manifest('sha256:2'), stamp);
    expect(cache.get('x/y', 'v1')).toBeUndefined();
    cache.set('x/y', 'v1', manifest('sha256:2'), cache.generation('x/y'));
    expect(cache.get('x/y', 'v1')?.digest).toBe('sha256:2');
  });
});
