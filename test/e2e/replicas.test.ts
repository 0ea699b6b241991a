/**
 * Two airlock replicas on one PostgreSQL and one S3 bucket (Ceph's radosgw), used by real clients:
 * skopeo pushes to one replica and pulls from the other byte for byte, an upload continues across
 * replicas, a moved tag is seen moved at once everywhere, blob GETs can redirect to pre-signed
 * URLs, and a node following an ImageDigestMirrorSet pulls through a replica.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, pushImage, pushManifest, sha256 } from '../helpers/http.js';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { closeAll, scratchDir, startBackends, startReplicas, type Backends } from '../helpers/replicas.js';
import type { TestServer } from '../helpers/server.js';
import {
  listBlobsOfOciLayout,
  readOciLayoutTagged,
  skopeo,
  skopeoCopy,
  TLS_INSECURE,
  writeRegistriesConf,
} from '../helpers/skopeo.js';
import { expectImageStored, fetchManifest, fetchTags, ociLayoutBlobs, startRecorder } from './support.js';

let backends: Backends;
const scratch = scratchDir('e2e');
let a: TestServer;
let b: TestServer;

beforeAll(async () => {
  backends = await startBackends();
  [a, b] = await startReplicas(await backends.sharedStore());
}, 120_000);

afterAll(async () => {
  await closeAll([a, b]);
  await backends?.stop();
  scratch.remove();
});

/** Asserts that the OCI layout `out` holds exactly the image built in `src`, byte for byte. */
function expectSameLayout(out: string, tag: string, src: string, built: BuiltOciImage): void {
  expect(readOciLayoutTagged(out, tag).digest).toBe(built.indexDigest);
  const original = listBlobsOfOciLayout(src);
  const pulled = listBlobsOfOciLayout(out);
  expect(pulled.map((f) => f.digest)).toEqual(original.map((f) => f.digest));
  for (const [i, f] of pulled.entries()) expect(readFileSync(f.path).equals(readFileSync(original[i]!.path)), f.digest).toBe(true);
}

