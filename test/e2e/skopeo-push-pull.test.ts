/**
 * End to end with the real skopeo (1.9.3) against a real airlock: multi-arch pushes with
 * `copy --all` into deeply nested repositories (tagless by digest, and by tag), `inspect`,
 * `list-tags`, copying back out byte for byte, and `delete`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDockerDirImage,
  buildOciLayoutImage,
  MEDIA_TYPES,
  type BuiltDirImage,
  type BuiltOciImage,
} from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  listBlobsOfDir,
  listBlobsOfOciLayout,
  listDirInstanceManifests,
  readDirManifest,
  readOciLayoutIndex,
  readOciLayoutTagged,
  skopeo,
  skopeoCopy,
  skopeoInspectRaw,
  TLS_INSECURE,
} from '../helpers/skopeo.js';
import {
  dirTransportBlobs,
  expectImageStored,
  fetchCatalog,
  fetchManifest,
  fetchTags,
  ociLayoutBlobs,
  tempDirs,
} from './support.js';

const tmp = tempDirs('push');
let srv: TestServer;

// Six path components each: what `oc adm release mirror --to=<host>/a/b/c/d/e/ocp-release` makes.
const OCI_BY_DIGEST = 'a/b/c/d/e/ocp-release';
const OCI_BY_TAG = 'a/b/c/d/e/ocp-release-tagged';
const DOCKER_BY_DIGEST = 'x/y/z/w/v/docker-list';
const DOCKER_BY_TAG = 'x/y/z/w/v/docker-list-tagged';
const OCI_TAG = '4.16.0-x86_64';
const DOCKER_TAG = 'v2-2';

let oci: BuiltOciImage;
let ociDir: string;
let docker: BuiltDirImage;
let dockerDir: string;

beforeAll(async () => {
  srv = await startTestServer();
  ociDir = join(tmp.make('oci'), 'layout');
  oci = buildOciLayoutImage(ociDir, { tag: OCI_TAG, layersPerImage: 2, layerBytes: 4096 });
  dockerDir = join(tmp.make('docker'), 'image');
  docker = buildDockerDirImage(dockerDir, { layersPerImage: 2, layerBytes: 4096 });

  // The four pushes are independent; run them two at a time.
  await Promise.all([
    skopeoCopy(oci.ociRef, `docker://${srv.host}/${OCI_BY_DIGEST}@${oci.indexDigest}`, { destInsecure: true }),
    skopeoCopy(docker.dirRef, `docker://${srv.host}/${DOCKER_BY_DIGEST}@${docker.indexDigest}`, { destInsecure: true }),
  ]);
  await Promise.all([
    skopeoCopy(oci.ociRef, `docker://${srv.host}/${OCI_BY_TAG}:${OCI_TAG}`, { destInsecure: true }),
    skopeoCopy(docker.dirRef, `docker://${srv.host}/${DOCKER_BY_TAG}:${DOCKER_TAG}`, { destInsecure: true }),
  ]);
});

afterAll(async () => {
  await srv?.close();
  tmp.cleanup();
});

describe('skopeo copy --all into a 6-level nested repository', () => {
  it('OCI index by digest (tagless): index, child manifests, configs and layers are all stored; no tag is created', async () => {
    expect(oci.indexMediaType).toBe(MEDIA_TYPES.ociIndex);
    await expectImageStored(srv.url, OCI_BY_DIGEST, oci.indexDigest, oci, ociLayoutBlobs(ociDir));
    expect(await fetchTags(srv.url, OCI_BY_DIGEST)).toEqual({ status: 200, tags: [] });
    // The tag the layout carries was not invented on the registry side.
    expect((await fetchManifest(srv.url, OCI_BY_DIGEST, OCI_TAG)).status).toBe(404);
    expect(await fetchCatalog(srv.url)).toContain(OCI_BY_DIGEST);
  });

  it('OCI index by tag: the tag resolves to the index and every child, config and layer is stored', async () => {
    await expectImageStored(srv.url, OCI_BY_TAG, OCI_TAG, oci, ociLayoutBlobs(ociDir));
    await expectImageStored(srv.url, OCI_BY_TAG, oci.indexDigest, oci, ociLayoutBlobs(ociDir));
    expect(await fetchTags(srv.url, OCI_BY_TAG)).toEqual({ status: 200, tags: [OCI_TAG] });
  });

  it('Docker v2-2 manifest list by digest (tagless): list, child manifests, configs and layers are stored; no tag', async () => {
    expect(docker.indexMediaType).toBe(MEDIA_TYPES.dockerList);
    await expectImageStored(srv.url, DOCKER_BY_DIGEST, docker.indexDigest, docker, dirTransportBlobs(dockerDir));
    expect(await fetchTags(srv.url, DOCKER_BY_DIGEST)).toEqual({ status: 200, tags: [] });
    expect(await fetchCatalog(srv.url)).toContain(DOCKER_BY_DIGEST);
  });

  it('Docker v2-2 manifest list by tag', async () => {
    await expectImageStored(srv.url, DOCKER_BY_TAG, DOCKER_TAG, docker, dirTransportBlobs(dockerDir));
    expect(await fetchTags(srv.url, DOCKER_BY_TAG)).toEqual({ status: 200, tags: [DOCKER_TAG] });
  });
});

describe('skopeo inspect and list-tags', () => {
  it('inspect --raw returns exactly the pushed bytes, for the index / list and for each child', async () => {
    const cases: [string, string, BuiltOciImage | BuiltDirImage][] = [
      [OCI_BY_DIGEST, `@${oci.indexDigest}`, oci],
      [OCI_BY_TAG, `:${OCI_TAG}`, oci],
      [DOCKER_BY_DIGEST, `@${docker.indexDigest}`, docker],
      [DOCKER_BY_TAG, `:${DOCKER_TAG}`, docker],
    ];
    for (const [repo, ref, built] of cases) {
      const top = await skopeoInspectRaw(`docker://${srv.host}/${repo}${ref}`, { insecure: true });
      expect(top.raw).toBe(built.indexBytes.toString('utf8'));
      expect(top.digest).toBe(built.indexDigest);
      for (const img of built.images) {
        const child = await skopeoInspectRaw(`docker://${srv.host}/${repo}@${img.manifestDigest}`, { insecure: true });
        expect(child.raw).toBe(img.manifestBytes.toString('utf8'));
      }
    }
  });

  it('inspect resolves each platform of the tagged OCI index and lists the repository tags', async () => {
    for (const [i, arch] of ['amd64', 'arm64'].entries()) {
      const r = await skopeo(
        ['inspect', TLS_INSECURE, '--override-os', 'linux', '--override-arch', arch, `docker://${srv.host}/${OCI_BY_TAG}:${OCI_TAG}`],
        { check: true },
      );
      const info = JSON.parse(r.stdout) as { Name: string; Digest: string; RepoTags: string[]; Architecture: string; Os: string; Layers: string[] };
      expect(info.Name).toBe(`${srv.host}/${OCI_BY_TAG}`);
      expect(info.Digest).toBe(oci.indexDigest);
      expect(info.RepoTags).toEqual([OCI_TAG]);
      expect(info.Architecture).toBe(arch);
      expect(info.Os).toBe('linux');
      expect(info.Layers).toEqual(oci.images[i]!.layers.map((l) => l.digest));
    }
  });

  it('inspect of a tagless Docker list by digest reports no tags; inspect --config returns the config blob', async () => {
    const r = await skopeo(
      ['inspect', TLS_INSECURE, '--override-os', 'linux', '--override-arch', 'arm64', `docker://${srv.host}/${DOCKER_BY_DIGEST}@${docker.indexDigest}`],
      { check: true },
    );
    const info = JSON.parse(r.stdout) as { Digest: string; RepoTags: string[]; Architecture: string; Layers: string[] };
    expect(info.Digest).toBe(docker.indexDigest);
    expect(info.RepoTags).toEqual([]);
    expect(info.Architecture).toBe('arm64');
    expect(info.Layers).toEqual(docker.images[1]!.layers.map((l) => l.digest));

    const cfg = await skopeo(
      ['inspect', TLS_INSECURE, '--config', '--raw', `docker://${srv.host}/${DOCKER_BY_DIGEST}@${docker.images[1]!.manifestDigest}`],
      { check: true },
    );
    expect(Buffer.from(cfg.stdout).equals(dirTransportBlobs(dockerDir)(docker.images[1]!.configDigest))).toBe(true);
  });

  it('list-tags shows the tags of tagged repositories and none for tagless ones', async () => {
    const tagsOf = async (repo: string) => {
      const r = await skopeo(['list-tags', TLS_INSECURE, `docker://${srv.host}/${repo}`], { check: true });
      return JSON.parse(r.stdout) as { Repository: string; Tags: string[] };
    };
    expect(await tagsOf(OCI_BY_TAG)).toEqual({ Repository: `${srv.host}/${OCI_BY_TAG}`, Tags: [OCI_TAG] });
    expect(await tagsOf(DOCKER_BY_TAG)).toEqual({ Repository: `${srv.host}/${DOCKER_BY_TAG}`, Tags: [DOCKER_TAG] });
    expect((await tagsOf(OCI_BY_DIGEST)).Tags).toEqual([]);
    expect((await tagsOf(DOCKER_BY_DIGEST)).Tags).toEqual([]);

    const missing = await skopeo(['list-tags', TLS_INSECURE, `docker://${srv.host}/a/b/c/d/e/never-pushed`]);
    expect(missing.code).not.toBe(0);
  });
});

describe('skopeo copy --all back out: no conversion, every byte identical', () => {
  it('tagless OCI index → oci: layout holds exactly the original blobs', async () => {
    const out = join(tmp.make('out-oci'), 'layout');
    await skopeoCopy(`docker://${srv.host}/${OCI_BY_DIGEST}@${oci.indexDigest}`, `oci:${out}:back`, { srcInsecure: true });

    expect(readOciLayoutTagged(out, 'back').digest).toBe(oci.indexDigest);
    expect(readOciLayoutIndex(out).manifests).toHaveLength(1);
    const original = listBlobsOfOciLayout(ociDir);
    const copied = listBlobsOfOciLayout(out);
    // index + 2 manifests + 2 configs + 4 layers
    expect(copied).toHaveLength(9);
    expect(copied.map((b) => b.digest)).toEqual(original.map((b) => b.digest));
    for (const [i, b] of copied.entries()) expect(readFileSync(b.path).equals(readFileSync(original[i]!.path))).toBe(true);
  });

  it('tagged OCI index → dir: keeps the OCI index and manifests byte-identical', async () => {
    const out = join(tmp.make('out-oci-dir'), 'dir');
    await skopeoCopy(`docker://${srv.host}/${OCI_BY_TAG}:${OCI_TAG}`, `dir:${out}`, { srcInsecure: true });

    const top = readDirManifest(out);
    expect(top.bytes.equals(oci.indexBytes)).toBe(true);
    expect(listDirInstanceManifests(out)).toEqual([...oci.manifestDigests].sort());
    for (const img of oci.images) expect(readDirManifest(out, img.manifestDigest).bytes.equals(img.manifestBytes)).toBe(true);
    const blobs = listBlobsOfDir(out);
    expect(blobs.map((b) => b.digest)).toEqual([...oci.blobDigests].sort());
    const original = ociLayoutBlobs(ociDir);
    for (const b of blobs) expect(readFileSync(b.path).equals(original(b.digest))).toBe(true);
  });

  it('Docker list (tagless and tagged) → dir: is file-for-file identical to the source directory', async () => {
    const sourceFiles = readdirSync(dockerDir).sort();
    for (const [repo, ref] of [
      [DOCKER_BY_DIGEST, `@${docker.indexDigest}`],
      [DOCKER_BY_TAG, `:${DOCKER_TAG}`],
    ] as const) {
      const out = join(tmp.make('out-docker'), 'dir');
      await skopeoCopy(`docker://${srv.host}/${repo}${ref}`, `dir:${out}`, { srcInsecure: true });
      expect(readdirSync(out).sort()).toEqual(sourceFiles);
      for (const f of sourceFiles) expect(readFileSync(join(out, f)).equals(readFileSync(join(dockerDir, f))), f).toBe(true);
      expect(readDirManifest(out).json.mediaType).toBe(MEDIA_TYPES.dockerList);
    }
  });
});

describe('skopeo delete', () => {
  const REPO = 'del/a/b/c/d/app';

  it('delete by tag removes the manifest the tag names; delete by digest removes a tagless manifest and a tagged one with its tag', async () => {
    const root = tmp.make('delete');
    const a = buildOciLayoutImage(join(root, 'a'), { tag: 'a', layerBytes: 512 });
    const b = buildOciLayoutImage(join(root, 'b'), { tag: 'b', layerBytes: 512 });
    const c = buildDockerDirImage(join(root, 'c'), { layerBytes: 512 });
    const d = buildOciLayoutImage(join(root, 'd'), { tag: 'd', layerBytes: 512 });
    await Promise.all([
      skopeoCopy(a.ociRef, `docker://${srv.host}/${REPO}:v1`, { destInsecure: true }),
      skopeoCopy(b.ociRef, `docker://${srv.host}/${REPO}:v2`, { destInsecure: true }),
    ]);
    await Promise.all([
      skopeoCopy(c.dirRef, `docker://${srv.host}/${REPO}@${c.indexDigest}`, { destInsecure: true }),
      skopeoCopy(d.ociRef, `docker://${srv.host}/${REPO}:v3`, { destInsecure: true }),
    ]);
    const listTags = async () => {
      const r = await skopeo(['list-tags', TLS_INSECURE, `docker://${srv.host}/${REPO}`], { check: true });
      return (JSON.parse(r.stdout) as { Tags: string[] }).Tags;
    };
    expect(await listTags()).toEqual(['v1', 'v2', 'v3']);

    // By tag: skopeo resolves the tag and deletes that manifest.
    await skopeo(['delete', TLS_INSECURE, `docker://${srv.host}/${REPO}:v1`], { check: true });
    expect((await fetchManifest(srv.url, REPO, 'v1')).status).toBe(404);
    expect((await fetchManifest(srv.url, REPO, a.indexDigest)).status).toBe(404);
    expect(await listTags()).toEqual(['v2', 'v3']);
    const gone = await skopeo(['inspect', '--raw', TLS_INSECURE, `docker://${srv.host}/${REPO}:v1`]);
    expect(gone.code).not.toBe(0);
    // Nothing else was touched.
    await expectImageStored(srv.url, REPO, 'v2', b, ociLayoutBlobs(join(root, 'b')));
    await expectImageStored(srv.url, REPO, c.indexDigest, c, dirTransportBlobs(join(root, 'c')));

    // By digest, tagless.
    await skopeo(['delete', TLS_INSECURE, `docker://${srv.host}/${REPO}@${c.indexDigest}`], { check: true });
    const deleted = await fetchManifest(srv.url, REPO, c.indexDigest);
    expect(deleted.status).toBe(404);
    expect((JSON.parse(deleted.bytes.toString()) as { errors: { code: string }[] }).errors[0]!.code).toBe('MANIFEST_UNKNOWN');
    expect(await listTags()).toEqual(['v2', 'v3']);

    // By digest, tagged: the tag goes with it.
    await skopeo(['delete', TLS_INSECURE, `docker://${srv.host}/${REPO}@${b.indexDigest}`], { check: true });
    expect((await fetchManifest(srv.url, REPO, b.indexDigest)).status).toBe(404);
    expect((await fetchManifest(srv.url, REPO, 'v2')).status).toBe(404);
    expect(await listTags()).toEqual(['v3']);
    await expectImageStored(srv.url, REPO, 'v3', d, ociLayoutBlobs(join(root, 'd')));

    // Deleting what is gone fails.
    const again = await skopeo(['delete', TLS_INSECURE, `docker://${srv.host}/${REPO}@${c.indexDigest}`]);
    expect(again.code).not.toBe(0);

    // The last image deleted, the repository lists no tags (until garbage collection forgets it).
    await skopeo(['delete', TLS_INSECURE, `docker://${srv.host}/${REPO}:v3`], { check: true });
    expect(await listTags()).toEqual([]);
  });
});
