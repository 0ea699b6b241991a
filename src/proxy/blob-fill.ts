// One upstream blob transfer into the cache, shared by every client that asks for the blob while it
// runs. The bytes go to the clients as they arrive, hashed on the way, and to the disk behind them,
// so a client is never held to the speed of writing new file pages:
// - clients keeping pace take the bytes from memory (the newest few MiB); one that falls behind (or
//   comes late) reads them back from the file, waiting for the disk if need be;
// - the upstream is read no faster than the fastest client takes the bytes (as a plain proxy would
//   be), unless that client stalls;
// - the last byte of a blob of known size is held back until the digest matched, so no client can
//   take unverified bytes for a whole answer;
// - when the disk falls too far behind while clients wait, the fill stops queueing for it (memory
//   stays bounded) and, once the upstream response is over and verified, fetches the rest with a
//   range request: a partial second transfer rather than every client slowed to the disk's pace.
//   With nobody waiting, the disk sets the pace instead.
// - all fills of a cache share one memory budget: past it, each keeps a smaller window, and stops
//   queueing for the disk (clients waiting) or waits for it (nobody waiting).
// A client that goes away does not disturb the others, nor the fill, which completes the cache.

import { randomUUID } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { BlobStore, UploadWriter } from '../storage/blobstore.js';

/**
 * What a fill needs of the blob store: a local file to spool into and tail while it grows, then
 * promoted under its digest. A store whose committed blobs are local files (FsBlobStore) lets late
 * readers keep reading the same file; one that has none (S3BlobStore) answers openCommitted with
 * undefined, and late readers read the stored blob instead.
 */
export interface FillStore extends BlobStore {
  /** Starts the local file a fill spools into. */
  createFill(id: string): Promise<void>;
  uploadWriter(id: string): Promise<UploadWriter>;
  promoteUpload(id: string, digest: string): Promise<void>;
  openUpload(id: string): Promise<FileHandle | undefined>;
  openCommitted(digest: string): Promise<FileHandle | undefined>;
  /** Bytes free where fills spool. */
  freeBytes(): number;
}
import { readBatches } from '../storage/read-batches.js';
import { streamHash, type StreamHash } from '../storage/stream-hash.js';
import type { DigestAlgorithm } from '../registry/names.js';
import type { BlobResult } from './client.js';

/** The newest bytes kept in memory for clients keeping pace. */
const WINDOW = 8 * 1024 * 1024;
/** The window while the fills together hold more than their budget. */
const TIGHT_WINDOW = 1024 * 1024;
/** Upstream bytes taken per step: what is buffered, up to this much. */
const BATCH = 1024 * 1024;
/** Reads of bytes no longer in memory, and what a client's stream buffers. */
const READ_CHUNK = 1024 * 1024;
/** A client taking nothing for this long no longer sets the upstream's pace. */
const STALL_MS = 1000;

interface Piece {
  offset: number;
  buffer: Buffer;
}

/**
 * What the fills of one cache hold in memory, against one budget (many cold layers at once), and
 * how far one fill's disk writes may lag behind what it received before it stops queueing them.
 * The default lag leaves one fill (with its window) under the budget: a disk that stalls for a
 * moment (measured before files were written with O_DIRECT: 2–4 MiB page-cache writes taking up
 * to 95 ms on a VM whose memory is faulted in again) then costs no second upstream transfer;
 * 16 MiB cost a range request in most cold layers there.
 */
export class FillMemory {
  held = 0;
  constructor(
    readonly budget = 64 * 1024 * 1024,
    readonly diskLag = 48 * 1024 * 1024,
  ) {}

  get tight(): boolean {
    return this.held > this.budget;
  }
}

/** Fetches the blob's bytes from `from` on (the upstream may send it whole instead). */
export type ResumeFetch = (from: number) => Promise<BlobResult>;

