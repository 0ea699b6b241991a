import { setImmediate as yieldToRequests } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { runAll, type KeyedLock } from '../registry/keyed-lock.js';
import type { ManifestCache } from '../registry/manifest-cache.js';
import { parseManifest } from '../registry/manifest.js';
import type { BlobStore } from '../storage/blobstore.js';
import type { GcPolicy, MetadataStore } from '../storage/metadata.js';

/** Default grace period: a push whose manifest follows its blobs within this is never cut short. */
export const DEFAULT_GC_GRACE_MS = 3_600_000;

/** Blobs examined per query (a few tens of milliseconds on a large store). */
const PAGE = 1000;
/** Blobs re-checked, locked and removed together: one transaction (one fsync) per batch. */
const BATCH = 256;
/** Removed manifests named in a result; the counts are always complete. */
const LISTED = 1000;

export interface GcOptions {
  /** Decide and report, change nothing. */
  dryRun?: boolean;
  /** Milliseconds: untagged manifests older than this go unless a kept index or subject needs them. */
  untaggedOlderThan?: number;
}

export interface GcResult {
  dryRun: boolean;
  startedAt: number;
  durationMs: number;
  removedManifests: number;
  removedBlobs: number;
  /** Repository links to blobs dropped (a blob still linked elsewhere stays). */
  removedLinks: number;
  freedBytes: number;
  /** The removed manifests, the first LISTED of them. */
  manifests: { repo: string; digest: string }[];
  /** Repositories left without a manifest, no longer listed (catalog, tags/list). */
  forgottenRepositories: number;
  /** Their names, the first LISTED of them. */
  forgotten: string[];
}

export interface GcDeps {
  meta: MetadataStore;
  blobs: BlobStore;
  /** Shared with uploads, mounts and pull-through fills: a blob is never removed while one of them holds it. */
  blobLocks: KeyedLock;
  log: Logger;
  /** Milliseconds: anything written more recently is kept, whatever refers to it. */
  graceMs: number;
  /** Hot manifests of the running server, forgotten for every repository that loses one. */
  manifests?: ManifestCache;
  /** True while a pull-through transfer of the blob is being written. */
  isFilling?: (digest: string) => boolean;
  /** Blob accesses noted in memory (served, asked about): written down before marking, and those since kept. */
  access?: { flush(): Promise<unknown> | void; isPending(digest: string): boolean };
  /** Called with every finished collection (stats). */
  onCollected?: (result: GcResult) => void;
  /** Called after each page of blobs examined (progress bars). */
  onProgress?: (done: number, total: number) => void;
  now?: () => number;
}

/**
 * Online garbage collection. Keeps every manifest reachable from a tag, every manifest pushed by
 * digest (tagless mirrors are content; only `untaggedOlderThan` removes old untagged ones), every
 * child of a kept index, every referrer of a kept manifest, every cached manifest (cache eviction
 * governs those), and every blob a kept manifest references. Uploads in progress live apart (in
 * uploads/) and are never touched. Removes the rest, rows and files.
 *
 * It runs while clients push and pull:
 * - manifests are marked and swept in one store call (one transaction), which no request can interleave with;
 * - blobs are decided against a grace period: anything linked, uploaded, mounted, served or asked
 *   about (HEAD) since `now - grace` is kept, which covers a push whose blobs arrived (or were
 *   found here) but whose manifest has not yet;
 * - each blob is re-checked under its per-digest lock (the one uploads, mounts and fills take)
 *   right before its rows go, and its file goes while the lock is still held.
 */
export class GarbageCollector {
  private queue: Promise<unknown> = Promise.resolve();
  private stopping = false;

  constructor(private readonly deps: GcDeps) {}

