import { createReadStream, readFileSync, statfsSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  CopyObjectCommand,
  type _Object,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { DigestAlgorithm } from '../registry/names.js';
import { FileAppender } from './file-appender.js';
import { DigestMismatchError, TooLargeError, type BlobStore, type UploadWriter } from './blobstore.js';
import { readBatches } from './read-batches.js';
import { streamHash, type StreamHash } from './stream-hash.js';

// Node 20 is airlock's runtime and the SDK is pinned to versions that support it: the SDK's notice
// that later releases will need Node 22 would only alarm operators on every start.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** The `blobs: {s3: …}` configuration. Credentials left out come from the AWS_* environment variables. */
export interface S3BlobStoreOptions {
  /** e.g. https://s3.example:443; absent means AWS itself. */
  endpoint?: string;
  bucket: string;
  region?: string;
  /** Key prefix for everything airlock writes ("" = the bucket's root). */
  prefix?: string;
  /** Path-style addressing (http://host/bucket/key): what radosgw, MinIO and most on-premise stores need. */
  forcePathStyle?: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** PEM file of the CA that signed the endpoint's certificate. */
  caFile?: string;
  /** Blob GETs answered with a 307 to a pre-signed URL (see presignedUrl). */
  redirect?: boolean;
  /** Local directory for pull-through fills, which stay on the replica that runs them. */
  spoolDir: string;
  /** Bytes per multipart part and per stored upload chunk (at least 5 MiB, S3's minimum part size). */
  partSize?: number;
  /** Parts of one blob sent at once. */
  partConcurrency?: number;
}

const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3 allows at most 10,000 parts per multipart upload. */
const MAX_PARTS = 10_000;
/** The largest object one CopyObject may copy (S3's limit); larger ones are copied in ranged parts. */
const MAX_SINGLE_COPY = 5 * 1024 * 1024 * 1024;
/** Part size for those ranged copies. */
const COPY_PART_SIZE = 1024 * 1024 * 1024;
/** Marks an upload session that has no bytes yet; sorts after the 16-digit chunk keys. */
const SESSION_MARKER = 'session';
const OFFSET_DIGITS = 16;

/** Running hash of an upload session, valid only while it covers exactly the stored bytes. */
interface UploadHashState {
  hash: StreamHash;
  algorithm: DigestAlgorithm;
  size: number;
  /** ETag the store answered for each chunk this process wrote, by key: proves the chunks are still those bytes. */
  etags: Map<string, string>;
}

interface Chunk {
  key: string;
  offset: number;
  size: number;
  etag: string | undefined;
}

/**
 * Blobs in an S3-compatible object store (tested on Ceph's radosgw), shared by every replica.
 *
 * - A committed blob is the object `<prefix>/blobs/sha256/<xx>/<hex>`. It appears there only after
 *   its digest was verified: the bytes stream through the hash into a multipart upload of the final
 *   key, which is completed only when the digest matches and aborted otherwise (a blob smaller than
 *   one part is hashed in memory and PUT only when it matches). A temp key plus CopyObject would
 *   write every byte twice and need UploadPartCopy anyway beyond 5 GiB; an uncompleted multipart
 *   upload is invisible to readers, so it gives the same "whole blob or nothing" as a rename.
 * - Upload sessions live in the bucket so that any replica can continue them: each stored chunk is
 *   the object `<prefix>/uploads/<id>/<offset, 16 digits>`, so a listing in key order is the byte
 *   order and the session's size is the sum of the chunk sizes.
 * - Pull-through fills are local to the replica running them: they spool to `spoolDir` as
 *   FsBlobStore does, and promoteUpload sends the verified file to the final key.
 */
export class S3BlobStore implements BlobStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly redirect: boolean;
  readonly minChunkBytes = MIN_PART_SIZE;
  private readonly prefix: string;
  private readonly where: string;
  private readonly spoolDir: string;
  private readonly partSize: number;
  private readonly partConcurrency: number;
  private readonly hashes = new Map<string, UploadHashState>();
  /** Fills spooling here (createFill): they have no session in the bucket. */
  private readonly spooledFills = new Set<string>();

  /** Present for parity with FsBlobStore; the object store keeps its own checksums, so it is never called. */
  onCorrupt: ((digest: string, actual: string) => void) | undefined;

  constructor(options: S3BlobStoreOptions) {
    this.bucket = options.bucket;
    this.redirect = options.redirect ?? false;
    this.prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.where = `${options.endpoint ?? 'AWS S3'} bucket ${options.bucket}`;
    this.spoolDir = join(options.spoolDir, 'uploads');
    this.partSize = Math.max(options.partSize ?? DEFAULT_PART_SIZE, MIN_PART_SIZE);
    this.partConcurrency = Math.max(options.partConcurrency ?? 4, 1);
    // Keep-alive sockets, enough of them for a replica serving many blob GETs at once: the SDK's
    // default of 50 would queue requests behind slow downloads.
    const agent = { keepAlive: true, maxSockets: 512 };
    const ca = options.caFile ? readFileSync(options.caFile) : undefined;
    this.client = new S3Client({
      endpoint: options.endpoint,
      region: options.region ?? 'us-east-1',
      forcePathStyle: options.forcePathStyle ?? false,
      credentials:
        options.accessKeyId && options.secretAccessKey
          ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
          : undefined, // the SDK's default chain: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles…
      // The SDK's default checksums turn a streamed PutObject into a chunked upload without a
      // length, which radosgw refuses (411 MissingContentLength); digests are verified here anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({
        httpAgent: new HttpAgent(agent),
        httpsAgent: new HttpsAgent({ ...agent, ca }),
        connectionTimeout: 10_000,
      }),
    });
  }

  /**
   * Bytes still writable where fills spool: the object store has no such limit, but a fill needs
   * room on this replica's disk before it can become a blob (pull-through reserves it).
   */
  freeBytes(): number {
    const s = statfsSync(this.spoolDir);
    return s.bavail * s.bsize;
  }

  async init(): Promise<void> {
    await mkdir(this.spoolDir, { recursive: true });
  }

  close(): void {
    this.client.destroy();
  }

  // ---- keys -----------------------------------------------------------------------------------

  private key(rel: string): string {
    return this.prefix ? `${this.prefix}/${rel}` : rel;
  }

  /** The object key of a committed blob. */
  blobKey(digest: string): string {
    const [algorithm, hex] = digest.split(':', 2) as [string, string];
    return this.key(`blobs/${algorithm}/${hex.slice(0, 2)}/${hex}`);
  }

  /** Where a blob is, for messages (s3://bucket/key). */
  describe(digest: string): string {
    return `s3://${this.bucket}/${this.blobKey(digest)}`;
  }

  private sessionPrefix(id: string): string {
    return this.key(`uploads/${id}/`);
  }

  private chunkKey(id: string, offset: number): string {
    return `${this.sessionPrefix(id)}${String(offset).padStart(OFFSET_DIGITS, '0')}`;
  }

  private spoolPath(id: string): string {
    return join(this.spoolDir, id);
  }

  // ---- committed blobs ------------------------------------------------------------------------

  async size(digest: string): Promise<number | undefined> {
    const key = this.blobKey(digest);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return head.ContentLength ?? 0;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.failure('HeadObject', key, e);
    }
  }

  async open(digest: string, range?: { start: number; end: number }): Promise<Readable | undefined> {
    const key = this.blobKey(digest);
    // An empty range (a zero-byte blob) cannot be asked for with a Range header.
    if (range && range.end < range.start) return (await this.size(digest)) === undefined ? undefined : Readable.from([]);
    try {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
      );
      return got.Body as Readable;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.failure('GetObject', key, e);
    }
  }

  async remove(digest: string): Promise<void> {
    const key = this.blobKey(digest);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      if (!isNotFound(e)) throw this.failure('DeleteObject', key, e);
    }
  }

  /**
   * Every object where committed blobs are kept (under `blobs/`), in key order, a page at a time:
   * `name` is the key below the prefix (blobs/<algorithm>/<xx>/<hex> when well placed).
   */
  async *listBlobObjects(): AsyncGenerator<{ key: string; name: string }> {
    const prefix = this.key('blobs/');
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      } catch (e) {
        throw this.failure('ListObjectsV2', prefix, e);
      }
      for (const o of page.Contents ?? []) {
        yield { key: o.Key!, name: o.Key!.slice(strip) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** Removes any object by its key (an object under blobs/ that is no blob's: fsck --repair). */
  async removeKey(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      if (!isNotFound(e)) throw this.failure('DeleteObject', key, e);
    }
  }

  /**
   * Moves a blob's object to `quarantine/<name>` in the bucket (copied inside the store, then the
   * original removed): a corrupt blob is set aside, never deleted. Returns where it went.
   */
  async quarantineBlob(digest: string, name: string): Promise<string> {
    const source = this.blobKey(digest);
    const target = this.key(`quarantine/${name}`);
    const size = await this.size(digest);
    if (size === undefined) throw new S3StoreError(`${this.where}: ${source} is gone; nothing to quarantine`);
    await this.copyKey(source, target, size);
    await this.removeKey(source);
    return `s3://${this.bucket}/${target}`;
  }

  /** Writes bytes to `quarantine/<name>` in the bucket (a corrupt manifest's). Returns where. */
  async quarantineBytes(name: string, bytes: Buffer): Promise<string> {
    const key = this.key(`quarantine/${name}`);
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: bytes, ContentLength: bytes.length }));
    } catch (e) {
      throw this.failure('PutObject', key, e);
    }
    return `s3://${this.bucket}/${key}`;
  }

  /**
   * Copies an object inside the store: one CopyObject up to its 5 GiB limit, ranged part copies
   * above. `ifMatch`: only the object with this ETag (not one rewritten since).
   */
  private async copyKey(source: string, target: string, size: number, ifMatch?: string): Promise<void> {
    const copySource = this.copySource(source);
    if (size <= MAX_SINGLE_COPY) {
      try {
        await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: target, CopySource: copySource, CopySourceIfMatch: ifMatch }));
      } catch (e) {
        throw this.failure('CopyObject', target, e);
      }
      return;
    }
    const parts = Math.ceil(size / COPY_PART_SIZE);
    await this.multipart(target, async (uploadId) => {
      const etags: string[] = [];
      await runLimited(parts, this.partConcurrency, async (i) => {
        const start = i * COPY_PART_SIZE;
        const end = Math.min(size, start + COPY_PART_SIZE) - 1;
        const copied = await this.client.send(
          new UploadPartCopyCommand({ Bucket: this.bucket, Key: target, UploadId: uploadId, PartNumber: i + 1, CopySource: copySource, CopySourceRange: `bytes=${start}-${end}`, CopySourceIfMatch: ifMatch }),
        );
        etags[i] = copied.CopyPartResult?.ETag ?? '';
      });
      return etags;
    });
  }

  /** A key as CopyObject and UploadPartCopy name their source: bucket/key, URL-encoded. */
  private copySource(key: string): string {
    return `${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** A URL that GETs the blob without credentials until it expires (for `redirect: true`). */
  presignedUrl(digest: string, expiresSeconds = 600): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.blobKey(digest) }), {
      expiresIn: expiresSeconds,
    });
  }

  /** Throws (naming endpoint and bucket) unless the bucket answers: for /readyz. */
  async ping(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (e) {
      throw this.failure('HeadBucket', '', e);
    }
  }

  /** Committed blobs have no local file here: a fill's late readers read them with open(). */
  openCommitted(): Promise<FileHandle | undefined> {
    return Promise.resolve(undefined);
  }

  // ---- upload sessions (in the bucket) --------------------------------------------------------

  async createUpload(id: string, algorithm: DigestAlgorithm = 'sha256'): Promise<void> {
    const key = `${this.sessionPrefix(id)}${SESSION_MARKER}`;
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: '', ContentLength: 0 }));
    } catch (e) {
      throw this.failure('PutObject', key, e);
    }
    this.hashes.set(id, { hash: streamHash(algorithm), algorithm, size: 0, etags: new Map() });
  }

  /** The session's objects, in key order. */
  private async listSession(id: string): Promise<_Object[]> {
    const prefix = this.sessionPrefix(id);
    const objects: _Object[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
        );
        objects.push(...(page.Contents ?? []));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (e) {
      throw this.failure('ListObjectsV2', prefix, e);
    }
    return objects;
  }

  /**
   * The session's chunks that follow each other without a gap from offset 0. A chunk at another
   * offset (a write whose PUT landed after a failure was reported) is not part of the upload.
   */
  private async chunks(id: string): Promise<{ exists: boolean; chunks: Chunk[]; size: number; modified: number }> {
    const objects = await this.listSession(id);
    const prefix = this.sessionPrefix(id);
    const chunks: Chunk[] = [];
    let size = 0;
    let modified = 0;
    for (const o of objects) {
      modified = Math.max(modified, o.LastModified?.getTime() ?? 0);
      const name = o.Key!.slice(prefix.length);
      if (!/^\d+$/.test(name)) continue;
      const offset = Number(name);
      if (offset !== size) continue;
      chunks.push({ key: o.Key!, offset, size: o.Size ?? 0, etag: o.ETag });
      size += o.Size ?? 0;
    }
    return { exists: objects.length > 0, chunks, size, modified };
  }

  async uploadSize(id: string): Promise<number | undefined> {
    const local = await statIfExists(this.spoolPath(id));
    if (local) return local.size;
    const { exists, size } = await this.chunks(id);
    return exists ? size : undefined;
  }

  /**
   * Stores the body as chunk objects of partSize bytes, the request's last one taking what is left
   * (each PUT needs its length, and memory stays at about two chunks per request). The next chunk
   * is read while the last is sent.
   *
   * The request's last chunk is never cut below S3's minimum part size when the body had that much:
   * a 12 MiB PATCH is one 12 MiB chunk, not 8 + 4. The commit copies chunks into the blob as
   * multipart parts only if each but the session's last is a valid part (see copyable); a 4 MiB
   * chunk in the middle would make it read the whole session back to hash it.
   */
  async appendUpload(id: string, source: Readable, limit = Infinity, size?: number): Promise<number> {
    const before = size ?? (await this.uploadSize(id)) ?? 0;
    let state = this.hashes.get(id);
    // The running hash is only trustworthy if it covers exactly the stored bytes (another replica
    // may have appended since).
    if (state && state.size !== before) {
      this.forgetHash(id);
      state = undefined;
    }
    let offset = before; // where the next chunk goes
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let sending: Promise<void> = Promise.resolve();
    /** Sends the first `bytes` of what is pending as one chunk (all of it by default). */
    const flush = async (bytes = pendingBytes): Promise<void> => {
      if (bytes === 0) return;
      const joined = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      const body = joined.subarray(0, bytes);
      pending = bytes < joined.length ? [joined.subarray(bytes)] : [];
      pendingBytes = joined.length - bytes;
      // One chunk in flight while the next is read: chunks land in order, so the stored size
      // never has a gap whatever fails.
      await sending;
      const key = this.chunkKey(id, offset);
      await state?.hash.update([body]);
      offset += body.length;
      sending = this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length })).then(
        (put) => {
          if (put.ETag) state?.etags.set(key, put.ETag);
        },
        (e: unknown) => {
          throw this.failure('PutObject', key, e);
        },
      );
      sending.catch(() => undefined); // awaited later; not an unhandled rejection meanwhile
    };
    try {
      let received = 0;
      for await (const batch of readBatches(source, this.partSize)) {
        for (const chunk of batch) {
          received += chunk.length;
          if (received > limit) throw new TooLargeError(`body exceeds ${limit} bytes`);
          pending.push(chunk);
          pendingBytes += chunk.length;
        }
        // What stays pending is at least a minimum part, so the request's last chunk is one too.
        while (pendingBytes >= this.partSize + MIN_PART_SIZE) await flush(this.partSize);
      }
      await flush();
      await sending;
      // Nothing of this request stays referenced while the session waits for the next one.
      await state?.hash.flush();
    } catch (e) {
      // Chunks already stored stay, so GET status reports the truth and the client can resume;
      // the running hash no longer matches what is stored.
      this.forgetHash(id);
      await sending.catch(() => undefined);
      throw e;
    }
    if (state) state.size = offset;
    return offset;
  }

  /**
   * Verifies the session's bytes against the digest and makes them the blob; returns the size.
   * When this process saw every chunk in order (and the chunks are big enough to be multipart
   * parts), its running hash verifies the bytes before anything is written and the chunks are
   * copied into the blob inside the object store; otherwise they are read back through the hash.
   */
  async commitUpload(id: string, digest: string, algorithm: DigestAlgorithm): Promise<number> {
    const { chunks, size } = await this.chunks(id);
    const state = this.hashes.get(id);
    this.hashes.delete(id);
    if (state && state.algorithm === algorithm && state.size === size && this.copyable(chunks, state)) {
      const actual = `${algorithm}:${await state.hash.digest()}`;
      if (actual !== digest) throw new DigestMismatchError(digest, actual);
      await this.copyChunks(chunks, digest);
    } else {
      state?.hash.dispose();
      await this.writeVerified(this.readChunks(chunks), digest, algorithm);
    }
    await this.removeSession(id);
    return size;
  }

  /**
   * The running hash speaks for the stored chunks only if they are still the objects this process
   * wrote (same ETags: no other replica rewrote one); server-side copy also needs every chunk but
   * the last to be a valid part size, within the part limit.
   */
  private copyable(chunks: Chunk[], state: UploadHashState): boolean {
    if (chunks.length === 0 || chunks.length > MAX_PARTS) return false;
    return chunks.every(
      (c, i) => (i === chunks.length - 1 || c.size >= MIN_PART_SIZE) && c.etag !== undefined && state.etags.get(c.key) === c.etag,
    );
  }

  private async *readChunks(chunks: Chunk[]): AsyncGenerator<Buffer> {
    for (const chunk of chunks) {
      let body: Readable;
      try {
        const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: chunk.key }));
        body = got.Body as Readable;
      } catch (e) {
        throw this.failure('GetObject', chunk.key, e);
      }
      for await (const piece of body) yield piece as Buffer;
    }
  }

  /**
   * Builds the blob from stored chunks inside the store: no byte goes through this process. One
   * chunk (most pushes of a layer in one PATCH) is one CopyObject; more are a multipart upload of
   * UploadPartCopy parts.
   */
  private async copyChunks(chunks: Chunk[], digest: string): Promise<void> {
    const key = this.blobKey(digest);
    if (chunks.length === 1) return this.copyKey(chunks[0]!.key, key, chunks[0]!.size, chunks[0]!.etag);
    await this.multipart(key, async (uploadId) => {
      const etags: string[] = [];
      await runLimited(chunks.length, this.partConcurrency, async (i) => {
        const copied = await this.client.send(
          new UploadPartCopyCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber: i + 1,
            CopySource: this.copySource(chunks[i]!.key),
            // The chunk whose ETag the running hash vouches for, not one rewritten since.
            CopySourceIfMatch: chunks[i]!.etag,
          }),
        );
        etags[i] = copied.CopyPartResult?.ETag ?? '';
      });
      return etags;
    });
  }

  /**
   * A monolithic push: the body goes straight into the blob's key (one PUT, or a multipart upload
   * completed only if the digest matches) with no chunk objects to write, list, copy and delete;
   * then the session's marker goes.
   */
  async storeWhole(id: string, source: Readable, limit: number, digest: string, algorithm: DigestAlgorithm): Promise<number> {
    let size = 0;
    const partSize = this.partSize;
    async function* counted(): AsyncGenerator<Buffer> {
      try {
        for await (const batch of readBatches(source, partSize)) {
          for (const chunk of batch) {
            size += chunk.length;
            if (size > limit) throw new TooLargeError(`body exceeds ${limit} bytes`);
            yield chunk;
          }
        }
      } catch (e) {
        throw new SourceError(e);
      }
    }
    try {
      await this.writeVerified(counted(), digest, algorithm);
    } catch (e) {
      // The client's failures (too large, gone away) are the client's, not the object store's.
      throw e instanceof SourceError ? e.original : e;
    }
    this.forgetHash(id);
    await this.removeSession(id);
    return size;
  }

  /** Stores a blob from a stream (e.g. `airlock migrate` reading a local file): it appears only if the bytes hash to `digest`. */
  putVerified(source: AsyncIterable<Buffer>, digest: string, algorithm: DigestAlgorithm): Promise<void> {
    return this.writeVerified(source, digest, algorithm);
  }

  /**
   * Streams bytes through the hash into the final key, which appears only if the digest matches.
   * Memory: at most partConcurrency + 1 parts.
   */
  private async writeVerified(source: AsyncIterable<Buffer>, digest: string, algorithm: DigestAlgorithm): Promise<void> {
    const hash = streamHash(algorithm);
    try {
      await this.writeHashed(source, digest, algorithm, hash);
    } finally {
      hash.dispose(); // a no-op once digested
    }
  }

  private async writeHashed(source: AsyncIterable<Buffer>, digest: string, algorithm: DigestAlgorithm, hash: StreamHash): Promise<void> {
    const key = this.blobKey(digest);
    const iterator = rechunk(source, this.partSize)[Symbol.asyncIterator]();
    const first = await iterator.next();
    const firstPart = first.done ? Buffer.alloc(0) : first.value;
    await hash.update([firstPart]);
    const second = first.done ? { done: true as const, value: undefined } : await iterator.next();
    if (second.done) {
      // One part: verified in memory, then a single PUT.
      const actual = `${algorithm}:${await hash.digest()}`;
      if (actual !== digest) throw new DigestMismatchError(digest, actual);
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: firstPart, ContentLength: firstPart.length }));
      } catch (e) {
        throw this.failure('PutObject', key, e);
      }
      return;
    }
    await this.multipart(key, async (uploadId) => {
      const etags: string[] = [];
      const inFlight = new Set<Promise<void>>();
      let failed: unknown;
      const send = (part: Buffer, number: number): void => {
        const p: Promise<void> = this.client
          .send(new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: number, Body: part, ContentLength: part.length }))
          .then(
            (r) => {
              etags[number - 1] = r.ETag ?? '';
            },
            (e: unknown) => {
              failed ??= e;
            },
          )
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
      };
      let number = 1;
      send(firstPart, number++);
      await hash.update([second.value]);
      send(second.value, number++);
      for (;;) {
        while (inFlight.size >= this.partConcurrency) await Promise.race(inFlight);
        if (failed) break;
        const next = await iterator.next();
        if (next.done) break;
        if (number > MAX_PARTS) throw new Error(`blob ${digest} needs more than ${MAX_PARTS} parts of ${this.partSize} bytes`);
        await hash.update([next.value]);
        send(next.value, number++);
      }
      await Promise.all(inFlight);
      if (failed) throw failed;
      // Verified before Complete: a mismatch aborts the upload and no object appears.
      const actual = `${algorithm}:${await hash.digest()}`;
      if (actual !== digest) throw new DigestMismatchError(digest, actual);
      return etags;
    });
  }

  /**
   * Runs a multipart upload of `key`: `parts` uploads them and returns their ETags in order;
   * Complete follows only if it succeeded, Abort otherwise (so nothing is left billed or visible).
   */
  private async multipart(key: string, parts: (uploadId: string) => Promise<string[]>): Promise<void> {
    let uploadId: string;
    try {
      const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key }));
      uploadId = created.UploadId!;
    } catch (e) {
      throw this.failure('CreateMultipartUpload', key, e);
    }
    let etags: string[];
    try {
      etags = await parts(uploadId);
    } catch (e) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      if (e instanceof DigestMismatchError || e instanceof S3StoreError || e instanceof SourceError) throw e;
      throw this.failure('UploadPart', key, e);
    }
    try {
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
      );
    } catch (e) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      throw this.failure('CompleteMultipartUpload', key, e);
    }
  }

  /**
   * Aborts multipart uploads of blobs begun before `olderThanMs` ago and never completed (a
   * replica that died while committing): invisible to readers, but they hold the store's space.
   * For the periodic upload expiry; returns how many were aborted.
   */
  async abortStaleMultipartUploads(olderThanMs: number): Promise<number> {
    const prefix = this.key('blobs/');
    const before = Date.now() - olderThanMs;
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    try {
      for (;;) {
        const page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
        for (const u of page.Uploads ?? []) {
          if ((u.Initiated?.getTime() ?? 0) > before) continue;
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key!, UploadId: u.UploadId! }));
          aborted++;
        }
        if (!page.IsTruncated) break;
        keyMarker = page.NextKeyMarker;
        uploadIdMarker = page.NextUploadIdMarker;
      }
    } catch (e) {
      throw this.failure('ListMultipartUploads', prefix, e);
    }
    return aborted;
  }

  /** Drops an upload's running hash (the thread's state with it). */
  private forgetHash(id: string): void {
    this.hashes.get(id)?.hash.dispose();
    this.hashes.delete(id);
  }

  async removeUpload(id: string): Promise<void> {
    this.forgetHash(id);
    await rm(this.spoolPath(id), { force: true });
    if (!this.spooledFills.delete(id)) await this.removeSession(id);
  }

  /**
   * A pull-through fill: only a spool file on this replica (no session in the bucket, which would
   * cost a PUT, a LIST and a DELETE per fill for a session no other replica ever continues).
   */
  async createFill(id: string): Promise<void> {
    const fh = await open(this.spoolPath(id), 'wx', 0o644);
    await fh.close();
    this.spooledFills.add(id);
  }

  private async removeSession(id: string): Promise<void> {
    const objects = await this.listSession(id);
    for (let i = 0; i < objects.length; i += 1000) {
      const batch = objects.slice(i, i + 1000);
      try {
        await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((o) => ({ Key: o.Key! })), Quiet: true } }),
        );
      } catch (e) {
        throw this.failure('DeleteObjects', this.sessionPrefix(id), e);
      }
    }
  }

  /** Sessions in the bucket (any replica's) and this replica's spooled fills. */
  async listUploads(): Promise<string[]> {
    const prefix = this.key('uploads/');
    const ids = new Set<string>();
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }),
        );
        for (const p of page.CommonPrefixes ?? []) ids.add(p.Prefix!.slice(prefix.length, -1));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (e) {
      throw this.failure('ListObjectsV2', prefix, e);
    }
    for (const id of await readdir(this.spoolDir).catch(() => [] as string[])) ids.add(id);
    return [...ids];
  }

  async uploadModifiedAt(id: string): Promise<number | undefined> {
    const local = await statIfExists(this.spoolPath(id));
    if (local) return local.mtimeMs;
    const { exists, modified } = await this.chunks(id);
    return exists ? modified : undefined;
  }

  // ---- pull-through fills (spooled on this replica) ------------------------------------------

  /**
   * A fill (or a mirror import) writes to a local spool file; the caller hashes and verifies. The
   * spool goes to the bucket right after and is removed: it is written through the page cache.
   */
  async uploadWriter(id: string): Promise<UploadWriter> {
    this.forgetHash(id);
    return FileAppender.open(this.spoolPath(id), { direct: false });
  }

  /** The spool file of a fill while it grows; undefined once promoted (read the blob with open()). */
  async openUpload(id: string): Promise<FileHandle | undefined> {
    try {
      return await open(this.spoolPath(id), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /**
   * Sends a spooled file whose digest the caller verified to the blob's key, then drops the spool
   * and the session. The file is renamed aside first so that readers tailing the fill keep their
   * open handle while openUpload stops offering it.
   */
  async promoteUpload(id: string, digest: string): Promise<void> {
    const spool = this.spoolPath(id);
    const sending = `${spool}.promoting`;
    await rename(spool, sending);
    try {
      const { size } = await stat(sending);
      const key = this.blobKey(digest);
      if (size <= this.partSize) {
        const body = await readWhole(sending, size);
        try {
          await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: size }));
        } catch (e) {
          throw this.failure('PutObject', key, e);
        }
      } else {
        await this.copyFileToKey(sending, key, size);
      }
    } finally {
      await rm(sending, { force: true });
    }
    this.forgetHash(id);
    if (!this.spooledFills.delete(id)) await this.removeSession(id);
  }

  /** A verified local file to a multipart upload, partConcurrency parts at a time. */
  private async copyFileToKey(path: string, key: string, size: number): Promise<void> {
    const count = Math.ceil(size / this.partSize);
    if (count > MAX_PARTS) throw new Error(`${path} needs more than ${MAX_PARTS} parts of ${this.partSize} bytes`);
    const fh = await open(path, 'r');
    try {
      await this.multipart(key, async (uploadId) => {
        const etags: string[] = [];
        await runLimited(count, this.partConcurrency, async (i) => {
          const start = i * this.partSize;
          const length = Math.min(this.partSize, size - start);
          const part = Buffer.allocUnsafe(length);
          let read = 0;
          while (read < length) {
            const { bytesRead } = await fh.read(part, read, length - read, start + read);
            if (bytesRead === 0) throw new Error(`${path} ended before its ${size} bytes were read`);
            read += bytesRead;
          }
          const r = await this.client.send(
            new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: i + 1, Body: part, ContentLength: length }),
          );
          etags[i] = r.ETag ?? '';
        });
        return etags;
      });
    } finally {
      await fh.close();
    }
  }

  // ---- errors ---------------------------------------------------------------------------------

  private failure(operation: string, key: string, cause: unknown): Error {
    if (cause instanceof S3StoreError || cause instanceof DigestMismatchError) return cause;
    const e = cause as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    const what = `${e.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? String(cause)}`;
    return new S3StoreError(`object store ${this.where}: ${operation}${key ? ` ${key}` : ''} failed: ${what}`, { cause });
  }
}

/** A failure of the bytes' source (a client's body) rather than of the object store: passed on as is. */
class SourceError extends Error {
  constructor(readonly original: unknown) {
    super(original instanceof Error ? original.message : String(original));
  }
}

/** A failed request to the object store; the message names the endpoint, bucket and key. */
export class S3StoreError extends Error {}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  if (err.name === 'NoSuchBucket') return false;
  return err.name === 'NotFound' || err.name === 'NoSuchKey' || err.$metadata?.httpStatusCode === 404;
}

/** Regroups a byte stream into buffers of exactly `size` bytes (the last one shorter). */
async function* rechunk(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of source) {
    let rest = chunk;
    while (bytes + rest.length >= size) {
      const take = size - bytes;
      pending.push(rest.subarray(0, take));
      yield Buffer.concat(pending, size);
      pending = [];
      bytes = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      pending.push(rest);
      bytes += rest.length;
    }
  }
  if (bytes > 0) yield Buffer.concat(pending, bytes);
}

/** Runs task(0..count-1) with at most `limit` running at once; the first failure stops new ones. */
async function runLimited(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < count) {
      const i = next++;
      try {
        await task(i);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, count) }, worker));
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
}

async function statIfExists(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
  try {
    return await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function readWhole(path: string, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of createReadStream(path)) chunks.push(c as Buffer);
  return Buffer.concat(chunks, size);
}
