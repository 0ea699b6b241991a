// Where fsck finds committed blobs: files under <storage>/blobs (FsBlobStore) or objects under
// blobs/ in a bucket (S3BlobStore). The check itself (fsck.ts) is the same for both; this is what
// differs: how a blob is read back, how what is kept there is listed, and where a corrupt one is
// set aside.

import { readdir, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { FsBlobStore, type BlobStore } from '../storage/blobstore.js';
import type { S3BlobStore } from '../storage/s3-blobstore.js';
import { streamHash, type StreamHash } from '../storage/stream-hash.js';
import { digestFileName, quarantineBytes, quarantineFile, quarantineStamp } from './quarantine.js';

export type FileState = { kind: 'missing' } | { kind: 'ok'; size: number } | { kind: 'wrong'; size: number; actual: string };

/** One thing kept where committed blobs are. */
export interface BlobEntry {
  /** Its name for messages: relative to the storage directory, or the key below the bucket prefix. */
  name: string;
  /** The blob its place stands for, or undefined when it is not at a blob's place. */
  digest: string | undefined;
  /** The file's path or the object's key. */
  ref: string;
}

export interface FsckBlobs extends Pick<BlobStore, 'listUploads' | 'uploadSize' | 'uploadModifiedAt' | 'removeUpload'> {
  /** Where a blob is kept, for messages. */
  where(digest: string): string;
  /**
   * Reads the committed blob back and hashes it (through `buffer` where the store reads into one);
   * `recordedSize` (its row's) picks where it is hashed without asking the file.
   */
  hash(digest: string, buffer: Buffer, recordedSize?: number): Promise<FileState>;
  /** Everything kept where committed blobs are, in order. */
  entries(): AsyncIterable<BlobEntry>;
  removeEntry(entry: BlobEntry): Promise<void>;
  /** Sets a corrupt blob aside (never deleted) and says where it went. */
  quarantineBlob(digest: string): Promise<string>;
  /** Keeps a corrupt manifest's bytes beside the quarantined blobs and says where. */
  quarantineBytes(name: string, bytes: Buffer): Promise<string>;
}

/** Bytes read per step when a blob is hashed back (fsck's workers each keep one buffer of it). */
export const HASH_CHUNK = 1024 * 1024;
const DIGEST_HEX_RE = /^[a-f0-9]{32,}$/;

/** The digest a place blobs/<algorithm>/<xx>/<hex> stands for, or undefined when it is none. */
function digestAtPlace(algorithm: string, prefix: string, hex: string): string | undefined {
  return DIGEST_HEX_RE.test(hex) && prefix.length === 2 && hex.startsWith(prefix) ? `${algorithm}:${hex}` : undefined;
}

/**
 * Hashes a blob's local file as it is now, streamed through one reused buffer. Files of a few MiB
 * and more are hashed on the hashing threads (stream-hash.ts), as pushes and fills are: fsck runs
 * inside the serving process, and hashing a store of many TB on its event loop would leave the
 * clients a sliver of it; the next read also overlaps the hashing of the last one.
 */
export async function hashBlobFile(
  store: { blobs: { openCommitted(digest: string): Promise<FileHandle | undefined> } },
  digest: string,
  buffer: Buffer = Buffer.allocUnsafe(HASH_CHUNK),
  recordedSize?: number,
): Promise<FileState> {
  const fh = await store.blobs.openCommitted(digest);
  if (!fh) return { kind: 'missing' };
  let hash: StreamHash | undefined;
  try {
    // Small ones inline, larger ones on a thread: the row's size tells which (one stat less per blob).
    hash = streamHash(algorithmOf(digest), recordedSize ?? (await fh.stat()).size);
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, size);
      if (bytesRead === 0) break;
      await hash.update([buffer.subarray(0, bytesRead)]);
      // The buffer is read into again next: its bytes must have been taken by the hash.
      await hash.flush();
      size += bytesRead;
    }
    return verdict(digest, await hash.digest(), size);
  } finally {
    hash?.dispose();
    await fh.close();
  }
}