export class BlobFill {
  readonly uploadId = randomUUID();
  /** Bytes received from the upstream (and hashed) so far. */
  received = 0;
  /** Bytes in the cache file so far. */
  written = 0;
  /** Set once every byte arrived and matched the digest: clients may have all of them. */
  verified = false;
  /** Set once the blob is durable under its digest. */
  committed = false;
  failure: Error | undefined;
  /** Resolves when the transfer ends either way; never rejects. */
  settled: Promise<void> = Promise.resolve();

  private readonly hash: StreamHash;
  /** The newest received bytes, in order, for clients keeping pace. */
  private pieces: Piece[] = [];
  /** Bytes in `pieces` and in the disk queue (a buffer in both counts twice), in the shared budget too. */
  private heldBytes = 0;
  private diskQueue: Buffer[] = [];
  private queuedBytes = 0;
  private receivedAll = false;
  /** Where the disk stopped taking the stream's bytes; the rest comes from a range request. */
  private restFrom: number | undefined;
  /** The stream's hash state at restFrom, continued over the bytes fetched again. */
  private restHash: StreamHash | undefined;
  private restVerified = false;
  /** Bytes taken from the upstream the second time, skipped ones included. */
  private refetched = 0;
  private readonly readers = new Set<FillReader>();
  /** Cleared when the fastest client stalled: the upstream is then read at its own pace. */
  private pacedByReaders = true;
  private readerMoved: (() => void) | undefined;
  private wake: () => void = () => undefined;
  private changed = new Promise<void>((resolve) => (this.wake = resolve));

  private constructor(
    readonly digest: string,
    private readonly algorithm: DigestAlgorithm,
    /** From the upstream's Content-Length; undefined when it streams without one. */
    readonly size: number | undefined,
    private readonly blobs: FillStore,
    private readonly memory: FillMemory,
  ) {
    this.hash = streamHash(algorithm, size);
  }

  /**
   * Starts taking an upstream response into the blob store and returns at once; the transfer goes
   * on in the background. `onCommitted` records the blob in the metadata before any reader is told
   * the transfer is over; it gets the blob's size and the bytes taken from the upstream for it (more
   * when part was fetched twice).
   */
  static async start(
    blobs: FillStore,
    digest: string,
    algorithm: DigestAlgorithm,
    response: BlobResult,
    resume: ResumeFetch,
    onCommitted: (size: number, transferred: number) => Promise<void> | void,
    memory: FillMemory,
  ): Promise<BlobFill> {
    const fill = new BlobFill(digest, algorithm, response.size, blobs, memory);
    let writer: UploadWriter;
    try {
      await blobs.createFill(fill.uploadId);
      writer = await blobs.uploadWriter(fill.uploadId);
    } catch (e) {
      response.abort();
      await blobs.removeUpload(fill.uploadId).catch(() => undefined);
      throw e;
    }
    fill.settled = fill.transfer(response, writer, resume, onCommitted).then(
      () => fill.finish(undefined),
      (e: unknown) => fill.finish(e instanceof Error ? e : new Error(String(e))),
    );
    return fill;
  }

  private async transfer(response: BlobResult, writer: UploadWriter, resume: ResumeFetch, onCommitted: (size: number, transferred: number) => Promise<void> | void): Promise<void> {
    let writerOpen = true;
    try {
      // Either side failing stops the other; both are waited for, so no write is still running below.
      const halt = (e: unknown) => {
        this.failure ??= e instanceof Error ? e : new Error(String(e));
        response.abort();
        this.notify();
      };
      await Promise.all([this.receive(response).catch(halt), this.writeQueued(writer).catch(halt)]);
      if (this.failure) throw this.failure;
      if (this.restFrom !== undefined) await this.fetchRest(writer, resume);
      writerOpen = false;
      await writer.close();
      await this.blobs.promoteUpload(this.uploadId, this.digest);
      // Awaited: the blob is recorded before any reader is told the transfer is over.
      await onCommitted(this.written, this.received + this.refetched);
      this.committed = true;
    } catch (e) {
      response.abort();
      if (writerOpen) await writer.close().catch(() => undefined);
      await this.blobs.removeUpload(this.uploadId).catch(() => undefined);
      throw e;
    }
  }

