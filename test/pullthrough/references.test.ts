// Manifest references that cannot name a manifest (not a tag, not a digest) in a pull-through
// repository: answered 404 MANIFEST_UNKNOWN here, without asking the upstream anything.
// Upstream: a second airlock behind a counting reverse proxy.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { expectError, getManifest, startAirlock, startUpstreamProxy, type UpstreamProxy } from './support.js';

describe('invalid references under an upstream prefix', () => {
  let upstream: TestServer;
  let proxy: UpstreamProxy;
  let airlock: TestServer;

  beforeAll(async () => {
    upstream = await startTestServer();
    await pushImage(upstream.url, 'library/app', 'v1');
    proxy = await startUpstreamProxy(upstream.url);
    airlock = await startAirlock([{ prefix: 'mirror', url: proxy.url }]);
  });

  afterAll(async () => {
    await airlock?.close();
    await proxy?.close();
    await upstream?.close();
  });

  const invalid = ['.INVALID_MANIFEST_NAME', '-bad', 'sha256:xyz', `sha256:${'A'.repeat(64)}`, `md5:${'a'.repeat(32)}`];

  it.each(invalid)('%s → 404 MANIFEST_UNKNOWN on GET and HEAD, and nothing reaches the upstream', async (reference) => {
    proxy.reset();
    const res = await getManifest(airlock.url, 'mirror/library/app', reference);
    expectError(res, 404, 'MANIFEST_UNKNOWN');
    const head = await getManifest(airlock.url, 'mirror/library/app', reference, 'HEAD');
    expect(head.status).toBe(404);
    expect(head.body.length).toBe(0);
    expect(proxy.requests).toEqual([]);
  });

  it('a well-formed unknown tag is still asked of the upstream (404 from there), and a known one is served', async () => {
    proxy.reset();
    expectError(await getManifest(airlock.url, 'mirror/library/app', 'no-such-tag'), 404, 'MANIFEST_UNKNOWN');
    expect(proxy.count('GET', '/v2/library/app/manifests/no-such-tag') + proxy.count('HEAD', '/v2/library/app/manifests/no-such-tag')).toBe(1);
    expect((await getManifest(airlock.url, 'mirror/library/app', 'v1')).status).toBe(200);
  });
});
