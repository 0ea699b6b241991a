import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { CacheOutcome } from '../metrics.js';
import type { PullThroughCache } from '../proxy/pull-through.js';
import { DigestMismatchError, TooLargeError, type BlobStore } from '../storage/blobstore.js';
import { MissingReferencesError, tagsOf, type EvictedImage, type ManifestRecord, type MetadataStore, type Page } from '../storage/metadata.js';
import { RegistryError } from './errors.js';
import { KeyedLock, runAll } from './keyed-lock.js';
import { ManifestCache } from './manifest-cache.js';
import { manifestRecord, parseManifest } from './manifest.js';
import { assertDigest, assertTag, isValidTag, looksLikeDigest, parseReference, readReference, truncate, type DigestAlgorithm } from './names.js';

export interface RegistryOptions {
  /** Largest manifest accepted on push, in bytes. */
  manifestLimit: number;
  /** Upload sessions untouched for this many milliseconds are removed. */
  uploadTTL: number;
  /** Most upload sessions one owner may have open at once. */
  uploadsPerOwner: number;
}

export interface ChunkInfo {
  body: Readable;
  /** Declared Content-Length, when the client sent one. */
  contentLength?: number;
  /** Parsed Content-Range (inclusive), when the client sent one. */
  range?: { start: number; end: number };
}

/** A manifest to answer with; `content` is absent for a HEAD answered from an upstream. */
export interface ManifestAnswer {
  digest: string;
  mediaType: string;
  size: number;
  content?: Buffer;
  /** Set for repositories served by an upstream. */
  outcome?: CacheOutcome;
}

export interface BlobAnswer {
  /** Undefined only when an upstream streams a blob without announcing its length. */
  size: number | undefined;
  outcome?: CacheOutcome;
  /** Absent for a HEAD answered from an upstream. */
  open?: (range?: { start: number; end: number }) => Promise<Readable>;
}

/** State the registry shares with the pull-through cache and the lifecycle tasks. */
export interface RegistryShared {
  /**
   * Serialises what writes a blob's file or links against what removes them (cache eviction),
   * per digest.
   */
  blobLocks?: KeyedLock;
  /** Hot manifests in memory; invalidated here on every change to a repository. */
  manifests?: ManifestCache;
  /** Notes which blobs are served or asked about, for least-recently-used eviction and GC's grace. */
  onServed?: (digest: string) => void;
}

const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The registry's domain: what a repository holds and the rules for changing it.
 * Framework-free: it takes names, digests and streams and returns records and streams.
 */
export class Registry {
  private readonly uploadLocks = new KeyedLock();
  private readonly manifests: ManifestCache;
  private readonly blobLocks: KeyedLock;
  private readonly onServed: (digest: string) => void;

  constructor(
    readonly meta: MetadataStore,
    readonly blobs: BlobStore,
    private readonly log: Logger,
    private readonly options: RegistryOptions,
    /** Fills repositories under an upstream prefix on demand; absent when no upstream is configured. */
    private readonly proxy?: PullThroughCache,
    shared: RegistryShared = {},
  ) {
    this.blobLocks = shared.blobLocks ?? new KeyedLock();
    this.manifests = shared.manifests ?? new ManifestCache();
    this.onServed = shared.onServed ?? (() => undefined);
  }

  /** The repository a request addresses (containerd's ?ns= puts it under that upstream's prefix). */
  localName(name: string, ns: string | undefined): string {
    return this.proxy ? this.proxy.localName(name, ns) : name;
  }

  /** A manifest by tag or digest: local content first, then the repository's upstream, if any. */
  async findManifest(repo: string, reference: string, head: boolean, ns?: string): Promise<ManifestAnswer> {
    const route = this.proxy?.route(repo, ns);
    if (!route) return this.manifests.get(repo, reference) ?? this.getManifest(repo, reference);
    // Checked before the upstream is asked: a reference that cannot name a manifest never leaves here.
    const ref = readReference(reference);
    if (!ref) throw unknownManifest(repo, reference);
    return ref.kind === 'digest'
      ? this.proxy!.manifestByDigest(route, repo, ref.digest, head)
      : this.proxy!.manifestByTag(route, repo, ref.tag, head);
  }

  /** A blob: local content first, then the repository's upstream, if any. */
  async findBlob(repo: string, digest: string, head: boolean, ns?: string): Promise<BlobAnswer> {
    const algorithm = assertDigest(digest);
    const route = this.proxy?.route(repo, ns);
    const answer: BlobAnswer = route
      ? await this.proxy!.blob(route, repo, digest, algorithm, head)
      : await this.localBlob(repo, digest);
    // Recorded for eviction (least recently served cached content goes first) and for GC: a blob
    // a client just found here (a HEAD before skipping its upload) is not collected under it.
    this.onServed(digest);
    return answer;
  }

