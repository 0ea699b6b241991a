// Content discovery: tags/list and _catalog, their order, n/last pagination and Link headers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, http, pushBlob, pushImage, pushManifest, sha256, startUpload, withDigest } from '../helpers/http.js';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.js';

// A server of its own: the catalog lists every repository on it.
let t: TestServer;
const REPO = 'list/app';
const TAGS = ['latest', 'b', 'a', '10', '9', 'A', 'c', 'v1.0_rc-1'];
const SORTED = ['10', '9', 'A', 'a', 'b', 'c', 'latest', 'v1.0_rc-1'];
const REPOS = ['c/d/e', 'a', 'b/x', 'a/b', 'a-b', REPO];
const SORTED_REPOS = ['a', 'a-b', 'a/b', 'b/x', 'c/d/e', REPO].sort();

beforeAll(async () => {
  t = await startTestServer();
  const image = await pushImage(t.url, REPO, { tag: TAGS[0] });
  for (const tag of TAGS.slice(1)) {
    const res = await pushManifest(t.url, REPO, tag, image.body, image.mediaType);
    expect(res.status).toBe(201);
  }
  for (const name of REPOS.filter((r) => r !== REPO)) await pushImage(t.url, name, { tag: 'v1' });
});
afterAll(async () => {
  await t.close();
});

/** Follows Link rel="next" from `path`, checking its exact form; returns every page's items. */
async function allPages(path: string, key: 'tags' | 'repositories', n: number, base: string): Promise<string[][]> {
  const pages: string[][] = [];
  let next: string | undefined = `${path}?n=${n}`;
  while (next) {
    const res = await http(t.url, next);
    expect(res.status).toBe(200);
    const items = res.json()[key] as string[];
    pages.push(items);
    const link = res.header('link');
    if (link === undefined) break;
    expect(link).toBe(`<${base}?n=${n}&last=${encodeURIComponent(items.at(-1)!)}>; rel="next"`);
    next = /^<([^>]+)>; rel="next"$/.exec(link)![1];
    expect(pages.length).toBeLessThan(20);
  }
  return pages;
}

describe('GET /v2/<name>/tags/list', () => {
  it('lists every tag in lexical order', async () => {
    const res = await http(t.url, `/v2/${REPO}/tags/list`);
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toMatch(/^application\/json/);
    expect(res.header('link')).toBeUndefined();
    expect(res.json()).toEqual({ name: REPO, tags: SORTED });
  });

  it('n limits the page; Link rel="next" carries n and last; the pages join to the whole list', async () => {
    const pages = await allPages(`/v2/${REPO}/tags/list`, 'tags', 3, `/v2/${REPO}/tags/list`);
    expect(pages).toEqual([SORTED.slice(0, 3), SORTED.slice(3, 6), SORTED.slice(6)]);
  });

  it('last starts after the given tag (which need not exist)', async () => {
    expect((await http(t.url, `/v2/${REPO}/tags/list?last=b`)).json().tags).toEqual(['c', 'latest', 'v1.0_rc-1']);
    expect((await http(t.url, `/v2/${REPO}/tags/list?last=bb&n=1`)).json().tags).toEqual(['c']);
    expect((await http(t.url, `/v2/${REPO}/tags/list?last=zzz`)).json().tags).toEqual([]);
  });

  it('no Link when the page holds the rest exactly', async () => {
    const res = await http(t.url, `/v2/${REPO}/tags/list?n=${SORTED.length}`);
    expect(res.json().tags).toEqual(SORTED);
    expect(res.header('link')).toBeUndefined();
    const tail = await http(t.url, `/v2/${REPO}/tags/list?n=2&last=c`);
    expect(tail.json().tags).toEqual(['latest', 'v1.0_rc-1']);
    expect(tail.header('link')).toBeUndefined();
  });

  it('an unknown repository → 404 NAME_UNKNOWN', async () => {
    expectError(await http(t.url, '/v2/list/nothing/tags/list'), 404, 'NAME_UNKNOWN');
  });

  it('an invalid n → 400 PAGINATION_NUMBER_INVALID', async () => {
    for (const n of ['-1', 'abc', '1.5', '']) {
      expectError(await http(t.url, `/v2/${REPO}/tags/list?n=${n}`), 400, 'PAGINATION_NUMBER_INVALID');
    }
  });
});

