// Where fsck finds committed blobs: files under <storage>/blobs (FsBlobStore) or objects under
// blobs/ in a bucket (S3BlobStore). The check itself (fsck.ts) is the same for both; this is what
// differs: how a blob is read back, how what is kept there is listed, and where a corrupt one is
// set aside.

import { createHash, type Hash } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { FsBlobStore, type BlobStore } from '../storage/blobstore.js';
import type { S3BlobStore } from '../storage/s3-blobstore.js';
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
  /** Reads the committed blob back and hashes it (through `buffer` where the store reads into one). */
  hash(digest: string, buffer: Buffer): Promise<FileState>;
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

/** Hashes a blob's local file as it is now, streamed through one reused buffer. */
export async function hashBlobFile(
  store: { blobs: { openCommitted(digest: string): Promise<FileHandle | undefined> } },
  digest: string,
  buffer: Buffer = Buffer.allocUnsafe(HASH_CHUNK),
): Promise<FileState> {
  const fh = await store.blobs.openCommitted(digest);
  if (!fh) return { kind: 'missing' };
  try {
    const hash = createHash(digest.slice(0, digest.indexOf(':')));
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, size);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
    }
    return verdict(digest, hash, size);
  } finally {
    await fh.close();
  }
}

/** What `size` bytes hashed into `hash` say of the blob `digest`. */
function verdict(digest: string, hash: Hash, size: number): FileState {
  const actual = `${digest.slice(0, digest.indexOf(':'))}:${hash.digest('hex')}`;
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
    hash: (digest, buffer) => hashBlobFile({ blobs: files }, digest, buffer),
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
    async hash(digest) {
      const body = await bucket.open(digest);
      if (!body) return { kind: 'missing' };
      const hash = createHash(digest.slice(0, digest.indexOf(':')));
      let size = 0;
      for await (const chunk of body) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
      return verdict(digest, hash, size);
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
