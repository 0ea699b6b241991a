// Manifests: push, pull, HEAD and DELETE by tag and by digest for every supported media type,
// byte-exact storage, validation errors, content negotiation and tagless pushes.
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectError,
  expectStatus,
  http,
  MEDIA,
  openRequest,
  pushBlob,
  pushEmptyConfig,
  pushImage,
  pushManifest,
  sha256,
  uniqueName,
  type HttpResponse,
  type Pushed,
} from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

const repo = () => `manifests/${uniqueName()}`;

/** GET and HEAD by tag (when given) and by digest all serve the pushed bytes with their own type. */
async function expectManifest(name: string, pushed: { digest: string; body: Buffer; mediaType: string }, tag?: string): Promise<void> {
  for (const reference of tag === undefined ? [pushed.digest] : [tag, pushed.digest]) {
    const get = await http(t.url, `/v2/${name}/manifests/${reference}`);
    expect(get.status).toBe(200);
    expect(get.body.equals(pushed.body)).toBe(true);
    expect(get.header('content-type')).toBe(pushed.mediaType);
    expect(get.header('docker-content-digest')).toBe(pushed.digest);
    expect(get.header('content-length')).toBe(String(pushed.body.length));

    const head = await http(t.url, `/v2/${name}/manifests/${reference}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(head.header('content-type')).toBe(pushed.mediaType);
    expect(head.header('docker-content-digest')).toBe(pushed.digest);
    expect(head.header('content-length')).toBe(String(pushed.body.length));
  }
}

function expectCreated(res: HttpResponse & { digest: string }, name: string): void {
  expectStatus(res, 201);
  expect(res.header('location')).toBe(`/v2/${name}/manifests/${res.digest}`);
  expect(res.header('docker-content-digest')).toBe(res.digest);
  expect(res.header('content-length')).toBe('0');
}

/** Pushes `count` platform images by digest, all at once; returns them with their index descriptors. */
async function pushChildren(name: string, format: 'oci' | 'docker', count = 2): Promise<{ images: Pushed[]; descriptors: object[] }> {
  const platforms = [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64' },
    { os: 'linux', architecture: 's390x' },
  ].slice(0, count);
  const images = await Promise.all(platforms.map((platform) => pushImage(t.url, name, { format, platform })));
  const descriptors = images.map((img, i) => ({ mediaType: img.mediaType, digest: img.digest, size: img.body.length, platform: platforms[i] }));
  return { images, descriptors };
}

describe('push and pull every manifest type', () => {
  it('OCI image manifest by tag: 201 with Location and digest; GET/HEAD by tag and digest', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    await expectManifest(name, image, 'v1');
  });

  it('Docker schema2 manifest by tag', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'docker', tag: 'v1' });
    expect(image.mediaType).toBe(MEDIA.dockerManifest);
    await expectManifest(name, image, 'v1');
  });

  it('OCI index: children pushed by digest in parallel, then the index by tag', async () => {
    const name = repo();
    const { descriptors } = await pushChildren(name, 'oci', 3);
    const res = await pushManifest(t.url, name, 'multi', { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: descriptors }, MEDIA.ociIndex);
    expectCreated(res, name);
    await expectManifest(name, { digest: res.digest, body: res.sent, mediaType: MEDIA.ociIndex }, 'multi');
  });

  it('Docker manifest list: children by digest in parallel, then the list by tag', async () => {
    const name = repo();
    const { images, descriptors } = await pushChildren(name, 'docker');
    const res = await pushManifest(t.url, name, 'multi', { schemaVersion: 2, mediaType: MEDIA.dockerList, manifests: descriptors }, MEDIA.dockerList);
    expectCreated(res, name);
    await expectManifest(name, { digest: res.digest, body: res.sent, mediaType: MEDIA.dockerList }, 'multi');
    for (const child of images) await expectManifest(name, child);
  });

  it('OCI artifact with artifactType and subject → 201 with OCI-Subject; served as pushed', async () => {
    const name = repo();
    const subject = await pushImage(t.url, name, { format: 'oci', tag: 'app' });
    const config = await pushEmptyConfig(t.url, name);
    const sbom = Buffer.from('{"spdxVersion":"SPDX-2.3"}');
    const layer = await pushBlob(t.url, name, sbom);
    const artifact = {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      artifactType: 'application/spdx+json',
      config,
      layers: [{ mediaType: 'application/spdx+json', digest: layer, size: sbom.length }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.body.length },
      annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
    };
    const res = await pushManifest(t.url, name, sha256(JSON.stringify(artifact)), artifact, MEDIA.ociManifest);
    expectCreated(res, name);
    expect(res.header('oci-subject')).toBe(subject.digest);
    await expectManifest(name, { digest: res.digest, body: res.sent, mediaType: MEDIA.ociManifest });
  });

  it('a manifest whose subject does not exist (yet) is accepted', async () => {
    const name = repo();
    const config = await pushEmptyConfig(t.url, name);
    const missing = sha256(randomBytes(8));
    const artifact = { schemaVersion: 2, mediaType: MEDIA.ociManifest, artifactType: 'application/x-sig', config, layers: [], subject: { mediaType: MEDIA.ociManifest, digest: missing, size: 10 } };
    const res = await pushManifest(t.url, name, 'sig', artifact, MEDIA.ociManifest);
    expectCreated(res, name);
    expect(res.header('oci-subject')).toBe(missing);
  });

  it('bytes are kept exactly: whitespace, key order and a trailing newline survive', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci' });
    const doc = JSON.parse(image.body.toString()) as Record<string, unknown>;
    const odd = Buffer.from(`{\n\t"layers" :  ${JSON.stringify(doc.layers, null, 3)},\r\n  "config":${JSON.stringify(doc.config)},"schemaVersion":2,\n"mediaType":"${MEDIA.ociManifest}" , "annotations":{"note":"\u00e9t\u00e9 ☃"}}\n`);
    const res = await pushManifest(t.url, name, 'odd', odd, MEDIA.ociManifest);
    expectCreated(res, name);
    expect(res.digest).toBe(sha256(odd));
    await expectManifest(name, { digest: sha256(odd), body: odd, mediaType: MEDIA.ociManifest }, 'odd');
  });

  it('a generic Content-Type takes the type from the body; no mediaType at all means OCI', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'docker' });
    const viaJson = await pushManifest(t.url, name, 'json', image.body, 'application/json');
    expectCreated(viaJson, name);
    expect((await http(t.url, `/v2/${name}/manifests/json`)).header('content-type')).toBe(MEDIA.dockerManifest);

    const oci = await pushImage(t.url, name, { format: 'oci' });
    const bare = JSON.parse(oci.body.toString()) as Record<string, unknown>;
    delete bare.mediaType;
    const res = await pushManifest(t.url, name, 'bare', bare, 'application/octet-stream');
    expectCreated(res, name);
    expect((await http(t.url, `/v2/${name}/manifests/bare`)).header('content-type')).toBe(MEDIA.ociManifest);
  });
});

describe('tags and tagless pushes', () => {
  it('a push by digest (tagless) is stored and served by digest, and adds no tag', async () => {
    const name = repo();
    await pushImage(t.url, name, { format: 'oci', tag: 'tagged' });
    const tagless = await pushImage(t.url, name, { format: 'oci' });
    await expectManifest(name, tagless);
    const tags = await http(t.url, `/v2/${name}/tags/list`);
    expect(tags.json()).toEqual({ name, tags: ['tagged'] });
  });

  it('re-tagging moves the tag; DELETE by tag removes only the tag', async () => {
    const name = repo();
    const first = await pushImage(t.url, name, { tag: 'latest' });
    const second = await pushImage(t.url, name, { tag: 'latest' });
    expect((await http(t.url, `/v2/${name}/manifests/latest`)).header('docker-content-digest')).toBe(second.digest);
    await expectManifest(name, first);

    expectStatus(await http(t.url, `/v2/${name}/manifests/latest`, { method: 'DELETE' }), 202);
    expectError(await http(t.url, `/v2/${name}/manifests/latest`), 404, 'MANIFEST_UNKNOWN');
    await expectManifest(name, second);
  });

  it('DELETE by digest removes the manifest and every tag on it', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { tag: 'a' });
    expectCreated(await pushManifest(t.url, name, 'b', image.body, image.mediaType), name);
    const del = await http(t.url, `/v2/${name}/manifests/${image.digest}`, { method: 'DELETE' });
    expectStatus(del, 202);
    for (const ref of ['a', 'b', image.digest]) expectError(await http(t.url, `/v2/${name}/manifests/${ref}`), 404, 'MANIFEST_UNKNOWN');
    // Its only manifest gone, the repository is still there with no tags (as distribution and zot
    // answer, and the conformance suite expects), and still in the catalog.
    const tags = await http(t.url, `/v2/${name}/tags/list`);
    expectStatus(tags, 200);
    expect(tags.json()).toEqual({ name, tags: [] });
    expect((await http(t.url, '/v2/_catalog?n=10000')).json<{ repositories: string[] }>().repositories).toContain(name);
    expectError(await http(t.url, `/v2/${name}/manifests/${image.digest}`, { method: 'DELETE' }), 404, 'MANIFEST_UNKNOWN');
  });

  it('a push by digest with ?tag= parameters sets every tag with it and names them in OCI-Tag', async () => {
    const name = repo();
    const old = await pushImage(t.url, name, { tag: 'latest' });
    const image = await pushImage(t.url, name, { tag: 'seed' });
    const put = (query: string, body = image.body) =>
      http(t.url, `/v2/${name}/manifests/${sha256(body)}${query}`, { method: 'PUT', headers: { 'content-type': image.mediaType }, body });
    const res = await put('?tag=1.2.3&tag=1.2&tag=latest&tag=1.2');
    expectCreated(Object.assign(res, { digest: image.digest }), name);
    expect(res.header('oci-tag')).toBe('1.2.3, 1.2, latest');
    // latest moved from the old image; each tag now serves the pushed manifest.
    for (const tag of ['1.2.3', '1.2', 'latest']) expect((await http(t.url, `/v2/${name}/manifests/${tag}`)).header('docker-content-digest')).toBe(image.digest);
    await expectManifest(name, old);
    expect((await http(t.url, `/v2/${name}/tags/list`)).json()).toEqual({ name, tags: ['1.2', '1.2.3', 'latest', 'seed'] });
    // Without ?tag=, no OCI-Tag: a client falls back to pushing its tags one by one.
    expect((await put('')).header('oci-tag')).toBeUndefined();
    // The only way to tag a manifest pushed by its sha512 digest.
    const sha512 = `sha512:${createHash('sha512').update(image.body).digest('hex')}`;
    const by512 = await http(t.url, `/v2/${name}/manifests/${sha512}?tag=s512`, { method: 'PUT', headers: { 'content-type': image.mediaType }, body: image.body });
    expectStatus(by512, 201);
    expect(by512.header('oci-tag')).toBe('s512');
    const tagged = await http(t.url, `/v2/${name}/manifests/s512`);
    expect(tagged.header('docker-content-digest')).toBe(sha512);
    expect(tagged.body.equals(image.body)).toBe(true);
  });

  it('?tag= parameters: a bad tag, a push by tag or too many are refused, and nothing is tagged', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { tag: 'seed' });
    const put = (reference: string, query: string) =>
      http(t.url, `/v2/${name}/manifests/${reference}${query}`, { method: 'PUT', headers: { 'content-type': image.mediaType }, body: image.body });
    const bad = await put(image.digest, '?tag=ok&tag=-bad');
    expectError(bad, 400, 'TAG_INVALID');
    expect(bad.json<{ errors: { message: string }[] }>().errors[0]!.message).toContain('"-bad"');
    expectError(await put('seed', '?tag=other'), 400, 'TAG_INVALID');
    const many = Array.from({ length: 101 }, (_, i) => `tag=t${i}`).join('&');
    expectError(await put(image.digest, `?${many}`), 414, 'TAG_INVALID');
    const ten = Array.from({ length: 10 }, (_, i) => `t${i}`);
    expect((await put(image.digest, `?${ten.map((tag) => `tag=${tag}`).join('&')}`)).header('oci-tag')).toBe(ten.join(', '));
    expect((await http(t.url, `/v2/${name}/tags/list`)).json<{ tags: string[] }>().tags).toEqual([...ten, 'seed'].sort());
  });

  it('garbage collection forgets a repository left empty, and a new push lists it again', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { tag: 'a' });
    expectStatus(await http(t.url, `/v2/${name}/manifests/${image.digest}`, { method: 'DELETE' }), 202);
    const kept = repo();
    await pushImage(t.url, kept, { tag: 'a' });
    const gc = (body: string) => http(t.url, '/api/v1/gc', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const dry = await gc('{"dryRun":true}');
    expectStatus(dry, 200);
    expect(dry.json<{ forgotten: string[] }>().forgotten).toContain(name);
    expectStatus(await http(t.url, `/v2/${name}/tags/list`), 200);
    const real = await gc('{}');
    expectStatus(real, 200);
    const result = real.json<{ forgotten: string[]; forgottenRepositories: number }>();
    expect(result.forgotten).toContain(name);
    expect(result.forgotten).not.toContain(kept);
    expect(result.forgottenRepositories).toBe(result.forgotten.length);
    // The record of the last collection keeps the count (stats, metrics).
    const stats = (await http(t.url, '/api/v1/stats')).json<{ gc: { forgottenRepositories: number } }>();
    expect(stats.gc.forgottenRepositories).toBe(result.forgottenRepositories);
    expect((await http(t.url, '/metrics')).text).toContain(`\nairlock_gc_last_forgotten_repositories ${result.forgottenRepositories}\n`);
    expectError(await http(t.url, `/v2/${name}/tags/list`), 404, 'NAME_UNKNOWN');
    const catalog = async () => (await http(t.url, '/v2/_catalog?n=10000')).json<{ repositories: string[] }>().repositories;
    expect(await catalog()).not.toContain(name);
    expect(await catalog()).toContain(kept);
    // A push lists it again.
    await pushImage(t.url, name, { tag: 'b' });
    expect((await http(t.url, `/v2/${name}/tags/list`)).json()).toEqual({ name, tags: ['b'] });
    expect(await catalog()).toContain(name);
  });
});

describe('rejected pushes', () => {
  it('PUT by digest with a body of another digest → 400 DIGEST_INVALID, nothing stored', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci' });
    const other = sha256(randomBytes(8));
    const res = await http(t.url, `/v2/${name}/manifests/${other}`, { method: 'PUT', headers: { 'content-type': MEDIA.ociManifest }, body: image.body });
    expectError(res, 400, 'DIGEST_INVALID');
    expectError(await http(t.url, `/v2/${name}/manifests/${other}`), 404, 'MANIFEST_UNKNOWN');
  });

  it('a layer the repository does not have → 400 MANIFEST_BLOB_UNKNOWN', async () => {
    const name = repo();
    const config = await pushEmptyConfig(t.url, name);
    const elsewhere = await pushBlob(t.url, repo(), randomBytes(50));
    for (const digest of [sha256(randomBytes(8)), elsewhere]) {
      const manifest = { schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers: [{ mediaType: MEDIA.ociLayer, digest, size: 50 }] };
      const res = await pushManifest(t.url, name, 'v1', manifest, MEDIA.ociManifest);
      expectError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
    }
    expectError(await http(t.url, `/v2/${name}/manifests/v1`), 404, 'MANIFEST_UNKNOWN');
  });

  it('a missing config blob → 400 MANIFEST_BLOB_UNKNOWN', async () => {
    const name = repo();
    const manifest = { schemaVersion: 2, mediaType: MEDIA.dockerManifest, config: { mediaType: MEDIA.dockerConfig, digest: sha256('cfg'), size: 3 }, layers: [] };
    expectError(await pushManifest(t.url, name, 'v1', manifest, MEDIA.dockerManifest), 400, 'MANIFEST_BLOB_UNKNOWN');
  });

  it('an index whose child manifest is missing → MANIFEST_UNKNOWN', async () => {
    const name = repo();
    const { descriptors } = await pushChildren(name, 'oci', 1);
    const missing = { mediaType: MEDIA.ociManifest, digest: sha256(randomBytes(8)), size: 100 };
    const res = await pushManifest(t.url, name, 'multi', { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [...descriptors, missing] }, MEDIA.ociIndex);
    expectError(res, 404, 'MANIFEST_UNKNOWN');
    expectError(await http(t.url, `/v2/${name}/manifests/multi`), 404, 'MANIFEST_UNKNOWN');
  });

  it('a manifest over 4 MiB → 413 MANIFEST_INVALID', async () => {
    const name = repo();
    const config = await pushEmptyConfig(t.url, name);
    const manifest = { schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers: [], annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } };
    const res = await pushManifest(t.url, name, 'big', manifest, MEDIA.ociManifest);
    expectError(res, 413, 'MANIFEST_INVALID');
    expectError(await http(t.url, `/v2/${name}/manifests/big`), 404, 'MANIFEST_UNKNOWN');
  });

  it('a streamed (chunked) manifest body over 4 MiB → 413 MANIFEST_INVALID, and the server keeps serving', async () => {
    const name = repo();
    const { req, response } = openRequest(t.url, `/v2/${name}/manifests/big`, { method: 'PUT', headers: { 'content-type': MEDIA.ociManifest } });
    // The server answers before the body is over; the rest of the body may then fail to send.
    req.on('error', () => undefined);
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    let sent = 0;
    const write = () => {
      while (sent < 20) {
        sent++;
        if (!req.write(chunk)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
    expectError(await response, 413, 'MANIFEST_INVALID');
    expect((await http(t.url, '/v2/')).status).toBe(200);
  });

  it('a manifest of exactly 4 MiB is accepted', async () => {
    const name = repo();
    const config = await pushEmptyConfig(t.url, name);
    const base = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers: [], annotations: { pad: '' } });
    const body = Buffer.from(base.replace('"pad":""', `"pad":"${'x'.repeat(4 * 1024 * 1024 - base.length)}"`));
    expect(body.length).toBe(4 * 1024 * 1024);
    expectCreated(await pushManifest(t.url, name, 'big', body, MEDIA.ociManifest), name);
  });

  it('a mediaType field that contradicts the Content-Type → 400 MANIFEST_INVALID', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci' });
    expectError(await pushManifest(t.url, name, 'v1', image.body, MEDIA.dockerManifest), 400, 'MANIFEST_INVALID');
  });

  it('Docker schema1 → 400 MANIFEST_INVALID', async () => {
    const name = repo();
    const schema1 = { schemaVersion: 1, name, tag: 'v1', architecture: 'amd64', fsLayers: [{ blobSum: sha256('x') }], history: [{ v1Compatibility: '{}' }] };
    expectError(await pushManifest(t.url, name, 'v1', schema1, MEDIA.dockerSchema1), 400, 'MANIFEST_INVALID');
    expectError(await pushManifest(t.url, name, 'v1', schema1, 'application/vnd.docker.distribution.manifest.v1+json'), 400, 'MANIFEST_INVALID');
    expectError(await pushManifest(t.url, name, 'v1', schema1, 'application/json'), 400, 'MANIFEST_INVALID');
  });

  it('a body that is not JSON, or not a manifest → 400 MANIFEST_INVALID', async () => {
    const name = repo();
    const cases: [Buffer | object, string][] = [
      [Buffer.from('not json at all'), MEDIA.ociManifest],
      [Buffer.from('{"schemaVersion":2,'), MEDIA.ociManifest],
      [Buffer.from('[1,2,3]'), MEDIA.ociManifest],
      [{ schemaVersion: 2, mediaType: MEDIA.ociManifest }, MEDIA.ociManifest],
      [{ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: 'no' }, MEDIA.ociIndex],
      [{ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { digest: 'sha256:zz', size: 1 }, layers: [] }, MEDIA.ociManifest],
    ];
    for (const [body, mediaType] of cases) expectError(await pushManifest(t.url, name, 'v1', body, mediaType), 400, 'MANIFEST_INVALID');
  });

  it('an unknown manifest media type → 400 MANIFEST_INVALID', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci' });
    const doc = { ...JSON.parse(image.body.toString()), mediaType: 'application/vnd.example.thing+json' };
    expectError(await pushManifest(t.url, name, 'v1', doc, 'application/vnd.example.thing+json'), 400, 'MANIFEST_INVALID');
  });
});

describe('pulling unknown manifests', () => {
  it('by digest or tag on a repository that does not exist → 404 MANIFEST_UNKNOWN', async () => {
    const name = `never/${uniqueName()}`;
    expectError(await http(t.url, `/v2/${name}/manifests/${sha256('x')}`), 404, 'MANIFEST_UNKNOWN');
    expectError(await http(t.url, `/v2/${name}/manifests/latest`), 404, 'MANIFEST_UNKNOWN');
    const head = await http(t.url, `/v2/${name}/manifests/${sha256('x')}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
  });

  it('an unknown tag in an existing repository → 404 MANIFEST_UNKNOWN', async () => {
    const name = repo();
    await pushImage(t.url, name, { tag: 'v1' });
    expectError(await http(t.url, `/v2/${name}/manifests/v2`), 404, 'MANIFEST_UNKNOWN');
  });

  it('a manifest of one repository is not served from another', async () => {
    const image = await pushImage(t.url, repo(), { tag: 'v1' });
    expectError(await http(t.url, `/v2/${repo()}/manifests/${image.digest}`), 404, 'MANIFEST_UNKNOWN');
  });
});