function algorithmOf(digest: string): string {
  return digest.slice(0, digest.indexOf(':'));
}

/** What `size` bytes hashing to `hex` say of the blob `digest`. */
function verdict(digest: string, hex: string, size: number): FileState {
  const actual = `${algorithmOf(digest)}:${hex}`;
  return actual === digest ? { kind: 'ok', size } : { kind: 'wrong', size, actual };
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw e;
  }
}

/** Blob files under <storage>/blobs; corrupt ones go to <storage>/quarantine. */
function fileBlobs(storage: string, files: FsBlobStore): FsckBlobs {
  return {
    where: (digest) => relative(storage, files.blobPath(digest)),
    hash: (digest, buffer, recordedSize) => hashBlobFile({ blobs: files }, digest, buffer, recordedSize),
    async *entries() {
      const root = join(storage, 'blobs');
      for (const algorithm of await listDir(root)) {
        for (const prefix of await listDir(join(root, algorithm))) {
          for (const hex of await listDir(join(root, algorithm, prefix))) {
            const ref = join(root, algorithm, prefix, hex);
            yield { name: relative(storage, ref), digest: digestAtPlace(algorithm, prefix, hex), ref };
          }
        }
      }
    },
    removeEntry: (entry) => rm(entry.ref, { force: true, recursive: true }),
    quarantineBlob: (digest) => quarantineFile(storage, files.blobPath(digest), digestFileName(digest)),
    quarantineBytes: (name, bytes) => quarantineBytes(storage, name, bytes),
    listUploads: () => files.listUploads(),
    uploadSize: (id) => files.uploadSize(id),
    uploadModifiedAt: (id) => files.uploadModifiedAt(id),
    removeUpload: (id) => files.removeUpload(id),
  };
}

/** The blobs of a store as fsck checks them: its files (under `storage`) or its bucket's objects. */
export function fsckBlobs(storage: string, blobs: FsBlobStore | S3BlobStore): FsckBlobs {
  return blobs instanceof FsBlobStore ? fileBlobs(storage, blobs) : bucketBlobs(blobs);
}

/** Blob objects under blobs/ in a bucket; corrupt ones go to quarantine/ in the same bucket. */
function bucketBlobs(bucket: S3BlobStore): FsckBlobs {
  return {
    where: (digest) => bucket.describe(digest),
    async hash(digest, _buffer, recordedSize) {
      const body = await bucket.open(digest);
      if (!body) return { kind: 'missing' };
      let hash: StreamHash | undefined;
      try {
        // As for files: small objects inline, larger ones (or of no recorded size) on a thread.
        hash = streamHash(algorithmOf(digest), recordedSize);
        let size = 0;
        for await (const chunk of body) {
          await hash.update([chunk as Buffer]);
          size += (chunk as Buffer).length;
        }
        return verdict(digest, await hash.digest(), size);
      } finally {
        hash?.dispose();
        body.destroy();
      }
    },
    async *entries() {
      for await (const o of bucket.listBlobObjects()) {
        const [top, algorithm, prefix, hex, ...rest] = o.name.split('/');
        const digest = top === 'blobs' && algorithm && prefix && hex && rest.length === 0 ? digestAtPlace(algorithm, prefix, hex) : undefined;
        yield { name: o.name, digest, ref: o.key };
      }
    },
    removeEntry: (entry) => bucket.removeKey(entry.ref),
    quarantineBlob: (digest) => bucket.quarantineBlob(digest, `${digestFileName(digest)}.${quarantineStamp()}`),
    quarantineBytes: (name, bytes) => bucket.quarantineBytes(name, bytes),
    listUploads: () => bucket.listUploads(),
    uploadSize: (id) => bucket.uploadSize(id),
    uploadModifiedAt: (id) => bucket.uploadModifiedAt(id),
    removeUpload: (id) => bucket.removeUpload(id),
  };
}
