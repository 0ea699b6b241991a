// `airlock verify` against a real airlock holding a synthetic release and a synthetic file-based
// catalog pushed by skopeo: complete through airlock's own mirror sets and through the files
// clusters use (IDMS, ICSP, registries.conf), then with a component's child manifest, a blob and a
// mirror set entry taken away, each named exactly.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { SqliteMetadataStore } from '../../src/storage/metadata.js';
import { ART_DEV, RELEASE_REPO, buildSyntheticCatalog, buildSyntheticRelease, type SyntheticCatalog, type SyntheticRelease } from '../helpers/payloads.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { pushManifest } from '../helpers/http.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { call, tempDirs } from '../pullthrough/support.js';
import { CLI, runCli } from '../server/cli.js';
import { pushByDigest, pushTagged } from './payload-push.js';

const tmp = tempDirs('verify');
let srv: TestServer;
let release: SyntheticRelease;
let catalog: SyntheticCatalog;
let root: string;
let configFile: string;

const RELEASE_REF = 'ocp4/release:4.16.0-x86_64';
const CATALOG_REF = 'catalogs/community-operators:v4.16';
const HOST = 'mirror.example.com:5000';
const PAYLOAD_REPO = 'ocp4/openshift4';

interface VerifyJson {
  ok: boolean;
  kind: string;
  images: number;
  complete: number;
  missing: { reference: string; neededBy: string; reason: string; message: string; repository?: string; digest?: string }[];
  manifests: number;
  blobs: number;
  bytes: number;
  error?: string;
}

const verify = (args: string[]) => runCli(['verify', ...args, '--config', configFile], { timeoutMs: 30_000 });
const verifyJson = async (args: string[]) => {
  const r = await verify([...args, '--json']);
  return { ...r, json: JSON.parse(r.stdout) as VerifyJson };
};

function writeFile(name: string, text: string): string {
  const path = join(root, name);
  writeFileSync(path, text);
  return path;
}