describe('content negotiation (Accept)', () => {
  /** node:http with an array value sends one Accept line per entry. */
  function getWithAcceptLines(path: string, accept: string[]): Promise<{ status: number; contentType?: string; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const url = new URL(t.url);
      const req = httpRequest({ host: url.hostname, port: url.port, path, agent: false, headers: { accept } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, contentType: res.headers['content-type'], body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('several Accept header lines are all honoured', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'docker', tag: 'v1' });
    // The stored type is only in the last of three lines.
    const res = await getWithAcceptLines(`/v2/${name}/manifests/v1`, [MEDIA.ociIndex, MEDIA.ociManifest, `${MEDIA.dockerManifest};q=0.9`]);
    expect(res.status).toBe(200);
    expect(res.contentType).toBe(MEDIA.dockerManifest);
    expect(res.body.equals(image.body)).toBe(true);
  });

  it('an Accept that lists the stored type among others (one line) → 200', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    const res = await http(t.url, `/v2/${name}/manifests/v1`, { headers: { accept: `${MEDIA.dockerManifest}, ${MEDIA.ociManifest}` } });
    expect(res.status).toBe(200);
    expect(res.body.equals(image.body)).toBe(true);
  });

  it('an Accept that excludes the stored type → 404 MANIFEST_UNKNOWN', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'oci', tag: 'v1' });
    const res = await getWithAcceptLines(`/v2/${name}/manifests/v1`, [MEDIA.dockerManifest, MEDIA.dockerList]);
    expect(res.status).toBe(404);
    const error = JSON.parse(res.body.toString()).errors[0];
    expect(error.code).toBe('MANIFEST_UNKNOWN');
    expect(error.message).not.toBe('');
    expectError(await http(t.url, `/v2/${name}/manifests/${image.digest}`, { headers: { accept: MEDIA.dockerManifest } }), 404, 'MANIFEST_UNKNOWN');
  });

  it('a wildcard Accept or none at all serves the stored type', async () => {
    const name = repo();
    const image = await pushImage(t.url, name, { format: 'docker', tag: 'v1' });
    for (const accept of ['*/*', undefined]) {
      const res = await http(t.url, `/v2/${name}/manifests/v1`, { headers: accept === undefined ? {} : { accept } });
      expect(res.status).toBe(200);
      expect(res.header('content-type')).toBe(image.mediaType);
    }
  });
});
