// Garbage collection while real clients push: skopeo pushes multi-arch images (by tag and tagless,
// by digest) while collections run back to back. Nothing reachable is ever removed, everything
// unreachable is, and every image still pulls byte-exact with skopeo afterwards.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDirs } from '../e2e/support.js';
import { expectStatus, http, pushBlob, pushImage, sha256, type Pushed } from '../helpers/http.js';
import { buildOciLayoutImage, type BuiltOciImage } from '../helpers/images.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { readOciLayoutIndex, skopeoCopy } from '../helpers/skopeo.js';
import { ageStore, gcOverHttp, hasBlobFile, type GcAnswer } from './support.js';

const PUSHES = 6;

describe('garbage collection during concurrent skopeo pushes', () => {
  const tmp = tempDirs('airlock-gc-concurrent-');
  let s: TestServer;
  let oldTagless: BuiltOciImage;
  const garbage: Pushed[] = [];
  const orphans: string[] = [];
  const built: BuiltOciImage[] = [];
  const target = (i: number) => (i % 2 ? `conc/app${i}@${built[i]!.indexDigest}` : `conc/app${i}:v1`);

  beforeAll(async () => {
    s = await startTestServer({ gc: { schedule: '24h', grace: '10m' } });
    // Old content: a tagless multi-arch mirror (kept), deleted images and loose blobs (garbage).
    oldTagless = buildOciLayoutImage(tmp.make('old'), { layersPerImage: 2, layerBytes: 4096 });
    await skopeoCopy(oldTagless.ociRef, `docker://${s.host}/conc/old@${oldTagless.indexDigest}`, { destInsecure: true });
    for (let i = 0; i < 4; i++) {
      const image = await pushImage(s.url, `conc/gone${i % 2}`, { tag: `t${i}`, layers: 2, layerSize: 8192 });
      expectStatus(await http(s.url, `/v2/conc/gone${i % 2}/manifests/${image.digest}`, { method: 'DELETE' }), 202);
      garbage.push(image);
    }
    for (let i = 0; i < 3; i++) orphans.push(await pushBlob(s.url, 'conc/loose', randomBytes(1000 + i)));
    ageStore(s.storage, 2 * 3_600_000);
    for (let i = 0; i < PUSHES; i++) built.push(buildOciLayoutImage(tmp.make(`new${i}`), { layersPerImage: 3, layerBytes: 64 * 1024, tag: 'v1' }));
  });

  afterAll(async () => {
    await s?.close();
    tmp.cleanup();
  });

  it('removes only the unreachable while pushes go on; every image pulls byte-exact afterwards', async () => {
    let pushing = true;
    const pushes = Promise.all(built.map((b, i) => skopeoCopy(b.ociRef, `docker://${s.host}/${target(i)}`, { destInsecure: true }))).finally(() => {
      pushing = false;
    });
    const runs: GcAnswer[] = [];
    const collecting = (async () => {
      while (pushing) runs.push(await gcOverHttp(s.url, {}));
    })();
    await pushes;
    await collecting;
    runs.push(await gcOverHttp(s.url, {}));
    console.log(`${runs.length} collections ran during ${PUSHES} concurrent skopeo pushes`);
    expect(runs.length).toBeGreaterThan(1);

    // Everything unreachable went (over the runs), and no manifest was ever removed.
    expect(runs.reduce((n, r) => n + r.removedManifests, 0)).toBe(0);
    const unreachable = [...garbage.flatMap((g) => [...g.blobs.keys()]), ...orphans];
    expect(runs.reduce((n, r) => n + r.removedBlobs, 0)).toBe(unreachable.length);
    for (const digest of unreachable) expect(hasBlobFile(s.storage, digest)).toBe(false);

    // Everything reachable stays: each image, pulled back with skopeo (which verifies every digest).
    const pulls = [...built.map((b, i) => ({ b, ref: target(i).replace(':v1', `@${b.indexDigest}`) })), { b: oldTagless, ref: `conc/old@${oldTagless.indexDigest}` }];
    for (const [i, { b, ref }] of pulls.entries()) {
      for (const digest of b.blobDigests) expect(hasBlobFile(s.storage, digest)).toBe(true);
      const out = tmp.make(`pulled${i}`);
      await skopeoCopy(`docker://${s.host}/${ref}`, `oci:${out}:x`, { srcInsecure: true, extra: ['--preserve-digests'] });
      expect(readOciLayoutIndex(out).manifests[0]!.digest).toBe(b.indexDigest);
      const index = await http(s.url, `/v2/${ref.replace('@', '/manifests/')}`, { headers: { accept: b.indexMediaType } });
      expect(sha256(index.body)).toBe(b.indexDigest);
      expect(index.body.equals(b.indexBytes)).toBe(true);
    }
  });
});
