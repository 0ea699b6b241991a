import { createHash } from 'node:crypto';
import { createReadStream, statfsSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { DigestAlgorithm } from '../registry/names.js';
import { BlobFileStream, READ_CHUNK } from './blob-file-stream.js';
import { FileAppender } from './file-appender.js';
import { readBatches } from './read-batches.js';
import { streamHash, type StreamHash } from './stream-hash.js';

/**
 * Content-addressed blob files. A blob becomes visible at its final path only after its bytes
 * were hashed, the digest verified, the file fsync'd and renamed (and the directory fsync'd), so a
 * crash at any point leaves either no blob or a whole one.
 *
 * Object stores can implement the same interface later; nothing above storage/ sees paths.
 */
export interface BlobStore {
  /**
   * The smallest chunk (PATCH body), the last one aside, the store keeps without extra work: an S3
   * store copies chunks into the blob as multipart parts only if they are S3's minimum part size.
   * Announced to clients starting an upload as OCI-Chunk-Min-Length; absent when any size will do.
   */
  readonly minChunkBytes?: number;
  /** Size of a committed blob, or undefined when it is not on disk. */
  size(digest: string): Promise<number | undefined>;
  /**
   * Opens a committed blob (or an inclusive byte range of it) for streaming; undefined when the
   * file is missing. Opening first means a missing file is known before any response is sent.
   * Callers knowing the size pass the whole range: that spares a read to find the end of the file.
   */
  open(digest: string, range?: { start: number; end: number }): Promise<Readable | undefined>;
  remove(digest: string): Promise<void>;

  /**
   * Upload sessions: bytes appended in order, verified and promoted on commit. The running hash
   * uses `algorithm` (what the client announced with ?digest-algorithm=); a commit by a digest of
   * another algorithm reads the bytes back.
   */
  createUpload(id: string, algorithm?: DigestAlgorithm): Promise<void>;
  /** Bytes received so far, or undefined when the session has no file. */
  uploadSize(id: string): Promise<number | undefined>;
  /**
   * Appends a stream to the session; returns the new size. `size` is the session's size as the
   * caller has just read it (uploadSize), which spares a store where that costs a request reading
   * it again.
   */
  appendUpload(id: string, source: Readable, limit?: number, size?: number): Promise<number>;
  /**
   * Appends to an upload whose bytes the caller hashes itself (a pull-through fill hashes what it
   * receives before the disk has it): no running hash is kept, so the caller verifies and then
   * calls promoteUpload.
   */
  uploadWriter(id: string): Promise<UploadWriter>;
  /** Opens an upload's file for reading while it grows (a pull-through fill being tailed). */
  openUpload(id: string): Promise<FileHandle | undefined>;
  openCommitted(digest: string): Promise<FileHandle | undefined>;
  /** Verifies the session's bytes against the digest and promotes them; returns the size. */
  commitUpload(id: string, digest: string, algorithm: DigestAlgorithm): Promise<number>;
  /**
   * Optional: a whole blob sent in one request to a session that holds nothing yet (a monolithic
   * push), stored straight under its digest once verified, and the session's storage ended; returns
   * the size. A store keeping sessions as objects (S3) saves writing, listing, copying and deleting
   * them. Throws DigestMismatchError or TooLargeError (more than `limit` bytes) as the others do.
   */
  storeWhole?(id: string, source: Readable, limit: number, digest: string, algorithm: DigestAlgorithm): Promise<number>;
  removeUpload(id: string): Promise<void>;
  listUploads(): Promise<string[]>;
  /** When the upload's file was last written (ms since the epoch), or undefined when it has none. */
  uploadModifiedAt(id: string): Promise<number | undefined>;
}

export interface UploadWriter {
  /** Appends the buffers (`bytes` in all) in order; resolves once they are all in the file. */
  write(buffers: Buffer[], bytes: number): Promise<void>;
  close(): Promise<void>;
}

/** Thrown by commitUpload when the bytes do not hash to the digest the client claimed. */
export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content digest ${actual} does not match the digest ${expected} given by the client`);
  }
}

/** Thrown by appendUpload when a body exceeds the caller's limit. */
export class TooLargeError extends Error {}

/**
 * Running hash state of an upload, kept in memory between PATCH requests so that commit does not
 * re-read the file. Lost on restart (Node cannot serialise a hash), in which case commit re-hashes
 * the bytes on disk, which is what makes uploads resumable across restarts.
 */
interface UploadHashState {
  hash: StreamHash;
  algorithm: DigestAlgorithm;
  size: number;
}

const WRITE_BATCH = 1024 * 1024;
/** A blob served whole is hashed again on the way when its last check is older than this. */
const REVERIFY_AFTER_MS = 24 * 60 * 60 * 1000;
/** How many verified blobs are remembered (the oldest checks are forgotten first). */
const VERIFIED_MEMORY = 100_000;

export class FsBlobStore implements BlobStore {
  private readonly blobsDir: string;
  private readonly uploadsDir: string;
  private readonly hashes = new Map<string, UploadHashState>();

  constructor(root: string) {
    this.blobsDir = join(root, 'blobs');
    this.uploadsDir = join(root, 'uploads');
  }

  async init(): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true });
    await mkdir(this.uploadsDir, { recursive: true });
  }

  blobPath(digest: string): string {
    const [algorithm, hex] = digest.split(':', 2) as [string, string];
    return join(this.blobsDir, algorithm, hex.slice(0, 2), hex);
  }

  /** Bytes still writable on the volume that holds the blobs. */
  freeBytes(): number {
    const s = statfsSync(this.uploadsDir);
    return s.bavail * s.bsize;
  }

  private uploadPath(id: string): string {
    return join(this.uploadsDir, id);
  }

  async size(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.blobPath(digest))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /**
   * Told when a blob sent whole did not hash to its digest (the file went bad on disk); the server
   * quarantines it (lifecycle/served-corruption.ts).
   */
  onCorrupt: ((digest: string, actual: string) => void) | undefined;

  /**
   * Blobs whose file hashed right when last sent whole, by when. Hashing every download would cost
   * a hot layer pulled by hundreds of nodes its SHA-256 each time (several times the CPU of sending
   * it); checking each file again once a day still finds a file gone bad while serving, and fsck
   * re-hashes everything.
   */
  private readonly verifiedAt = new Map<string, number>();

  /** Records that the blob's file hashed right just now (a whole serve, or a read-back after a fill). */
  readonly noteVerified = (digest: string): void => {
    this.verifiedAt.delete(digest); // re-inserted last: the map stays in order of verification
    this.verifiedAt.set(digest, Date.now());
    if (this.verifiedAt.size > VERIFIED_MEMORY) this.verifiedAt.delete(this.verifiedAt.keys().next().value!);
  };

  /** True unless the blob's file hashed right within the last day: its next whole serve hashes it. */
  needsCheck(digest: string): boolean {
    const at = this.verifiedAt.get(digest);
    return at === undefined || Date.now() - at > REVERIFY_AFTER_MS;
  }

  async open(digest: string, range?: { start: number; end: number }): Promise<BlobFileStream | undefined> {
    const fh = await this.openCommitted(digest);
    const onCorrupt = this.onCorrupt;
    const check = onCorrupt && this.needsCheck(digest) ? { digest, onCorrupt, onVerified: this.noteVerified } : undefined;
    return fh && new BlobFileStream(fh, range?.start ?? 0, range?.end ?? Infinity, check);
  }

  async remove(digest: string): Promise<void> {
    this.verifiedAt.delete(digest);
    await rm(this.blobPath(digest), { force: true });
  }

  async createUpload(id: string, algorithm: DigestAlgorithm = 'sha256'): Promise<void> {
    await this.createFill(id);
    this.hashes.set(id, { hash: streamHash(algorithm), algorithm, size: 0 });
  }

  /** A pull-through fill's (or an import's) file: an upload file without a running hash, the caller hashes. */
  async createFill(id: string): Promise<void> {
    const fh = await open(this.uploadPath(id), 'wx', 0o644);
    await fh.close();
  }

  async uploadSize(id: string): Promise<number | undefined> {
    try {
      return (await stat(this.uploadPath(id))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async appendUpload(id: string, source: Readable, limit = Infinity): Promise<number> {
    const file = await FileAppender.open(this.uploadPath(id));
    let size = file.size;
    const before = size;
    let state = this.hashes.get(id);
    // The running hash is only trustworthy if it covers exactly the bytes on disk.
    if (state && state.size !== size) {
      this.forgetHash(id);
      state = undefined;
    }
    try {
      // Socket reads arrive in ~64 KiB chunks; writing what is buffered in one call (a direct write
      // of its aligned middle, see FileAppender) saves most of the syscalls without holding
      // anything back from the disk.
      for await (const batch of readBatches(source, WRITE_BATCH)) {
        let bytes = 0;
        for (const chunk of batch) bytes += chunk.length;
        if (size - before + bytes > limit) throw new TooLargeError(`body exceeds ${limit} bytes`);
        // Hash while the write runs on the thread pool; if the write fails, the hash is dropped below.
        await Promise.all([file.write(batch, bytes), state?.hash.update(batch)]);
        size += bytes;
        if (state) state.size = size;
      }
      // Nothing of this request stays referenced while the session waits for the next one.
      await state?.hash.flush();
    } catch (e) {
      // A failed write may have left part of a batch in the file without the hash knowing exactly
      // how much: re-hash from the file at commit time. The bytes written stay, so GET status
      // reports the truth and the client can resume.
      this.forgetHash(id);
      throw e;
    } finally {
      await file.close();
    }
    return size;
  }

  async uploadWriter(id: string): Promise<UploadWriter> {
    this.forgetHash(id);
    return FileAppender.open(this.uploadPath(id));
  }

  openUpload(id: string): Promise<FileHandle | undefined> {
    return openIfExists(this.uploadPath(id));
  }

  openCommitted(digest: string): Promise<FileHandle | undefined> {
    return openIfExists(this.blobPath(digest));
  }

  async commitUpload(id: string, digest: string, algorithm: DigestAlgorithm): Promise<number> {
    const size = await this.verifyUpload(id, digest, algorithm);
    await this.promoteUpload(id, digest);
    return size;
  }

  /** Checks the upload's bytes against the digest (DigestMismatchError if not); returns the size. */
  async verifyUpload(id: string, digest: string, algorithm: DigestAlgorithm): Promise<number> {
    const path = this.uploadPath(id);
    const size = (await stat(path)).size;
    const state = this.hashes.get(id);
    this.hashes.delete(id);
    let actual: string;
    if (state && state.algorithm === algorithm && state.size === size) actual = `${algorithm}:${await state.hash.digest()}`;
    else {
      state?.hash.dispose();
      actual = `${algorithm}:${await hashFile(path, algorithm)}`;
    }
    if (actual !== digest) throw new DigestMismatchError(digest, actual);
    return size;
  }

  /** Makes verified upload bytes durable and visible under their digest: fsync, rename, fsync dir. */
  async promoteUpload(id: string, digest: string): Promise<void> {
    const path = this.uploadPath(id);
    const fh = await open(path, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const target = this.blobPath(digest);
    await mkdir(dirname(target), { recursive: true });
    await rename(path, target);
    await syncDirectory(dirname(target));
  }

  async removeUpload(id: string): Promise<void> {
    this.forgetHash(id);
    await rm(this.uploadPath(id), { force: true });
  }

  /** Drops an upload's running hash (the thread's state with it). */
  private forgetHash(id: string): void {
    this.hashes.get(id)?.hash.dispose();
    this.hashes.delete(id);
  }

  async listUploads(): Promise<string[]> {
    return readdir(this.uploadsDir);
  }

  async uploadModifiedAt(id: string): Promise<number | undefined> {
    try {
      return (await stat(this.uploadPath(id))).mtimeMs;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }
}

async function openIfExists(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function hashFile(path: string, algorithm: DigestAlgorithm): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** fsync of the directory makes the rename itself durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
