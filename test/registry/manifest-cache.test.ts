import { describe, expect, it } from 'vitest';
import { ManifestCache } from '../../src/registry/manifest-cache.js';
import type { ManifestRecord } from '../../src/storage/metadata.js';

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
});
