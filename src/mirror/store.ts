import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { KeyedLock } from '../registry/keyed-lock.js';
import type { FillStore } from '../proxy/blob-fill.js';
import { FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore, type MetadataStore } from '../storage/metadata.js';
import { readBatches } from '../storage/read-batches.js';
import { parseManifest, manifestRecord } from '../registry/manifest.js';
import { MissingContentError, type ContentSink, type ContentSource, type ManifestPlacement, type SourceBlob, type SourceManifest } from './content.js';

/**
 * A store's two halves: blob bytes (files or a bucket) and metadata (SQLite or PostgreSQL), with
 * the per-digest lock every writer of blob links takes (across replicas when they share the store).
 */
export interface OpenedStore {
  blobs: FillStore;
  meta: MetadataStore;
  blobLocks: KeyedLock;
  /** Where one blob is, for messages. */
  where(digest: string): string;
  close(): Promise<void>;
}

/** The single-node store of a storage directory (the caller holds its lock). */
export async function openStore(storage: string): Promise<OpenedStore> {
  const blobs = new FsBlobStore(storage);
  await blobs.init();
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  return { blobs, meta, blobLocks: new KeyedLock(), where: (digest) => blobs.blobPath(digest), close: () => meta.close() };
}

/**
 * Removes upload files no session owns: under the storage lock nothing else writes there, so they
 * are what a killed import or sync left half-written (client upload sessions, which have a record,
 * stay for their clients to resume).
 */
export async function removeOrphanUploads(store: OpenedStore): Promise<number> {
  let removed = 0;
  for (const id of await store.blobs.listUploads()) {
    if (await store.meta.getUpload(id)) continue;
    await store.blobs.removeUpload(id);
    removed++;
  }
  return removed;
}

const WRITE_BATCH = 1024 * 1024;

/**
 * Writes straight into a store: a storage directory no server holds, or the shared backends
 * replicas serve. Blob bytes go to an upload file (spooled locally for a bucket), made visible
 * (fsync and rename, or the object PUT) only once the stream ended verified, then linked — under
 * the blob's lock, so that no gc or eviction on any replica removes it in between; manifests and
 * tags in one metadata transaction each, after everything they reference.
 */
export class StoreSink implements ContentSink {
  readonly description: string;

  /**
   * `onChange` is told of every repository whose manifests or tags changed (replicas drop what
   * they hold of it in memory).
   */
  constructor(
    private readonly store: OpenedStore,
    description: string,
    private readonly onChange?: (repo: string) => Promise<void>,
  ) {
    this.description = description;
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const { meta, blobs, blobLocks } = this.store;
    if ((await meta.linkedBlobSize(repo, digest)) !== undefined) return true;
    // Another repository has it: link it here instead of copying the bytes again.
    return blobLocks.run(digest, async () => {
      const size = await meta.blobSize(digest);
      if (size !== undefined && (await blobs.size(digest)) === size) {
        await meta.linkBlob(repo, digest, size);
        return true;
      }
      return false;
    });
  }

  async putBlob(repo: string, digest: string, _size: number | undefined, stream: Readable): Promise<void> {
    const { blobs, meta, blobLocks } = this.store;
    // Spooled like a pull-through fill: a local file, no upload session (which in a bucket would
    // cost a marker per blob, a listing on promotion, and a leftover after a killed import).
    const id = randomUUID();
    let written = 0;
    try {
      await blobs.createFill(id);
      // The stream verifies the digest itself and fails before its end on a mismatch; hashing again
      // here would only double the CPU cost.
      const writer = await blobs.uploadWriter(id);
      try {
        for await (const batch of readBatches(stream, WRITE_BATCH)) {
          let bytes = 0;
          for (const chunk of batch) bytes += chunk.length;
          await writer.write(batch, bytes);
          written += bytes;
        }
      } finally {
        await writer.close();
      }
      await blobLocks.run(digest, async () => {
        await blobs.promoteUpload(id, digest);
        await meta.linkBlob(repo, digest, written);
      });
    } catch (e) {
      await blobs.removeUpload(id).catch(() => {});
      throw e;
    }
  }

  /**
   * True when the repository holds the manifest and everything it references, an index's children
   * whole included: content an fsck repair dropped (a corrupt or lost blob, say one layer of one
   * platform) is copied again by a rerun, not taken for present.
   */
  async hasManifest(repo: string, digest: string): Promise<boolean> {
    const { meta } = this.store;
    const held = await meta.getManifest(repo, digest);
    if (!held) return false;
    const parsed = parseManifest(held.content, held.mediaType);
    if ((await meta.missingBlobs(repo, parsed.blobRefs)).length > 0) return false;
    for (const child of parsed.manifestRefs) if (!(await this.hasManifest(repo, child))) return false;
    return true;
  }

  async putManifest(repo: string, digest: string, bytes: Buffer, mediaType: string, placement: ManifestPlacement): Promise<void> {
    const parsed = parseManifest(bytes, mediaType);
    const missing = [...(await this.store.meta.missingBlobs(repo, parsed.blobRefs)), ...(await this.store.meta.missingManifests(repo, parsed.manifestRefs))];
    // The copier stores these first; this guards the invariant against any other caller.
    if (missing.length) throw new Error(`manifest ${digest} for ${repo} references content not stored: ${missing.join(', ')}`);
    await this.store.meta.putManifest(repo, { ...manifestRecord(digest, bytes, parsed), blobRefs: parsed.blobRefs, manifestRefs: parsed.manifestRefs }, placement.tag);
    await this.onChange?.(repo);
  }

  async setOrigin(repo: string, origin: string): Promise<void> {
    await this.store.meta.setOrigin(repo, origin);
  }

  async flush(): Promise<void> {
    /* every write above is already durable */
  }

  async close(): Promise<void> {
    /* the store is closed by whoever opened it */
  }
}

/** Reads the local store (export): manifests from the metadata, blobs from their files. */
export class StoreSource implements ContentSource {
  readonly description: string;

  constructor(
    private readonly store: OpenedStore,
    description: string,
  ) {
    this.description = description;
  }

  async manifest(repo: string, reference: string): Promise<SourceManifest> {
    const { meta } = this.store;
    const found = reference.includes(':') ? await meta.getManifest(repo, reference) : await meta.getTaggedManifest(repo, reference);
    if (!found) throw new MissingContentError(`manifest ${repo}${reference.includes(':') ? '@' : ':'}${reference} is not in the store`, reference);
    return { digest: found.digest, bytes: found.content, mediaType: found.mediaType };
  }

  async blob(repo: string, digest: string): Promise<SourceBlob> {
    const size = (await this.store.meta.linkedBlobSize(repo, digest)) ?? (await this.store.meta.blobSize(digest));
    const stream = size === undefined ? undefined : await this.store.blobs.open(digest, { start: 0, end: Math.max(size - 1, 0) });
    if (size === undefined || !stream) throw new MissingContentError(`blob ${digest} of ${repo} is not in the store (run airlock fsck)`, digest);
    if (size === 0) {
      stream.destroy();
      const { Readable } = await import('node:stream');
      return { size, stream: Readable.from([]), where: this.store.where(digest) };
    }
    return { size, stream, where: this.store.where(digest) };
  }

  async close(): Promise<void> {}
}