describe('skopeo against two replicas', () => {
  const REPO = 'apps/multi';
  let src: string;
  let built: BuiltOciImage;

  beforeAll(async () => {
    src = join(scratch.path, 'multi-src');
    built = buildOciLayoutImage(src, { tag: 'v1', layerBytes: 256 * 1024 });
  });

  it('copy --all of a multi-arch image pushed to A pulls from B byte-exact', async () => {
    await skopeoCopy(built.ociRef, `docker://${a.host}/${REPO}:v1`, { destInsecure: true });

    const out = join(scratch.path, 'multi-from-b');
    await skopeoCopy(`docker://${b.host}/${REPO}:v1`, `oci:${out}:v1`, { srcInsecure: true });
    expectSameLayout(out, 'v1', src, built);
    // And over the plain HTTP API of B: the index, every child manifest and every blob, with media types.
    await expectImageStored(b.url, REPO, 'v1', built, ociLayoutBlobs(src));
  });

  it('a tagless push (by digest) to A pulls by digest from B byte-exact', async () => {
    const dir = join(scratch.path, 'tagless-src');
    const tagless = buildOciLayoutImage(dir, { tag: 'x', layerBytes: 64 * 1024 });
    await skopeoCopy(tagless.ociRef, `docker://${a.host}/release/payload@${tagless.indexDigest}`, { destInsecure: true });
    expect(await fetchTags(b.url, 'release/payload')).toEqual({ status: 200, tags: [] });

    const out = join(scratch.path, 'tagless-from-b');
    await skopeoCopy(`docker://${b.host}/release/payload@${tagless.indexDigest}`, `oci:${out}:x`, { srcInsecure: true });
    expectSameLayout(out, 'x', dir, tagless);
  });

  it("list-tags on B shows A's tags", async () => {
    const other = buildOciLayoutImage(join(scratch.path, 'multi-v2'), { tag: 'v2', layerBytes: 4096 });
    await skopeoCopy(other.ociRef, `docker://${a.host}/${REPO}:v2`, { destInsecure: true });
    const listed = await skopeo(['list-tags', TLS_INSECURE, `docker://${b.host}/${REPO}`], { check: true });
    expect((JSON.parse(listed.stdout) as { Tags: string[] }).Tags.sort()).toEqual(['v1', 'v2']);
  });

  it('skopeo delete on B removes the image for A', async () => {
    expect((await fetchManifest(a.url, REPO, built.indexDigest)).status).toBe(200);
    await skopeo(['delete', TLS_INSECURE, `docker://${b.host}/${REPO}:v1`], { check: true });

    expect((await fetchManifest(a.url, REPO, 'v1')).status).toBe(404);
    expect((await fetchManifest(a.url, REPO, built.indexDigest)).status).toBe(404);
    expect(await fetchTags(a.url, REPO)).toEqual({ status: 200, tags: ['v2'] });
    const r = await skopeo(['inspect', '--raw', TLS_INSECURE, `docker://${a.host}/${REPO}:v1`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/manifest unknown|not found/i);
  });
});

/** The path and query of an upload Location (relative or absolute), to send to any replica. */
function uploadPath(location: string): string {
  if (!/^https?:/.test(location)) return location;
  const url = new URL(location);
  return url.pathname + url.search;
}

describe('a chunked upload alternating replicas', () => {
  const REPO = 'uploads/alternating';
  // Chunks below and above S3's 5 MiB minimum part size, so stored chunks of both kinds are joined.
  const chunks = [randomBytes(3 * 1024 * 1024), randomBytes(6 * 1024 * 1024), randomBytes(100 * 1024)];
  const last = randomBytes(200 * 1024);
  const whole = Buffer.concat([...chunks, last]);

  /** POST on A, PATCH on B, PATCH on A, PATCH on B: returns the Location for the final PUT. */
  async function upload(): Promise<string> {
    const post = await http(a.url, `/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    expectStatus(post, 202);
    expect(post.header('location')).toBeTruthy();
    // S3's minimum part size: chunks of at least that size are copied into the blob at commit.
    expect(post.header('oci-chunk-min-length')).toBe(String(5 * 1024 * 1024));
    let location = uploadPath(post.header('location')!);
    let offset = 0;
    const sides = [b, a, b];
    for (const [i, chunk] of chunks.entries()) {
      const side = sides[i]!;
      const res = await http(side.url, location, {
        method: 'PATCH',
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': chunk.length,
          'content-range': `${offset}-${offset + chunk.length - 1}`,
        },
        body: chunk,
      });
      expectStatus(res, 202);
      offset += chunk.length;
      expect(res.header('range')).toBe(`0-${offset - 1}`);
      expect(res.header('location')).toBeTruthy();
      location = uploadPath(res.header('location')!);
    }
    // The session's progress as the other replica sees it.
    const status = await http(a.url, location);
    expectStatus(status, 204);
    expect(status.header('range')).toBe(`0-${offset - 1}`);
    return location;
  }

  it('POST on A, PATCH on B, PATCH on A, PATCH on B, PUT ?digest on B: the blob GETs byte-exact from both', async () => {
    const location = await upload();
    const digest = sha256(whole);
    const put = await http(b.url, `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': last.length },
      body: last,
    });
    expectStatus(put, 201);
    expect(put.header('docker-content-digest')).toBe(digest);

    for (const side of [a, b]) {
      const got = await http(side.url, `/v2/${REPO}/blobs/${digest}`);
      expectStatus(got, 200);
      expect(got.body.length).toBe(whole.length);
      expect(got.body.equals(whole)).toBe(true);
    }
  });

  it('a wrong digest on the final PUT answers 400 DIGEST_INVALID and stores no blob', async () => {
    const location = await upload();
    const wrong = sha256(Buffer.concat([whole, Buffer.from('x')]));
    const put = await http(b.url, `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(wrong)}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': last.length },
      body: last,
    });
    expectError(put, 400, 'DIGEST_INVALID');
    for (const side of [a, b]) {
      expect((await http(side.url, `/v2/${REPO}/blobs/${wrong}`, { method: 'HEAD' })).status).toBe(404);
    }
  });
});

describe('monolithic pushes to a replica', () => {
  const REPO = 'uploads/monolithic';
  // One below the part size (a single PUT into the bucket), one a multipart upload.
  const blobs = [randomBytes(300 * 1024), randomBytes(20 * 1024 * 1024)];

  it('POST ?digest= with the body, and POST then PUT ?digest= with the body: B serves each byte-exact', async () => {
    for (const [i, blob] of blobs.entries()) {
      const digest = sha256(blob);
      const headers = { 'content-type': 'application/octet-stream', 'content-length': blob.length };
      if (i === 0) {
        const post = await http(a.url, `/v2/${REPO}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, { method: 'POST', headers, body: blob });
        expectStatus(post, 201);
      } else {
        const post = await http(a.url, `/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
        expectStatus(post, 202);
        const location = uploadPath(post.header('location')!);
        const put = await http(a.url, `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`, { method: 'PUT', headers, body: blob });
        expectStatus(put, 201);
      }
      const got = await http(b.url, `/v2/${REPO}/blobs/${digest}`);
      expectStatus(got, 200);
      expect(got.body.equals(blob)).toBe(true);
    }
  });

  it('a wrong digest answers 400 DIGEST_INVALID and stores no blob on either replica', async () => {
    for (const blob of blobs) {
      const wrong = sha256(Buffer.concat([blob, Buffer.from('x')]));
      const post = await http(a.url, `/v2/${REPO}/blobs/uploads/?digest=${encodeURIComponent(wrong)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'content-length': blob.length },
        body: blob,
      });
      expectError(post, 400, 'DIGEST_INVALID');
      for (const side of [a, b]) expect((await http(side.url, `/v2/${REPO}/blobs/${wrong}`, { method: 'HEAD' })).status).toBe(404);
    }
  });
});

