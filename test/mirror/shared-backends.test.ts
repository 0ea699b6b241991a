/**
 * The store commands on a scale-out config (database: PostgreSQL, blobs.s3: a bucket), against a
 * real PostgreSQL and a real Ceph radosgw, with a replica running on the same config (and on the
 * same storage directory, whose lock it holds): `import` and `sync` write into the shared store
 * and the replica serves it to skopeo byte-exact; `export` reads it back out and the export round-trips;
 * `verify` and `mirrorsets` read it; `gc` collects in it beside the replica; `fsck` checks it and
 * repairs it beside the replica; `backup` refuses, saying what to do instead. No local SQLite
 * database is ever created.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { Cluster } from '../../src/cluster/index.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { startCeph, type Ceph } from '../helpers/ceph.js';
import { buildOciLayoutImage, digestHex, type BuiltOciImage } from '../helpers/images.js';
import { ART_DEV, RELEASE_REPO, buildSyntheticRelease, type SyntheticRelease } from '../helpers/payloads.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { listBlobsOfOciLayout, skopeoCopy } from '../helpers/skopeo.js';
import { tempDirs } from '../e2e/support.js';
import { runCli, waitFor } from '../server/cli.js';
import { checkSums, pullWithSkopeo } from './support.js';

const tmp = tempDirs('shared-cmds');
let postgres: Postgres;
let ceph: Ceph;
let bucket: string;
let s3: S3Client;
let storage: string;
let configFile: string;
let config: ConfigInput;
let replica: TestServer;
let release: SyntheticRelease;
let root: string;

const RELEASE_REF = 'ocp4/release:4.16.0-x86_64';
const PAYLOAD_REPO = 'ocp4/openshift4';
const HOST = 'mirror.example.com:5000';

const cli = (args: string[], env?: Record<string, string>) => runCli([...args, '--config', configFile], { timeoutMs: 90_000, env });

/** Whether the bucket holds the blob's object (under <prefix>/blobs/sha256/<xx>/<hex>). */
async function inBucket(digest: string, prefix = 'mirror'): Promise<boolean> {
  const hex = digestHex(digest);
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}/blobs/sha256/${hex.slice(0, 2)}/${hex}` }));
    return true;
  } catch (e) {
    if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw e;
  }
}

beforeAll(async () => {
  [postgres, ceph] = await Promise.all([startPostgres(), startCeph()]);
  const database = await postgres.createDatabase();
  bucket = await ceph.createBucket();
  s3 = new S3Client({
    endpoint: ceph.endpoint,
    region: ceph.region,
    forcePathStyle: true,
    credentials: { accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey },
  });
  storage = tmp.make('storage');
  config = {
    listen: '127.0.0.1:0',
    storage,
    log: { level: 'silent' },
    database: { url: database },
    blobs: { s3: { endpoint: ceph.endpoint, bucket, region: ceph.region, prefix: 'mirror', forcePathStyle: true, accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey } },
    // No grace: the collection below decides on what is there now (nothing else pushes meanwhile).
    gc: { schedule: '24h', grace: '0s' },
  };
  configFile = join(tmp.make('config'), 'scale-out.yaml');
  writeFileSync(configFile, toYaml(config));
  // A replica on the same config and the same storage directory: it holds that directory's lock,
  // which the commands must not wait for (nor hand their work to) with shared backends.
  replica = await startTestServer(config);
  root = tmp.make('payload');
  release = buildSyntheticRelease(join(root, 'release'), { layerBytes: 64 * 1024 });
}, 180_000);

afterAll(async () => {
  await replica?.close();
  s3?.destroy();
  await Promise.all([postgres?.stop(), ceph?.stop()]);
  tmp.cleanup();
});

describe('import into the shared store', () => {
  it('imports a release payload and its components while a replica runs; the replica serves them at once', async () => {
    // What a killed import left: its spool, named by a pid that no longer runs, goes; a running one's stays.
    const dead = join(storage, '.spool-2147483646-import-x1y2z3');
    const alive = join(storage, `.spool-${process.pid}-import-a1b2c3`);
    for (const dir of [dead, alive]) mkdirSync(dir, { recursive: true });
    const components = await cli(['import', join(root, 'release', 'components'), '--prefix', PAYLOAD_REPO, '--map', `${PAYLOAD_REPO}=${ART_DEV}`]);
    expect(components.stderr).not.toMatch(/storage is served by|locked/);
    expect(components.code, components.stderr).toBe(0);
    expect(components.stdout).toMatch(/import: 5 image\(s\)/);
    const rel = await cli(['import', join(root, 'release', 'release'), '--prefix', 'ocp4/release', '--map', `ocp4/release=${RELEASE_REPO}`]);
    expect(rel.code, rel.stderr).toBe(0);

    // Nothing went to a local SQLite store beside the replica; the commands' spools are gone.
    expect(existsSync(join(storage, 'airlock.db'))).toBe(false);
    expect(readdirSync(storage).filter((name) => name.includes('spool'))).toEqual([`.spool-${process.pid}-import-a1b2c3`]);
    rmSync(alive, { recursive: true });

    // skopeo pulls through the replica, byte-exact: the release image and a multi-arch component.
    const pulled = await pullWithSkopeo(replica.host, RELEASE_REF, tmp.make('pull-release'));
    const source = new Map(listBlobsOfOciLayout(join(root, 'release', 'release')).map((b) => [b.digest, readFileSync(b.path)]));
    expect(pulled.get(release.release.digest)).toEqual(source.get(release.release.digest));
    for (const layer of release.release.layerDigests) expect(pulled.get(layer)).toEqual(source.get(layer));

    const etcd = release.components.find((c) => c.name === 'etcd')!;
    const out = tmp.make('pull-etcd');
    await skopeoCopy(`docker://${replica.host}/${PAYLOAD_REPO}:etcd`, `oci:${out}:etcd`, { srcInsecure: true, all: true });
    const componentSource = new Map(listBlobsOfOciLayout(join(root, 'release', 'components')).map((b) => [b.digest, readFileSync(b.path)]));
    const got = listBlobsOfOciLayout(out);
    expect(got.map((b) => b.digest)).toContain(etcd.built.indexDigest);
    for (const b of got) expect(readFileSync(b.path), b.digest).toEqual(componentSource.get(b.digest));
    for (const layer of etcd.built.blobDigests) expect(await inBucket(layer)).toBe(true);
  }, 120_000);

  it('a rerun finds everything present in the shared store and copies nothing', async () => {
    const again = await cli(['import', join(root, 'release', 'components'), '--prefix', PAYLOAD_REPO]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/0 manifest\(s\), 0 blob\(s\)/);
    expect(again.stdout).toMatch(/already present at the destination/);
  }, 60_000);
});

