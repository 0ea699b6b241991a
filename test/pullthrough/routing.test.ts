// Several upstreams at once: which one serves a repository (longest whole-component prefix,
// remotePrefix, the "" catch-all, containerd's ?ns=), local content first, repositories outside
// every prefix, and listings (tags/list merged with the upstream, _catalog).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { call, expectError, getBlob, getManifest, startAirlock, startUpstreamProxy, type UpstreamProxy } from './support.js';

const OCP_REMOTE = 'openshift-release-dev/ocp-v4.0-art-dev';

let quay: Distribution; // stands in for quay.io
let redhat: TestServer; // a second airlock standing in for registry.redhat.io
let pQuay: UpstreamProxy;
let pRedhat: UpstreamProxy;
let airlock: TestServer;
let catchAll: TestServer;
const img: Record<string, PushedImage> = {};

const paths = (p: UpstreamProxy) => p.requests.map((r) => `${r.method} ${r.path}`);

beforeAll(async () => {
  [quay, redhat] = await Promise.all([startDistribution(), startTestServer()]);
  img.appV1 = await pushImage(quay.url, 'team/app', 'v1');
  img.appV2 = await pushImage(quay.url, 'team/app', 'v2');
  img.appV3 = await pushImage(quay.url, 'team/app', 'v3');
  img.shadow = await pushImage(quay.url, 'team/shadow', 'v1');
  img.ocp = await pushImage(quay.url, OCP_REMOTE, 'payload');
  img.ubi = await pushImage(redhat.url, 'ubi9/ubi', '9.4');
  img.other = await pushImage(redhat.url, 'other/thing', 'v1');
  img.catch = await pushImage(redhat.url, 'library/busybox', 'latest');
  [pQuay, pRedhat] = await Promise.all([startUpstreamProxy(quay.url), startUpstreamProxy(redhat.url)]);
  airlock = await startAirlock([
    { prefix: 'quay.io', url: pQuay.url },
    { prefix: 'registry.redhat.io', url: pRedhat.url },
    { prefix: 'ocp4', url: pRedhat.url },
    { prefix: 'ocp4/openshift4', url: pQuay.url, remotePrefix: OCP_REMOTE },
  ]);
  catchAll = await startAirlock([
    { prefix: '', url: pRedhat.url },
    { prefix: 'quay.io', url: pQuay.url },
  ]);
});

afterAll(async () => {
  await catchAll?.close();
  await airlock?.close();
  await pQuay?.close();
  await pRedhat?.close();
  await quay?.stop();
  await redhat?.close();
});

function reset(): void {
  pQuay.reset();
  pRedhat.reset();
}

