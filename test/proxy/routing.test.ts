import { describe, expect, it } from 'vitest';
import { selectUpstream } from '../../src/proxy/routing.js';
import { upstreamConfig } from './fixtures.js';

const quay = upstreamConfig({ prefix: 'quay.io', url: 'https://quay.io' });
const quayOpenshift = upstreamConfig({ prefix: 'quay.io/openshift', url: 'https://mirror.example.com', remotePrefix: 'ocp/' });
const hub = upstreamConfig({ prefix: 'docker.io', url: 'https://registry-1.docker.io' });
const catchAll = upstreamConfig({ prefix: '', url: 'https://registry.example.com', remotePrefix: 'cache' });
const release = upstreamConfig({ prefix: 'ocp4/release', url: 'https://quay.io', remotePrefix: 'openshift-release-dev/ocp-release' });

describe('selectUpstream', () => {
  it('strips a matching prefix and keeps the rest as the remote repository', () => {
    expect(selectUpstream([quay], 'quay.io/a/b')).toEqual({ upstream: quay, remoteRepo: 'a/b' });
  });

  it('matches whole path components only', () => {
    expect(selectUpstream([quay], 'quay.iox/a')).toBeUndefined();
    expect(selectUpstream([quay], 'quay.io')).toBeUndefined(); // nothing left to ask the upstream for
  });

  it('prefers the longest matching prefix', () => {
    const table = [quay, quayOpenshift, catchAll];
    expect(selectUpstream(table, 'quay.io/openshift/origin')?.upstream).toBe(quayOpenshift);
    expect(selectUpstream(table, 'quay.io/openshiftx/origin')?.upstream).toBe(quay);
  });

  it('lets the empty prefix catch every repository no other prefix matches', () => {
    expect(selectUpstream([quay, catchAll], 'team/app')).toEqual({ upstream: catchAll, remoteRepo: 'cache/team/app' });
    expect(selectUpstream([quay, catchAll], 'quay.io/team/app')?.upstream).toBe(quay);
    expect(selectUpstream([quay], 'team/app')).toBeUndefined();
  });

  it('joins remotePrefix and rest with single slashes', () => {
    expect(selectUpstream([quayOpenshift], 'quay.io/openshift/origin')?.remoteRepo).toBe('ocp/origin');
    expect(selectUpstream([release], 'ocp4/release')?.remoteRepo).toBe('openshift-release-dev/ocp-release');
  });

  it('prepends library/ to single-component Docker Hub repositories', () => {
    expect(selectUpstream([hub], 'docker.io/alpine')?.remoteRepo).toBe('library/alpine');
    expect(selectUpstream([hub], 'docker.io/bitnami/redis')?.remoteRepo).toBe('bitnami/redis');
    const hubAlias = upstreamConfig({ prefix: 'hub', url: 'https://docker.io' });
    expect(selectUpstream([hubAlias], 'hub/busybox')?.remoteRepo).toBe('library/busybox');
    // Other registries keep single-component names as they are.
    expect(selectUpstream([catchAll], 'alpine')?.remoteRepo).toBe('cache/alpine');
  });

  it('with ns, selects the upstream by URL host and keeps the whole repository name', () => {
    const table = [quay, quayOpenshift, catchAll];
    expect(selectUpstream(table, 'openshift/origin', 'quay.io')).toEqual({ upstream: quay, remoteRepo: 'openshift/origin' });
    expect(selectUpstream(table, 'team/app', 'mirror.example.com')).toEqual({ upstream: quayOpenshift, remoteRepo: 'ocp/team/app' });
  });

  it('with ns, also selects an upstream whose prefix is spelled like the host', () => {
    const byPrefix = upstreamConfig({ prefix: 'ghcr.io', url: 'https://ghcr-mirror.internal' });
    expect(selectUpstream([catchAll, byPrefix], 'org/tool', 'ghcr.io')).toEqual({ upstream: byPrefix, remoteRepo: 'org/tool' });
  });

  it('with ns, treats Docker Hub host names as one and adds library/', () => {
    expect(selectUpstream([quay, hub], 'alpine', 'docker.io')).toEqual({ upstream: hub, remoteRepo: 'library/alpine' });
  });

  it('with an ns no upstream points at, selects nothing rather than the catch-all', () => {
    expect(selectUpstream([quay, catchAll], 'org/tool', 'ghcr.io')).toBeUndefined();
  });
});
