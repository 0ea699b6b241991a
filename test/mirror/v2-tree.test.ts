/**
 * Import of the v2/ tree `oc image mirror --dir` and `oc adm release mirror --to-dir` write (tags as
 * symbolic links to `<algo>:<hex>`, manifests hard-linked to their blobs, nested repository paths,
 * a manifest list with its children), into a storage directory a running server holds: the import
 * goes through that server, which serves the images at once. A corrupted blob is named with its
 * file and digest, and nothing of that image becomes visible.
 */
import { copyFileSync, cpSync, linkSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDockerDirImage, digestHex, type BuiltDirImage } from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { dirTransportBlobs, expectImageStored, fetchManifest, fetchTags, tempDirs } from '../e2e/support.js';
import { runCli } from '../server/cli.js';
import { expectStoreIntact, originsOf, pullWithSkopeo } from './support.js';

const tmp = tempDirs('airgap-v2');
const cli = (args: string[]) => runCli(args, { timeoutMs: 120_000 });

interface Built {
  image: BuiltDirImage;
  dir: string;
}

/** Writes one image into v2/<repo> exactly as oc lays it out; `tag` undefined = tagless. */
function writeOcRepository(root: string, repo: string, built: Built, tag?: string): void {
  const base = join(root, 'v2', repo);
  mkdirSync(join(base, 'blobs'), { recursive: true });
  mkdirSync(join(base, 'manifests'), { recursive: true });
  for (const digest of built.image.blobDigests) copyFileSync(join(built.dir, digestHex(digest)), join(base, 'blobs', digest));
  const manifests = [
    { digest: built.image.indexDigest, bytes: built.image.indexBytes },
    ...built.image.images.map((i) => ({ digest: i.manifestDigest, bytes: i.manifestBytes })),
  ];
  for (const m of manifests) {
    writeFileSync(join(base, 'blobs', m.digest), m.bytes);
    try {
      linkSync(join(base, 'blobs', m.digest), join(base, 'manifests', m.digest));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  if (tag !== undefined) symlinkSync(built.image.indexDigest, join(base, 'manifests', tag));
}

function build(name: string, single = false): Built {
  const dir = tmp.make(name);
  const image = buildDockerDirImage(dir, single ? { platforms: [{ os: 'linux', architecture: 'amd64' }], singleManifest: true } : {});
  return { image, dir };
}

let release: Built;
let minimal: Built;
let tagless: Built;
let tree: string;
let srv: TestServer;

beforeAll(async () => {
  release = build('release');
  minimal = build('minimal', true);
  tagless = build('tagless', true);
  tree = tmp.make('tree');
  writeOcRepository(tree, 'openshift/release', release, '4.15.3-x86_64');
  writeOcRepository(tree, 'ubi9/ubi-minimal/nested/deep', minimal, 'latest');
  writeOcRepository(tree, 'ubi9/ubi-minimal/nested/deep', tagless);
  srv = await startTestServer();
}, 60_000);

afterAll(async () => {
  await srv?.close();
  tmp.cleanup();
});

describe("import of oc's v2/ tree", () => {
  it('goes through the server holding the storage: tags, the list with its children, nested paths and a tagless manifest serve at once', async () => {
    const run = await cli([
      'import',
      tree,
      '--prefix',
      'mirror',
      '--map',
      'mirror/openshift/release=quay.io/openshift-release-dev/ocp-release',
      '--storage',
      srv.storage,
    ]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/import: 3 image\(s\)/);
    await expectImageStored(srv.url, 'mirror/openshift/release', '4.15.3-x86_64', release.image, dirTransportBlobs(release.dir));
    await expectImageStored(srv.url, 'mirror/ubi9/ubi-minimal/nested/deep', 'latest', minimal.image, dirTransportBlobs(minimal.dir));
    await expectImageStored(srv.url, 'mirror/ubi9/ubi-minimal/nested/deep', tagless.image.indexDigest, tagless.image, dirTransportBlobs(tagless.dir));
    expect((await fetchTags(srv.url, 'mirror/ubi9/ubi-minimal/nested/deep')).tags).toEqual(['latest']);
    const pulled = await pullWithSkopeo(srv.host, 'mirror/openshift/release:4.15.3-x86_64', tmp.make('pulled'));
    for (const digest of release.image.blobDigests) expect(pulled.get(digest)?.equals(dirTransportBlobs(release.dir)(digest))).toBe(true);

    // The v2/ directory itself works as SOURCE too, and a rerun transfers no blob again (through a
    // server, manifests are PUT again: small, and a no-op for the server).
    const again = await cli(['import', join(tree, 'v2'), '--prefix', 'mirror', '--storage', srv.storage]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/ 0 blob\(s\), [\d.]+ (B|KiB) /);
    expect(again.stdout).toMatch(/skipped \d+ item\(s\).*already present/);
  });

  it('names a corrupted blob file and its digest, exits 1, and shows nothing of that image; the others import', async () => {
    const broken = tmp.make('broken');
    cpSync(tree, broken, { recursive: true, verbatimSymlinks: true });
    const layer = release.image.images[1]!.layers[0]!.digest;
    const file = join(broken, 'v2', 'openshift', 'release', 'blobs', layer);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    writeFileSync(file, bytes);

    const storage = tmp.make('store-broken');
    const run = await cli(['import', broken, '--prefix', 'broken', '--storage', storage]);
    expect(run.code).toBe(1);
    expect(run.stdout + run.stderr).toContain(file);
    expect(run.stdout + run.stderr).toContain(`does not match its digest ${layer}`);

    const check = await startTestServer({ storage });
    try {
      expect((await fetchManifest(check.url, 'broken/openshift/release', '4.15.3-x86_64')).status).toBe(404);
      expect((await fetchManifest(check.url, 'broken/openshift/release', release.image.indexDigest)).status).toBe(404);
      expect((await fetchManifest(check.url, 'broken/openshift/release', release.image.images[1]!.manifestDigest)).status).toBe(404);
      await expectImageStored(check.url, 'broken/ubi9/ubi-minimal/nested/deep', 'latest', minimal.image, dirTransportBlobs(minimal.dir));
    } finally {
      await check.close();
    }
    expectStoreIntact(storage);
  });

  it('records --map origins through the server', async () => {
    // Read from the database once the server stopped (afterAll's close is then a no-op).
    await srv.server.close();
    expect(await originsOf(srv.storage)).toEqual({ 'mirror/openshift/release': 'quay.io/openshift-release-dev/ocp-release' });
  });
});
