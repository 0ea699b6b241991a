/**
 * Two replicas on one PostgreSQL and one S3 bucket through the life of a store: garbage collection
 * on one replica while the other takes pushes, readiness when the database or the object store is
 * gone, and `airlock migrate` of a single-node store into the shared backends.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCeph, type Ceph } from '../helpers/ceph.js';
import { expectError, http, pushImage } from '../helpers/http.js';
import { buildOciLayoutImage, type BuiltOciImage, type Platform } from '../helpers/images.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { closeAll, scratchDir, startBackends, startReplicas, startTcpRelay, type Backends, type SharedStore } from '../helpers/replicas.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { listBlobsOfOciLayout, readOciLayoutTagged, skopeo, skopeoCopy } from '../helpers/skopeo.js';
import { eventually } from '../pullthrough/support.js';
import { runCli } from '../server/cli.js';
import { fetchManifest, fetchTags } from './support.js';

let backends: Backends;
const scratch = scratchDir('lifecycle');

beforeAll(async () => {
  backends = await startBackends();
}, 120_000);

afterAll(async () => {
  await backends?.stop();
  scratch.remove();
});

/** skopeo copy --all from `host/ref` into a fresh OCI layout, asserted byte-equal to the image built in `src`. */
async function expectPullsWhole(host: string, ref: string, src: string, built: BuiltOciImage, name: string): Promise<void> {
  const out = join(scratch.path, `pulled-${name}-${Math.random().toString(36).slice(2, 8)}`);
  await skopeoCopy(`docker://${host}/${ref}`, `oci:${out}:t`, { srcInsecure: true });
  expect(readOciLayoutTagged(out, 't').digest, `${ref} from ${host}`).toBe(built.indexDigest);
  const original = listBlobsOfOciLayout(src);
  const pulled = listBlobsOfOciLayout(out);
  expect(pulled.map((f) => f.digest), `${ref} from ${host}`).toEqual(original.map((f) => f.digest));
  for (const [i, f] of pulled.entries()) expect(readFileSync(f.path).equals(readFileSync(original[i]!.path)), `${ref}: ${f.digest}`).toBe(true);
}