  /** Takes the upstream response: hashed, kept for the readers, queued for the disk. */
  private async receive(response: BlobResult): Promise<void> {
    for await (const batch of readBatches(response.body, BATCH)) {
      if (this.failure) throw this.failure;
      let hashFrom = 0;
      for (let i = 0; i < batch.length; i++) {
        if (!this.take(batch[i]!)) continue;
        // The disk stops taking the stream here: the rest's hash continues from this byte's state.
        await this.hash.update(batch.slice(hashFrom, i));
        this.restHash = await this.hash.copy();
        hashFrom = i;
      }
      await this.hash.update(hashFrom === 0 ? batch : batch.slice(hashFrom));
      this.trim();
      this.notify();
      // Nobody is waiting on the stream: the disk sets the pace rather than memory filling up.
      while (this.restFrom === undefined && this.readers.size === 0 && this.diskTooFarBehind(0) && !this.failure) await this.changed;
      await this.keepWithinReach();
    }
    this.receivedAll = true;
    this.notify();
    if (this.size !== undefined && this.received !== this.size) {
      throw new Error(`upstream sent ${this.received} of ${this.size} bytes of blob ${this.digest}`);
    }
    const actual = `${this.algorithm}:${await this.hash.digest()}`;
    if (actual !== this.digest) throw new Error(`upstream sent bytes for blob ${this.digest} that hash to ${actual}`);
    this.verified = true;
    this.notify();
  }

