import { isIndexMediaType, parseManifest, type Descriptor } from '../registry/manifest.js';
import type { Progress } from '../commands/progress.js';
import { MissingContentError, type ContentSink, type ContentSource, type CopyItem } from './content.js';
import { verified } from './verify-stream.js';
import { platformMatches, type PlatformFilter } from './platform.js';

/** What a copy did, for the summary every command prints. */
export interface CopyTally {
  images: number;
  manifests: number;
  blobs: number;
  bytes: number;
  /** Content already at the destination: not transferred again. */
  presentItems: number;
  presentBytes: number;
  /** Platforms of an index left out by --filter-by-os. */
  filteredPlatforms: number;
  /** Images the source no longer has (--skip-missing). */
  missing: { label: string; reason: string }[];
  /** Images that could not be copied, and why. */
  failed: { label: string; reason: string }[];
}

export function emptyTally(): CopyTally {
  return { images: 0, manifests: 0, blobs: 0, bytes: 0, presentItems: 0, presentBytes: 0, filteredPlatforms: 0, missing: [], failed: [] };
}

export interface CopyOptions {
  filter?: PlatformFilter;
  /** Walk and count, write nothing. */
  dryRun?: boolean;
  /** Images copied at once. */
  concurrency?: number;
  /** A source image that is gone is listed, not a failure. */
  skipMissing?: boolean;
  /** Stop starting new images after the first failure (sync); else go on and report all (import). */
  stopOnFailure?: boolean;
  /** Decides whether an error means "the source no longer has this image". */
  isMissing?: (e: unknown) => boolean;
  /** Blobs the destination must not receive (export --since: an earlier export carried them). */
  exclude?: ReadonlySet<string>;
  progress?: Progress;
}

/**
 * Copies images from a source to a sink, each whole or not at all: blobs first (each verified
 * against its digest while it streams), then child manifests, then the manifest with its tag, so
 * the destination never shows a manifest whose content is not all there. What the sink already
 * has is skipped, which is also what makes a rerun after a crash resume where it stopped.
 */
export class Copier {
  readonly tally = emptyTally();
  /** Blobs being written right now, so two images sharing a layer transfer it once. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly source: ContentSource,
    private readonly sink: ContentSink,
    private readonly options: CopyOptions = {},
  ) {}

  /** Copies every item (the caller then flushes the sink: a layout writes its index.json then). */
  async copyAll(items: CopyItem[]): Promise<void> {
    const queue = [...items];
    let stop = false;
    const worker = async () => {
      for (let item = queue.shift(); item && !stop; item = queue.shift()) {
        try {
          await this.copyImage(item);
        } catch (e) {
          const reason = (e as Error).message;
          if (this.options.skipMissing && (e instanceof MissingContentError || this.options.isMissing?.(e))) {
            this.tally.missing.push({ label: item.label, reason });
            this.options.progress?.note(`skipped ${item.label}: ${reason}`);
          } else {
            this.tally.failed.push({ label: item.label, reason });
            this.options.progress?.note(`failed ${item.label}: ${reason}`);
            if (this.options.stopOnFailure) stop = true;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.options.concurrency ?? 1) }, worker));
  }

  /** Copies one image (an index with its children, or a single manifest) and records its origin. */
  async copyImage(item: CopyItem): Promise<void> {
    await this.copyManifest(item, item.reference, { tag: item.tag, top: true, origin: item.origin });
    if (item.origin && !this.options.dryRun) await this.sink.setOrigin(item.destRepo, item.origin);
    if (this.options.dryRun) {
      const target = item.tag !== undefined ? `${item.destRepo}:${item.tag}` : `${item.destRepo}@${item.reference}`;
      this.options.progress?.note(`would copy ${item.label} → ${target}`);
    }
    this.tally.images++;
  }