describe('routing', () => {
  it('serves two upstream registries side by side, each repository from its own upstream', async () => {
    reset();
    const [a, b] = await Promise.all([
      getManifest(airlock.url, 'quay.io/team/app', 'v1'),
      getManifest(airlock.url, 'registry.redhat.io/ubi9/ubi', '9.4'),
    ]);
    expect(a.body.equals(img.appV1!.manifest)).toBe(true);
    expect(b.body.equals(img.ubi!.manifest)).toBe(true);
    const [ablob, bblob] = await Promise.all([
      getBlob(airlock.url, 'quay.io/team/app', img.appV1!.layerDigests[0]!),
      getBlob(airlock.url, 'registry.redhat.io/ubi9/ubi', img.ubi!.layerDigests[0]!),
    ]);
    expect(ablob.body.equals(img.appV1!.blobs.get(img.appV1!.layerDigests[0]!)!)).toBe(true);
    expect(bblob.body.equals(img.ubi!.blobs.get(img.ubi!.layerDigests[0]!)!)).toBe(true);
    expect(paths(pQuay).sort()).toEqual(['GET /v2/team/app/manifests/v1', `GET /v2/team/app/blobs/${img.appV1!.layerDigests[0]}`].sort());
    expect(paths(pRedhat).sort()).toEqual(['GET /v2/ubi9/ubi/manifests/9.4', `GET /v2/ubi9/ubi/blobs/${img.ubi!.layerDigests[0]}`].sort());
  });

  it('the longest prefix wins: ocp4/openshift4 (remotePrefix) over ocp4', async () => {
    reset();
    const ocp = await getManifest(airlock.url, 'ocp4/openshift4', img.ocp!.manifestDigest);
    expect(ocp.status).toBe(200);
    expect(ocp.body.equals(img.ocp!.manifest)).toBe(true);
    const layer = img.ocp!.layerDigests[0]!;
    expect((await getBlob(airlock.url, 'ocp4/openshift4', layer)).body.equals(img.ocp!.blobs.get(layer)!)).toBe(true);
    expect(paths(pQuay)).toEqual([`GET /v2/${OCP_REMOTE}/manifests/${img.ocp!.manifestDigest}`, `GET /v2/${OCP_REMOTE}/blobs/${layer}`]);
    expect(pRedhat.requests).toEqual([]);

    // Another repository under ocp4/ goes to the shorter prefix's upstream, with ocp4/ stripped.
    const other = await getManifest(airlock.url, 'ocp4/other/thing', 'v1');
    expect(other.body.equals(img.other!.manifest)).toBe(true);
    expect(paths(pRedhat)).toEqual(['GET /v2/other/thing/manifests/v1']);
    expect(pQuay.requests).toHaveLength(2);
  });

  it('prefix "" catches every repository no longer prefix claims', async () => {
    reset();
    const caught = await getManifest(catchAll.url, 'library/busybox', 'latest');
    expect(caught.status).toBe(200);
    expect(caught.body.equals(img.catch!.manifest)).toBe(true);
    expect(paths(pRedhat)).toEqual(['GET /v2/library/busybox/manifests/latest']);
    const quayed = await getManifest(catchAll.url, 'quay.io/team/app', 'v1');
    expect(quayed.body.equals(img.appV1!.manifest)).toBe(true);
    expect(paths(pQuay)).toEqual(['GET /v2/team/app/manifests/v1']);
    // Unknown everywhere: the catch-all's 404, after asking it.
    expectError(await getManifest(catchAll.url, 'nobody/has-this', 'v1'), 404, 'MANIFEST_UNKNOWN');
    expect(paths(pRedhat)).toContain('GET /v2/nobody/has-this/manifests/v1');

    // containerd naming a registry no upstream points at is not sent to the catch-all: such a
    // request sees local content only, like a plain registry.
    reset();
    const other = await call(catchAll.url, '/v2/library/alpine/manifests/latest?ns=ghcr.io');
    expectError(other, 404, 'MANIFEST_UNKNOWN');
    expect(pRedhat.requests).toEqual([]);
    expect(pQuay.requests).toEqual([]);
  });

  it('?ns=quay.io selects the upstream and stores under its prefix', async () => {
    reset();
    const res = await call(airlock.url, '/v2/team/app/manifests/v2?ns=quay.io', { headers: { accept: img.appV2!.mediaType } });
    expect(res.status).toBe(200);
    expect(res.body.equals(img.appV2!.manifest)).toBe(true);
    const layer = img.appV2!.layerDigests[0]!;
    const blob = await call(airlock.url, `/v2/team/app/blobs/${layer}?ns=quay.io`);
    expect(blob.body.equals(img.appV2!.blobs.get(layer)!)).toBe(true);
    expect(paths(pQuay)).toEqual(['GET /v2/team/app/manifests/v2', `GET /v2/team/app/blobs/${layer}`]);

    // Stored under quay.io/…: the prefixed name now answers from the cache without the upstream.
    reset();
    const cached = await getManifest(airlock.url, 'quay.io/team/app', 'v2');
    expect(cached.header('x-cache')).toBe('HIT');
    expect(cached.body.equals(img.appV2!.manifest)).toBe(true);
    expect((await getBlob(airlock.url, 'quay.io/team/app', layer)).header('x-cache')).toBe('HIT');
    expect(pQuay.requests).toEqual([]);
    // A registry no upstream points at is not served by some other upstream.
    expect((await call(airlock.url, '/v2/team/app/manifests/v2?ns=docker.io')).status).toBe(404);
    expect(pQuay.requests).toEqual([]);
    expect(pRedhat.requests).toEqual([]);
  });

  it('locally pushed content in a proxied repository is served first, without asking the upstream', async () => {
    const local = await pushImage(airlock.url, 'quay.io/team/shadow', 'v1');
    expect(local.manifestDigest).not.toBe(img.shadow!.manifestDigest);
    reset();
    const got = await getManifest(airlock.url, 'quay.io/team/shadow', 'v1');
    expect(got.status).toBe(200);
    expect(got.header('docker-content-digest')).toBe(local.manifestDigest);
    expect(got.body.equals(local.manifest)).toBe(true);
    expect((await getManifest(airlock.url, 'quay.io/team/shadow', local.manifestDigest)).status).toBe(200);
    for (const [digest, bytes] of local.blobs) {
      const blob = await getBlob(airlock.url, 'quay.io/team/shadow', digest);
      expect(blob.body.equals(bytes)).toBe(true);
    }
    expect(pQuay.requests).toEqual([]);
  });

  it('repositories outside every prefix behave like the core: 404 without contacting any upstream', async () => {
    reset();
    expectError(await getManifest(airlock.url, 'elsewhere/img', 'latest'), 404, 'MANIFEST_UNKNOWN');
    expectError(await getManifest(airlock.url, 'quay.iox/team/app', 'v1'), 404, 'MANIFEST_UNKNOWN');
    expectError(await getBlob(airlock.url, 'elsewhere/img', img.appV1!.layerDigests[0]!), 404, 'BLOB_UNKNOWN');
    expectError(await call(airlock.url, '/v2/elsewhere/img/tags/list'), 404, 'NAME_UNKNOWN');
    expect((await getManifest(airlock.url, 'registry.redhat.io.evil/ubi9/ubi', '9.4', 'HEAD')).status).toBe(404);

    // Pushed there, it is an ordinary local repository.
    const pushed = await pushImage(airlock.url, 'elsewhere/img', 'latest');
    const got = await getManifest(airlock.url, 'elsewhere/img', 'latest');
    expect(got.body.equals(pushed.manifest)).toBe(true);
    expect(got.header('x-cache')).toBeUndefined();
    expect(pQuay.requests).toEqual([]);
    expect(pRedhat.requests).toEqual([]);
  });
});