describe('GC on A while B takes skopeo pushes', () => {
  // Longer than skopeo takes to push one multi-arch image here (its child manifests wait, untagged,
  // for the index that comes last), shorter than the test wants to wait for garbage to age.
  const GRACE_MS = 10_000;
  // The deleted images' child manifests stay behind untagged: collected too once past the grace period.
  const GC_REQUEST = JSON.stringify({ untaggedOlderThan: '1s' });
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    // A short grace period, so that what the pushes below reuse is old enough to be collected.
    [a, b] = await startReplicas(await backends.sharedStore(), { gc: { schedule: '24h', grace: `${GRACE_MS}ms` } });
  }, 60_000);
  afterAll(async () => {
    await closeAll([a, b]);
  });

  it('every pushed image still pulls whole afterwards', async () => {
    const SHARED_SEED = 'shared-layers';
    const two: Platform[] = [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }];
    // Garbage: one image of its own, and one whose layers and child manifests the pushes below reuse.
    for (const [i, seed] of ['garbage-only', SHARED_SEED].entries()) {
      const built = buildOciLayoutImage(join(scratch.path, `garbage-${i}`), { tag: 'g', seed, platforms: two, layerBytes: 32 * 1024 });
      await skopeoCopy(built.ociRef, `docker://${a.host}/gc/garbage-${i}:g`, { destInsecure: true });
      await skopeo(['delete', '--tls-verify=false', `docker://${a.host}/gc/garbage-${i}:g`], { check: true });
    }
    await new Promise((r) => setTimeout(r, GRACE_MS + 500));

    // Images for B: every other one shares the garbage's layers (a third platform makes its index new).
    const images = Array.from({ length: 4 }, (_, i) => {
      const src = join(scratch.path, `push-${i}`);
      const built =
        i % 2 === 0
          ? buildOciLayoutImage(src, { tag: 'v', seed: SHARED_SEED, platforms: [...two, { os: 'linux', architecture: 'ppc64le' }], layerBytes: 32 * 1024 })
          : buildOciLayoutImage(src, { tag: 'v', layerBytes: 32 * 1024 });
      return { src, built, ref: `gc/pushed-${i}:v` };
    });

    let pushing = true;
    const runs: { removedBlobs: number; removedManifests: number }[] = [];
    const collecting = (async () => {
      while (pushing || runs.length === 0) {
        const res = await http(a.url, '/api/v1/gc', { method: 'POST', headers: { 'content-type': 'application/json' }, body: GC_REQUEST });
        expect(res.status, res.text).toBe(200);
        runs.push(res.json());
      }
    })();
    try {
      for (const image of images) await skopeoCopy(image.built.ociRef, `docker://${b.host}/${image.ref}`, { destInsecure: true });
    } finally {
      pushing = false;
      await collecting;
    }
    // The collections ran alongside the pushes and collected the garbage.
    expect(runs.length).toBeGreaterThan(1);
    expect(runs.reduce((n, r) => n + r.removedBlobs, 0)).toBeGreaterThan(0);

    // One more after the pushes, past their grace period: nothing pushed is garbage.
    await new Promise((r) => setTimeout(r, GRACE_MS + 500));
    const last = await http(a.url, '/api/v1/gc', { method: 'POST', headers: { 'content-type': 'application/json' }, body: GC_REQUEST });
    expect(last.status, last.text).toBe(200);

    for (const [i, image] of images.entries()) {
      await expectPullsWhole(i % 2 ? a.host : b.host, image.ref, image.src, image.built, `gc-${i}`);
    }
  }, 120_000);
});

