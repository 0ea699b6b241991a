// Repository names, tags and digests: the grammar the spec gives, on every endpoint.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, MEDIA, pushBlob, pushImage, pushManifest, sha256, sha512, startUpload, withDigest } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

/** Pushes and pulls everything under `name`: blobs, a tagged manifest, tags, referrers, catalog. */
async function roundTrip(name: string): Promise<void> {
  const image = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
  const manifest = await http(t.url, `/v2/${name}/manifests/v1`);
  expect(manifest.status).toBe(200);
  expect(manifest.body.equals(image.body)).toBe(true);
  for (const [digest, data] of image.blobs) {
    const blob = await http(t.url, `/v2/${name}/blobs/${digest}`);
    expect(blob.status).toBe(200);
    expect(blob.body.equals(data)).toBe(true);
  }
  const location = await startUpload(t.url, name);
  expect(location.startsWith(`/v2/${name}/blobs/uploads/`)).toBe(true);
  expectStatus(await http(t.url, location, { method: 'DELETE' }), 204);
  expect((await http(t.url, `/v2/${name}/tags/list`)).json()).toEqual({ name, tags: ['v1'] });
  expect((await http(t.url, `/v2/${name}/referrers/${image.digest}`)).json().manifests).toEqual([]);
  expect((await http(t.url, '/v2/_catalog')).json().repositories).toContain(name);
}

describe('valid repository names', () => {
  it('a single component and deep nesting (7 levels) work on every endpoint', async () => {
    await roundTrip('single');
    await roundTrip('ocp4/openshift4/release/images/x86-64/nightly/payload');
  });

  it('components named like API path segments do not confuse routing', async () => {
    await roundTrip('x/blobs/uploads/manifests/tags/list/referrers');
    await roundTrip('y/manifests');
    await roundTrip('z/blobs');
  });

  it('separators . _ __ and runs of - inside components, and a 255-character name', async () => {
    await roundTrip('quay.io/my_org/app__x/a--b-c.d');
    const long = `${'a'.repeat(100)}/${'b'.repeat(100)}/${'c'.repeat(53)}`;
    expect(long).toHaveLength(255);
    await roundTrip(long);
  });
});

describe('invalid repository names → 400 NAME_INVALID', () => {
  const digest = sha256('x');
  const invalid: [string, string][] = [
    ['uppercase', 'Library/App'],
    ['a .. component', 'a/../b'],
    ['a . component', 'a/./b'],
    ['a percent-encoded ..', 'a/%2e%2e/b'],
    ['a percent-encoded slash', 'a%2Fb'],
    ['a trailing slash', 'a/b/'],
    ['a leading slash', '/a/b'],
    ['an empty component', 'a//b'],
    ['a component starting with a separator', 'a/-b'],
    ['a component ending with a separator', 'a/b.'],
    ['three underscores', 'a___b'],
    ['a space (encoded)', 'a%20b'],
    ['more than 255 characters', `${'a'.repeat(128)}/${'b'.repeat(127)}`],
  ];
  it.each(invalid)('%s (%s) on every endpoint', async (_why, name) => {
    const cases: [string, string][] = [
      ['GET', `/v2/${name}/manifests/latest`],
      ['PUT', `/v2/${name}/manifests/latest`],
      ['HEAD', `/v2/${name}/manifests/${digest}`],
      ['GET', `/v2/${name}/blobs/${digest}`],
      ['POST', `/v2/${name}/blobs/uploads/`],
      ['GET', `/v2/${name}/blobs/uploads/00000000-0000-4000-8000-000000000000`],
      ['GET', `/v2/${name}/tags/list`],
      ['GET', `/v2/${name}/referrers/${digest}`],
    ];
    for (const [method, path] of cases) {
      const res = await http(t.url, path, { method, headers: { 'content-type': MEDIA.ociManifest }, body: method === 'PUT' ? '{}' : undefined });
      if (method === 'HEAD') expect(res.status).toBe(400);
      else expectError(res, 400, 'NAME_INVALID');
    }
  });

  it('an invalid from= on a mount → 400 NAME_INVALID', async () => {
    expectError(await http(t.url, `/v2/ok/blobs/uploads/?mount=${digest}&from=Bad/Name`, { method: 'POST' }), 400, 'NAME_INVALID');
  });

  it('nothing is created for an invalid name', async () => {
    expect((await http(t.url, '/v2/_catalog')).json().repositories.some((r: string) => /[A-Z%]|\.\./.test(r))).toBe(false);
  });
});

