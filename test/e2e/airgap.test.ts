/**
 * The air gap, end to end, with the real parts: a synthetic OpenShift release (multi-arch
 * components named quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:… in its
 * image-references) on a real upstream (CNCF distribution on 127.0.0.1, standing for quay.io) →
 * `airlock sync --to-dir` on the connected side → the directory carried → `airlock import` into an
 * offline airlock with no upstream → `airlock verify` passes → `airlock mirrorsets`
 * writes a registries.conf → the real skopeo, following it as a cluster node's CRI-O would, pulls
 * every component and the release by their original quay.io names from the offline airlock,
 * byte-exact; the same for a file-based operator catalog's bundles and related images. Then one
 * component goes: verify names exactly it and exits 1.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { ART_DEV, buildSyntheticCatalog, buildSyntheticRelease, RELEASE_REPO, type SyntheticCatalog, type SyntheticRelease } from '../helpers/payloads.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { listBlobsOfOciLayout, readOciLayoutTagged, skopeoCopy } from '../helpers/skopeo.js';
import { pathOf, pushByDigest, pushTagged } from '../mirror/payload-push.js';
import { call, tempDirs } from '../pullthrough/support.js';
import { runCli } from '../server/cli.js';

const tmp = tempDirs('airgap');
const VERSION = '4.16.0';
const TAG = `${VERSION}-x86_64`;
/** Where the offline mirror keeps the payload and the release: sync's --dest-prefix ocp4 + the source path. */
const LOCAL_PAYLOAD = 'ocp4/openshift-release-dev/ocp-v4.0-art-dev';
const LOCAL_RELEASE = 'ocp4/openshift-release-dev/ocp-release';
/** The operator catalog on the upstream (and, below ocp4/, on the offline mirror). */
const CATALOG = 'operatorhubio/catalog:v4.16';

let upstream: Distribution;
let offline: TestServer;
let release: SyntheticRelease;
let catalog: SyntheticCatalog;
let root: string;
let storage: string;

const cli = (args: string[]) => runCli([...args, '--storage', storage], { timeoutMs: 60_000 });

/**
 * The connected half: `airlock sync --to-dir` copies the release and every component (by digest)
 * from the upstream into a directory, with no server or database. The directory is carried across;
 * the offline half: `airlock import DIR` into the offline airlock's storage. The upstream stands for
 * quay.io, so `--map` records the quay.io names as the origins (a sync from quay.io itself records
 * them by itself).
 */
async function carryAcrossAirGap(): Promise<void> {
  const carried = tmp.make('usb-stick');
  const sources = [
    `${upstream.host}/${pathOf(RELEASE_REPO)}:${TAG}`,
    ...release.components.map((c) => `${upstream.host}/${pathOf(ART_DEV)}@${c.built.indexDigest}`),
    `${upstream.host}/${CATALOG}`,
    ...catalog.images.map((i) => `${upstream.host}/${pathOf(i.repository)}@${i.built.indexDigest}`),
  ];
  const catalogMaps = [...new Set(catalog.images.map((i) => i.repository))].flatMap((r) => ['--map', `ocp4/${pathOf(r)}=${r}`]);
  const synced = await runCli(['sync', ...sources, '--to-dir', carried, '--dest-prefix', 'ocp4', '--insecure', '--storage', tmp.make('connected')], {
    timeoutMs: 120_000,
  });
  expect(synced.code, synced.stderr).toBe(0);
  const imported = await cli(['import', carried, '--map', `${LOCAL_PAYLOAD}=${ART_DEV}`, '--map', `${LOCAL_RELEASE}=${RELEASE_REPO}`, ...catalogMaps]);
  expect(imported.code, imported.stderr).toBe(0);
  // The offline airlock: no upstream at all.
  offline = await startTestServer({ storage });
}

beforeAll(async () => {
  root = tmp.make('root');
  storage = tmp.make('offline-storage');
  release = buildSyntheticRelease(join(root, 'payload'), { version: VERSION, layerBytes: 16 * 1024 });
  // The connected side's source: the payload pushed by digest, the release image by tag, as on quay.io.
  upstream = await startDistribution();
  await pushByDigest(upstream.host, release.components, (c) => pathOf(c.repository));
  await pushTagged(upstream.host, release.release, `${pathOf(RELEASE_REPO)}:${TAG}`);
  catalog = buildSyntheticCatalog(join(root, 'operators'));
  await pushByDigest(upstream.host, catalog.images, (i) => pathOf(i.repository));
  await pushTagged(upstream.host, catalog.catalog, CATALOG);
  await carryAcrossAirGap();
}, 240_000);

