// The referrers API (OCI distribution v1.1): manifests whose subject is a given digest.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, MEDIA, pushBlob, pushEmptyConfig, pushImage, pushManifest, sha256, uniqueName, type Pushed } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

interface Referrer {
  digest: string;
  size: number;
  artifactType: string;
}

/** Pushes an artifact manifest (by digest) whose subject is `subject`. */
async function pushReferrer(name: string, subject: Pushed, artifactType: string, annotations?: Record<string, string>): Promise<Referrer> {
  const config = await pushEmptyConfig(t.url, name);
  const payload = randomBytes(64);
  const layer = await pushBlob(t.url, name, payload);
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    artifactType,
    config,
    layers: [{ mediaType: 'application/octet-stream', digest: layer, size: payload.length }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.body.length },
    ...(annotations ? { annotations } : {}),
  };
  const res = await pushManifest(t.url, name, sha256(JSON.stringify(manifest)), manifest, MEDIA.ociManifest);
  expectStatus(res, 201);
  expect(res.header('oci-subject')).toBe(subject.digest);
  return { digest: res.digest, size: res.sent.length, artifactType };
}

async function referrers(name: string, digest: string, query = ''): Promise<{ res: Awaited<ReturnType<typeof http>>; manifests: Record<string, unknown>[] }> {
  const res = await http(t.url, `/v2/${name}/referrers/${digest}${query}`);
  expect(res.status).toBe(200);
  expect(res.header('content-type')).toBe(MEDIA.ociIndex);
  const index = res.json();
  expect(index).toMatchObject({ schemaVersion: 2, mediaType: MEDIA.ociIndex });
  return { res, manifests: index.manifests };
}

describe('GET /v2/<name>/referrers/<digest>', () => {
  it('lists every referrer as a descriptor with artifactType and annotations', async () => {
    const name = `referrers/${uniqueName()}`;
    const subject = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    const sig = await pushReferrer(name, subject, 'application/vnd.dev.cosign.simplesigning.v1+json');
    const sbom = await pushReferrer(name, subject, 'application/spdx+json', { 'org.example.kind': 'sbom' });
    const { res, manifests } = await referrers(name, subject.digest);
    expect(res.header('oci-filters-applied')).toBeUndefined();
    expect(manifests).toHaveLength(2);
    expect(manifests).toEqual(
      expect.arrayContaining([
        { mediaType: MEDIA.ociManifest, digest: sig.digest, size: sig.size, artifactType: sig.artifactType },
        { mediaType: MEDIA.ociManifest, digest: sbom.digest, size: sbom.size, artifactType: sbom.artifactType, annotations: { 'org.example.kind': 'sbom' } },
      ]),
    );
  });

  it('?artifactType= filters and says so in OCI-Filters-Applied', async () => {
    const name = `referrers/${uniqueName()}`;
    const subject = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    await pushReferrer(name, subject, 'application/vnd.example.a');
    const b = await pushReferrer(name, subject, 'application/vnd.example.b');
    const { res, manifests } = await referrers(name, subject.digest, `?artifactType=${encodeURIComponent('application/vnd.example.b')}`);
    expect(res.header('oci-filters-applied')).toBe('artifactType');
    expect(manifests.map((m) => m.digest)).toEqual([b.digest]);
    const none = await referrers(name, subject.digest, '?artifactType=application%2Fvnd.example.none');
    expect(none.manifests).toEqual([]);
    expect(none.res.header('oci-filters-applied')).toBe('artifactType');
  });

  it('an image manifest without artifactType is listed under its config media type', async () => {
    const name = `referrers/${uniqueName()}`;
    const subject = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    const cfg = Buffer.from('{"kind":"attestation"}');
    const config = { mediaType: 'application/vnd.example.config.v1+json', digest: await pushBlob(t.url, name, cfg), size: cfg.length };
    const manifest = { schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers: [], subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.body.length } };
    const res = await pushManifest(t.url, name, 'att', manifest, MEDIA.ociManifest);
    expectStatus(res, 201);
    const { manifests } = await referrers(name, subject.digest);
    expect(manifests).toEqual([{ mediaType: MEDIA.ociManifest, digest: res.digest, size: res.sent.length, artifactType: config.mediaType }]);
  });

  it('deleting a referrer removes it from the list', async () => {
    const name = `referrers/${uniqueName()}`;
    const subject = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    const keep = await pushReferrer(name, subject, 'application/vnd.example.keep');
    const drop = await pushReferrer(name, subject, 'application/vnd.example.drop');
    expect((await referrers(name, subject.digest)).manifests).toHaveLength(2);
    expectStatus(await http(t.url, `/v2/${name}/manifests/${drop.digest}`, { method: 'DELETE' }), 202);
    expect((await referrers(name, subject.digest)).manifests.map((m) => m.digest)).toEqual([keep.digest]);
  });

  it('referrers of a subject that does not exist, or in an unknown repository → 200 with an empty index', async () => {
    const name = `referrers/${uniqueName()}`;
    await pushImage(t.url, name, { tag: 'v1' });
    expect((await referrers(name, sha256(randomBytes(8)))).manifests).toEqual([]);
    expect((await referrers(`referrers/${uniqueName()}`, sha256(randomBytes(8)))).manifests).toEqual([]);
  });

  it('a referrer is listed even when its subject is not in the repository', async () => {
    const name = `referrers/${uniqueName()}`;
    const subject = await pushImage(t.url, `referrers/${uniqueName()}`, { format: 'oci' });
    const ref = await pushReferrer(name, subject, 'application/vnd.example.early');
    expect((await referrers(name, subject.digest)).manifests.map((m) => m.digest)).toEqual([ref.digest]);
  });

  it('an invalid digest → 400 DIGEST_INVALID', async () => {
    const name = `referrers/${uniqueName()}`;
    expectError(await http(t.url, `/v2/${name}/referrers/sha256:abc`), 400, 'DIGEST_INVALID');
    expectError(await http(t.url, `/v2/${name}/referrers/latest`), 400, 'DIGEST_INVALID');
  });
});
