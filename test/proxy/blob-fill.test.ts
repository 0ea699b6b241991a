// The fill on its own, over a real blob store in a temp directory: the upstream is a stream made
// here, and a disk that falls behind is the real store with each write delayed.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobFill, FillMemory } from '../../src/proxy/blob-fill.js';
import type { BlobResult } from '../../src/proxy/client.js';
import { FsBlobStore, type UploadWriter } from '../../src/storage/blobstore.js';
import { readAll } from './fixtures.js';

const MiB = 1024 * 1024;

/** The real store, with every upload write waiting `delayMs` first: a disk slower than the network. */
class SlowDiskStore extends FsBlobStore {
  constructor(
    root: string,
    private readonly delayMs: number,
  ) {
    super(root);
  }

  override async uploadWriter(id: string): Promise<UploadWriter> {
    const writer = await super.uploadWriter(id);
    return {
      write: async (buffers, bytes) => {
        await sleep(this.delayMs);
        await writer.write(buffers, bytes);
      },
      close: () => writer.close(),
    };
  }
}

/**
 * An upstream response sending `data` from `offset` in 64 KiB chunks, as fast as it is read, with
 * up to 1 MiB buffered like the client's relay of a real response.
 */
function response(data: Buffer, offset = 0): BlobResult {
  function* chunks() {
    for (let o = offset; o < data.length; o += 64 * 1024) yield data.subarray(o, Math.min(o + 64 * 1024, data.length));
  }
  const body = new PassThrough({ highWaterMark: MiB });
  void (async () => {
    for (const chunk of chunks()) {
      if (body.destroyed) return;
      if (!body.write(chunk)) await drainedOrClosed(body);
    }
    body.end();
  })();
  return { size: data.length - offset, offset, body, abort: () => body.destroy() };
}