  private async copyManifest(
    item: CopyItem,
    reference: string,
    placement: { tag?: string; top: boolean; origin?: string },
    expectedMediaType?: string,
  ): Promise<void> {
    const progress = this.options.progress;
    if (placement.top) progress?.grow(1);
    const manifest = await this.source.manifest(item.srcRepo, reference);
    const parsed = parseManifest(manifest.bytes, manifest.mediaType ?? expectedMediaType);

    if (parsed.isIndex && placement.top && this.options.filter) {
      // Like `oc image mirror --filter-by-os`: the tag then names the one matching platform image.
      const children = (JSON.parse(manifest.bytes.toString('utf8')) as { manifests: Descriptor[] }).manifests;
      const match = children.find((c) => platformMatches(c.platform, this.options.filter!));
      if (!match) throw new MissingContentError(`${item.label} has no platform matching ${this.options.filter.text}`, manifest.digest);
      this.tally.filteredPlatforms += children.length - 1;
      await this.copyManifest(item, match.digest, placement, match.mediaType);
      return;
    }

    // A manifest the sink holds whole: everything it references is there already.
    if (await this.sink.hasManifest(item.destRepo, manifest.digest)) {
      this.tally.presentItems++;
      this.tally.presentBytes += manifest.bytes.length;
      progress?.advance(1, 0);
      if (placement.tag !== undefined || placement.top) await this.putManifest(item, manifest.digest, manifest.bytes, parsed.mediaType, placement);
      return;
    }

    if (parsed.isIndex) {
      const children = (JSON.parse(manifest.bytes.toString('utf8')) as { manifests: Descriptor[] }).manifests;
      progress?.grow(children.length);
      for (const child of children) await this.copyManifest(item, child.digest, { top: false }, child.mediaType);
    } else {
      const doc = JSON.parse(manifest.bytes.toString('utf8')) as { config: Descriptor; layers?: Descriptor[] };
      const sizes = new Map<string, number>([[doc.config.digest, doc.config.size], ...(doc.layers ?? []).map((l) => [l.digest, l.size] as [string, number])]);
      const blobs = parsed.blobRefs.map((digest) => ({ digest, size: sizes.get(digest) }));
      progress?.grow(blobs.length, blobs.reduce((sum, b) => sum + (b.size ?? 0), 0));
      for (const blob of blobs) await this.copyBlob(item, blob.digest, blob.size);
    }
    await this.putManifest(item, manifest.digest, manifest.bytes, parsed.mediaType, placement);
    this.tally.manifests++;
    progress?.advance(1, 0);
  }

  private async putManifest(item: CopyItem, digest: string, bytes: Buffer, mediaType: string, placement: { tag?: string; top: boolean; origin?: string }) {
    if (this.options.dryRun) return;
    await this.sink.putManifest(item.destRepo, digest, bytes, mediaType, placement);
  }

  private async copyBlob(item: CopyItem, digest: string, size: number | undefined): Promise<void> {
    const key = `${item.destRepo}@${digest}`;
    const running = this.inFlight.get(key);
    if (running) {
      await running;
      return;
    }
    const work = this.transferBlob(item, digest, size);
    this.inFlight.set(key, work);
    try {
      await work;
    } finally {
      this.inFlight.delete(key);
    }
  }

  private async transferBlob(item: CopyItem, digest: string, size: number | undefined): Promise<void> {
    const progress = this.options.progress;
    if (this.options.exclude?.has(digest) || (await this.sink.hasBlob(item.destRepo, digest))) {
      this.tally.presentItems++;
      this.tally.presentBytes += size ?? 0;
      progress?.advance(1, size ?? 0);
      return;
    }
    if (this.options.dryRun) {
      this.tally.blobs++;
      this.tally.bytes += size ?? 0;
      progress?.advance(1, size ?? 0);
      return;
    }
    const blob = await this.source.blob(item.srcRepo, digest, size);
    let counted = 0;
    const stream = verified(blob.stream, digest, blob.size ?? size, blob.where, (n) => {
      counted += n;
      progress?.advance(0, n);
    });
    try {
      await this.sink.putBlob(item.destRepo, digest, blob.size ?? size, stream);
    } catch (e) {
      stream.destroy();
      // Bytes counted for a failed transfer are not progress.
      progress?.advance(0, -counted);
      throw e;
    }
    this.tally.blobs++;
    this.tally.bytes += counted;
    progress?.advance(1, 0);
  }
}