describe('a tag moved on A', () => {
  it('is served moved on B right after each 201, 50 moves in a row, never the old digest', async () => {
    const REPO = 'moving/tag';
    // One image's blobs; each move pushes a manifest of them that differs only in an annotation.
    const first = await pushImage(a.url, REPO, { tag: 'latest', layerSize: 256 });
    const base = JSON.parse(first.body.toString('utf8')) as Record<string, unknown>;
    let current = first.digest;
    for (let i = 0; i < 50; i++) {
      // B has just served the current digest (whatever it keeps in memory holds it now).
      const before = await fetchManifest(b.url, REPO, 'latest');
      expect(before.digest, `move ${i}: before`).toBe(current);

      const next = await pushManifest(a.url, REPO, 'latest', { ...base, annotations: { move: String(i) } }, first.mediaType);
      expectStatus(next, 201);
      expect(next.digest).not.toBe(current);
      const after = await fetchManifest(b.url, REPO, 'latest');
      expect(after.status, `move ${i}`).toBe(200);
      expect(after.digest, `move ${i}: B served the old digest`).toBe(next.digest);
      expect(after.bytes.equals(next.sent)).toBe(true);
      const head = await http(b.url, `/v2/${REPO}/manifests/latest`, { method: 'HEAD', headers: { accept: first.mediaType } });
      expect(head.header('docker-content-digest'), `move ${i}: HEAD on B`).toBe(next.digest);
      current = next.digest;
    }
  });
});

describe('redirect: true', () => {
  let ra: TestServer;
  let rb: TestServer;

  beforeAll(async () => {
    [ra, rb] = await startReplicas(await backends.sharedStore({ redirect: true }));
  }, 60_000);
  afterAll(async () => {
    await closeAll([ra, rb]);
  });

  it('a blob GET answers 307 to a pre-signed URL of the bucket, and skopeo copy from it works', async () => {
    const src = join(scratch.path, 'redirect-src');
    const built = buildOciLayoutImage(src, { tag: 'v1', layerBytes: 128 * 1024 });
    await skopeoCopy(built.ociRef, `docker://${ra.host}/redirect/image:v1`, { destInsecure: true });

    const layer = built.images[0]!.layers[0]!.digest;
    const res = await fetch(`${rb.url}/v2/redirect/image/blobs/${layer}`, { redirect: 'manual' });
    await res.arrayBuffer();
    expect(res.status).toBe(307);
    const location = res.headers.get('location')!;
    expect(location.startsWith(`${backends.ceph.endpoint}/`)).toBe(true);
    expect(new URL(location).searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
    const direct = Buffer.from(await (await fetch(location)).arrayBuffer());
    expect(sha256(direct)).toBe(layer);

    // skopeo follows the redirects: through a recording relay in front of B, every config and layer
    // GET is answered 307, so those bytes came from the bucket, not through the replica.
    const rec = await startRecorder(rb.url);
    try {
      const out = join(scratch.path, 'redirect-out');
      await skopeoCopy(`docker://${rec.host}/redirect/image:v1`, `oci:${out}:v1`, { srcInsecure: true });
      expectSameLayout(out, 'v1', src, built);
      const blobGets = rec.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
      expect(blobGets.map((r) => r.path.slice(r.path.lastIndexOf('/') + 1)).sort()).toEqual([...built.blobDigests].sort());
      for (const r of blobGets) expect(r.status, r.path).toBe(307);
    } finally {
      await rec.close();
    }
  });
});

describe('a node following an ImageDigestMirrorSet', () => {
  it('skopeo with --registries-conf (mirror → B) pulls quay.io/…@sha256 of an image pushed to A', async () => {
    const UPSTREAM = 'quay.io/openshift-release-dev/ocp-v4.0-art-dev';
    const MIRROR = 'ocp4/openshift4';
    const src = join(scratch.path, 'idms-src');
    const built = buildOciLayoutImage(src, { tag: '4.16.0-x86_64', layerBytes: 64 * 1024 });
    // What `oc adm release mirror` does: the payload pushed tagless, by digest.
    await skopeoCopy(built.ociRef, `docker://${a.host}/${MIRROR}@${built.indexDigest}`, { destInsecure: true });

    // registries.conf as the Machine Config Operator renders it from an IDMS whose mirror is B.
    const conf = join(scratch.path, 'registries.conf');
    writeRegistriesConf(conf, {
      prefix: UPSTREAM,
      location: UPSTREAM,
      mirrors: [{ location: `${b.host}/${MIRROR}`, insecure: true, pullFromMirror: 'digest-only' }],
    });
    const out = join(scratch.path, 'idms-out');
    await skopeoCopy(`docker://${UPSTREAM}@${built.indexDigest}`, `oci:${out}:pulled`, { registriesConf: conf });
    expect(readOciLayoutTagged(out, 'pulled').digest).toBe(built.indexDigest);
    const original = listBlobsOfOciLayout(src);
    const pulled = listBlobsOfOciLayout(out);
    expect(pulled.map((f) => f.digest)).toEqual(original.map((f) => f.digest));
    for (const [i, f] of pulled.entries()) expect(readFileSync(f.path).equals(readFileSync(original[i]!.path))).toBe(true);
  });
});
