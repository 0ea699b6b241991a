// One upstream blob transfer being written into the cache. Clients never read the upstream
// response directly: they tail the file the fill writes. So any number of clients share one
// transfer, a client that goes away does not disturb the others (nor the fill, which completes
// the cache), and memory stays flat whatever the blob size.

import { randomUUID } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { FsBlobStore } from '../storage/blobstore.js';
import type { DigestAlgorithm } from '../registry/names.js';
import type { BlobResult } from './client.js';

const READ_CHUNK = 256 * 1024;
const RECENT_WINDOW = 8 * 1024 * 1024;

export class BlobFill {
  readonly uploadId = randomUUID();
  /** Bytes on disk so far. */
  written = 0;
  /** The last few MiB written, so readers keeping pace need not read them back from the file. */
  private recent: { offset: number; buffer: Buffer }[] = [];
  private recentBytes = 0;
  /** Set once every byte arrived and matched the digest: clients may have all of them. */
  verified = false;
  /** Set once the blob is durable under its digest (after verification). */
  committed = false;
  failure: Error | undefined;
  /** Resolves when the transfer ends either way; never rejects. */
  settled: Promise<void> = Promise.resolve();
  private wake: () => void = () => undefined;
  private changed = new Promise<void>((resolve) => (this.wake = resolve));

  private constructor(
    readonly digest: string,
    /** From the upstream's Content-Length; undefined when it streams without one. */
    readonly size: number | undefined,
    private readonly blobs: FsBlobStore,
  ) {}

  /**
   * Starts writing an upstream response into the blob store and returns at once; the transfer goes
   * on in the background. `onCommitted` records the blob in the metadata before any reader is told
   * the transfer is over.
   */
  static async start(
    blobs: FsBlobStore,
    digest: string,
    algorithm: DigestAlgorithm,
    response: BlobResult,
    onCommitted: (size: number) => void,
  ): Promise<BlobFill> {
    const fill = new BlobFill(digest, response.size, blobs);
    try {
      await blobs.createUpload(fill.uploadId);
    } catch (e) {
      response.abort();
      throw e;
    }
    fill.settled = fill.transfer(response, algorithm, onCommitted).then(
      () => fill.finish(undefined),
      (e: unknown) => fill.finish(e instanceof Error ? e : new Error(String(e))),
    );
    return fill;
  }

  private async transfer(response: BlobResult, algorithm: DigestAlgorithm, onCommitted: (size: number) => void): Promise<void> {
    try {
      await this.blobs.appendUpload(this.uploadId, response.body, Infinity, (size, written) => this.progress(size, written));
      if (this.size !== undefined && this.written !== this.size) {
        throw new Error(`upstream sent ${this.written} of ${this.size} bytes of blob ${this.digest}`);
      }
      const size = await this.blobs.verifyUpload(this.uploadId, this.digest, algorithm);
      // The clients may have every byte now; making the cache durable is not their wait.
      this.verified = true;
      this.notify();
      await this.blobs.promoteUpload(this.uploadId, this.digest);
      onCommitted(size);
      this.committed = true;
    } catch (e) {
      response.abort();
      await this.blobs.removeUpload(this.uploadId).catch(() => undefined);
      throw e;
    }
  }

  private progress(size: number, written: Buffer[]): void {
    let offset = this.written;
    for (const buffer of written) {
      this.recent.push({ offset, buffer });
      this.recentBytes += buffer.length;
      offset += buffer.length;
    }
    while (this.recentBytes > RECENT_WINDOW && this.recent.length > 1) this.recentBytes -= this.recent.shift()!.buffer.length;
    this.written = size;
    this.notify();
  }

  /** Bytes from `position` (before `available`) if they are still in the recent window. */
  recentAt(position: number, available: number): Buffer | undefined {
    for (let i = this.recent.length - 1; i >= 0; i--) {
      const { offset, buffer } = this.recent[i]!;
      if (position >= offset + buffer.length) return undefined;
      if (position >= offset) return buffer.subarray(position - offset, Math.min(buffer.length, available - offset));
    }
    return undefined;
  }

  private finish(failure: Error | undefined): void {
    this.failure = failure;
    this.recent = [];
    this.recentBytes = 0;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.changed = new Promise<void>((resolve) => (this.wake = resolve));
    wake();
  }

  private get over(): boolean {
    return this.committed || this.failure !== undefined;
  }

  /**
   * A stream of the blob's bytes [start, end] as they arrive. It errors if the transfer fails, so
   * the client sees a cut-short response, never bytes that were not verified... except the bytes
   * before the failure, which any streaming proxy must send before it can know.
   */
  async reader(range?: { start: number; end: number }): Promise<Readable> {
    const fh = await this.open();
    const fill = this;
    const start = range?.start ?? 0;
    const end = range?.end;
    async function* tail(): AsyncGenerator<Buffer> {
      let position = start;
      for (;;) {
        // The last byte waits for the digest check: with Content-Length sent, handing it out first
        // would let a client take unverified (possibly wrong) bytes for a complete, good answer.
        const releasable = fill.verified || fill.size === undefined ? fill.written : Math.min(fill.written, fill.size - 1);
        const available = end === undefined ? releasable : Math.min(releasable, end + 1);
        if (position < available) {
          // A reader keeping pace takes the bytes just written from memory; one that fell behind
          // (or came late) reads them back from the file.
          const recent = fill.recentAt(position, available);
          if (recent) {
            position += recent.length;
            yield recent;
            continue;
          }
          const length = Math.min(READ_CHUNK, available - position);
          const chunk = Buffer.allocUnsafe(length);
          const { bytesRead } = await fh.read(chunk, 0, length, position);
          position += bytesRead;
          yield bytesRead === length ? chunk : chunk.subarray(0, bytesRead);
          continue;
        }
        if (end !== undefined && position > end) return;
        // Verified bytes are good even if making the cache durable fails afterwards.
        if (fill.verified) return;
        if (fill.failure) throw fill.failure;
        await fill.changed;
      }
    }
    const stream = Readable.from(tail(), { objectMode: false });
    // Closed with the stream, however it ends: a client that leaves before the first read never
    // runs the generator, so a finally inside it would never close the file.
    stream.once('close', () => void fh.close().catch(() => undefined));
    return stream;
  }

  /** The upload file while the fill runs; the committed blob (same bytes, renamed) once it is done. */
  private async open(): Promise<FileHandle> {
    if (!this.over) {
      const fh = await this.blobs.openUpload(this.uploadId);
      if (fh) return fh;
    }
    await this.settled;
    if (this.failure) throw this.failure;
    const fh = await this.blobs.openCommitted(this.digest);
    if (!fh) throw new Error(`blob ${this.digest} vanished right after it was cached`);
    return fh;
  }
}