describe('GET /v2/_catalog', () => {
  it('lists every repository in lexical order', async () => {
    const res = await http(t.url, '/v2/_catalog');
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ repositories: SORTED_REPOS });
    expect(res.header('link')).toBeUndefined();
  });

  it('paginates with n and last, with Link rel="next"', async () => {
    const pages = await allPages('/v2/_catalog', 'repositories', 2, '/v2/_catalog');
    expect(pages).toEqual([SORTED_REPOS.slice(0, 2), SORTED_REPOS.slice(2, 4), SORTED_REPOS.slice(4)]);
    expect((await http(t.url, '/v2/_catalog?last=a%2Fb')).json().repositories).toEqual(SORTED_REPOS.slice(SORTED_REPOS.indexOf('a/b') + 1));
  });

  it('an invalid n → 400 PAGINATION_NUMBER_INVALID', async () => {
    expectError(await http(t.url, '/v2/_catalog?n=x'), 400, 'PAGINATION_NUMBER_INVALID');
  });
});

describe('a repository exists only once it holds a manifest', () => {
  // Every step a push takes before its manifest: none of them may make the repository appear.
  it('an open upload, a finished blob push and a mount list nothing and give NAME_UNKNOWN; the manifest push makes it appear', async () => {
    const uploading = 'exists/uploading';
    const blobsOnly = 'exists/blobs-only';
    const mounted = 'exists/mounted';
    const location = await startUpload(t.url, uploading);
    const layer = randomBytes(300);
    const layerDigest = await pushBlob(t.url, blobsOnly, layer);
    expectStatus(await http(t.url, `/v2/${mounted}/blobs/uploads/?mount=${layerDigest}&from=${blobsOnly}`, { method: 'POST' }), 201);

    const catalog = async () => (await http(t.url, '/v2/_catalog?n=1000')).json<{ repositories: string[] }>().repositories;
    for (const repo of [uploading, blobsOnly, mounted]) {
      expectError(await http(t.url, `/v2/${repo}/tags/list`), 404, 'NAME_UNKNOWN');
      expect(await catalog()).not.toContain(repo);
    }
    const stats = (await http(t.url, '/api/v1/stats')).json<{ storage: { repositories: number } }>();
    expect(stats.storage.repositories).toBe(REPOS.length);

    // The session still works, and the blobs are still served where they were pushed and mounted.
    const data = randomBytes(200);
    expectStatus(await http(t.url, location, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' }, body: data }), 202);
    expectStatus(await http(t.url, withDigest(location, sha256(data)), { method: 'PUT' }), 201);
    expectStatus(await http(t.url, `/v2/${uploading}/blobs/${sha256(data)}`), 200);
    expectStatus(await http(t.url, `/v2/${mounted}/blobs/${layerDigest}`), 200);
    expectError(await http(t.url, `/v2/${uploading}/tags/list`), 404, 'NAME_UNKNOWN');

    // A manifest by digest (tagless) makes the repository exist, with no tags; one by tag lists it.
    const config = Buffer.from('{}');
    const configDigest = await pushBlob(t.url, uploading, config);
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: configDigest, size: 2 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(data), size: data.length }],
    };
    const tagless = await pushManifest(t.url, uploading, sha256(JSON.stringify(manifest)), manifest, manifest.mediaType);
    expectStatus(tagless, 201);
    expect((await http(t.url, `/v2/${uploading}/tags/list`)).json()).toEqual({ name: uploading, tags: [] });
    expect(await catalog()).toContain(uploading);
    expectStatus(await pushManifest(t.url, uploading, 'v1', manifest, manifest.mediaType), 201);
    expect((await http(t.url, `/v2/${uploading}/tags/list`)).json()).toEqual({ name: uploading, tags: ['v1'] });

    // Deleting its only manifest leaves it listed with no tags (garbage collection forgets it:
    // manifests.test.ts), while the storage statistics count repositories holding manifests.
    expectStatus(await http(t.url, `/v2/${uploading}/manifests/${tagless.digest}`, { method: 'DELETE' }), 202);
    expect((await http(t.url, `/v2/${uploading}/tags/list`)).json()).toEqual({ name: uploading, tags: [] });
    expect(await catalog()).toContain(uploading);
    expect((await http(t.url, '/api/v1/stats')).json<{ storage: { repositories: number } }>().storage.repositories).toBe(REPOS.length);
  });
});