  /**
   * Waits while the fastest client is a window behind: bytes it would otherwise have to read back
   * from the file (or, once the disk stopped taking the stream, wait for until the rest is fetched).
   */
  private async keepWithinReach(): Promise<void> {
    while (this.pacedByReaders && !this.failure && this.readers.size > 0 && this.received - this.leadingPosition() > this.window()) {
      const moved = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), STALL_MS);
        this.readerMoved = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      this.readerMoved = undefined;
      if (!moved) this.pacedByReaders = false;
    }
  }

  private leadingPosition(): number {
    let leading = 0;
    for (const reader of this.readers) leading = Math.max(leading, reader.position);
    return leading;
  }

  /** Called by readers as they take bytes (and when they go), so a paused upstream read resumes. */
  readerProgressed(): void {
    this.readerMoved?.();
  }

  /** The newest bytes kept in memory for clients: less when the fills together are over budget. */
  private window(): number {
    return this.memory.tight ? TIGHT_WINDOW : WINDOW;
  }

  /** True when the disk queue (with `more` bytes added) is longer than this fill may keep. */
  private diskTooFarBehind(more: number): boolean {
    return this.queuedBytes + more > this.memory.diskLag || (this.memory.tight && this.queuedBytes > 0);
  }

  /**
   * Keeps a received chunk for the readers and queues it for the disk (the caller hashes it).
   * Returns true when the disk stops taking the stream at this chunk.
   */
  private take(chunk: Buffer): boolean {
    let diskStopsHere = false;
    if (this.restFrom === undefined && this.readers.size > 0 && this.diskTooFarBehind(chunk.length)) {
      this.restFrom = this.received;
      diskStopsHere = true;
    }
    this.pieces.push({ offset: this.received, buffer: chunk });
    this.hold(chunk.length);
    this.received += chunk.length;
    if (this.restFrom === undefined) {
      this.diskQueue.push(chunk);
      this.queuedBytes += chunk.length;
      this.hold(chunk.length);
    }
    return diskStopsHere;
  }

  /** Writes what the stream queued for the disk, in order, as it comes. */
  private async writeQueued(writer: UploadWriter): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.diskQueue.length > 0) {
        const batch = this.diskQueue;
        let bytes = 0;
        for (const buffer of batch) bytes += buffer.length;
        this.diskQueue = [];
        await writer.write(batch, bytes);
        this.queuedBytes -= bytes;
        this.hold(-bytes);
        this.written += bytes;
        this.trim();
        this.notify();
        continue;
      }
      if (this.receivedAll) return;
      await this.changed;
    }
  }

  /** The bytes the disk did not take from the stream, fetched again and checked against the digest. */
  private async fetchRest(writer: UploadWriter, resume: ResumeFetch): Promise<void> {
    const response = await resume(this.written);
    const hash = this.restHash!;
    // An upstream that ignores Range sends the whole blob again: skip what the file already has.
    let skip = this.written - response.offset;
    try {
      for await (const batch of readBatches(response.body, BATCH)) {
        let buffers = batch;
        for (const chunk of batch) this.refetched += chunk.length;
        if (skip > 0) {
          buffers = [];
          for (const chunk of batch) {
            if (skip >= chunk.length) skip -= chunk.length;
            else {
              buffers.push(skip > 0 ? chunk.subarray(skip) : chunk);
              skip = 0;
            }
          }
        }
        let bytes = 0;
        for (const buffer of buffers) bytes += buffer.length;
        if (bytes === 0) continue;
        if (this.written + bytes > this.received) throw new Error(`upstream sent more than ${this.received} bytes of blob ${this.digest} the second time`);
        await Promise.all([writer.write(buffers, bytes), hash.update(buffers)]);
        this.written += bytes;
        this.notify();
      }
    } catch (e) {
      response.abort();
      throw e;
    }
    if (this.written !== this.received) throw new Error(`upstream sent ${this.written} of ${this.received} bytes of blob ${this.digest} the second time`);
    const actual = `${this.algorithm}:${await hash.digest()}`;
    if (actual !== this.digest) throw new Error(`upstream sent the rest of blob ${this.digest} differently the second time (hashes to ${actual})`);
    this.restVerified = true;
    this.notify();
  }

  /** Drops pieces out of the window (the disk queue keeps its own references). */
  private trim(): void {
    let keepFrom = this.received - this.window();
    // The fastest client's next bytes stay while it sets the pace: it may be a batch further behind.
    if (this.pacedByReaders && this.readers.size > 0) keepFrom = Math.min(keepFrom, this.leadingPosition());
    let drop = 0;
    let dropped = 0;
    for (const { offset, buffer } of this.pieces) {
      if (offset + buffer.length > keepFrom) break;
      drop += 1;
      dropped += buffer.length;
    }
    if (drop > 0) {
      this.pieces.splice(0, drop);
      this.hold(-dropped);
    }
  }

  private hold(bytes: number): void {
    this.heldBytes += bytes;
    this.memory.held += bytes;
  }

  private finish(failure: Error | undefined): void {
    this.failure = failure;
    // A failed transfer leaves its running digests unfinished (no-ops for finished ones).
    this.hash.dispose();
    this.restHash?.dispose();
    this.pieces = [];
    this.hold(-this.heldBytes);
    this.diskQueue = [];
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.changed = new Promise<void>((resolve) => (this.wake = resolve));
    wake();
  }

  /** Resolves at the next change of state: bytes received or written, verification, the end. */
  whenChanged(): Promise<void> {
    return this.changed;
  }

  /** How far readers may take bytes from memory: all of them once verified, else all but the last. */
  memoryLimit(): number {
    return this.verified || this.size === undefined ? this.received : Math.min(this.received, this.size - 1);
  }

  /** How far readers may take bytes from the file, by the same rule for the bytes it holds. */
  fileLimit(): number {
    const trusted = this.restFrom === undefined ? this.verified : this.restVerified;
    return trusted || this.size === undefined ? this.written : Math.min(this.written, this.size - 1);
  }

  /** True when a reader at `position` has had the whole blob. */
  isComplete(position: number): boolean {
    return this.verified && position >= this.received;
  }

  /** The bytes from `position` (before `limit`) if they are in memory. */
  bytesAt(position: number, limit: number): Buffer | undefined {
    const pieces = this.pieces;
    if (position >= limit || pieces.length === 0 || position < pieces[0]!.offset) return undefined;
    let lo = 0;
    let hi = pieces.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (pieces[mid]!.offset <= position) lo = mid;
      else hi = mid - 1;
    }
    const { offset, buffer } = pieces[lo]!;
    if (position >= offset + buffer.length) return undefined;
    return buffer.subarray(position - offset, Math.min(buffer.length, limit - offset));
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
    if (!fh) {
      const stored = await this.blobs.open(this.digest, range);
      if (!stored) throw new Error(`blob ${this.digest} vanished right after it was cached`);
      return stored;
    }
    const reader: FillReader = new FillReader(this, fh, range?.start ?? 0, range?.end, () => {
      this.readers.delete(reader);
      this.readerProgressed();
    });
    this.readers.add(reader);
    return reader;
  }

  /**
   * The upload file while the fill runs; the committed blob (same bytes, renamed) once it is done;
   * undefined once done when the store keeps no local file of it.
   */
  private async open(): Promise<FileHandle | undefined> {
    if (!this.over) {
      const fh = await this.blobs.openUpload(this.uploadId);
      if (fh) return fh;
    }
    await this.settled;
    if (this.failure) throw this.failure;
    return this.blobs.openCommitted(this.digest);
  }
}

