// S3BlobStore against a real radosgw (test/helpers/ceph.ts): blobs appear only once verified, reads
// are ranged, an upload started by one replica is finished by another, big blobs stream through
// multipart uploads without being held in memory, and pre-signed URLs serve the bytes to plain fetch.

import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DigestMismatchError, TooLargeError } from '../../src/storage/blobstore.js';
import { S3BlobStore, S3StoreError, type S3BlobStoreOptions } from '../../src/storage/s3-blobstore.js';
import { startCeph, type Ceph } from '../helpers/ceph.js';

const MiB = 1024 * 1024;

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A deterministic stream of `size` bytes produced 1 MiB at a time (never held whole). */
function generated(size: number, seed: number): Readable {
  let sent = 0;
  const block = Buffer.alloc(MiB);
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(MiB, size - sent);
      block.writeUInt32BE(seed, 0);
      block.writeUInt32BE(sent / MiB, 4);
      for (let i = 8; i < n; i += 4096) block[i] = (seed + sent / MiB + i) & 0xff;
      sent += n;
      this.push(Buffer.from(block.subarray(0, n)));
    },
  });
}

async function digestOf(stream: Readable): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const c of stream) {
    hash.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** The names of the S3 commands the store sends from now on. */
function recordCommands(store: S3BlobStore): string[] {
  const commands: string[] = [];
  store.client.middlewareStack.add(
    (next, context) => async (args) => {
      commands.push(context.commandName ?? '?');
      return next(args);
    },
    { step: 'initialize', name: 'recordCommands' },
  );
  return commands;
}

describe('S3BlobStore on radosgw', () => {
  let ceph: Ceph;
  let options: S3BlobStoreOptions;
  let store: S3BlobStore;
  const spools: string[] = [];
  const stores: S3BlobStore[] = [];

  function replica(extra: Partial<S3BlobStoreOptions> = {}): S3BlobStore {
    const spoolDir = mkdtempSync(join(tmpdir(), 'airlock-s3-spool-'));
    spools.push(spoolDir);
    const s = new S3BlobStore({ ...options, spoolDir, ...extra });
    stores.push(s);
    return s;
  }

  async function keys(s: S3BlobStore, prefix: string): Promise<string[]> {
    const page = await s.client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: prefix }));
    return (page.Contents ?? []).map((o) => o.Key!);
  }

  beforeAll(async () => {
    ceph = await startCeph();
    const bucket = await ceph.createBucket();
    options = {
      endpoint: ceph.endpoint,
      bucket,
      region: ceph.region,
      prefix: 'airlock',
      forcePathStyle: true,
      accessKeyId: ceph.accessKeyId,
      secretAccessKey: ceph.secretAccessKey,
      spoolDir: '',
    };
    store = replica();
    await store.init();
  });
  afterAll(async () => {
    for (const s of stores) s.close();
    await ceph?.stop();
    for (const dir of spools) rmSync(dir, { recursive: true, force: true });
  });

  it('commits an uploaded blob under blobs/sha256/<xx>/<hex> once verified, and drops the session', async () => {
    const bytes = randomBytes(100_000);
    const digest = sha256(bytes);
    const id = randomUUID();
    await store.createUpload(id);
    expect(await store.uploadSize(id)).toBe(0);
    expect(await store.appendUpload(id, Readable.from([bytes]))).toBe(bytes.length);
    expect(await store.uploadSize(id)).toBe(bytes.length);
    expect(await store.size(digest)).toBeUndefined();

    expect(await store.commitUpload(id, digest, 'sha256')).toBe(bytes.length);
    const hex = digest.slice('sha256:'.length);
    expect(store.blobKey(digest)).toBe(`airlock/blobs/sha256/${hex.slice(0, 2)}/${hex}`);
    expect(await keys(store, store.blobKey(digest))).toEqual([store.blobKey(digest)]);
    expect(await store.size(digest)).toBe(bytes.length);
    expect((await readAll((await store.open(digest))!)).equals(bytes)).toBe(true);
    expect(await store.uploadSize(id)).toBeUndefined();
    expect(await keys(store, `airlock/uploads/${id}/`)).toEqual([]);
  });

  it('commits and serves an empty blob', async () => {
    const digest = sha256(Buffer.alloc(0));
    const id = randomUUID();
    await store.createUpload(id);
    expect(await store.commitUpload(id, digest, 'sha256')).toBe(0);
    expect(await store.size(digest)).toBe(0);
    expect((await readAll((await store.open(digest))!)).length).toBe(0);
    expect((await readAll((await store.open(digest, { start: 0, end: -1 }))!)).length).toBe(0);
  });

  it('keys start at the bucket root when the prefix is empty', () => {
    const root = replica({ prefix: '' });
    const digest = sha256(Buffer.from('x'));
    expect(root.blobKey(digest)).toBe(`blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`);
  });

  it('a digest mismatch leaves no object at the claimed key, small or multipart', async () => {
    for (const size of [1000, 20 * MiB]) {
      const bytes = randomBytes(size);
      const claimed = sha256(randomBytes(16));
      const id = randomUUID();
      await store.createUpload(id);
      await store.appendUpload(id, Readable.from([bytes]));
      await expect(store.commitUpload(id, claimed, 'sha256')).rejects.toBeInstanceOf(DigestMismatchError);
      expect(await store.size(claimed)).toBeUndefined();
      expect(await keys(store, store.blobKey(claimed))).toEqual([]);
      // Read back by a replica without the running hash: the bytes are hashed on the way to S3.
      const other = replica();
      await expect(other.commitUpload(id, claimed, 'sha256')).rejects.toBeInstanceOf(DigestMismatchError);
      expect(await keys(store, store.blobKey(claimed))).toEqual([]);
      await store.removeUpload(id);
    }
  });

  it('serves byte ranges with ranged GETs; a missing blob is undefined', async () => {
    const bytes = randomBytes(256 * 1024);
    const digest = sha256(bytes);
    const id = randomUUID();
    await store.createUpload(id);
    await store.appendUpload(id, Readable.from([bytes]));
    await store.commitUpload(id, digest, 'sha256');
    for (const [start, end] of [[0, 0], [10, 99], [200_000, bytes.length - 1]] as const) {
      const part = await readAll((await store.open(digest, { start, end }))!);
      expect(part.equals(bytes.subarray(start, end + 1))).toBe(true);
    }
    const missing = sha256(randomBytes(8));
    expect(await store.open(missing)).toBeUndefined();
    expect(await store.open(missing, { start: 0, end: 10 })).toBeUndefined();
    expect(await store.size(missing)).toBeUndefined();
  });

  it('an upload started on one replica is continued and committed by another', async () => {
    const a = store;
    const b = replica();
    const parts = [randomBytes(6 * MiB), randomBytes(3 * MiB), randomBytes(700_000)];
    const whole = Buffer.concat(parts);
    const digest = sha256(whole);
    const id = randomUUID();
    await a.createUpload(id);
    expect(await a.appendUpload(id, Readable.from([parts[0]!]))).toBe(parts[0]!.length);
    expect(await b.uploadSize(id)).toBe(parts[0]!.length);
    expect(await b.appendUpload(id, Readable.from([parts[1]!]))).toBe(parts[0]!.length + parts[1]!.length);
    // A's running hash missed B's chunk: it must not be trusted, and A's commit still verifies.
    expect(await a.appendUpload(id, Readable.from([parts[2]!]))).toBe(whole.length);
    expect((await b.listUploads()).includes(id)).toBe(true);
    expect(await b.uploadModifiedAt(id)).toBeGreaterThan(Date.now() - 60_000);
    expect(await a.commitUpload(id, digest, 'sha256')).toBe(whole.length);
    expect((await readAll((await b.open(digest))!)).equals(whole)).toBe(true);
    expect((await a.listUploads()).includes(id)).toBe(false);
  });

  it('a replica that saw every chunk copies them into the blob inside the store', async () => {
    const parts = [randomBytes(9 * MiB), randomBytes(8 * MiB), randomBytes(123)];
    const whole = Buffer.concat(parts);
    const digest = sha256(whole);
    const id = randomUUID();
    await store.createUpload(id);
    for (const p of parts) await store.appendUpload(id, Readable.from([p]));
    expect(await store.commitUpload(id, digest, 'sha256')).toBe(whole.length);
    expect(await store.size(digest)).toBe(whole.length);
    expect((await readAll((await store.open(digest))!)).equals(whole)).toBe(true);
  });

  it('a chunk of a known session is one PutObject; a session of one chunk becomes the blob with one CopyObject', async () => {
    const own = replica();
    const commands = recordCommands(own);
    for (const size of [300 * 1024, 6 * MiB]) {
      const bytes = randomBytes(size);
      const digest = sha256(bytes);
      const id = randomUUID();
      await own.createUpload(id);
      commands.length = 0;
      // The caller read the session's size just before (a PATCH does): no listing to find it again.
      await own.appendUpload(id, Readable.from([bytes]), Infinity, 0);
      expect(commands).toEqual(['PutObjectCommand']);
      commands.length = 0;
      expect(await own.commitUpload(id, digest, 'sha256')).toBe(size);
      expect(commands.filter((c) => /Copy|Multipart|GetObject|PutObject/.test(c))).toEqual(['CopyObjectCommand']);
      expect((await readAll((await store.open(digest))!)).equals(bytes)).toBe(true);
      expect(await keys(store, `airlock/uploads/${id}/`)).toEqual([]);
    }
  });

  it('a PATCH streamed in socket-sized pieces is never cut into a chunk below 5 MiB: 12 MiB PATCHes are copied into the blob, not read back', async () => {
    const own = replica(); // default partSize: 8 MiB
    const commands = recordCommands(own);
    const patches = [randomBytes(12 * MiB), randomBytes(12 * MiB), randomBytes(30 * MiB), randomBytes(1000)];
    const whole = Buffer.concat(patches);
    const digest = sha256(whole);
    const id = randomUUID();
    await own.createUpload(id);
    let size = 0;
    for (const patch of patches) {
      // 64 KiB at a time, as a request body arrives from its socket.
      const pieces = Array.from({ length: Math.ceil(patch.length / (64 * 1024)) }, (_, i) => patch.subarray(i * 64 * 1024, (i + 1) * 64 * 1024));
      size = await own.appendUpload(id, Readable.from(pieces), Infinity, size);
    }
    expect(size).toBe(whole.length);
    const listed = (await own.client.send(new ListObjectsV2Command({ Bucket: own.bucket, Prefix: `airlock/uploads/${id}/` }))).Contents!;
    const sizes = listed.filter((o) => /\/\d+$/.test(o.Key!)).map((o) => o.Size!);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(whole.length);
    expect(sizes.slice(0, -1).every((n) => n >= 5 * MiB), `chunk sizes ${sizes.join(', ')}`).toBe(true);
    commands.length = 0;
    expect(await own.commitUpload(id, digest, 'sha256')).toBe(whole.length);
    expect(commands).not.toContain('GetObjectCommand');
    expect(commands).toContain('UploadPartCopyCommand');
    expect((await readAll((await store.open(digest))!)).equals(whole)).toBe(true);
  });

  it('a session started for sha512 commits by its running hash (no read back); one started for sha256 reads its chunks back for a sha512 digest', async () => {
    const own = replica();
    const commands = recordCommands(own);
    for (const announced of ['sha512', 'sha256'] as const) {
      const bytes = randomBytes(300 * 1024);
      const digest = `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
      const id = randomUUID();
      await own.createUpload(id, announced);
      await own.appendUpload(id, Readable.from([bytes]), Infinity, 0);
      commands.length = 0;
      expect(await own.commitUpload(id, digest, 'sha512')).toBe(bytes.length);
      expect(commands.includes('GetObjectCommand')).toBe(announced === 'sha256');
      expect((await readAll((await store.open(digest))!)).equals(bytes)).toBe(true);
    }
  });

  it('stores a monolithic push straight under its digest: no chunk objects, the session gone, small or multipart', async () => {
    for (const size of [1000, 20 * MiB]) {
      const id = randomUUID();
      await store.createUpload(id);
      const { digest } = await digestOf(generated(size, size));
      expect(await store.storeWhole(id, generated(size, size), Infinity, digest, 'sha256')).toBe(size);
      expect(await store.size(digest)).toBe(size);
      expect(await digestOf((await store.open(digest))!)).toEqual({ digest, size });
      expect(await keys(store, `airlock/uploads/${id}/`)).toEqual([]);
      expect(await store.uploadSize(id)).toBeUndefined();
    }
  });

  it('a monolithic push that does not match its digest, or is over the limit, stores nothing', async () => {
    for (const size of [1000, 20 * MiB]) {
      const id = randomUUID();
      await store.createUpload(id);
      const claimed = sha256(randomBytes(16));
      await expect(store.storeWhole(id, generated(size, 3), Infinity, claimed, 'sha256')).rejects.toBeInstanceOf(DigestMismatchError);
      expect(await keys(store, store.blobKey(claimed))).toEqual([]);
      const { digest } = await digestOf(generated(size, 3));
      await expect(store.storeWhole(id, generated(size, 3), size - 1, digest, 'sha256')).rejects.toBeInstanceOf(TooLargeError);
      expect(await keys(store, store.blobKey(digest))).toEqual([]);
      // A client that goes away mid-body: its error, not an object store failure.
      const broken = generated(size, 3);
      let sent = 0;
      broken.on('data', (c: Buffer) => {
        sent += c.length;
        if (sent >= size / 2) broken.destroy(Object.assign(new Error('client went away'), { code: 'ECONNRESET' }));
      });
      const gone = await store.storeWhole(id, broken, Infinity, digest, 'sha256').then(() => undefined, (e: unknown) => e);
      expect(gone).not.toBeInstanceOf(S3StoreError);
      expect((gone as NodeJS.ErrnoException).code).toBe('ECONNRESET');
      expect(await keys(store, store.blobKey(digest))).toEqual([]);
      // Nothing half-done is billed: no multipart upload stays open for either key.
      const open = await store.client.send(new ListMultipartUploadsCommand({ Bucket: store.bucket, Prefix: 'airlock/blobs/' }));
      expect((open.Uploads ?? []).filter((u) => u.Key === store.blobKey(digest) || u.Key === store.blobKey(claimed))).toEqual([]);
      await store.removeUpload(id);
    }
  });

  it('refuses a body over the limit', async () => {
    const id = randomUUID();
    await store.createUpload(id);
    await expect(store.appendUpload(id, Readable.from([randomBytes(2000)]), 1000)).rejects.toBeInstanceOf(TooLargeError);
    await store.removeUpload(id);
  });

  it('streams a 128 MiB blob through multipart uploads with flat memory', async () => {
    const size = 128 * MiB;
    const { digest } = await digestOf(generated(size, 7));
    const id = randomUUID();
    let peak = 0;
    const base = process.memoryUsage().rss;
    const sample = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss - base);
    }, 20);
    try {
      await store.createUpload(id);
      expect(await store.appendUpload(id, generated(size, 7))).toBe(size);
      // A second replica commits: no running hash, so every byte is read back and hashed.
      const other = replica();
      expect(await other.commitUpload(id, digest, 'sha256')).toBe(size);
      const read = await digestOf((await other.open(digest))!);
      expect(read).toEqual({ digest, size });
    } finally {
      clearInterval(sample);
    }
    // Holding the blob whole would take 128 MiB at least; parts in flight take a few times 8 MiB.
    expect(peak).toBeLessThan(96 * MiB);
  });

  it('aborts multipart uploads a dead replica left behind, and no others', async () => {
    const own = replica({ prefix: `stale-${randomUUID()}` });
    const key = own.blobKey(sha256(randomBytes(8)));
    const started = await own.client.send(new CreateMultipartUploadCommand({ Bucket: own.bucket, Key: key }));
    expect(await own.abortStaleMultipartUploads(60_000)).toBe(0);
    expect(await own.abortStaleMultipartUploads(0)).toBe(1);
    const left = await own.client.send(new ListMultipartUploadsCommand({ Bucket: own.bucket, Prefix: key }));
    expect((left.Uploads ?? []).map((u) => u.UploadId)).not.toContain(started.UploadId);
  });

  it('removeUpload deletes every object of the session', async () => {
    const id = randomUUID();
    await store.createUpload(id);
    await store.appendUpload(id, Readable.from([randomBytes(12 * MiB)]));
    expect((await keys(store, `airlock/uploads/${id}/`)).length).toBeGreaterThan(1);
    await store.removeUpload(id);
    expect(await keys(store, `airlock/uploads/${id}/`)).toEqual([]);
    expect(await store.uploadSize(id)).toBeUndefined();
    expect(await store.uploadModifiedAt(id)).toBeUndefined();
  });

  it('a spooled fill is promoted to the blob key and the spool removed', async () => {
    const bytes = randomBytes(12 * MiB);
    const digest = sha256(bytes);
    const id = randomUUID();
    await store.createUpload(id);
    const writer = await store.uploadWriter(id);
    await writer.write([bytes.subarray(0, 5), bytes.subarray(5)], bytes.length);
    await writer.close();
    const tail = await store.openUpload(id);
    expect(tail).toBeDefined();
    await store.promoteUpload(id, digest);
    // A reader that opened the spool while the fill ran keeps reading it after promotion.
    const head = Buffer.alloc(5);
    await tail!.read(head, 0, 5, 0);
    await tail!.close();
    expect(head.equals(bytes.subarray(0, 5))).toBe(true);
    expect(await store.openUpload(id)).toBeUndefined();
    expect(await store.uploadSize(id)).toBeUndefined();
    expect((await readAll((await store.open(digest))!)).equals(bytes)).toBe(true);
  });

  it('a pre-signed URL serves the blob to a plain fetch()', async () => {
    const bytes = randomBytes(50_000);
    const digest = sha256(bytes);
    const id = randomUUID();
    await store.createUpload(id);
    await store.appendUpload(id, Readable.from([bytes]));
    await store.commitUpload(id, digest, 'sha256');
    const url = await store.presignedUrl(digest, 60);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
    const ranged = await fetch(url, { headers: { Range: 'bytes=10-19' } });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(10, 20))).toBe(true);
  });

  it('ping() answers for a reachable bucket and names endpoint and bucket when not', async () => {
    await store.ping();
    const wrong = replica({ bucket: 'no-such-bucket-here' });
    const failure = await wrong.ping().then(() => undefined, (e: unknown) => e as Error);
    expect(failure).toBeInstanceOf(S3StoreError);
    expect(failure!.message).toContain(ceph.endpoint);
    expect(failure!.message).toContain('no-such-bucket-here');
  });

  it('speaks TLS to an endpoint whose certificate is signed by caFile, and refuses it without', async () => {
    const secure = replica({ endpoint: ceph.tlsEndpoint, caFile: ceph.caFile });
    const bytes = randomBytes(10 * MiB);
    const digest = sha256(bytes);
    const id = randomUUID();
    await secure.createUpload(id);
    await secure.appendUpload(id, Readable.from([bytes]));
    await secure.commitUpload(id, digest, 'sha256');
    expect((await readAll((await secure.open(digest, { start: 5, end: 9 }))!)).equals(bytes.subarray(5, 10))).toBe(true);
    const untrusting = replica({ endpoint: ceph.tlsEndpoint });
    const failure = await untrusting.ping().then(() => undefined, (e: unknown) => e as Error);
    expect(failure).toBeInstanceOf(S3StoreError);
    expect(failure!.message).toContain(ceph.tlsEndpoint);
  });

  it('takes credentials from the AWS_* environment variables when the config has none', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = ceph.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = ceph.secretAccessKey;
    try {
      const fromEnv = replica({ accessKeyId: undefined, secretAccessKey: undefined });
      await fromEnv.ping();
      const bytes = randomBytes(1000);
      const id = randomUUID();
      await fromEnv.createUpload(id);
      await fromEnv.appendUpload(id, Readable.from([bytes]));
      expect(await fromEnv.commitUpload(id, sha256(bytes), 'sha256')).toBe(1000);
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });

  it('an unreachable endpoint fails with a message naming it', async () => {
    const gone = replica({ endpoint: 'http://127.0.0.1:9', bucket: 'b' });
    const failure = await gone.size(sha256(Buffer.from('y'))).then(() => undefined, (e: unknown) => e as Error);
    expect(failure).toBeInstanceOf(S3StoreError);
    expect(failure!.message).toContain('http://127.0.0.1:9 bucket b');
  });
});
