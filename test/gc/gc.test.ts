// Garbage collection on a live server: what it keeps (tags, tagless pushes, indexes' children,
// referrers, uploads in progress, anything within the grace period) and what it removes (blobs of
// deleted manifests, blobs never referenced, orphaned referrers, and old untagged manifests only
// when asked), with a dry run that reports the same and removes nothing.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectStatus,
  http,
  MEDIA,
  pushBlob,
  pushEmptyConfig,
  pushImage,
  pushManifest,
  sha256,
  startUpload,
  withDigest,
  type Pushed,
} from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { ageStore, gcOverHttp, hasBlobFile, writeDownAccess, type GcAnswer } from './support.js';

const HOUR = 3_600_000;

async function expectPulls(base: string, repo: string, image: Pushed): Promise<void> {
  const m = await http(base, `/v2/${repo}/manifests/${image.digest}`, { headers: { accept: image.mediaType } });
  expectStatus(m, 200);
  expect(m.body.equals(image.body)).toBe(true);
  for (const [digest, data] of image.blobs) {
    const b = await http(base, `/v2/${repo}/blobs/${digest}`);
    expectStatus(b, 200);
    expect(b.body.equals(data)).toBe(true);
  }
}

async function manifestStatus(base: string, repo: string, digest: string): Promise<number> {
  return (await http(base, `/v2/${repo}/manifests/${digest}`, { method: 'HEAD', headers: { accept: `${MEDIA.ociManifest}, ${MEDIA.ociIndex}` } })).status;
}