function drainedOrClosed(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

function digestOf(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

describe('BlobFill', () => {
  let root: string;
  let data: Buffer;
  let digest: string;
  let resumedFrom: number[];

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'airlock-fill-'));
    data = randomBytes(48 * MiB);
    digest = digestOf(data);
    resumedFrom = [];
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  async function fill(store: FsBlobStore, resume: (from: number) => BlobResult = (from) => response(data, from), memory = new FillMemory(64 * MiB, 16 * MiB) /* a 16 MiB lag: 48 MiB blobs on a slow disk reach it */) {
    await store.init();
    const committed: number[] = [];
    const transferred: number[] = [];
    const started = await BlobFill.start(store, digest, 'sha256', response(data), async (from) => {
      resumedFrom.push(from);
      return resume(from);
    }, (size, bytes) => {
      committed.push(size);
      transferred.push(bytes);
    }, memory);
    return { fill: started, committed, transferred };
  }

  async function storedBytes(store: FsBlobStore): Promise<Buffer | undefined> {
    const stream = await store.open(digest);
    return stream && readAll(stream);
  }

  it('with the disk within reach (a blob smaller than the lag allowed): one upstream transfer, exact bytes for the client and the cache', async () => {
    data = randomBytes(12 * MiB);
    digest = digestOf(data);
    const store = new SlowDiskStore(root, 20);
    const { fill: f, committed } = await fill(store);
    const got = await readAll(await f.reader());
    await f.settled;
    expect(got.equals(data)).toBe(true);
    expect(f.failure).toBeUndefined();
    expect(committed).toEqual([data.length]);
    expect((await storedBytes(store))?.equals(data)).toBe(true);
    expect(resumedFrom).toEqual([]);
  });

  it('with a slow disk and a client waiting: the client keeps the stream pace, the cache gets the rest by a range request', async () => {
    const store = new SlowDiskStore(root, 40);
    const { fill: f, committed, transferred } = await fill(store);
    const got = await readAll(await f.reader());
    // The client had every verified byte before the cache file was complete.
    expect(got.equals(data)).toBe(true);
    expect(f.committed).toBe(false);
    await f.settled;
    expect(f.failure).toBeUndefined();
    expect(resumedFrom).toHaveLength(1);
    expect(resumedFrom[0]).toBeGreaterThan(0);
    expect(resumedFrom[0]).toBeLessThan(data.length);
    expect(committed).toEqual([data.length]);
    // What the stats count as taken from the upstream: the blob, plus the part fetched again.
    expect(transferred).toEqual([2 * data.length - resumedFrom[0]!]);
    expect((await storedBytes(store))?.equals(data)).toBe(true);
  });

  it('a client slower than the upstream sets the pace: the fill reads at most a window ahead of it', async () => {
    // The disk (at most 16 MiB per 200 ms) slower than the client (about 256 KiB per ms), so the
    // fill stops queueing for the disk and only the pacing bounds how far the upstream read runs ahead.
    const store = new SlowDiskStore(root, 200);
    const { fill: f } = await fill(store);
    const reader = await f.reader();
    const chunks: Buffer[] = [];
    let consumed = 0;
    let mostAhead = 0;
    let sinceBreak = 0;
    for await (const chunk of reader) {
      chunks.push(chunk as Buffer);
      consumed += (chunk as Buffer).length;
      // Before the client came, the fill read ahead as far as the disk lag allows; from then on, pacing.
      if (consumed > 20 * MiB) mostAhead = Math.max(mostAhead, f.received - consumed);
      sinceBreak += (chunk as Buffer).length;
      if (sinceBreak >= 256 * 1024) {
        sinceBreak = 0;
        await sleep(1);
      }
    }
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    // The 8 MiB window, plus a 1 MiB upstream batch and the client stream's own 1 MiB buffer.
    expect(mostAhead).toBeLessThanOrEqual(10 * MiB + 64 * 1024);
    await f.settled;
    expect((await storedBytes(store))?.equals(data)).toBe(true);
  });

  it('a client joining after the disk fell behind still gets every byte', async () => {
    const store = new SlowDiskStore(root, 40);
    const { fill: f } = await fill(store);
    const first = f.reader().then(readAll);
    await sleep(100);
    const late = await readAll(await f.reader());
    expect((await first).equals(data)).toBe(true);
    expect(late.equals(data)).toBe(true);
    await f.settled;
    expect((await storedBytes(store))?.equals(data)).toBe(true);
  });

  it('an upstream ignoring Range (sending the whole blob again) still completes the cache', async () => {
    const store = new SlowDiskStore(root, 40);
    const { fill: f, committed } = await fill(store, () => response(data, 0));
    expect((await readAll(await f.reader())).equals(data)).toBe(true);
    await f.settled;
    expect(resumedFrom).toHaveLength(1);
    expect(f.failure).toBeUndefined();
    expect(committed).toEqual([data.length]);
    expect((await storedBytes(store))?.equals(data)).toBe(true);
  });

  it('different bytes on the second fetch: nothing is cached, and the client already had the verified blob', async () => {
    const store = new SlowDiskStore(root, 40);
    const other = Buffer.from(data);
    other.writeUInt8(other.readUInt8(other.length - 10) ^ 0xff, other.length - 10);
    const { fill: f, committed } = await fill(store, (from) => response(other, from));
    expect((await readAll(await f.reader())).equals(data)).toBe(true);
    await f.settled;
    expect(f.failure?.message).toMatch(/differently the second time/);
    expect(committed).toEqual([]);
    expect(await storedBytes(store)).toBeUndefined();
    expect(await store.listUploads()).toEqual([]);
  });

  it('with a slow disk and no client: the disk sets the pace, no second transfer', async () => {
    const store = new SlowDiskStore(root, 20);
    const { fill: f, committed } = await fill(store);
    await f.settled;
    expect(resumedFrom).toEqual([]);
    expect(committed).toEqual([data.length]);
    expect((await storedBytes(store))?.equals(data)).toBe(true);
  });

  it('fills share one memory budget: several cold blobs at once on a slow disk stay near it, and complete', async () => {
    const store = new SlowDiskStore(root, 40);
    const memory = new FillMemory(8 * MiB);
    const blobs = [0, 1, 2].map(() => randomBytes(32 * MiB));
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, memory.held)), 1);
    try {
      await store.init();
      const fills = await Promise.all(
        blobs.map((blob) => BlobFill.start(store, digestOf(blob), 'sha256', response(blob), async (from) => response(blob, from), () => undefined, memory)),
      );
      const got = await Promise.all(fills.map(async (f) => readAll(await f.reader())));
      await Promise.all(fills.map((f) => f.settled));
      got.forEach((bytes, i) => expect(bytes.equals(blobs[i]!)).toBe(true));
      for (const [i, f] of fills.entries()) {
        expect(f.failure).toBeUndefined();
        const stored = await store.open(digestOf(blobs[i]!));
        expect(stored && (await readAll(stored)).equals(blobs[i]!)).toBe(true);
      }
    } finally {
      clearInterval(sampler);
    }
    // Each fill may be a batch, a small window and one queued batch over when the budget is reached.
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(8 * MiB + 3 * 4 * MiB);
    expect(memory.held).toBe(0);
  });

  it('bytes that do not match the digest: the client never gets the last byte, nothing is cached', async () => {
    const store = new FsBlobStore(root);
    digest = digestOf(Buffer.from('something else'));
    const { fill: f, committed } = await fill(store);
    const reader = await f.reader();
    let received = 0;
    reader.on('data', (chunk: Buffer) => (received += chunk.length));
    await expect(new Promise((resolve, reject) => reader.on('end', resolve).on('error', reject))).rejects.toThrow(/hash to/);
    expect(received).toBeLessThan(data.length);
    await f.settled;
    expect(committed).toEqual([]);
    expect(await store.listUploads()).toEqual([]);
  });
});