  /** Shutdown: a collection under way stops after its current batch (what it removed stays removed). */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.queue;
  }

  /** One collection; runs after any collection already under way. */
  run(options: GcOptions = {}): Promise<GcResult> {
    const next = this.queue.then(() => this.collect(options));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async collect(options: GcOptions): Promise<GcResult> {
    const { meta, log } = this.deps;
    const now = this.deps.now ?? Date.now;
    const startedAt = now();
    const dryRun = options.dryRun ?? false;
    const policy: GcPolicy = {
      graceBefore: startedAt - this.deps.graceMs,
      untaggedBefore: options.untaggedOlderThan === undefined ? undefined : startedAt - options.untaggedOlderThan,
      dryRun,
    };
    const result: GcResult = {
      dryRun,
      startedAt,
      durationMs: 0,
      removedManifests: 0,
      removedBlobs: 0,
      removedLinks: 0,
      freedBytes: 0,
      manifests: [],
      forgottenRepositories: 0,
      forgotten: [],
    };
    try {
      await this.deps.access?.flush();
      await this.recordCachedRefs();
      const manifests = await meta.collectManifests(policy);
      result.removedManifests = manifests.length;
      result.manifests = manifests.slice(0, LISTED).map(({ repo, digest }) => ({ repo, digest }));
      if (!dryRun) for (const repo of new Set(manifests.map((m) => m.repo))) this.deps.manifests?.invalidate(repo);
      const forgotten = await meta.forgetEmptiedRepositories(policy);
      result.forgottenRepositories = forgotten.length;
      result.forgotten = forgotten.slice(0, LISTED);

      const total = (await meta.totals()).blobs;
      let scanned = 0;
      for (let after = ''; !this.stopping; ) {
        const page = await meta.blobSweepCandidates(policy, after, PAGE);
        for (let i = 0; i < page.digests.length && !this.stopping; i += BATCH) {
          const batch = page.digests.slice(i, i + BATCH).filter((d) => !this.busy(d));
          const swept = dryRun ? await meta.sweepBlobs(batch, policy) : await this.sweep(batch, policy);
          for (const s of swept) {
            result.removedLinks += s.links;
            if (s.removed) {
              result.removedBlobs++;
              result.freedBytes += s.size;
            }
          }
        }
        scanned = page.next === undefined ? total : Math.min(scanned + PAGE, total);
        this.deps.onProgress?.(scanned, total);
        if (page.next === undefined) break;
        after = page.next;
        // Let requests in between pages: a collection must not stall the registry.
        await yieldToRequests();
      }
    } finally {
      await meta.endCollection();
    }
    result.durationMs = now() - startedAt;
    await meta.recordGcRun(result);
    this.deps.onCollected?.(result);
    log.info(
      {
        dryRun,
        removedManifests: result.removedManifests,
        removedBlobs: result.removedBlobs,
        removedLinks: result.removedLinks,
        freedBytes: result.freedBytes,
        forgottenRepositories: result.forgottenRepositories,
        durationMs: result.durationMs,
      },
      dryRun ? 'garbage collection (dry run): nothing removed' : 'garbage collection',
    );
    return result;
  }

  /** Re-checks and removes one batch under the blobs' locks; files go before the locks are released. */
  private sweep(batch: string[], policy: GcPolicy) {
    const { meta, blobs, blobLocks } = this.deps;
    return runAll(blobLocks, batch, async () => {
      const swept = await meta.sweepBlobs(batch.filter((d) => !this.busy(d)), policy);
      // Rows first, then files: a crash in between leaves orphan files (fsck removes them), never a row without its file.
      await Promise.all(swept.filter((s) => s.removed).map((s) => blobs.remove(s.digest)));
      return swept;
    });
  }

  /** Being filled from an upstream, or served / asked about since the access times were written. */
  private busy(digest: string): boolean {
    return (this.deps.isFilling?.(digest) ?? false) || (this.deps.access?.isPending(digest) ?? false);
  }

  /**
   * Cached manifests stored before their references were recorded get them now, so the blobs of
   * cached images are not mistaken for unreferenced ones.
   */
  private async recordCachedRefs(): Promise<void> {
    for (const m of await this.deps.meta.manifestsWithoutRefs()) {
      try {
        const parsed = parseManifest(m.content, m.mediaType);
        if (parsed.blobRefs.length || parsed.manifestRefs.length) await this.deps.meta.addManifestRefs(m.repo, m.digest, parsed.blobRefs, parsed.manifestRefs);
      } catch {
        // A type airlock cannot parse references nothing it could tell apart.
      }
    }
  }

}