afterAll(async () => {
  await offline?.close();
  await upstream?.stop();
  tmp.cleanup();
});

/** skopeo wrote the same image as the fixture: same top-level digest, every blob byte-identical. */
function expectSameImage(out: string, originalLayout: string, topDigest: string): void {
  expect(readOciLayoutTagged(out, 'pulled').digest).toBe(topDigest);
  const original = new Map(listBlobsOfOciLayout(originalLayout).map((b) => [b.digest, b.path]));
  const pulled = listBlobsOfOciLayout(out);
  expect(pulled.length).toBeGreaterThan(1);
  for (const b of pulled) {
    const source = original.get(b.digest);
    expect(source, `${b.digest} is not part of the fixture`).toBeDefined();
    expect(readFileSync(b.path).equals(readFileSync(source!)), b.digest).toBe(true);
  }
}

describe('a release and an operator catalog carried across the air gap', () => {
  let conf: string;

  it('verify: every component of the release is on the offline mirror (exit 0)', async () => {
    const r = await cli(['verify', `${LOCAL_RELEASE}:${TAG}`]);
    expect(r.stdout).toContain(`verify ${LOCAL_RELEASE}:${TAG} (release): 5 of 5 images complete, 0 missing`);
    expect(r.code, r.stderr).toBe(0);
  });

  it('mirrorsets: a registries.conf mapping the quay.io names to the offline mirror', async () => {
    conf = join(root, 'registries.conf');
    const r = await cli(['mirrorsets', '--host', offline.host, '--format', 'registries.conf', '--out', conf]);
    expect(r.code, r.stderr).toBe(0);
    const text = readFileSync(conf, 'utf8');
    expect(text).toContain(`prefix = "${ART_DEV}"`);
    expect(text).toContain(`location = "${offline.host}/${LOCAL_PAYLOAD}"`);
    // The cluster's own file, read back by verify, agrees.
    expect((await cli(['verify', `${LOCAL_RELEASE}:${TAG}`, '--mirrorsets', conf])).code).toBe(0);
  });

  it('skopeo following that registries.conf pulls every component by its quay.io digest name, byte-exact', async () => {
    for (const c of release.components) {
      const out = tmp.make(`pull-${c.name}`);
      await skopeoCopy(`docker://${c.reference}`, `oci:${out}:pulled`, { registriesConf: conf });
      expectSameImage(out, join(root, 'payload', 'components'), c.built.indexDigest);
    }
  });

  it('and the release image itself by its quay.io digest', async () => {
    const out = tmp.make('pull-release');
    await skopeoCopy(`docker://${RELEASE_REPO}@${release.release.digest}`, `oci:${out}:pulled`, { registriesConf: conf });
    expectSameImage(out, join(root, 'payload', 'release'), release.release.digest);
  });

  it('the operator catalog: verify finds every bundle and related image; skopeo pulls each by its quay.io name', async () => {
    const r = await cli(['verify', `ocp4/${CATALOG}`, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, kind: 'catalog', images: catalog.images.length, missing: [] });
    for (const image of catalog.images) {
      const out = tmp.make(`pull-${image.name}`);
      await skopeoCopy(`docker://${image.reference}`, `oci:${out}:pulled`, { registriesConf: conf });
      expectSameImage(out, join(root, 'operators', 'images'), image.built.indexDigest);
    }
  });

  it('one component deleted from the mirror: verify names exactly it and exits 1', async () => {
    const gone = release.components.find((c) => c.name === 'cli')!;
    const del = await call(offline.url, `/v2/${LOCAL_PAYLOAD}/manifests/${gone.built.indexDigest}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    const r = await cli(['verify', `${LOCAL_RELEASE}:${TAG}`, '--json']);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as { ok: boolean; missing: { reference: string; reason: string; repository: string }[] };
    expect(report.ok).toBe(false);
    expect(report.missing).toHaveLength(1);
    expect(report.missing[0]).toMatchObject({ reference: gone.reference, reason: 'manifest-missing', repository: LOCAL_PAYLOAD });
    const text = await cli(['verify', `${LOCAL_RELEASE}:${TAG}`]);
    expect(text.code).toBe(1);
    expect(text.stdout.split('\n').filter((l) => l.startsWith('MISSING'))).toEqual([
      `MISSING ${gone.reference} (component cli): manifest ${gone.built.indexDigest} is not in ${LOCAL_PAYLOAD}`,
    ]);
  });
});
