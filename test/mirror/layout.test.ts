/**
 * OCI image layouts across the air gap, with the real CLI, server and skopeo: a layout skopeo wrote
 * imports; export → import into a fresh airlock restores every tag, tagless image and origin
 * byte-exact (directory and tar); a second export --since carries only new blobs.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { listBlobsOfOciLayout, readOciLayoutIndex, skopeoCopy } from '../helpers/skopeo.js';
import { expectImageStored, fetchManifest, fetchTags, ociLayoutBlobs, tempDirs } from '../e2e/support.js';
import { runCli } from '../server/cli.js';
import { checkSums, expectStoreIntact, originsOf, pullWithSkopeo } from './support.js';

const tmp = tempDirs('airgap-layout');
const cli = (args: string[]) => runCli(args, { timeoutMs: 120_000 });

let source: TestServer;
let release: BuiltOciImage;
let tagless: BuiltOciImage;
let single: BuiltOciImage;
let srcDir: string;

beforeAll(async () => {
  srcDir = tmp.make('src');
  release = buildOciLayoutImage(srcDir, { tag: '4.15', layerBytes: 64 * 1024 });
  tagless = buildOciLayoutImage(srcDir, { tag: 'component' });
  single = buildOciLayoutImage(srcDir, { tag: 'tools', platforms: [{ os: 'linux', architecture: 'amd64' }], singleManifest: true });
  source = await startTestServer();
  await skopeoCopy(release.ociRef, `docker://${source.host}/ocp4/openshift/release:4.15`, { destInsecure: true });
  await skopeoCopy(tagless.ociRef, `docker://${source.host}/ocp4/art-dev@${tagless.indexDigest}`, { destInsecure: true });
  await skopeoCopy(single.ociRef, `docker://${source.host}/tools/debug:1.0`, { destInsecure: true });
  const recorded = await fetch(`${source.url}/api/v1/origins`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      origins: [
        { repo: 'ocp4/openshift/release', origin: 'quay.io/openshift-release-dev/ocp-release' },
        { repo: 'ocp4/art-dev', origin: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev' },
      ],
    }),
  });
  expect(recorded.status).toBe(200);
}, 120_000);

afterAll(async () => {
  await source?.close();
  tmp.cleanup();
});

describe('import of a layout skopeo wrote', () => {
  it('lands the bare tag in --prefix, byte-exact, and skopeo pulls it back', async () => {
    const skopeoDir = tmp.make('skopeo-layout');
    await skopeoCopy(release.ociRef, `oci:${skopeoDir}:v1`);
    const storage = tmp.make('store-skopeo');
    const run = await cli(['import', skopeoDir, '--prefix', 'library/app', '--storage', storage]);
    expect(run.stderr).not.toMatch(/FAILED/);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/import: 1 image\(s\); 3 manifest\(s\), 6 blob\(s\)/);
    const srv = await startTestServer({ storage });
    try {
      await expectImageStored(srv.url, 'library/app', 'v1', release, ociLayoutBlobs(srcDir));
      const pulled = await pullWithSkopeo(srv.host, 'library/app:v1', tmp.make('pulled-skopeo'));
      for (const digest of release.blobDigests) expect(pulled.get(digest)?.equals(ociLayoutBlobs(srcDir)(digest))).toBe(true);
    } finally {
      await srv.close();
    }
    // A rerun finds everything present and transfers nothing.
    const again = await cli(['import', skopeoDir, '--prefix', 'library/app', '--storage', storage]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/0 manifest\(s\), 0 blob\(s\), 0 B/);
    expect(again.stdout).toMatch(/skipped \d+ item\(s\).*already present/);
  });

  it('without --prefix, a bare tag is a usage error naming the fix', async () => {
    const skopeoDir = tmp.make('skopeo-noprefix');
    await skopeoCopy(single.ociRef, `oci:${skopeoDir}:latest`);
    const run = await cli(['import', skopeoDir, '--storage', tmp.make('store-noprefix')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/names no repository: pass --prefix/);
  });

  it('a rerun copies again the layer of one platform that fsck --repair set aside, the index and its children being held', async () => {
    const skopeoDir = tmp.make('skopeo-repair');
    await skopeoCopy(release.ociRef, `oci:${skopeoDir}:v1`);
    const storage = tmp.make('store-repair');
    expect((await cli(['import', skopeoDir, '--prefix', 'library/app', '--storage', storage])).code).toBe(0);
    // One layer of one platform goes bad on disk; the repair quarantines it and drops its rows.
    const layer = release.blobDigests[0]!;
    const hex = layer.slice('sha256:'.length);
    const file = join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
    const bytes = readFileSync(file);
    bytes[0]! ^= 0xff;
    writeFileSync(file, bytes);
    const repaired = await cli(['fsck', '--repair', '--storage', storage]);
    expect(repaired.stdout).toContain(`corrupt blob       ${layer}`);
    expect(existsSync(file)).toBe(false);

    const again = await cli(['import', skopeoDir, '--prefix', 'library/app', '--storage', storage]);
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect(again.stdout).toMatch(/1 blob\(s\)/);
    expect((await cli(['fsck', '--storage', storage])).code).toBe(0);
    const srv = await startTestServer({ storage });
    try {
      const pulled = await pullWithSkopeo(srv.host, 'library/app:v1', tmp.make('pulled-repaired'));
      expect(pulled.get(layer)?.equals(ociLayoutBlobs(srcDir)(layer))).toBe(true);
    } finally {
      await srv.close();
    }
  });

  it('--dry-run lists what would be imported and writes nothing', async () => {
    const skopeoDir = tmp.make('skopeo-dry');
    await skopeoCopy(single.ociRef, `oci:${skopeoDir}:latest`);
    const storage = tmp.make('store-dry');
    const run = await cli(['import', skopeoDir, '--prefix', 'dry/run', '--dry-run', '--storage', storage]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/import \(dry run\): 1 image\(s\); would copy 1 manifest\(s\), 3 blob\(s\)/);
    expect(run.stderr).toMatch(/would copy .* \(latest\) → dry\/run:latest/);
    const srv = await startTestServer({ storage });
    try {
      expect((await fetchManifest(srv.url, 'dry/run', 'latest')).status).toBe(404);
    } finally {
      await srv.close();
    }
  });
});

describe('export → import into a fresh airlock', () => {
  const expectRestored = async (storage: string) => {
    const srv = await startTestServer({ storage });
    try {
      await expectImageStored(srv.url, 'ocp4/openshift/release', '4.15', release, ociLayoutBlobs(srcDir));
      await expectImageStored(srv.url, 'ocp4/art-dev', tagless.indexDigest, tagless, ociLayoutBlobs(srcDir));
      await expectImageStored(srv.url, 'tools/debug', '1.0', single, ociLayoutBlobs(srcDir));
      expect((await fetchTags(srv.url, 'ocp4/art-dev')).tags ?? []).toEqual([]);
      // skopeo pulls the tagless image by its digest, byte-exact.
      const pulled = await pullWithSkopeo(srv.host, `ocp4/art-dev@${tagless.indexDigest}`, tmp.make(`pulled-${Math.random()}`));
      for (const digest of tagless.blobDigests) expect(pulled.get(digest)?.equals(ociLayoutBlobs(srcDir)(digest))).toBe(true);
    } finally {
      await srv.close();
    }
    expect(await originsOf(storage)).toEqual({
      'ocp4/openshift/release': 'quay.io/openshift-release-dev/ocp-release',
      'ocp4/art-dev': 'quay.io/openshift-release-dev/ocp-v4.0-art-dev',
    });
    expectStoreIntact(storage);
  };

  it('a directory export (taken while the server runs) restores every tag, tagless image and origin', async () => {
    const out = join(tmp.make('export-dir'), 'layout');
    const run = await cli(['export', 'ocp4/**', 'tools/debug:1.0', '--to', out, '--storage', source.storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/export: 3 image\(s\)/);
    checkSums(out);
    const entries = readOciLayoutIndex(out).manifests;
    expect(entries.map((e) => e.annotations?.['org.opencontainers.image.ref.name']).sort()).toEqual([
      'ocp4/openshift/release:4.15',
      'tools/debug:1.0',
      undefined,
    ]);
    expect(existsSync(join(out, '.airlock-tmp'))).toBe(false);
    // skopeo reads the export as an ordinary layout.
    await skopeoCopy(`oci:${out}:ocp4/openshift/release:4.15`, `oci:${tmp.make('reread')}:x`);

    const fresh = tmp.make('store-from-dir');
    const imported = await cli(['import', out, '--storage', fresh]);
    expect(imported.code, imported.stderr + imported.stdout).toBe(0);
    await expectRestored(fresh);
  });

  it('a tar export restores the same, and a gzip of it too', async () => {
    const tar = join(tmp.make('export-tar'), 'ocp.tar');
    const run = await cli(['export', 'ocp4/**', 'tools/**', '--to', tar, '--storage', source.storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(existsSync(`${tar}.partial`)).toBe(false);
    const fresh = tmp.make('store-from-tar');
    const imported = await cli(['import', tar, '--storage', fresh]);
    expect(imported.code, imported.stderr + imported.stdout).toBe(0);
    await expectRestored(fresh);

    const { gzipSync } = await import('node:zlib');
    const gz = `${tar}.gz`;
    (await import('node:fs')).writeFileSync(gz, gzipSync(readFileSync(tar)));
    const fromGz = tmp.make('store-from-gz');
    const importedGz = await cli(['import', gz, '--storage', fromGz]);
    expect(importedGz.code, importedGz.stderr + importedGz.stdout).toBe(0);
    await expectRestored(fromGz);
  });

  it('--filter-by-os exports one platform: the tag names its manifest, the other platform stays behind', async () => {
    const out = join(tmp.make('export-filter'), 'layout');
    const run = await cli(['export', 'ocp4/openshift/release:4.15', '--filter-by-os', 'linux/amd64', '--to', out, '--storage', source.storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/skipped 1 platform image\(s\): not matching --filter-by-os/);
    const amd = release.images.find((i) => i.platform.architecture === 'amd64')!;
    const arm = release.images.find((i) => i.platform.architecture === 'arm64')!;
    expect(readOciLayoutIndex(out).manifests.map((e) => e.digest)).toEqual([amd.manifestDigest]);
    const blobs = new Set(listBlobsOfOciLayout(out).map((b) => b.digest));
    for (const layer of amd.layers) expect(blobs.has(layer.digest)).toBe(true);
    for (const layer of arm.layers) expect(blobs.has(layer.digest)).toBe(false);
    expect(blobs.has(release.indexDigest)).toBe(false);
  });

  it('a second export --since carries only the blobs the first did not, and imports on top of it', async () => {
    const first = join(tmp.make('since-1'), 'layout');
    expect((await cli(['export', 'ocp4/**', '--to', first, '--storage', source.storage])).code).toBe(0);
    const newer = buildOciLayoutImage(srcDir, { tag: '4.16', layerBytes: 32 * 1024 });
    await skopeoCopy(newer.ociRef, `docker://${source.host}/ocp4/openshift/release:4.16`, { destInsecure: true });

    const second = join(tmp.make('since-2'), 'layout');
    const run = await cli(['export', 'ocp4/**', '--to', second, '--since', first, '--storage', source.storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/left out blobs carried by/);
    const firstBlobs = new Set(listBlobsOfOciLayout(first).map((b) => b.digest));
    const manifests = new Set([release, tagless, newer].flatMap((i) => [i.indexDigest, ...i.manifestDigests]));
    const secondBlobs = listBlobsOfOciLayout(second).map((b) => b.digest);
    // Configs and layers: only the new image's; manifests always travel (they are small and name the images).
    expect(secondBlobs.filter((d) => !manifests.has(d)).sort()).toEqual([...newer.blobDigests].sort());
    expect(secondBlobs.filter((d) => !manifests.has(d) && firstBlobs.has(d))).toEqual([]);
    checkSums(second);

    const tarSecond = join(tmp.make('since-tar'), 'second.tar');
    const tarRun = await cli(['export', 'ocp4/**', '--to', tarSecond, '--since', first, '--storage', source.storage]);
    expect(tarRun.code, tarRun.stderr).toBe(0);

    // The other side: the first export, then the second on top.
    const fresh = tmp.make('store-since');
    expect((await cli(['import', first, '--storage', fresh])).code).toBe(0);
    const incremental = await cli(['import', tarSecond, '--storage', fresh]);
    expect(incremental.code, incremental.stderr + incremental.stdout).toBe(0);
    const srv = await startTestServer({ storage: fresh });
    try {
      await expectImageStored(srv.url, 'ocp4/openshift/release', '4.16', newer, ociLayoutBlobs(srcDir));
      await expectImageStored(srv.url, 'ocp4/openshift/release', '4.15', release, ociLayoutBlobs(srcDir));
    } finally {
      await srv.close();
    }

    // Alone, the incremental export names what is missing and where to get it.
    const alone = await cli(['import', second, '--storage', tmp.make('store-since-alone')]);
    expect(alone.code).toBe(1);
    expect(alone.stdout).toMatch(/not in OCI layout .* made --since .*: import that one first/);
  });
});