/** One client's view of a fill: memory while it keeps pace, the file when it falls behind. */
class FillReader extends Readable {
  private waiting = false;

  constructor(
    private readonly fill: BlobFill,
    private readonly fh: FileHandle,
    public position: number,
    private readonly end: number | undefined,
    private readonly onClose: () => void,
  ) {
    super({ highWaterMark: READ_CHUNK });
  }

  override _read(): void {
    if (!this.waiting) this.pump();
  }

  /** Pushes whatever may be handed out now, until the consumer is full or nothing more is there. */
  private pump(): void {
    const fill = this.fill;
    const stop = this.end === undefined ? Infinity : this.end + 1;
    while (!this.destroyed) {
      if (this.position >= stop || fill.isComplete(this.position)) {
        this.push(null);
        return;
      }
      const inMemory = fill.bytesAt(this.position, Math.min(fill.memoryLimit(), stop));
      if (inMemory) {
        this.position += inMemory.length;
        fill.readerProgressed();
        if (!this.push(inMemory)) return;
        continue;
      }
      const fileLimit = Math.min(fill.fileLimit(), stop);
      if (this.position < fileLimit) {
        this.readFile(Math.min(READ_CHUNK, fileLimit - this.position));
        return;
      }
      // Bytes already handed out stay good even if making the cache durable fails afterwards.
      if (fill.failure) {
        this.destroy(fill.failure);
        return;
      }
      this.wait(fill.whenChanged());
      return;
    }
  }

  private readFile(length: number): void {
    const chunk = Buffer.allocUnsafe(length);
    this.wait(
      this.fh.read(chunk, 0, length, this.position).then(({ bytesRead }) => {
        if (bytesRead === 0) throw new Error(`the cache file of ${this.fill.digest} ends before byte ${this.position}`);
        this.position += bytesRead;
        return this.push(bytesRead === length ? chunk : chunk.subarray(0, bytesRead));
      }),
    );
  }

  /** Resumes pumping once `event` settles (unless the consumer is full or the stream is gone). */
  private wait(event: Promise<unknown>): void {
    this.waiting = true;
    event.then(
      (more) => {
        this.waiting = false;
        if (more !== false) this.pump();
      },
      (e: unknown) => {
        this.waiting = false;
        this.destroy(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.onClose();
    this.fh.close().then(
      () => callback(error),
      () => callback(error),
    );
  }
}