  /**
   * Evicts a cached blob that only pull-through links hold and that was not served since
   * `servedBefore`, with the cached manifests (and their cached tags) that reference it and their
   * other blobs that nothing else needs: a cached image leaves whole. Pushed content is never
   * touched. Undefined when the blob is no longer evictable.
   */
  async evictCachedImage(digest: string, servedBefore: number): Promise<EvictedImage | undefined> {
    const filling = (d: string) => this.proxy?.isFilling(d) ?? false;
    if (filling(digest)) return undefined;
    const companions = (await this.meta.cachedImageBlobs(digest)).filter((d) => !filling(d));
    return runAll(this.blobLocks, [digest, ...companions], async () => {
      const evicted = await this.meta.evictCachedImage(digest, companions, servedBefore);
      if (!evicted) return undefined;
      // No stale answer from memory for what just left.
      for (const repo of new Set(evicted.manifests.map((m) => m.repo))) this.manifests.invalidate(repo);
      for (const blob of evicted.blobs) await this.blobs.remove(blob.digest);
      return evicted;
    });
  }

  // ---- blobs ---------------------------------------------------------------------------------

  /** A blob the repository links; BLOB_UNKNOWN otherwise (the digest is already checked). One store read. */
  private async localBlob(repo: string, digest: string): Promise<BlobAnswer> {
    const size = await this.meta.linkedBlobSize(repo, digest);
    if (size === undefined) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is not known to repository ${repo}`, { digest });
    return { size, open: (range) => this.openBlob(repo, digest, range ?? { start: 0, end: size - 1 }) };
  }

  /** Opens a linked blob for streaming. */
  private async openBlob(repo: string, digest: string, range?: { start: number; end: number }): Promise<Readable> {
    const stream = await this.blobs.open(digest, range);
    if (!stream) {
      this.log.error({ repo, digest }, 'blob is recorded in the metadata but its file is missing; run airlock fsck');
      throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is missing from storage`, { digest });
    }
    return stream;
  }

  async deleteBlob(repo: string, digest: string): Promise<void> {
    assertDigest(digest);
    if (!(await this.meta.unlinkBlob(repo, digest))) {
      throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is not known to repository ${repo}`, { digest });
    }
  }

  // ---- uploads -------------------------------------------------------------------------------

  /**
   * Opens an upload session; `owner` (a user, or anonymous@address) is bounded in open sessions.
   * `algorithm` is the one the client will commit with: the bytes are hashed with it as they come.
   */
  async startUpload(repo: string, owner = '', algorithm: DigestAlgorithm = 'sha256'): Promise<string> {
    const open = await this.meta.countUploads(owner);
    if (open >= this.options.uploadsPerOwner) {
      throw new RegistryError(
        'TOOMANYREQUESTS',
        `${owner || 'this client'} already has ${open} upload sessions open (limit ${this.options.uploadsPerOwner}); finish or cancel some — abandoned ones expire`,
      ).withHeaders({ 'Retry-After': '30' });
    }
    const id = randomUUID();
    await this.blobs.createUpload(id, algorithm);
    await this.meta.createUpload(id, repo, owner);
    return id;
  }

  /**
   * Links a blob that already exists into the repository without transferring it. With `from`,
   * only if that repository links it. Without, from the first repository linking it that
   * `mayPullFrom` accepts — or, with no such filter (an open registry), from wherever it is stored.
   * Returns the repository it was mounted from ('' for "stored, no filter"), undefined when not possible.
   */
  async mountBlob(repo: string, digest: string, from?: string, mayPullFrom?: (source: string) => boolean): Promise<string | undefined> {
    assertDigest(digest);
    return this.blobLocks.run(digest, async () => {
      let source = from;
      if (source === undefined && mayPullFrom !== undefined) {
        for await (const candidate of this.meta.reposLinkingBlob(digest)) {
          if (mayPullFrom(candidate)) {
            source = candidate;
            break;
          }
        }
        if (source === undefined) return undefined;
      }
      const size = source === undefined ? await this.meta.blobSize(digest) : await this.meta.linkedBlobSize(source, digest);
      if (size === undefined) return undefined;
      await this.meta.linkBlob(repo, digest, size);
      return source ?? '';
    });
  }

  private async session(repo: string, id: string): Promise<{ size: number }> {
    const record = UPLOAD_ID_RE.test(id) ? await this.meta.getUpload(id) : undefined;
    if (!record || record.repo !== repo) {
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 64)} is not in progress for repository ${repo}`, { uuid: id.slice(0, 64) });
    }
    const size = await this.blobs.uploadSize(id);
    if (size === undefined) {
      await this.meta.deleteUpload(id);
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id} has no data on disk any more; start a new upload`, { uuid: id });
    }
    return { size };
  }

  async uploadStatus(repo: string, id: string): Promise<number> {
    return (await this.session(repo, id)).size;
  }

  /** Appends a chunk (PATCH). With a Content-Range, it must continue exactly where the upload stands. */
  async appendChunk(repo: string, id: string, chunk: ChunkInfo): Promise<number> {
    return this.uploadLocks.run(id, async () => {
      const { size } = await this.session(repo, id);
      const limit = this.checkChunk(size, chunk);
      try {
        return await this.blobs.appendUpload(id, chunk.body, limit, size);
      } catch (e) {
        throw this.uploadWriteError(e, id);
      } finally {
        await this.meta.touchUpload(id);
      }
    });
  }

  /** Verifies chunk ordering; returns how many bytes the body may carry. */
  private checkChunk(size: number, chunk: ChunkInfo): number {
    if (!chunk.range) return chunk.contentLength ?? Infinity;
    const { start, end } = chunk.range;
    if (start !== size) {
      throw new RegistryError(
        'BLOB_UPLOAD_INVALID',
        `chunk starts at byte ${start} but the upload has ${size} bytes: send the range ${size}-…`,
        { received: size },
        416,
      ).withHeaders({ Range: `0-${Math.max(size - 1, 0)}` });
    }
    const length = end - start + 1;
    if (chunk.contentLength !== undefined && chunk.contentLength !== length) {
      throw new RegistryError('SIZE_INVALID', `Content-Length ${chunk.contentLength} does not match Content-Range ${start}-${end}`);
    }
    return length;
  }

  private uploadWriteError(e: unknown, id: string): unknown {
    if (e instanceof TooLargeError) return new RegistryError('SIZE_INVALID', `chunk for upload ${id} is larger than its Content-Range/Content-Length`);
    return e;
  }

  /** Finishes an upload (PUT ?digest=), with an optional final chunk; the blob is linked on success. */
  async completeUpload(repo: string, id: string, digest: string, chunk?: ChunkInfo): Promise<number> {
    const algorithm = assertDigest(digest);
    return this.uploadLocks.run(id, async () => {
      const { size } = await this.session(repo, id);
      if (chunk && size === 0 && this.blobs.storeWhole) return this.storeWhole(repo, id, digest, algorithm, chunk);
      if (chunk) {
        const limit = this.checkChunk(size, chunk);
        try {
          await this.blobs.appendUpload(id, chunk.body, limit, size);
        } catch (e) {
          throw this.uploadWriteError(e, id);
        }
      }
      const committed = await this.blobLocks.run(digest, async () => {
        const size = await this.commit(id, digest, algorithm);
        await this.meta.linkBlob(repo, digest, size);
        return size;
      });
      await this.meta.deleteUpload(id);
      return committed;
    });
  }

  /**
   * A monolithic push to a store that takes a whole blob straight under its digest. The write is the
   * commit, so it runs under the blob's lock, as commits do.
   */
  private async storeWhole(repo: string, id: string, digest: string, algorithm: DigestAlgorithm, chunk: ChunkInfo): Promise<number> {
    const limit = this.checkChunk(0, chunk);
    const stored = await this.blobLocks.run(digest, async () => {
      const size = await this.discardOnMismatch(id, async () => {
        try {
          return await this.blobs.storeWhole!(id, chunk.body, limit, digest, algorithm);
        } catch (e) {
          throw this.uploadWriteError(e, id);
        }
      });
      await this.meta.linkBlob(repo, digest, size);
      return size;
    });
    await this.meta.deleteUpload(id);
    return stored;
  }

  private commit(id: string, digest: string, algorithm: DigestAlgorithm): Promise<number> {
    return this.discardOnMismatch(id, () => this.blobs.commitUpload(id, digest, algorithm));
  }

  /** Runs a commit; bytes that do not match the digest end the upload, with DIGEST_INVALID. */
  private async discardOnMismatch(id: string, commit: () => Promise<number>): Promise<number> {
    try {
      return await commit();
    } catch (e) {
      if (e instanceof DigestMismatchError) {
        // The bytes are useless; the client must start over.
        await this.blobs.removeUpload(id);
        await this.meta.deleteUpload(id);
        throw new RegistryError('DIGEST_INVALID', e.message, { expected: e.expected, actual: e.actual });
      }
      throw e;
    }
  }

  async cancelUpload(repo: string, id: string): Promise<void> {
    await this.uploadLocks.run(id, async () => {
      await this.session(repo, id);
      // Bytes first: on a full disk, freeing them is what lets the metadata write succeed.
      await this.blobs.removeUpload(id);
      await this.meta.deleteUpload(id);
    });
  }

  /** Removes sessions nobody touched within the upload TTL, and upload files without a session. */
  async expireUploads(now = Date.now()): Promise<number> {
    const cutoff = now - this.options.uploadTTL;
    let removed = 0;
    for (const upload of await this.meta.uploadsUpdatedBefore(cutoff)) {
      const expired = await this.uploadLocks.run(upload.id, async () => {
        // Re-read under the lock: a chunk may have arrived since the listing (or the upload finished).
        const current = await this.meta.getUpload(upload.id);
        if (!current || current.updatedAt >= cutoff) return false;
        // Bytes first, as in cancelUpload: on a full disk, freeing them lets the metadata write succeed.
        await this.blobs.removeUpload(upload.id);
        await this.meta.deleteUpload(upload.id);
        return true;
      });
      if (expired) removed++;
    }
    for (const id of await this.blobs.listUploads()) {
      if (await this.meta.getUpload(id)) continue;
      // A file with no session: an upload being opened (the file comes before its record), a
      // pull-through fill in progress (it has no session at all), or a crash's leftover. Only the
      // last stops changing, so only files nobody wrote to within the TTL go.
      const modified = await this.blobs.uploadModifiedAt(id);
      if (modified === undefined || modified >= cutoff) continue;
      await this.blobs.removeUpload(id);
      removed++;
    }
    if (removed) this.log.info({ removed }, 'expired abandoned upload sessions');
    return removed;
  }

  // ---- manifests -----------------------------------------------------------------------------

  /** Looks a manifest up by tag or digest; MANIFEST_UNKNOWN when absent (even if the repository is). */
  private async getManifest(repo: string, reference: string): Promise<ManifestRecord> {
    // The hot path: a cached manifest is answered without touching the store.
    const cached = this.manifests.get(repo, reference);
    if (cached) return cached;
    const ref = readReference(reference);
    if (!ref) throw unknownManifest(repo, reference);
    const generation = this.manifests.generation(repo);
    let found: ManifestRecord | undefined;
    try {
      found = ref.kind === 'tag' ? await this.meta.getTaggedManifest(repo, ref.tag) : await this.meta.getManifest(repo, ref.digest);
    } catch (e) {
      // The database does not answer (a replica cut off from PostgreSQL): serve what was last read.
      const known = this.manifests.lastKnown(repo, reference);
      if (known) return known;
      throw e;
    }
    if (found) this.manifests.set(repo, reference, found, generation);
    if (!found) {
      throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${reference} is not known to repository ${repo}`, {
        [ref.kind]: reference,
      });
    }
    return found;
  }

  /**
   * Stores a manifest pushed by tag, or by digest (a tagless push, unless `tagParams`, the `?tag=`
   * query parameters, name tags: each is pointed at the manifest in the same write, and the caller
   * answers them in `OCI-Tag`). Returns the tags set.
   */
  async putManifest(
    repo: string,
    reference: string,
    body: Buffer,
    contentType: string | undefined,
    tagParams: readonly string[] = [],
  ): Promise<{ digest: string; subject?: string; tags: string[] }> {
    const ref = parseReference(reference);
    const tags = ref.kind === 'tag' ? [ref.tag] : tagsOf(tagParams);
    if (tagParams.length > 0) checkTagParams(ref.kind, tagParams);
    if (body.length > this.options.manifestLimit) {
      throw new RegistryError('MANIFEST_INVALID', `manifest is ${body.length} bytes; the limit is ${this.options.manifestLimit}`, undefined, 413);
    }
    const algorithm = ref.kind === 'digest' ? ref.algorithm : 'sha256';
    const digest = `${algorithm}:${createHash(algorithm).update(body).digest('hex')}`;
    if (ref.kind === 'digest' && ref.digest !== digest) {
      throw new RegistryError('DIGEST_INVALID', `manifest body has digest ${digest}, not ${ref.digest} as in the URL`, {
        expected: ref.digest,
        actual: digest,
      });
    }
    const parsed = parseManifest(body, contentType);
    // Checked first for a clear answer without a write; putManifest checks again atomically.
    missingReferences(repo, await this.meta.missingBlobs(repo, parsed.blobRefs), await this.meta.missingManifests(repo, parsed.manifestRefs));
    try {
      await this.meta.putManifest(
        repo,
        { ...manifestRecord(digest, body, parsed), blobRefs: parsed.blobRefs, manifestRefs: parsed.manifestRefs },
        tags,
      );
    } catch (e) {
      if (e instanceof MissingReferencesError) missingReferences(repo, e.blobs, e.manifests);
      throw e;
    }
    this.manifests.invalidate(repo);
    this.proxy?.forgetNotFound(repo, digest);
    for (const tag of tags) this.proxy?.forgetNotFound(repo, tag);
    return { digest, subject: parsed.subject?.digest, tags };
  }

  /** DELETE by digest removes the manifest and its tags; DELETE by tag removes only the tag. */
  async deleteManifest(repo: string, reference: string): Promise<void> {
    // A malformed digest is a bad request (400 DIGEST_INVALID, as distribution answers); a reference
    // that is not even a tag names nothing that could be deleted (404, as for GET).
    if (!looksLikeDigest(reference) && !isValidTag(reference)) throw unknownManifest(repo, reference);
    const ref = parseReference(reference);
    const deleted = ref.kind === 'tag' ? await this.meta.deleteTag(repo, ref.tag) : await this.meta.deleteManifest(repo, ref.digest);
    this.manifests.invalidate(repo);
    if (!deleted) {
      throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${reference} is not known to repository ${repo}`, { [ref.kind]: reference });
    }
  }

  // ---- listings ------------------------------------------------------------------------------

  async listTags(repo: string, limit: number, last?: string, ns?: string): Promise<Page<string>> {
    const route = this.proxy?.route(repo, ns);
    if (route) {
      const all = await this.proxy!.tags(route, repo, async () => (await this.meta.listTags(repo, Number.MAX_SAFE_INTEGER)).items);
      const after = last === undefined ? all : all.filter((t) => t > last);
      return { items: after.slice(0, limit), more: after.length > limit };
    }
    if (!(await this.meta.repositoryExists(repo))) throw new RegistryError('NAME_UNKNOWN', `repository ${repo} is not known to this registry`, { name: repo });
    return this.meta.listTags(repo, limit, last);
  }

  async catalog(limit: number, last?: string): Promise<Page<string>> {
    return this.meta.listRepositories(limit, last);
  }

  async referrers(repo: string, subject: string, artifactType?: string): Promise<ManifestRecord[]> {
    assertDigest(subject);
    return this.meta.referrers(repo, subject, artifactType);
  }
}

/** Tags one push by digest may set with `?tag=` (the spec asks for at least 10). */
export const MAX_TAG_PARAMS = 100;

/** `?tag=` goes with a push by digest, each a valid tag, and not too many of them. */
function checkTagParams(kind: 'tag' | 'digest', tagParams: readonly string[]): void {
  if (kind === 'tag') {
    throw new RegistryError('TAG_INVALID', 'tag query parameters go with a push by digest (PUT /v2/<name>/manifests/<digest>?tag=…), not by tag');
  }
  if (tagParams.length > MAX_TAG_PARAMS) {
    throw new RegistryError('TAG_INVALID', `${tagParams.length} tag query parameters; at most ${MAX_TAG_PARAMS} per push`, { count: tagParams.length }, 414);
  }
  for (const tag of tagParams) assertTag(tag);
}

/** Refuses a pushed manifest whose references the repository does not hold. */
function missingReferences(repo: string, missingBlobs: string[], missingManifests: string[]): void {
  if (missingBlobs.length) {
    throw new RegistryError(
      'MANIFEST_BLOB_UNKNOWN',
      `manifest references ${missingBlobs.length} blob(s) not pushed to ${repo}: ${missingBlobs.join(', ')}`,
      { digests: missingBlobs },
    );
  }
  if (missingManifests.length) {
    throw new RegistryError(
      'MANIFEST_UNKNOWN',
      `index references ${missingManifests.length} manifest(s) not pushed to ${repo}: ${missingManifests.join(', ')}`,
      { digests: missingManifests },
    );
  }
}

/** GET/HEAD/DELETE of a reference that is neither a known tag nor a digest held here. */
function unknownManifest(repo: string, reference: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', `manifest ${truncate(reference)} is not known to repository ${repo}: it is neither a tag nor a digest held here`, {
    reference: truncate(reference),
  });
}