/** What `oc adm release mirror --to=mirror.example.com:5000/ocp4/openshift4 --to-release-image=…/ocp4/release:…` prints for the cluster. */
function releaseIdms(options: { withRelease: boolean } = { withRelease: true }): string {
  return toYaml({
    apiVersion: 'config.openshift.io/v1',
    kind: 'ImageDigestMirrorSet',
    metadata: { name: 'release' },
    spec: {
      imageDigestMirrors: [
        ...(options.withRelease ? [{ source: 'quay.io/openshift-release-dev/ocp-release', mirrors: [`${HOST}/ocp4/release`] }] : []),
        { source: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev', mirrors: [`${HOST}/ocp4/openshift4`] },
      ],
    },
  });
}

/** The imageContentSourcePolicy.yaml `oc adm catalog mirror` writes: one entry per repository. */
function catalogIcsp(leaveOut?: string): string {
  const repos = [...new Set(catalog.images.map((i) => i.repository))].filter((r) => r !== leaveOut);
  return toYaml({
    apiVersion: 'operator.openshift.io/v1alpha1',
    kind: 'ImageContentSourcePolicy',
    metadata: { name: 'community-operators', labels: { 'operators.openshift.org/catalog': 'true' } },
    spec: { repositoryDigestMirrors: repos.map((source) => ({ mirrors: [`${HOST}/${source}`], source })) },
  });
}

beforeAll(async () => {
  root = tmp.make('root');
  release = buildSyntheticRelease(join(root, 'release'));
  catalog = buildSyntheticCatalog(join(root, 'catalog'));
  // The release payload lives under ocp4/openshift4, recorded as mirroring quay.io's art-dev
  // repository (what `import --map` and `sync` record): airlock's own mirror sets say so.
  const storage = tmp.make('storage');
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  await meta.setOrigin(PAYLOAD_REPO, ART_DEV);
  await meta.setOrigin('ocp4/release', RELEASE_REPO);
  await meta.close();
  srv = await startTestServer({ storage });
  configFile = writeFile('airlock.yaml', toYaml({ storage }));
  // Mirrored the way `oc adm release mirror` / `oc adm catalog mirror` do: by digest.
  await pushByDigest(srv.host, release.components, () => PAYLOAD_REPO);
  await pushByDigest(srv.host, catalog.images, (image) => image.repository);
  await pushTagged(srv.host, release.release, RELEASE_REF);
  await pushTagged(srv.host, catalog.catalog, CATALOG_REF);
}, 180_000);

afterAll(async () => {
  await srv?.close();
  tmp.cleanup();
});

describe('airlock verify of a complete mirror', () => {
  it('a release: every component found through airlock’s own mirror sets, exit 0', async () => {
    const r = await verify([RELEASE_REF]);
    // Five components, and the release image itself under its recorded origin (what an upgrade pulls).
    expect(r.stderr).toContain(`verify ${RELEASE_REF}: 6 image(s) needed, resolved through airlock's own mirror sets`);
    expect(r.stdout).not.toContain('MISSING');
    expect(r.stdout).toMatch(/^verify ocp4\/release:4\.16\.0-x86_64 \(release\): 6 of 6 images complete, 0 missing; checked \d+ manifests, \d+ blobs/m);
    expect(r.code).toBe(0);
  });

  it('--json: the same for scripts, counting every manifest and blob of the multi-arch components', async () => {
    const { code, json } = await verifyJson([RELEASE_REF]);
    expect(code).toBe(0);
    expect(json).toMatchObject({ ok: true, kind: 'release', images: 6, complete: 6, missing: [] });
    // 3 multi-arch components (index + 3 children), 2 single manifests, the release image.
    expect(json.manifests).toBe(3 * 4 + 2 + 1);
    const blobs = new Set([...release.components.flatMap((c) => c.built.blobDigests), release.release.configDigest, ...release.release.layerDigests]);
    expect(json.blobs).toBe(blobs.size);
  });

  it('on a terminal: a progress bar with items, bytes, rate and ETA, then the summary', async () => {
    // script(1) gives the command a pseudo-terminal, as a person's shell would.
    const { execFileSync } = await import('node:child_process');
    const command = [process.execPath, CLI, 'verify', RELEASE_REF, '--config', configFile].map((a) => `'${a}'`).join(' ');
    const out = execFileSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    expect(out).toMatch(/verify \[[█░]+\] 100% \| 6\/6 items \| [\d.]+ KiB\/[\d.]+ KiB \| [\d.]+ (B|KiB|MiB)\/s \| ETA/);
    expect(out).toContain('6 of 6 images complete, 0 missing');
  });

  it('the release by digest, through the IDMS `oc adm release mirror` prints for the cluster', async () => {
    const file = writeFile('release-idms.yaml', releaseIdms());
    const r = await verify([`ocp4/release@${release.release.digest}`, '--mirrorsets', file]);
    expect(r.stderr).toContain(`resolved through the 2 mirror set source(s) in ${file}`);
    expect(r.code).toBe(0);
  });

  it('an IDMS without the release repository: the release image itself is what a cluster would miss', async () => {
    const file = writeFile('release-idms-no-release.yaml', releaseIdms({ withRelease: false }));
    const { code, json } = await verifyJson([RELEASE_REF, '--mirrorsets', file]);
    expect(code).toBe(1);
    expect(json.missing).toEqual([
      {
        reference: `${RELEASE_REPO}@${release.release.digest}`,
        neededBy: 'the release image itself',
        reason: 'unmapped',
        message: `no mirror set covers ${RELEASE_REPO}: a cluster would pull it from its source`,
      },
    ]);
  });

  it('the release through the registries.conf `airlock mirrorsets` writes', async () => {
    const out = join(root, 'airlock.conf');
    const written = await runCli(['mirrorsets', '--config', configFile, '--host', HOST, '--format', 'registries.conf', '--out', out]);
    expect(written.code).toBe(0);
    const r = await verify([RELEASE_REF, '--mirrorsets', out]);
    expect(r.code).toBe(0);
  });

  it('a multi-arch release (an index of per-architecture release images): the components of every architecture', async () => {
    const arm = buildSyntheticRelease(join(root, 'release-arm64'), { components: { 'etcd-arm64': false, 'installer-arm64': true } });
    await pushByDigest(srv.host, arm.components, () => PAYLOAD_REPO);
    await skopeoCopy(arm.release.ociRef, `docker://${srv.host}/ocp4/release@${arm.release.digest}`, { destInsecure: true });
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [release.release, arm.release].map((r, i) => ({
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: r.digest,
        size: r.manifestBytes.length,
        platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' },
      })),
    };
    const put = await pushManifest(srv.url, 'ocp4/release', '4.16.0-multi', index, index.mediaType);
    expect(put.status).toBe(201);
    const { code, json } = await verifyJson(['ocp4/release:4.16.0-multi']);
    expect(code).toBe(0);
    expect(json).toMatchObject({ ok: true, kind: 'release', images: 8, complete: 8 });
  });

  it('a file-based catalog: every bundle and related image, through the ICSP `oc adm catalog mirror` writes', async () => {
    const file = writeFile('catalog-icsp.yaml', catalogIcsp());
    const { code, json } = await verifyJson([CATALOG_REF, '--mirrorsets', file]);
    expect(code).toBe(0);
    expect(json).toMatchObject({ ok: true, kind: 'catalog', images: catalog.images.length, missing: [] });
  });
});