describe('/readyz and writes while a shared backend is down', () => {
  it('PostgreSQL down: /readyz 503 naming the database on both, a push 503 UNAVAILABLE, cached manifests still served', async () => {
    // A PostgreSQL of its own, so that stopping it leaves the other tests theirs.
    const pg: Postgres = await startPostgres();
    const store: SharedStore = { databaseUrl: pg.url, s3: backends.s3Config(await backends.ceph.createBucket()) };
    const [a, b] = await startReplicas(store);
    try {
      for (const side of [a, b]) expect((await http(side.url, '/readyz')).status).toBe(200);
      const image = await pushImage(a.url, 'outage/db', { tag: 'v1', layerSize: 2048 });
      // Both replicas serve the manifest once (by digest: what a node pulling through a mirror set asks for).
      for (const side of [a, b]) expect((await fetchManifest(side.url, 'outage/db', image.digest)).status).toBe(200);

      await pg.stop({ hard: true });

      for (const side of [a, b]) {
        await eventually(async () => {
          const ready = await http(side.url, '/readyz');
          expect(ready.status).toBe(503);
          expect(ready.json<{ reason: string }>().reason).toMatch(/database/i);
        }, 20_000);
      }
      const post = await http(a.url, '/v2/outage/db/blobs/uploads/', { method: 'POST' });
      const error = expectError(post, 503, 'UNAVAILABLE');
      expect(error.message).toMatch(/database/i);
      const put = await http(b.url, '/v2/outage/db/manifests/v2', { method: 'PUT', headers: { 'content-type': image.mediaType }, body: image.body });
      expect(expectError(put, 503, 'UNAVAILABLE').message).toMatch(/database/i);

      // A real client gets the refusal too.
      const src = join(scratch.path, 'outage-db');
      const built = buildOciLayoutImage(src, { tag: 'v', layerBytes: 1024 });
      const r = await skopeo(['copy', '--all', '--dest-tls-verify=false', built.ociRef, `docker://${a.host}/outage/db:skopeo`], { timeoutMs: 60_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/503|unavailable/i);

      // What they hold in memory, they still serve.
      for (const side of [a, b]) {
        const cached = await fetchManifest(side.url, 'outage/db', image.digest);
        expect(cached.status).toBe(200);
        expect(cached.bytes.equals(image.body)).toBe(true);
      }
      expect((await http(b.url, '/healthz')).status).toBe(200);
    } finally {
      await closeAll([a, b]);
      await pg.stop();
    }
  }, 120_000);

  it('database connections cut, then restored: both replicas become ready and take pushes again, and see each other\'s changes', async () => {
    // The replicas reach PostgreSQL through a relay the test cuts (a partition, a database restart).
    const relay = await startTcpRelay(backends.pg.port);
    const url = new URL(await backends.pg.createDatabase());
    url.port = String(relay.port);
    const [a, b] = await startReplicas({ databaseUrl: url.toString(), s3: backends.s3Config(await backends.ceph.createBucket()) });
    try {
      const image = await pushImage(a.url, 'blip/db', { tag: 'v1', layerSize: 2048 });
      expect((await fetchManifest(b.url, 'blip/db', image.digest)).status).toBe(200);

      await relay.cut();
      for (const side of [a, b]) {
        await eventually(async () => expect((await http(side.url, '/readyz')).status).toBe(503), 20_000);
      }
      expectError(await http(b.url, '/v2/blip/db/blobs/uploads/', { method: 'POST' }), 503, 'UNAVAILABLE');

      await relay.restore();
      for (const side of [a, b]) {
        await eventually(async () => expect((await http(side.url, '/readyz')).status).toBe(200), 30_000);
      }
      // Writes work again on both, and each replica sees the other's at once.
      const fromB = await pushImage(b.url, 'blip/db', { tag: 'v2', layerSize: 2048 });
      expect((await fetchManifest(a.url, 'blip/db', 'v2')).digest).toBe(fromB.digest);
      // B still holds v1's manifest in memory: A's delete after the outage must reach it (through the
      // change feed, which reconnected). The feed is asynchronous: B may answer from memory for some
      // milliseconds after A's 202, hence the short wait.
      const deleted = await http(a.url, `/v2/blip/db/manifests/${image.digest}`, { method: 'DELETE' });
      expect(deleted.status).toBe(202);
      await eventually(async () => expect((await fetchManifest(b.url, 'blip/db', image.digest)).status).toBe(404), 2_000);
      expect(await fetchTags(b.url, 'blip/db')).toEqual({ status: 200, tags: ['v2'] });
    } finally {
      await closeAll([a, b]);
      await relay.close();
    }
  }, 120_000);

  it('object store down: /readyz 503 naming it on both, a blob push 503 UNAVAILABLE, manifests still served', async () => {
    // A Ceph of its own, so that stopping it leaves the other tests theirs.
    const ceph: Ceph = await startCeph();
    const store: SharedStore = {
      databaseUrl: await backends.pg.createDatabase(),
      s3: { endpoint: ceph.endpoint, bucket: await ceph.createBucket(), region: ceph.region, forcePathStyle: true, accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey },
    };
    const [a, b] = await startReplicas(store);
    try {
      for (const side of [a, b]) expect((await http(side.url, '/readyz')).status).toBe(200);
      const image = await pushImage(a.url, 'outage/s3', { tag: 'v1', layerSize: 2048 });

      await ceph.stop();

      for (const side of [a, b]) {
        await eventually(async () => {
          const ready = await http(side.url, '/readyz');
          expect(ready.status).toBe(503);
          expect(ready.json<{ reason: string }>().reason).toMatch(/bucket|object store|s3/i);
        }, 20_000);
      }
      const data = Buffer.from('bytes that have nowhere to go');
      const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      const post = await http(b.url, `/v2/outage/s3/blobs/uploads/?digest=${digest}`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'content-length': data.length },
        body: data,
      });
      expect(expectError(post, 503, 'UNAVAILABLE').message).toMatch(/bucket|object store|s3/i);

      // Manifests live in PostgreSQL: both replicas keep serving them, by tag and by digest.
      for (const side of [a, b]) {
        for (const ref of ['v1', image.digest]) {
          const m = await fetchManifest(side.url, 'outage/s3', ref);
          expect(m.status, ref).toBe(200);
          expect(m.bytes.equals(image.body)).toBe(true);
        }
        expect(await fetchTags(side.url, 'outage/s3')).toEqual({ status: 200, tags: ['v1'] });
      }
    } finally {
      await closeAll([a, b]);
      await ceph.stop();
    }
  }, 120_000);
});

