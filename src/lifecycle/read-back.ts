// A blob a pull-through fill has just stored is read back from the disk, in the background, one
// blob at a time.
//
// Why: fills write their files around the page cache (O_DIRECT, see storage/file-appender.ts), so
// the next client asking for the layer, typically another node of the same cluster a moment later,
// would wait for the device (measured: 0.56–0.69 s for 256 MiB against 0.33 s from the page cache)
// and hash the file on the event loop as its first whole read (BlobFileStream's check). Read back
// once the fill's own client has every byte:
// - the file enters the page cache before the next clients come;
// - it is hashed on a hashing thread, so the first whole serve has nothing left to check;
// - a write that went wrong is quarantined (as a corrupt file found while serving is) before a
//   second client could take it.

import type { Logger } from '../log.js';
import type { FsBlobStore } from '../storage/blobstore.js';
import { HASH_CHUNK, hashBlobFile } from './fsck-blobs.js';

/** Blobs waiting past this many are not read back (a burst of fills; their first serve checks them). */
const MAX_WAITING = 1000;

export class ReadBack {
  private readonly waiting: string[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;
  private buffer: Buffer | undefined;

  constructor(
    private readonly blobs: FsBlobStore,
    private readonly log: Logger,
  ) {}

  /** Queues a blob just committed; returns at once. */
  add(digest: string): void {
    if (this.stopped || this.waiting.length >= MAX_WAITING) return;
    this.waiting.push(digest);
    this.running ??= this.drain().finally(() => (this.running = undefined));
  }

  /** Resolves once every blob queued so far was read back (or the queue was stopped). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Stops after the blob being read; what waits is left to its first serve. */
  async close(): Promise<void> {
    this.stopped = true;
    this.waiting.length = 0;
    await this.running;
  }

  private async drain(): Promise<void> {
    for (let digest = this.waiting.shift(); digest !== undefined && !this.stopped; digest = this.waiting.shift()) {
      try {
        // One reused buffer: read-backs run one at a time.
        this.buffer ??= Buffer.allocUnsafe(HASH_CHUNK);
        const state = await hashBlobFile({ blobs: this.blobs }, digest, this.buffer);
        if (state.kind === 'ok') this.blobs.noteVerified(digest);
        else if (state.kind === 'wrong') this.blobs.onCorrupt?.(digest, state.actual);
        // Missing: evicted or collected meanwhile, nothing to read.
      } catch (err) {
        this.log.warn({ digest, err: (err as Error).message }, 'could not read back a blob just cached; its first serve checks it');
      }
    }
    this.buffer = undefined;
  }
}