describe('airlock verify names exactly what a cluster would miss', () => {
  it('an image whose repository no mirror set covers: unmapped, exit 1', async () => {
    const operator = catalog.images.find((i) => i.name === 'prometheus-operator')!;
    const file = writeFile('catalog-icsp-partial.yaml', catalogIcsp(operator.repository));
    const r = await verifyJson([CATALOG_REF, '--mirrorsets', file]);
    expect(r.code).toBe(1);
    expect(r.json.ok).toBe(false);
    expect(r.json.missing).toEqual([
      {
        reference: operator.reference,
        neededBy: 'related image of prometheusoperator.v0.47.0 (prometheus-operator)',
        reason: 'unmapped',
        message: `no mirror set covers ${operator.repository}: a cluster would pull it from its source`,
      },
    ]);
    const text = await verify([CATALOG_REF, '--mirrorsets', file]);
    expect(text.stdout).toContain(`MISSING ${operator.reference} (related image of prometheusoperator.v0.47.0 (prometheus-operator)): no mirror set covers`);
    expect(text.stdout).toContain('5 of 6 images complete, 1 missing');
  });

  it('a child manifest of a multi-arch component deleted: that component, child-missing', async () => {
    const etcd = release.components.find((c) => c.name === 'etcd')!;
    const child = etcd.built.manifestDigests[1]!;
    const del = await call(srv.url, `/v2/${PAYLOAD_REPO}/manifests/${child}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    const { code, json } = await verifyJson([RELEASE_REF]);
    expect(code).toBe(1);
    expect(json.missing).toEqual([
      {
        reference: etcd.reference,
        neededBy: 'component etcd',
        reason: 'child-missing',
        message: `index ${etcd.built.indexDigest} in ${PAYLOAD_REPO} lacks its child manifest ${child}`,
        repository: PAYLOAD_REPO,
        digest: child,
      },
    ]);
    // Put it back for the next case.
    await skopeoCopy(etcd.built.ociRef, `docker://${srv.host}/${PAYLOAD_REPO}@${etcd.built.indexDigest}`, { destInsecure: true });
    expect((await verify([RELEASE_REF])).code).toBe(0);
  });

  it('a layer of a single-manifest component gone: that component, blob-missing naming the layer', async () => {
    const console_ = release.components.find((c) => c.name === 'console')!;
    const layer = console_.built.images[0]!.layers[1]!.digest;
    const del = await call(srv.url, `/v2/${PAYLOAD_REPO}/blobs/${layer}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    const r = await verify([RELEASE_REF]);
    expect(r.code).toBe(1);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('MISSING'));
    expect(lines).toEqual([
      `MISSING ${console_.reference} (component console): blob ${layer} of manifest ${console_.built.indexDigest} is not in ${PAYLOAD_REPO}`,
    ]);
    expect(r.stdout).toContain('5 of 6 images complete, 1 missing');
  });
});

describe('airlock verify usage', () => {
  it('no REF, a second REF, or an unreadable mirror set file: exit 2 with the reason', async () => {
    expect((await verify([])).code).toBe(2);
    const two = await verify([RELEASE_REF, CATALOG_REF]);
    expect(two.code).toBe(2);
    expect(two.stderr).toContain('one REF only');
    const garbage = writeFile('garbage.yaml', 'kind: ConfigMap\ndata: {}\n');
    const bad = await verify([RELEASE_REF, '--mirrorsets', garbage]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('holds no mirror sets');
    const missing = await verify([RELEASE_REF, '--mirrorsets', join(root, 'nope.yaml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('cannot read --mirrorsets');
  });

  it('a REF that is not here, or is neither a release nor a catalog: exit 1 saying so', async () => {
    const absent = await verify(['ocp4/release:4.99.0']);
    expect(absent.code).toBe(1);
    expect(absent.stderr).toContain('ocp4/release:4.99.0 is not on this mirror');
    const plain = release.components.find((c) => c.name === 'installer')!;
    const neither = await verify([`${PAYLOAD_REPO}@${plain.built.indexDigest}`]);
    expect(neither.code).toBe(1);
    expect(neither.stderr).toContain('is neither an OpenShift release image');
  });
});