describe('airlock migrate of a single-node store', () => {
  /** Every file under `dir` with the sha256 of its bytes (what "the source is left intact" compares). */
  function fileHashes(dir: string): Record<string, string> {
    const out: Record<string, string> = {};
    const walk = (d: string) => {
      if (!existsSync(d)) return;
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else out[p.slice(dir.length)] = createHash('sha256').update(readFileSync(p)).digest('hex');
      }
    };
    walk(dir);
    return out;
  }

  it('moves pushed images into PostgreSQL and S3; two replicas on the result serve them to skopeo byte-exact', async () => {
    // A single-node store filled by skopeo: a tagged multi-arch image and a tagless one.
    const single = await startTestServer();
    const tagged = { src: join(scratch.path, 'migrate-tagged'), ref: 'library/app:1.0' };
    const tagless = { src: join(scratch.path, 'migrate-tagless'), ref: '' };
    const builtTagged = buildOciLayoutImage(tagged.src, { tag: 'v', layerBytes: 128 * 1024 });
    const builtTagless = buildOciLayoutImage(tagless.src, { tag: 'v', layerBytes: 64 * 1024 });
    tagless.ref = `release/payload@${builtTagless.indexDigest}`;
    const storage = single.storage;
    try {
      await skopeoCopy(builtTagged.ociRef, `docker://${single.host}/${tagged.ref}`, { destInsecure: true });
      await skopeoCopy(builtTagless.ociRef, `docker://${single.host}/${tagless.ref}`, { destInsecure: true });
    } finally {
      await single.server.close(); // stopped, its storage kept
    }
    const before = fileHashes(join(storage, 'blobs'));
    expect(Object.keys(before).length).toBeGreaterThan(0);

    const databaseUrl = await backends.pg.createDatabase();
    const bucket = await backends.ceph.createBucket();
    const env = { AWS_ACCESS_KEY_ID: backends.ceph.accessKeyId, AWS_SECRET_ACCESS_KEY: backends.ceph.secretAccessKey };
    const args = ['migrate', '--storage', storage, '--database', databaseUrl, '--s3', `${backends.ceph.endpoint}/${bucket}`];
    const first = await runCli(args, { env, timeoutMs: 90_000 });
    expect(first.code, `${first.stdout}\n${first.stderr}`).toBe(0);
    // Resumable: a second run finds everything in place and succeeds.
    const again = await runCli(args, { env, timeoutMs: 90_000 });
    expect(again.code, `${again.stdout}\n${again.stderr}`).toBe(0);
    // The source was only read.
    expect(fileHashes(join(storage, 'blobs'))).toEqual(before);

    const [a, b] = await startReplicas({ databaseUrl, s3: backends.s3Config(bucket) });
    try {
      for (const side of [a, b]) {
        await expectPullsWhole(side.host, tagged.ref, tagged.src, builtTagged, 'migrated-tagged');
        await expectPullsWhole(side.host, tagless.ref, tagless.src, builtTagless, 'migrated-tagless');
        expect(await fetchTags(side.url, 'library/app')).toEqual({ status: 200, tags: ['1.0'] });
      }
    } finally {
      await closeAll([a, b]);
      rmSync(storage, { recursive: true, force: true });
    }
  }, 120_000);
});