describe('listing', () => {
  it('tags/list of a proxied repository merges the upstream tags with the local ones', async () => {
    await pushImage(airlock.url, 'quay.io/team/app', 'local');
    reset();
    const res = await call(airlock.url, '/v2/quay.io/team/app/tags/list');
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ name: 'quay.io/team/app', tags: ['local', 'v1', 'v2', 'v3'] });
    expect(paths(pQuay)).toEqual(['GET /v2/team/app/tags/list']);
    // Paging applies to the merged list.
    const page = await call(airlock.url, '/v2/quay.io/team/app/tags/list?n=2');
    expect(page.json()).toEqual({ name: 'quay.io/team/app', tags: ['local', 'v1'] });
    expect(page.header('link')).toContain('last=v1');
  });

  it('with the upstream down, tags/list falls back to the cached and local tags', async () => {
    await pQuay.stop();
    try {
      const res = await call(airlock.url, '/v2/quay.io/team/app/tags/list');
      expect(res.status).toBe(200);
      // v3 was never pulled, so only the upstream knew it.
      expect(res.json()).toEqual({ name: 'quay.io/team/app', tags: ['local', 'v1', 'v2'] });
      const shadow = await call(airlock.url, '/v2/quay.io/team/shadow/tags/list');
      expect(shadow.json()).toEqual({ name: 'quay.io/team/shadow', tags: ['v1'] });
      // Nothing cached or local, nobody to ask: 503.
      expectError(await call(airlock.url, '/v2/quay.io/team/never/tags/list'), 503, 'UNAVAILABLE');
    } finally {
      await pQuay.resume();
    }
  });

  it('_catalog lists local and cached repositories (and nothing merely upstream)', async () => {
    const res = await call(airlock.url, '/v2/_catalog');
    expect(res.status).toBe(200);
    expect(res.json<{ repositories: string[] }>().repositories).toEqual(
      [
        'elsewhere/img', // local, outside every prefix
        'ocp4/openshift4', // cached (remotePrefix)
        'ocp4/other/thing', // cached
        'quay.io/team/app', // cached + local tag
        'quay.io/team/shadow', // local, in a proxied namespace
        'registry.redhat.io/ubi9/ubi', // cached
      ].sort(),
    );
  });
});