describe('sync into the shared store', () => {
  it('copies an image from a registry into PostgreSQL and the bucket; the replica serves it byte-exact', async () => {
    const upstream = await startTestServer();
    try {
      const image = buildOciLayoutImage(tmp.make('sync-src'), { tag: 'v1', layerBytes: 16 * 1024 });
      await skopeoCopy(image.ociRef, `docker://${upstream.host}/team/app:v1`, { destInsecure: true });
      const run = await cli(['sync', `${upstream.host}/team/app:v1`, '--insecure']);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/sync: 1 image\(s\); 3 manifest\(s\), 6 blob\(s\)/);
      const local = `${upstream.host.replace(':', '_')}/team/app`;
      const served = await fetch(`${replica.url}/v2/${local}/manifests/v1`, { headers: { accept: image.indexMediaType } });
      expect(served.status).toBe(200);
      expect(Buffer.from(await served.arrayBuffer())).toEqual(image.indexBytes);
      for (const blob of image.blobDigests) expect(await inBucket(blob)).toBe(true);
    } finally {
      await upstream.close();
    }
  }, 90_000);
});

describe('reading the shared store', () => {
  it('verify finds the whole release through the recorded origins', async () => {
    const run = await cli(['verify', RELEASE_REF, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as { ok: boolean; images: number; complete: number; missing: unknown[] };
    expect(report).toMatchObject({ ok: true, images: 6, complete: 6, missing: [] });
  }, 60_000);

  it('mirrorsets names the origins recorded in PostgreSQL', async () => {
    const run = await cli(['mirrorsets', '--host', HOST]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('kind: ImageDigestMirrorSet');
    expect(run.stdout).toContain(`source: ${ART_DEV}`);
    expect(run.stdout).toContain(`${HOST}/${PAYLOAD_REPO}`);
    expect(run.stdout).toContain(`source: ${RELEASE_REPO}`);
  }, 60_000);

  it('export writes the images out of the shared store; importing that export elsewhere gives the same images', async () => {
    const dir = join(tmp.make('export'), 'out');
    const run = await cli(['export', 'ocp4/**', '--to', dir]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/export: 6 image\(s\)/);
    checkSums(dir);

    // Round trip: into a fresh single-node store, served by a plain airlock, verified complete.
    const single = tmp.make('single');
    const imported = await runCli(['import', dir, '--storage', single], { timeoutMs: 90_000 });
    expect(imported.code, imported.stderr).toBe(0);
    const verified = await runCli(['verify', RELEASE_REF, '--storage', single, '--json'], { timeoutMs: 60_000 });
    expect(verified.code, verified.stdout).toBe(0);
    const plain = await startTestServer({ storage: single });
    try {
      const pulled = await pullWithSkopeo(plain.host, RELEASE_REF, tmp.make('pull-roundtrip'));
      const source = new Map(listBlobsOfOciLayout(join(root, 'release', 'release')).map((b) => [b.digest, readFileSync(b.path)]));
      for (const layer of release.release.layerDigests) expect(pulled.get(layer)).toEqual(source.get(layer));
    } finally {
      await plain.close();
    }
  }, 120_000);
});

describe('gc in the shared store beside a running replica', () => {
  let scratch: BuiltOciImage;

  it('removes an untagged manifest nothing needs, and its blobs from the bucket; keeps everything tagged', async () => {
    // Pushed to the replica by digest (tagless), then pulled there once (so the replica holds it in memory).
    const layout = tmp.make('scratch');
    scratch = buildOciLayoutImage(layout, { tag: 'v1', layerBytes: 32 * 1024, platforms: [{ os: 'linux', architecture: 'amd64' }], singleManifest: true });
    await skopeoCopy(scratch.ociRef, `docker://${replica.host}/scratch/app@${scratch.indexDigest}`, { destInsecure: true });
    const before = await fetch(`${replica.url}/v2/scratch/app/manifests/${scratch.indexDigest}`, { headers: { accept: scratch.indexMediaType } });
    expect(before.status).toBe(200);
    for (const blob of scratch.blobDigests) expect(await inBucket(blob)).toBe(true);

    const dry = await cli(['gc', '--dry-run', '--untagged-older-than', '0s']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`would remove manifest scratch/app@${scratch.indexDigest}`);
    for (const blob of scratch.blobDigests) expect(await inBucket(blob)).toBe(true);

    const run = await cli(['gc', '--untagged-older-than', '0s']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/collecting in the shared store/);
    expect(run.stderr).not.toMatch(/storage is served by/);
    expect(run.stdout).toContain(`removed manifest scratch/app@${scratch.indexDigest}`);
    // Its config and its two layers: nothing else was unreferenced.
    expect(run.stdout).toContain(`gc: removed 1 manifest, ${scratch.blobDigests.length} blobs`);
    expect(scratch.blobDigests).toHaveLength(3);
    for (const blob of scratch.blobDigests) expect(await inBucket(blob)).toBe(false);

    // The replica was told: it stops serving the removed manifest from memory.
    await waitFor('the replica to drop the removed manifest', async () => {
      const r = await fetch(`${replica.url}/v2/scratch/app/manifests/${scratch.indexDigest}`, { headers: { accept: scratch.indexMediaType } });
      await r.arrayBuffer();
      return r.status === 404 ? true : undefined;
    });

    // Everything tagged is intact: blobs still in the bucket, the release still complete and served.
    for (const c of release.components) for (const blob of c.built.blobDigests) expect(await inBucket(blob)).toBe(true);
    const verified = await cli(['verify', RELEASE_REF, '--json']);
    expect(verified.code, verified.stdout).toBe(0);
    const pulled = await pullWithSkopeo(replica.host, RELEASE_REF, tmp.make('pull-after-gc'));
    expect(pulled.has(release.release.layerDigests[1]!)).toBe(true);
  }, 120_000);
});

describe('blobs in the bucket, metadata in a local SQLite (blobs.s3 alone)', () => {
  it('import stores the blobs in the bucket under the storage lock; export reads them back; fsck asks the server holding it, which hashes the objects; backup refuses', async () => {
    const solo = tmp.make('solo');
    const file = join(tmp.make('solo-config'), 'bucket-only.yaml');
    const layout = tmp.make('solo-src');
    const image = buildOciLayoutImage(layout, { tag: 'v2', layerBytes: 8 * 1024 });
    // Credentials from the standard AWS_* variables this time.
    const env = { AWS_ACCESS_KEY_ID: ceph.accessKeyId, AWS_SECRET_ACCESS_KEY: ceph.secretAccessKey };
    writeFileSync(file, toYaml({ storage: solo, log: { level: 'silent' }, blobs: { s3: { endpoint: ceph.endpoint, bucket, region: ceph.region, prefix: 'solo', forcePathStyle: true } } }));
    const imported = await runCli(['import', layout, '--prefix', 'solo/app', '--config', file], { timeoutMs: 60_000, env });
    expect(imported.code, imported.stderr).toBe(0);
    expect(existsSync(join(solo, 'airlock.db'))).toBe(true);
    for (const blob of image.blobDigests) expect(await inBucket(blob, 'solo')).toBe(true);
    expect(existsSync(join(solo, 'blobs', 'sha256', digestHex(image.blobDigests[0]!).slice(0, 2)))).toBe(false);

    const out = join(tmp.make('solo-export'), 'out');
    const exported = await runCli(['export', 'solo/app:v2', '--to', out, '--config', file], { timeoutMs: 60_000, env });
    expect(exported.code, exported.stderr).toBe(0);
    checkSums(out);
    const written = new Map(listBlobsOfOciLayout(out).map((b) => [b.digest, readFileSync(b.path)]));
    expect(written.get(image.indexDigest)).toEqual(image.indexBytes);
    for (const blob of image.blobDigests) expect(written.has(blob), blob).toBe(true);

    // With a server holding the storage, fsck asks it: it reads the bucket's objects back.
    const server = await startTestServer({ listen: '127.0.0.1:0', storage: solo, log: { level: 'silent' }, blobs: { s3: { endpoint: ceph.endpoint, bucket, region: ceph.region, prefix: 'solo', forcePathStyle: true, accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey } } });
    try {
      const layer = image.blobDigests[0]!;
      const hex = digestHex(layer);
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `solo/blobs/sha256/${hex.slice(0, 2)}/${hex}`, Body: Buffer.from('bit rot'), ContentLength: 7 }));
      const checked = await runCli(['fsck', '--config', file], { timeoutMs: 60_000, env });
      expect(checked.code, checked.stdout + checked.stderr).toBe(1);
      expect(checked.stdout).toMatch(new RegExp(`^fsck ${solo}: checked`, 'm'));
      expect(checked.stdout).toMatch(new RegExp(`corrupt blob +${layer}: s3://${bucket}/solo/blobs/sha256/${hex.slice(0, 2)}/${hex} hashes to`));
      // A backup asked of this server refuses: its blobs are in a bucket.
      const backup = await fetch(`http://${server.host}/api/v1/backup`, { method: 'POST', body: JSON.stringify({ dir: tmp.make('solo-backup') }) });
      expect(backup.status).toBe(400);
      expect(await backup.text()).toMatch(/blobs in a bucket/);
    } finally {
      await server.close();
    }
  }, 90_000);
});

