/**
 * `airlock sync` from a real CNCF distribution (Debian's docker-registry) on 127.0.0.1, with the real
 * CLI: into the store (host:port → host_port naming, digest sources tagless, origins recorded),
 * through the server that holds the storage, into a directory that `import` then restores exactly,
 * from a mapping.txt, past missing images, as a dry run, one platform only, with credentials.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { startTestServer } from '../helpers/server.js';
import { readOciLayoutIndex, skopeoCopy } from '../helpers/skopeo.js';
import { expectImageStored, fetchBlob, fetchManifest, fetchTags, ociLayoutBlobs, tempDirs } from '../e2e/support.js';
import { runCli } from '../server/cli.js';
import { SqliteMetadataStore } from '../../src/storage/metadata.js';
import { expectStoreIntact, originsOf, pullWithSkopeo } from './support.js';

const tmp = tempDirs('airgap-sync');
const cli = (args: string[]) => runCli(args, { timeoutMs: 120_000 });

let upstream: Distribution;
let locked: Distribution;
let srcDir: string;
let release: BuiltOciImage;
let component: BuiltOciImage;
let local: string; // 127.0.0.1_PORT

beforeAll(async () => {
  srcDir = tmp.make('src');
  release = buildOciLayoutImage(srcDir, { tag: '4.15' });
  component = buildOciLayoutImage(srcDir, { tag: 'component', platforms: [{ os: 'linux', architecture: 'amd64' }], singleManifest: true });
  upstream = await startDistribution();
  locked = await startDistribution({ users: { puller: 'secret-pw' } });
  local = upstream.host.replace(':', '_');
  await skopeoCopy(release.ociRef, `docker://${upstream.host}/openshift-release-dev/ocp-release:4.15`, { destInsecure: true });
  await skopeoCopy(component.ociRef, `docker://${upstream.host}/openshift-release-dev/ocp-v4.0-art-dev:component`, { destInsecure: true });
  await skopeoCopy(component.ociRef, `docker://${locked.host}/private/tool:1`, {
    destInsecure: true,
    extra: ['--dest-creds', 'puller:secret-pw'],
  });
}, 120_000);

afterAll(async () => {
  await upstream?.stop();
  await locked?.stop();
  tmp.cleanup();
});

const releaseRef = () => `${upstream.host}/openshift-release-dev/ocp-release:4.15`;
const componentByDigest = () => `${upstream.host}/openshift-release-dev/ocp-v4.0-art-dev@${component.indexDigest}`;

describe('sync into the store', () => {
  it('lands at host_port/path, keeps digests, stores a digest source tagless, records origins; a rerun fetches nothing', async () => {
    const storage = tmp.make('store');
    const run = await cli(['sync', releaseRef(), componentByDigest(), '--insecure', '--storage', storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/sync: 2 image\(s\); 4 manifest\(s\), 9 blob\(s\)/);

    const srv = await startTestServer({ storage });
    try {
      await expectImageStored(srv.url, `${local}/openshift-release-dev/ocp-release`, '4.15', release, ociLayoutBlobs(srcDir));
      await expectImageStored(srv.url, `${local}/openshift-release-dev/ocp-v4.0-art-dev`, component.indexDigest, component, ociLayoutBlobs(srcDir));
      expect((await fetchTags(srv.url, `${local}/openshift-release-dev/ocp-v4.0-art-dev`)).tags ?? []).toEqual([]);
      const pulled = await pullWithSkopeo(srv.host, `${local}/openshift-release-dev/ocp-release:4.15`, tmp.make('pulled'));
      for (const digest of release.blobDigests) expect(pulled.get(digest)?.equals(ociLayoutBlobs(srcDir)(digest))).toBe(true);
    } finally {
      await srv.close();
    }
    expect(await originsOf(storage)).toEqual({
      [`${local}/openshift-release-dev/ocp-release`]: `${upstream.host}/openshift-release-dev/ocp-release`,
      [`${local}/openshift-release-dev/ocp-v4.0-art-dev`]: `${upstream.host}/openshift-release-dev/ocp-v4.0-art-dev`,
    });

    const again = await cli(['sync', releaseRef(), componentByDigest(), '--insecure', '--storage', storage]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/0 manifest\(s\), 0 blob\(s\), 0 B/);
    expect(again.stdout).toMatch(/already present/);
  });

  it('goes through the server holding the storage, with --dest-prefix', async () => {
    const srv = await startTestServer();
    try {
      const run = await cli(['sync', releaseRef(), '--dest-prefix', 'ocp4', '--insecure', '--storage', srv.storage]);
      expect(run.code, run.stderr + run.stdout).toBe(0);
      await expectImageStored(srv.url, 'ocp4/openshift-release-dev/ocp-release', '4.15', release, ociLayoutBlobs(srcDir));
      await srv.server.close();
      expect(await originsOf(srv.storage)).toEqual({ 'ocp4/openshift-release-dev/ocp-release': `${upstream.host}/openshift-release-dev/ocp-release` });
    } finally {
      await srv.close();
    }
  });

  it('through a server whose pull-through upstream covers the same repositories, content is stored, not taken for present upstream', async () => {
    const srv = await startTestServer({ upstreams: [{ prefix: local, url: upstream.url, insecure: true }] });
    try {
      const run = await cli(['sync', releaseRef(), '--insecure', '--storage', srv.storage]);
      expect(run.code, run.stderr + run.stdout).toBe(0);
      expect(run.stdout).toMatch(/sync: 1 image\(s\); 3 manifest\(s\), 6 blob\(s\)/);
      await expectImageStored(srv.url, `${local}/openshift-release-dev/ocp-release`, '4.15', release, ociLayoutBlobs(srcDir));
      await srv.server.close();
      // Stored as the server's own content (pushed, never evicted), not as a cached pull-through copy.
      const meta = new SqliteMetadataStore(join(srv.storage, 'airlock.db'));
      try {
        const repo = `${local}/openshift-release-dev/ocp-release`;
        expect(await meta.getTag(repo, '4.15')).toMatchObject({ digest: release.indexDigest, cached: false });
        for (const digest of release.blobDigests) expect(await meta.linkedBlobSize(repo, digest)).toBeGreaterThan(0);
        expect(await meta.cachedOnlyBytes()).toBe(0);
      } finally {
        await meta.close();
      }
    } finally {
      await srv.close();
    }
  });

  it('--filter-by-os keeps one platform: the tag names its manifest, other platforms are not fetched', async () => {
    const storage = tmp.make('store-filter');
    const run = await cli(['sync', releaseRef(), '--filter-by-os', 'linux/arm64', '--insecure', '--storage', storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/skipped 1 platform image\(s\): not matching --filter-by-os/);
    const arm = release.images.find((i) => i.platform.architecture === 'arm64')!;
    const amd = release.images.find((i) => i.platform.architecture === 'amd64')!;
    const srv = await startTestServer({ storage });
    try {
      const repo = `${local}/openshift-release-dev/ocp-release`;
      const tagged = await fetchManifest(srv.url, repo, '4.15');
      expect(tagged.digest).toBe(arm.manifestDigest);
      expect(tagged.bytes.equals(arm.manifestBytes)).toBe(true);
      expect((await fetchBlob(srv.url, repo, amd.layers[0]!.digest)).status).toBe(404);
    } finally {
      await srv.close();
    }
  });

  it('--skip-missing goes past a source image that is gone and lists it; without, the sync fails naming it', async () => {
    const gone = `${upstream.host}/openshift-release-dev/ocp-release:4.99`;
    const storage = tmp.make('store-missing');
    const failed = await cli(['sync', gone, '--insecure', '--storage', storage]);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain(`FAILED 1 image(s):\n  ${gone}`);
    const skipped = await cli(['sync', gone, releaseRef(), '--skip-missing', '--insecure', '--storage', storage]);
    expect(skipped.code, skipped.stderr + skipped.stdout).toBe(0);
    expect(skipped.stdout).toContain(`skipped 1 image(s) missing at the source (--skip-missing):\n  ${gone}`);
    expect(skipped.stdout).toMatch(/sync: 1 image\(s\)/);
  });

  it('--dry-run counts what would be copied and writes nothing', async () => {
    const storage = tmp.make('store-dry');
    const run = await cli(['sync', releaseRef(), '--dry-run', '--insecure', '--storage', storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(/sync \(dry run\): 1 image\(s\); would copy 3 manifest\(s\), 6 blob\(s\)/);
    const srv = await startTestServer({ storage });
    try {
      expect((await fetchManifest(srv.url, `${local}/openshift-release-dev/ocp-release`, '4.15')).status).toBe(404);
    } finally {
      await srv.close();
    }
  });

  it('--mapping reads oc adm catalog mirror SRC=DST lines: DST path and tag are the local repository and tag', async () => {
    const mapping = join(tmp.make('mapping'), 'mapping.txt');
    writeFileSync(
      mapping,
      [
        `${componentByDigest()}=mirror.example.com:5000/olm/art-dev:1a2b3c`,
        `${releaseRef()}=mirror.example.com:5000/olm/release`,
        '',
      ].join('\n'),
    );
    const storage = tmp.make('store-mapping');
    const run = await cli(['sync', '--mapping', mapping, '--insecure', '--storage', storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const srv = await startTestServer({ storage });
    try {
      await expectImageStored(srv.url, 'olm/art-dev', '1a2b3c', component, ociLayoutBlobs(srcDir));
      await expectImageStored(srv.url, 'olm/release', '4.15', release, ociLayoutBlobs(srcDir));
    } finally {
      await srv.close();
    }
    expect((await originsOf(storage))['olm/art-dev']).toBe(`${upstream.host}/openshift-release-dev/ocp-v4.0-art-dev`);
  });

  it('uses --authfile credentials for the source, and names the refusal without them', async () => {
    const authfile = join(tmp.make('auth'), 'pull-secret.json');
    writeFileSync(authfile, JSON.stringify({ auths: { [locked.host]: { auth: Buffer.from('puller:secret-pw').toString('base64') } } }));
    const storage = tmp.make('store-auth');
    const refused = await cli(['sync', `${locked.host}/private/tool:1`, '--insecure', '--storage', storage]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/private\/tool:1: .*(401|unauthori[sz]ed|credentials)/i);
    const run = await cli(['sync', `${locked.host}/private/tool:1`, '--insecure', '--authfile', authfile, '--storage', storage]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
  });
});

describe('sync --to-dir, carried across, import DIR', () => {
  it('writes an OCI layout (no storage touched) that import restores exactly, origins included', async () => {
    const dir = join(tmp.make('carry'), 'ocp');
    const run = await cli(['sync', releaseRef(), componentByDigest(), '--to-dir', dir, '--insecure', '--storage', join(tmp.make('unused'), 'none')]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const entries = readOciLayoutIndex(dir).manifests;
    expect(entries.map((e) => e.annotations?.['io.airlock.repository']).sort()).toEqual([
      `${local}/openshift-release-dev/ocp-release`,
      `${local}/openshift-release-dev/ocp-v4.0-art-dev`,
    ]);

    const storage = tmp.make('store-offline');
    const imported = await cli(['import', dir, '--storage', storage]);
    expect(imported.code, imported.stderr + imported.stdout).toBe(0);
    const srv = await startTestServer({ storage });
    try {
      await expectImageStored(srv.url, `${local}/openshift-release-dev/ocp-release`, '4.15', release, ociLayoutBlobs(srcDir));
      await expectImageStored(srv.url, `${local}/openshift-release-dev/ocp-v4.0-art-dev`, component.indexDigest, component, ociLayoutBlobs(srcDir));
    } finally {
      await srv.close();
    }
    expect(await originsOf(storage)).toEqual({
      [`${local}/openshift-release-dev/ocp-release`]: `${upstream.host}/openshift-release-dev/ocp-release`,
      [`${local}/openshift-release-dev/ocp-v4.0-art-dev`]: `${upstream.host}/openshift-release-dev/ocp-v4.0-art-dev`,
    });
    expectStoreIntact(storage);
  });
});
