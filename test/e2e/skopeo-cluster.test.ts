/**
 * End to end with the real skopeo (1.9.3) against a real airlock, as a disconnected cluster uses
 * it: a node pulling through an ImageDigestMirrorSet-style registries.conf mirror, cross-repository
 * blob mounts, and concurrent pushes of images that share layers. A recording relay in front of
 * airlock shows which requests skopeo actually sent.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDockerDirImage, buildOciLayoutImage } from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  listBlobsOfOciLayout,
  readOciLayoutTagged,
  skopeo,
  skopeoCopy,
  skopeoInspectRaw,
  writeRegistriesConf,
} from '../helpers/skopeo.js';
import {
  configAndLayers,
  dirTransportBlobs,
  expectImageStored,
  fetchTags,
  headBlob,
  ociLayoutBlobs,
  startRecorder,
  tempDirs,
  type Recorder,
} from './support.js';

const tmp = tempDirs('cluster');
let srv: TestServer;
let rec: Recorder;

beforeAll(async () => {
  srv = await startTestServer();
  rec = await startRecorder(srv.url);
});

afterAll(async () => {
  await rec?.close();
  await srv?.close();
  tmp.cleanup();
});

describe('a cluster node following an ImageDigestMirrorSet (registries.conf mirror, pull-from-mirror = digest-only)', () => {
  const UPSTREAM = 'quay.io/openshift-release-dev/ocp-v4.0-art-dev';
  const MIRROR_REPO = 'ocp4/openshift4';
  const TAG = '4.16.0-x86_64';
  let root: string;
  let srcDir: string;
  let built: ReturnType<typeof buildOciLayoutImage>;

  /** registries.conf as the Machine Config Operator renders it from an IDMS (mirror → the relay). */
  const conf = (pullFromMirror: 'digest-only' | 'all'): string => {
    const path = join(root, `registries-${pullFromMirror}.conf`);
    const text = writeRegistriesConf(path, {
      prefix: UPSTREAM,
      location: UPSTREAM,
      mirrors: [{ location: `${rec.host}/${MIRROR_REPO}`, insecure: true, pullFromMirror }],
    });
    expect(text).toContain(`prefix = "${UPSTREAM}"\nlocation = "${UPSTREAM}"`);
    expect(text).toContain(`[[registry.mirror]]\nlocation = "${rec.host}/${MIRROR_REPO}"\ninsecure = true\npull-from-mirror = "${pullFromMirror}"`);
    return path;
  };

  beforeAll(async () => {
    root = tmp.make('idms');
    srcDir = join(root, 'src');
    built = buildOciLayoutImage(srcDir, { tag: TAG, layerBytes: 4096 });
    // What `oc adm release mirror` / oc-mirror does: push the payload tagless, by digest.
    await skopeoCopy(built.ociRef, `docker://${srv.host}/${MIRROR_REPO}@${built.indexDigest}`, { destInsecure: true });
    expect(await fetchTags(srv.url, MIRROR_REPO)).toEqual({ status: 200, tags: [] });
  });

  it('a digest pull of the quay.io name is served by airlock (no internet here), byte-identical', async () => {
    rec.reset();
    const out = join(root, 'pulled');
    await skopeoCopy(`docker://${UPSTREAM}@${built.indexDigest}`, `oci:${out}:pulled`, { registriesConf: conf('digest-only') });

    expect(readOciLayoutTagged(out, 'pulled').digest).toBe(built.indexDigest);
    const original = listBlobsOfOciLayout(srcDir);
    const pulled = listBlobsOfOciLayout(out);
    expect(pulled.map((b) => b.digest)).toEqual(original.map((b) => b.digest));
    for (const [i, b] of pulled.entries()) expect(readFileSync(b.path).equals(readFileSync(original[i]!.path))).toBe(true);

    // Every manifest and blob came from airlock's mirror repository.
    const got = (path: string) => rec.requests.some((r) => r.method === 'GET' && r.path === path && r.status === 200);
    expect(got(`/v2/${MIRROR_REPO}/manifests/${built.indexDigest}`)).toBe(true);
    for (const d of built.manifestDigests) expect(got(`/v2/${MIRROR_REPO}/manifests/${d}`), d).toBe(true);
    for (const d of built.blobDigests) expect(got(`/v2/${MIRROR_REPO}/blobs/${d}`), d).toBe(true);
    expect(rec.requests.every((r) => r.path === '/v2/' || r.path.startsWith(`/v2/${MIRROR_REPO}/`))).toBe(true);
  });

  it('a single-platform digest pull (no --all) is served too', async () => {
    rec.reset();
    const child = built.images[1]!;
    const raw = await skopeoInspectRaw(`docker://${UPSTREAM}@${child.manifestDigest}`, { registriesConf: conf('digest-only') });
    expect(raw.raw).toBe(child.manifestBytes.toString('utf8'));
    expect(rec.requests.some((r) => r.path === `/v2/${MIRROR_REPO}/manifests/${child.manifestDigest}` && r.status === 200)).toBe(true);
  });

  it('a tag pull does not reach airlock through a digest-only mirror, though airlock has the tag', async () => {
    // Give the mirror the tag, so that reaching airlock would have succeeded.
    await skopeoCopy(built.ociRef, `docker://${srv.host}/${MIRROR_REPO}:${TAG}`, { destInsecure: true });
    expect(await fetchTags(srv.url, MIRROR_REPO)).toEqual({ status: 200, tags: [TAG] });

    rec.reset();
    const r = await skopeo(['copy', '--all', `docker://${UPSTREAM}:${TAG}`, `oci:${join(root, 'by-tag')}:x`], {
      registriesConf: conf('digest-only'),
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('quay.io');
    expect(r.stderr).not.toContain(rec.host);
    expect(rec.requests).toEqual([]);

    // The same tag pull with pull-from-mirror = "all" is served by airlock: the key is honoured, not ignored.
    const ok = await skopeoInspectRaw(`docker://${UPSTREAM}:${TAG}`, { registriesConf: conf('all') });
    expect(ok.digest).toBe(built.indexDigest);
    expect(rec.requests.some((q) => q.method === 'GET' && q.path === `/v2/${MIRROR_REPO}/manifests/${TAG}` && q.status === 200)).toBe(true);
  });
});

