// A cluster node following an ImageDigestMirrorSet: CRI-O's registries.conf sends digest pulls of
// quay.io/openshift-release-dev/ocp-v4.0-art-dev to airlock's ocp4/openshift4, which airlock has
// never seen: it fills it from its upstream (remotePrefix openshift-release-dev/ocp-v4.0-art-dev).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import type { TestServer } from '../helpers/server.js';
import { listBlobsOfOciLayout, readOciLayoutTagged, skopeoCopy, writeRegistriesConf } from '../helpers/skopeo.js';
import { call, startAirlock, startUpstreamProxy, tempDirs, type UpstreamProxy } from './support.js';

const SOURCE = 'quay.io/openshift-release-dev/ocp-v4.0-art-dev';
const REMOTE = 'openshift-release-dev/ocp-v4.0-art-dev';
const MIRROR = 'ocp4/openshift4';

const tmp = tempDirs('mirrorset');
let registry: Distribution;
let proxy: UpstreamProxy;
let airlock: TestServer;
let built: BuiltOciImage;
let srcDir: string;
let conf: string;

beforeAll(async () => {
  registry = await startDistribution();
  const root = tmp.make('root');
  srcDir = join(root, 'src');
  built = buildOciLayoutImage(srcDir, { tag: 'payload', layerBytes: 8192 });
  // The release payload upstream, pushed by digest as release images are.
  await skopeoCopy(built.ociRef, `docker://${registry.host}/${REMOTE}@${built.indexDigest}`, { destInsecure: true });
  proxy = await startUpstreamProxy(registry.url);
  airlock = await startAirlock([{ prefix: MIRROR, url: proxy.url, remotePrefix: REMOTE }]);
  conf = join(root, 'registries.conf');
  writeRegistriesConf(conf, {
    prefix: SOURCE,
    location: SOURCE,
    mirrors: [{ location: `${airlock.host}/${MIRROR}`, insecure: true, pullFromMirror: 'digest-only' }],
  });
});

afterAll(async () => {
  await airlock?.close();
  await proxy?.close();
  await registry?.stop();
  tmp.cleanup();
});

function expectSameLayout(out: string): void {
  expect(readOciLayoutTagged(out, 'pulled').digest).toBe(built.indexDigest);
  const original = listBlobsOfOciLayout(srcDir);
  const pulled = listBlobsOfOciLayout(out);
  expect(pulled.map((b) => b.digest)).toEqual(original.map((b) => b.digest));
  for (const [i, b] of pulled.entries()) expect(readFileSync(b.path).equals(readFileSync(original[i]!.path))).toBe(true);
}

describe('a node pulling through an IDMS-style digest-only mirror', () => {
  it('`skopeo copy --all` of a digest airlock only gets from its upstream succeeds, byte-identical', async () => {
    const out = tmp.make('node1');
    await skopeoCopy(`docker://${SOURCE}@${built.indexDigest}`, `oci:${out}:pulled`, { registriesConf: conf });
    expectSameLayout(out);

    // airlock fetched everything from the upstream repository named by remotePrefix, once.
    expect(proxy.requests.every((r) => r.path.startsWith(`/v2/${REMOTE}/`))).toBe(true);
    expect(proxy.count('GET', `/v2/${REMOTE}/manifests/${built.indexDigest}`)).toBe(1);
    for (const d of built.manifestDigests) expect(proxy.count('GET', `/v2/${REMOTE}/manifests/${d}`), d).toBe(1);
    for (const d of built.blobDigests) expect(proxy.count('GET', `/v2/${REMOTE}/blobs/${d}`), d).toBe(1);
    const catalog = (await call(airlock.url, '/v2/_catalog')).json<{ repositories: string[] }>();
    expect(catalog.repositories).toEqual([MIRROR]);
  });

  it('the next node is served from the cache alone', async () => {
    proxy.reset();
    const out = tmp.make('node2');
    await skopeoCopy(`docker://${SOURCE}@${built.indexDigest}`, `oci:${out}:pulled`, { registriesConf: conf });
    expectSameLayout(out);
    expect(proxy.requests).toEqual([]);
  });
});