describe('tags', () => {
  it('the longest tag (128 characters) and every allowed character are accepted', async () => {
    const image = await pushImage(t.url, 'tags/ok', { tag: 'first' });
    for (const tag of [`A${'x'.repeat(127)}`, '_under', 'v1.2.3-rc.1_build', '9']) {
      expectStatus(await pushManifest(t.url, 'tags/ok', tag, image.body, image.mediaType), 201);
      expect((await http(t.url, `/v2/tags/ok/manifests/${tag}`)).status).toBe(200);
    }
  });

  const invalid: [string, string][] = [
    ['a leading dash', '-v1'],
    ['a leading dot', '.v1'],
    ['129 characters', `v${'1'.repeat(128)}`],
    ['a plus sign', 'v1+build'],
    ['an encoded space', 'v%201'],
    ['a percent-encoded dot dot', '%2e%2e'],
  ];
  // A push names a tag, so a bad one is the client's mistake (400); a read or delete asks whether a
  // manifest goes by that name, and none can: 404 MANIFEST_UNKNOWN, as distribution and zot answer.
  it.each(invalid)('%s (%s) → 400 TAG_INVALID on PUT; 404 MANIFEST_UNKNOWN on GET, HEAD and DELETE', async (_why, tag) => {
    const image = await pushImage(t.url, 'tags/bad', { format: 'oci' });
    expectError(await pushManifest(t.url, 'tags/bad', tag, image.body, image.mediaType), 400, 'TAG_INVALID');
    expectError(await http(t.url, `/v2/tags/bad/manifests/${tag}`), 404, 'MANIFEST_UNKNOWN');
    expectError(await http(t.url, `/v2/tags/bad/manifests/${tag}`, { method: 'DELETE' }), 404, 'MANIFEST_UNKNOWN');
    const head = await http(t.url, `/v2/tags/bad/manifests/${tag}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect(head.body.length).toBe(0);
    expectStatus(await http(t.url, `/v2/tags/bad/manifests/${image.digest}`), 200);
  });

  it('the conformance suite\'s .INVALID_MANIFEST_NAME → 404 MANIFEST_UNKNOWN on GET and HEAD, in a known and an unknown repository', async () => {
    await pushImage(t.url, 'tags/conformance', { tag: 'v1' });
    for (const repo of ['tags/conformance', 'tags/never-pushed']) {
      const res = await http(t.url, `/v2/${repo}/manifests/.INVALID_MANIFEST_NAME`);
      expectError(res, 404, 'MANIFEST_UNKNOWN');
      expect(res.json<{ errors: { message: string }[] }>().errors[0]!.message).toContain('.INVALID_MANIFEST_NAME');
      expect((await http(t.url, `/v2/${repo}/manifests/.INVALID_MANIFEST_NAME`, { method: 'HEAD' })).status).toBe(404);
    }
  });
});

describe('digests', () => {
  it('sha512 digests are accepted for blobs, in manifests, and as a manifest reference', async () => {
    const name = 'digests/sha512';
    const layer = randomBytes(256);
    const layerDigest = await pushBlob(t.url, name, layer, sha512(layer));
    const blob = await http(t.url, `/v2/${name}/blobs/${layerDigest}`);
    expect(blob.status).toBe(200);
    expect(blob.header('docker-content-digest')).toBe(layerDigest);
    expect(blob.body.equals(layer)).toBe(true);

    const config = Buffer.from('{}');
    const configDigest = await pushBlob(t.url, name, config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.ociManifest,
        config: { mediaType: MEDIA.ociEmpty, digest: configDigest, size: 2 },
        layers: [{ mediaType: MEDIA.ociLayer, digest: layerDigest, size: layer.length }],
      }),
    );
    const manifestDigest = `sha512:${createHash('sha512').update(manifest).digest('hex')}`;
    const put = await pushManifest(t.url, name, manifestDigest, manifest, MEDIA.ociManifest);
    expectStatus(put, 201);
    expect(put.header('docker-content-digest')).toBe(manifestDigest);
    const get = await http(t.url, `/v2/${name}/manifests/${manifestDigest}`);
    expect(get.status).toBe(200);
    expect(get.body.equals(manifest)).toBe(true);
  });

  const unknownAlgorithms = [`md5:${'a'.repeat(32)}`, `sha1:${'a'.repeat(40)}`, `sha384:${'a'.repeat(96)}`, `blake3:${'a'.repeat(64)}`];
  it.each(unknownAlgorithms)('an unknown algorithm (%s) → 400 DIGEST_INVALID everywhere', async (digest) => {
    const name = 'digests/unknown';
    expectError(await http(t.url, `/v2/${name}/blobs/${digest}`), 400, 'DIGEST_INVALID');
    // No manifest can have that digest: unknown on read (as distribution treats it: not a digest,
    // so a tag, and no such tag), a bad request on push and delete.
    expectError(await http(t.url, `/v2/${name}/manifests/${digest}`), 404, 'MANIFEST_UNKNOWN');
    expectError(await http(t.url, `/v2/${name}/manifests/${digest}`, { method: 'DELETE' }), 400, 'DIGEST_INVALID');
    expectError(await http(t.url, `/v2/${name}/referrers/${digest}`), 400, 'DIGEST_INVALID');
    expectError(await http(t.url, `/v2/${name}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: 'x', headers: { 'content-length': 1 } }), 400, 'DIGEST_INVALID');
    const location = await startUpload(t.url, name);
    expectError(await http(t.url, withDigest(location, digest), { method: 'PUT', body: 'x', headers: { 'content-length': 1 } }), 400, 'DIGEST_INVALID');
  });

  it('a malformed sha256 digest (wrong length, uppercase hex) → 400 DIGEST_INVALID', async () => {
    for (const digest of ['sha256:abc', `sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(65)}`, 'sha256:']) {
      expectError(await http(t.url, `/v2/digests/bad/blobs/${digest}`), 400, 'DIGEST_INVALID');
    }
  });
});