describe('cross-repository blob mount', () => {
  it('copying an image to a second repository mounts its layers from the first (POST ?mount=&from=)', async () => {
    const root = tmp.make('mount');
    const dir = join(root, 'src');
    const built = buildOciLayoutImage(dir, { tag: 'v1', layerBytes: 64 * 1024 });
    const FIRST = 'team-a/tools/app';
    const SECOND = 'team-b/tools/app';
    await skopeoCopy(built.ociRef, `docker://${rec.host}/${FIRST}:v1`, { destInsecure: true });

    // skopeo learns where a blob already lives on a registry from its blob-info cache
    // (/var/lib/containers/cache as root, ~/.local/share/containers/cache otherwise), filled by
    // the push above; it then mounts instead of uploading.
    rec.reset();
    await skopeoCopy(`docker://${rec.host}/${FIRST}:v1`, `docker://${rec.host}/${SECOND}:v1`, {
      srcInsecure: true,
      destInsecure: true,
    });

    const { configs, layers } = configAndLayers(built);
    const mounts = rec.requests.filter((r) => r.method === 'POST' && r.path === `/v2/${SECOND}/blobs/uploads/` && r.query.has('mount'));
    // Every layer was mounted from the first repository, answered 201 Created (no upload session).
    for (const d of layers) {
      const m = mounts.find((r) => r.query.get('mount') === d);
      expect(m, `mount of ${d}`).toBeDefined();
      expect(m!.query.get('from')).toBe(FIRST);
      expect(m!.status).toBe(201);
    }
    // …so no layer bytes travelled: none was read from the first repository or uploaded to the
    // second. (skopeo reads and re-uploads the small configs: it needs their content anyway.)
    for (const d of layers) {
      expect(rec.requests.some((r) => r.method === 'GET' && r.path === `/v2/${FIRST}/blobs/${d}`), `GET ${d}`).toBe(false);
    }
    const uploaded = rec.requests
      .filter((r) => r.method === 'PUT' && r.path.startsWith(`/v2/${SECOND}/blobs/uploads/`))
      .map((r) => r.query.get('digest'));
    expect(uploaded.filter((d) => !configs.includes(d!))).toEqual([]);

    // The second repository links every blob and serves the whole image; the first is unchanged.
    for (const d of [...configs, ...layers]) expect(await headBlob(srv.url, SECOND, d), d).toBe(200);
    await expectImageStored(srv.url, SECOND, 'v1', built, ociLayoutBlobs(dir));
    await expectImageStored(srv.url, FIRST, 'v1', built, ociLayoutBlobs(dir));
  });
});

describe('parallel pushes', () => {
  it('concurrent copy --all of images sharing layers into one repository all succeed and verify', async () => {
    const root = tmp.make('parallel');
    const REPO = 'parallel/shared/app';
    const seed = `parallel-${Date.now()}`;
    // Same seed: the first two layers of each platform (and with equal layer counts the configs)
    // are byte-identical across the three images; the manifests differ.
    const layerBytes = 512 * 1024;
    const two = buildOciLayoutImage(join(root, 'two'), { seed, layersPerImage: 2, layerBytes, tag: 'two' });
    const three = buildOciLayoutImage(join(root, 'three'), { seed, layersPerImage: 3, layerBytes, tag: 'three' });
    const dockerDir = join(root, 'docker');
    const docker = buildDockerDirImage(dockerDir, { seed, layersPerImage: 2, layerBytes });
    const shared = three.blobDigests.filter((d) => two.blobDigests.includes(d) && docker.blobDigests.includes(d));
    expect(shared).toHaveLength(4);
    expect(new Set([two.indexDigest, three.indexDigest, docker.indexDigest]).size).toBe(3);

    await Promise.all([
      skopeoCopy(two.ociRef, `docker://${srv.host}/${REPO}:two`, { destInsecure: true }),
      skopeoCopy(three.ociRef, `docker://${srv.host}/${REPO}:three`, { destInsecure: true }),
      skopeoCopy(docker.dirRef, `docker://${srv.host}/${REPO}@${docker.indexDigest}`, { destInsecure: true }),
    ]);

    await expectImageStored(srv.url, REPO, 'two', two, ociLayoutBlobs(join(root, 'two')));
    await expectImageStored(srv.url, REPO, 'three', three, ociLayoutBlobs(join(root, 'three')));
    await expectImageStored(srv.url, REPO, docker.indexDigest, docker, dirTransportBlobs(dockerDir));
    expect(await fetchTags(srv.url, REPO)).toEqual({ status: 200, tags: ['three', 'two'] });
    for (const [ref, digest] of [
      ['two', two.indexDigest],
      ['three', three.indexDigest],
      [docker.indexDigest, docker.indexDigest],
    ] as const) {
      const sep = ref.startsWith('sha256:') ? '@' : ':';
      expect((await skopeoInspectRaw(`docker://${srv.host}/${REPO}${sep}${ref}`, { insecure: true })).digest).toBe(digest);
    }
  });
});