describe('fsck of the shared store, beside the replica', () => {
  const key = (digest: string, prefix = 'mirror') => `${prefix}/blobs/sha256/${digestHex(digest).slice(0, 2)}/${digestHex(digest)}`;
  const put = (Key: string, Body: Buffer) => s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body, ContentLength: Body.length }));
  const keysUnder = async (Prefix: string) => ((await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix }))).Contents ?? []).map((o) => o.Key!);

  it('finds a corrupt, a missing and an orphan blob object in the bucket; --repair quarantines, drops and removes them; the replica stops serving them until they are imported again', async () => {
    const clean = await cli(['fsck']);
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    expect(clean.stdout).toMatch(new RegExp(`^fsck database postgres://.*, blobs ${ceph.endpoint}/${bucket}/mirror: checked \\d+ blobs`, 'm'));
    expect(clean.stdout).toMatch(/clean: no problems found/);
    expect(existsSync(join(storage, 'airlock.db'))).toBe(false);

    const [corrupt, missing] = release.release.layerDigests;
    const orphanBytes = Buffer.from('an object no row records');
    const orphan = `sha256:${createHash('sha256').update(orphanBytes).digest('hex')}`;
    const garbage = Buffer.from('not a blob');
    await put(key(corrupt!), garbage);
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key(missing!) }));
    await put(key(orphan), orphanBytes);
    await put('mirror/blobs/sha256/zz/misplaced', garbage);

    // Another replica filling the orphan's digest from its upstream holds its fill lease: not an orphan yet.
    const other = await Cluster.connect(config.database!.url);
    const lease = await other.leases.tryAcquire(orphan, 60_000);
    expect(lease).toBeDefined();
    const whileFilling = await cli(['fsck', '--repair']);
    await lease!.release();
    await other.close();
    expect(whileFilling.stdout).not.toContain(digestHex(orphan));
    expect(await keysUnder(key(orphan))).toEqual([key(orphan)]);
    expect(whileFilling.stdout).toMatch(new RegExp(`corrupt blob +${corrupt}: s3://${bucket}/${key(corrupt!)} hashes to sha256:${createHash('sha256').update(garbage).digest('hex')}`));
    expect(whileFilling.stdout).toMatch(new RegExp(`missing file +${missing}: recorded \\(\\d+ bytes\\) but s3://${bucket}/${key(missing!)} is missing`));
    expect(whileFilling.stdout).toMatch(/orphan file +blobs\/sha256\/zz\/misplaced: is not a blob at its place/);
    // The release manifest still names the two dropped layers: that is for a person to settle.
    expect(whileFilling.stdout).toMatch(new RegExp(`dangling reference ocp4/release@${release.release.digest}: references blob ${corrupt}`));
    expect(whileFilling.stdout).toMatch(/5 problem\(s\) found, 3 repaired, 2 remaining/);
    expect(whileFilling.code).toBe(1);

    // The corrupt object went to quarantine/ in the bucket, byte for byte; the misplaced one is gone.
    const quarantined = await keysUnder(`mirror/quarantine/sha256-${digestHex(corrupt!)}.`);
    expect(quarantined).toHaveLength(1);
    const kept = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: quarantined[0]! }));
    expect(Buffer.from(await kept.Body!.transformToByteArray())).toEqual(garbage);
    expect(await inBucket(corrupt!)).toBe(false);
    expect(await keysUnder('mirror/blobs/sha256/zz/')).toEqual([]);
    // Their rows were dropped: the replica answers 404 rather than serving bytes it does not have right.
    for (const digest of [corrupt!, missing!]) {
      const res = await fetch(`http://${replica.host}/v2/ocp4/release/blobs/${digest}`, { method: 'HEAD' });
      expect(res.status, digest).toBe(404);
    }

    // Once the fill is over (its lease released), the object nobody recorded is an orphan.
    const found = await cli(['fsck']);
    expect(found.code).toBe(1);
    expect(found.stdout).toMatch(new RegExp(`orphan file +blobs/sha256/${digestHex(orphan).slice(0, 2)}/${digestHex(orphan)}: holds ${orphan} but no row records it`));
    expect(found.stdout).toMatch(/3 problem\(s\) found; run airlock fsck --repair/);
    const repaired = await cli(['fsck', '--repair']);
    expect(repaired.stdout).toMatch(/repaired: removed/);
    expect(await inBucket(orphan)).toBe(false);

    // Importing the release again brings the dropped layers back: the store is whole.
    const again = await cli(['import', join(root, 'release', 'release'), '--prefix', 'ocp4/release', '--map', `ocp4/release=${RELEASE_REPO}`]);
    expect(again.code, again.stderr).toBe(0);
    const after = await cli(['fsck']);
    expect(after.code, after.stdout).toBe(0);
    expect(after.stdout).toMatch(/clean: no problems found/);
    for (const digest of [corrupt!, missing!]) {
      const res = await fetch(`http://${replica.host}/v2/ocp4/release/blobs/${digest}`, { method: 'HEAD' });
      expect(res.status, digest).toBe(200);
    }
  }, 120_000);
});

describe('single-node backup refuses shared backends', () => {
  it('backup exits 2 and names pg_dump and the object store’s tools', async () => {
    const run = await cli(['backup', tmp.make('backup')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/airlock backup: the config names shared backends/);
    expect(run.stderr).toMatch(/pg_dump/);
    expect(run.stderr).toMatch(/bucket with the object store's own tools/);
  });
});