describe('garbage collection', () => {
  let s: TestServer;
  const kept: { repo: string; image: Pushed }[] = [];
  let tagless: Pushed;
  let children: Pushed[];
  let index: { digest: string; body: Buffer };
  let referrer: { digest: string };
  let deleted: Pushed;
  let orphanBlob: string;
  let sharedLayer: string;
  let orphanedReferrer: { digest: string };
  let orphanedSubject: Pushed;
  let uploadLocation: string;
  let lastRun: GcAnswer;
  const uploadBytes = randomBytes(4096);

  beforeAll(async () => {
    s = await startTestServer({ gc: { schedule: '24h', grace: '10m' } });
    const base = s.url;
    // Kept: a tagged image, a tagless one, a multi-arch index with tagless children, a referrer.
    const tagged = await pushImage(base, 'gc/tagged', { tag: 'v1', layers: 2 });
    kept.push({ repo: 'gc/tagged', image: tagged });
    tagless = await pushImage(base, 'gc/tagless', { layers: 2 });
    kept.push({ repo: 'gc/tagless', image: tagless });
    children = [
      await pushImage(base, 'gc/multi', { platform: { os: 'linux', architecture: 'amd64' } }),
      await pushImage(base, 'gc/multi', { platform: { os: 'linux', architecture: 'arm64' } }),
    ];
    for (const child of children) kept.push({ repo: 'gc/multi', image: child });
    const indexDoc = {
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: children.map((c, i) => ({ mediaType: c.mediaType, digest: c.digest, size: c.body.length, platform: { os: 'linux', architecture: i ? 'arm64' : 'amd64' } })),
    };
    const pushedIndex = await pushManifest(base, 'gc/multi', 'latest', indexDoc, MEDIA.ociIndex);
    expectStatus(pushedIndex, 201);
    index = { digest: pushedIndex.digest, body: pushedIndex.sent };

    const empty = await pushEmptyConfig(base, 'gc/tagged');
    const sbom = Buffer.from('{"sbom":true}');
    const sbomDigest = await pushBlob(base, 'gc/tagged', sbom);
    const artifact = (subject: Pushed) => ({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      artifactType: 'application/vnd.example.sbom',
      config: empty,
      layers: [{ mediaType: 'application/json', digest: sbomDigest, size: sbom.length }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.body.length },
    });
    const pushedReferrer = await pushManifest(base, 'gc/tagged', sha256(JSON.stringify(artifact(tagged))), artifact(tagged), MEDIA.ociManifest);
    expectStatus(pushedReferrer, 201);
    referrer = { digest: pushedReferrer.digest };

    // Garbage: an image deleted through the API (one layer of it mounted from a kept image), a blob
    // nobody references, and a referrer whose subject was deleted.
    sharedLayer = [...tagged.blobs.keys()][0]!;
    const mount = await http(base, `/v2/gc/deleted/blobs/uploads/?mount=${sharedLayer}&from=gc/tagged`, { method: 'POST' });
    expectStatus(mount, 201);
    deleted = await pushImage(base, 'gc/deleted', { tag: 'old' });
    const withShared = {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: [...deleted.blobs.keys()].at(-1)!, size: [...deleted.blobs.values()].at(-1)!.length },
      layers: [{ mediaType: MEDIA.ociLayer, digest: sharedLayer, size: tagged.blobs.get(sharedLayer)!.length }],
    };
    const sharedManifest = await pushManifest(base, 'gc/deleted', 'shared', withShared, MEDIA.ociManifest);
    expectStatus(sharedManifest, 201);
    expectStatus(await http(base, `/v2/gc/deleted/manifests/${deleted.digest}`, { method: 'DELETE' }), 202);
    expectStatus(await http(base, `/v2/gc/deleted/manifests/${sharedManifest.digest}`, { method: 'DELETE' }), 202);
    orphanBlob = await pushBlob(base, 'gc/orphans', randomBytes(2048));

    orphanedSubject = await pushImage(base, 'gc/signed', {});
    const sig = await pushManifest(base, 'gc/signed', sha256(JSON.stringify(artifact(orphanedSubject))), artifact(orphanedSubject), MEDIA.ociManifest);
    expect(sig.status).toBe(400); // the SBOM blobs are not in gc/signed yet
    await pushBlob(base, 'gc/signed', Buffer.from('{}'));
    await pushBlob(base, 'gc/signed', sbom);
    const sig2 = await pushManifest(base, 'gc/signed', sha256(JSON.stringify(artifact(orphanedSubject))), artifact(orphanedSubject), MEDIA.ociManifest);
    expectStatus(sig2, 201);
    orphanedReferrer = { digest: sig2.digest };
    expectStatus(await http(base, `/v2/gc/signed/manifests/${orphanedSubject.digest}`, { method: 'DELETE' }), 202);

    // An upload in progress: half its bytes sent.
    uploadLocation = await startUpload(base, 'gc/uploading');
    const patch = await http(base, uploadLocation, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': '0-2047' }, body: uploadBytes.subarray(0, 2048) });
    expectStatus(patch, 202);

    // All of it is now two hours old: past the grace period.
    ageStore(s.storage, 2 * HOUR);
  });

  afterAll(async () => {
    await s?.close();
  });

  it('a dry run reports what a real run removes, and removes nothing', async () => {
    const fresh = await pushBlob(s.url, 'gc/orphans', randomBytes(100)); // within the grace period
    const dry = await gcOverHttp(s.url, { dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(dry.manifests).toEqual([{ repo: 'gc/signed', digest: orphanedReferrer.digest }]);
    for (const digest of [...deleted.blobs.keys(), orphanBlob, sharedLayer]) expect(hasBlobFile(s.storage, digest)).toBe(true);
    expect(await manifestStatus(s.url, 'gc/signed', orphanedReferrer.digest)).toBe(200);

    const real = await gcOverHttp(s.url, {});
    expect(real.dryRun).toBe(false);
    const decisions = ({ startedAt, durationMs, dryRun, ...rest }: typeof real) => rest;
    expect(decisions(real)).toEqual(decisions(dry));
    // Removed: the deleted image's blobs, the orphan blob, the orphaned referrer and its subject's blobs.
    for (const digest of [...deleted.blobs.keys(), orphanBlob, ...orphanedSubject.blobs.keys()]) expect(hasBlobFile(s.storage, digest)).toBe(false);
    expect(await manifestStatus(s.url, 'gc/signed', orphanedReferrer.digest)).toBe(404);
    expect(real.removedBlobs).toBe(deleted.blobs.size + 1 + orphanedSubject.blobs.size);
    // The shared layer lost its link in gc/deleted but stays for gc/tagged.
    expect(hasBlobFile(s.storage, sharedLayer)).toBe(true);
    expect((await http(s.url, `/v2/gc/deleted/blobs/${sharedLayer}`, { method: 'HEAD' })).status).toBe(404);
    expect(hasBlobFile(s.storage, fresh)).toBe(true);

    // A second run finds nothing more.
    const again = await gcOverHttp(s.url, {});
    expect(again.removedBlobs + again.removedManifests + again.removedLinks).toBe(0);
  });

  it('keeps tagged and tagless images, indexes with their children and referrers: all pull byte-exact', async () => {
    for (const { repo, image } of kept) await expectPulls(s.url, repo, image);
    const idx = await http(s.url, '/v2/gc/multi/manifests/latest', { headers: { accept: MEDIA.ociIndex } });
    expect(idx.body.equals(index.body)).toBe(true);
    const refs = await http(s.url, `/v2/gc/tagged/referrers/${kept[0]!.image.digest}`);
    expect(refs.json<{ manifests: { digest: string }[] }>().manifests.map((m) => m.digest)).toEqual([referrer.digest]);
  });

  it('an upload in progress survives and completes', async () => {
    const rest = await http(s.url, withDigest(uploadLocation, sha256(uploadBytes)), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-range': '2048-4095' },
      body: uploadBytes.subarray(2048),
    });
    expectStatus(rest, 201);
    const blob = await http(s.url, `/v2/gc/uploading/blobs/${sha256(uploadBytes)}`);
    expect(blob.body.equals(uploadBytes)).toBe(true);
  });

  it('--untagged-older-than removes old tagless manifests (not indexes\' children nor referrers of kept ones) and forgets them in memory', async () => {
    // Everything was pulled a moment ago (and so kept within the grace period): make it old again.
    await writeDownAccess(s.server);
    ageStore(s.storage, 2 * HOUR);
    // Served once, so the manifest is in the in-memory cache.
    expect(await manifestStatus(s.url, 'gc/tagless', tagless.digest)).toBe(200);
    const young = await pushImage(s.url, 'gc/tagless', {});
    const result = await gcOverHttp(s.url, { untaggedOlderThan: '1h' });
    lastRun = result;
    expect(result.manifests).toEqual([{ repo: 'gc/tagless', digest: tagless.digest }]);
    expect(await manifestStatus(s.url, 'gc/tagless', tagless.digest)).toBe(404);
    for (const digest of tagless.blobs.keys()) expect(hasBlobFile(s.storage, digest)).toBe(false);
    await expectPulls(s.url, 'gc/tagless', young);
    for (const child of children) await expectPulls(s.url, 'gc/multi', child);
    expect(await manifestStatus(s.url, 'gc/tagged', referrer.digest)).toBe(200);
  });

  it('reports the last run in /api/v1/stats and /metrics', async () => {
    const stats = (await http(s.url, '/api/v1/stats')).json<{ gc: Record<string, unknown> }>();
    expect(stats.gc).toEqual({
      lastRunAt: new Date(lastRun.startedAt).toISOString(),
      durationMs: lastRun.durationMs,
      removedManifests: 1,
      removedBlobs: lastRun.removedBlobs,
      freedBytes: lastRun.freedBytes,
      forgottenRepositories: lastRun.forgottenRepositories,
    });
    expect(lastRun.removedBlobs).toBeGreaterThanOrEqual(tagless.blobs.size);
    const metrics = (await http(s.url, '/metrics')).text;
    expect(metrics).toMatch(/^airlock_gc_last_removed_manifests 1$/m);
    expect(metrics).toContain(`\nairlock_gc_last_removed_blobs ${lastRun.removedBlobs}\n`);
    expect(metrics).toContain(`\nairlock_gc_last_freed_bytes ${lastRun.freedBytes}\n`);
    expect(metrics).toContain(`\nairlock_gc_last_forgotten_repositories ${lastRun.forgottenRepositories}\n`);
  });

  it('a blob uploaded or mounted again starts its grace period anew; one being uploaded again comes back whole', async () => {
    const again = randomBytes(3000);
    const mounted = randomBytes(3000);
    const reuploading = randomBytes(3000);
    for (const data of [again, mounted, reuploading]) await pushBlob(s.url, 'gc/again', data);
    ageStore(s.storage, 2 * HOUR);
    await pushBlob(s.url, 'gc/again', again);
    expectStatus(await http(s.url, `/v2/gc/again2/blobs/uploads/?mount=${sha256(mounted)}&from=gc/again`, { method: 'POST' }), 201);
    // Half sent when the collection removes the old copy; finished after it.
    const location = await startUpload(s.url, 'gc/again');
    const patch = await http(s.url, location, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' }, body: reuploading.subarray(0, 1000) });
    expectStatus(patch, 202);
    await gcOverHttp(s.url, {});
    expect(hasBlobFile(s.storage, sha256(reuploading))).toBe(false);
    for (const data of [again, mounted]) expect(hasBlobFile(s.storage, sha256(data))).toBe(true);
    const done = await http(s.url, withDigest(patch.header('location')!, sha256(reuploading)), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: reuploading.subarray(1000),
    });
    expectStatus(done, 201);
    expect((await http(s.url, `/v2/gc/again/blobs/${sha256(reuploading)}`)).body.equals(reuploading)).toBe(true);
    expect((await http(s.url, `/v2/gc/again2/blobs/${sha256(mounted)}`)).body.equals(mounted)).toBe(true);
  });

  it('a blob a client just found here (HEAD) is kept, so the manifest it pushes next still finds it', async () => {
    const layer = randomBytes(2000);
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    await pushBlob(s.url, 'gc/found', layer);
    await pushBlob(s.url, 'gc/found', config);
    await writeDownAccess(s.server);
    ageStore(s.storage, 2 * HOUR);
    // A re-mirror checks what is there and skips uploading it...
    for (const data of [layer, config]) expectStatus(await http(s.url, `/v2/gc/found/blobs/${sha256(data)}`, { method: 'HEAD' }), 200);
    await gcOverHttp(s.url, {});
    // ...then pushes the manifest.
    const manifest = {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: sha256(config), size: config.length },
      layers: [{ mediaType: MEDIA.ociLayer, digest: sha256(layer), size: layer.length }],
    };
    expectStatus(await pushManifest(s.url, 'gc/found', 'v1', manifest, MEDIA.ociManifest), 201);
    expect((await http(s.url, `/v2/gc/found/blobs/${sha256(layer)}`)).body.equals(layer)).toBe(true);
  });

  it('refuses a bad request with a message', async () => {
    const res = await http(s.url, '/api/v1/gc', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"untaggedOlderThan":"soon"}' });
    expect(res.status).toBe(400);
    expect(res.text).toContain('untaggedOlderThan');
  });
});
