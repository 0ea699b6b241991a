// Blob files sent with reused buffers: a buffer goes back to the pool only after the consumer's
// write callback, so a slow consumer must still see every byte exactly as it was read.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobFileStream } from '../../src/storage/blob-file-stream.js';

const MiB = 1024 * 1024;

/** Keeps a copy of each chunk taken when its write completes: a buffer reused too early shows up as wrong bytes. */
class SlowSink extends Writable {
  readonly chunks: Buffer[] = [];
  ended = false;
  constructor(private readonly delayMs = 1) {
    super({ highWaterMark: 1 });
  }
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    setTimeout(() => {
      this.chunks.push(Buffer.from(chunk));
      callback();
    }, this.delayMs);
  }
  override _final(callback: () => void): void {
    this.ended = true;
    callback();
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

describe('BlobFileStream', () => {
  let dir: string;
  const files: Record<string, Buffer> = {};

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-blobfile-'));
    for (const [name, size] of [['a', 5 * MiB + 123], ['b', 3 * MiB], ['empty', 0]] as const) {
      files[name] = randomBytes(size);
      writeFileSync(join(dir, name), files[name]!);
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function stream(name: string, start = 0, end = Infinity): Promise<BlobFileStream> {
    return new BlobFileStream(await open(join(dir, name), 'r'), start, end);
  }

  it('sends a whole file to a slow consumer byte-exact, then ends it', async () => {
    const sink = new SlowSink();
    await (await stream('a')).sendTo(sink);
    expect(sink.ended).toBe(true);
    expect(sink.bytes().equals(files.a!)).toBe(true);
  });

  it('reuses pooled buffers across responses without mixing their bytes (several at once)', async () => {
    const sinks = Array.from({ length: 6 }, () => new SlowSink(2));
    await Promise.all(sinks.map(async (sink, i) => (await stream(i % 2 ? 'a' : 'b')).sendTo(sink)));
    sinks.forEach((sink, i) => expect(sink.bytes().equals(i % 2 ? files.a! : files.b!)).toBe(true));
  });

  it('sends an inclusive byte range, and nothing for an empty blob', async () => {
    const sink = new SlowSink();
    await (await stream('a', MiB - 7, 3 * MiB + 11)).sendTo(sink);
    expect(sink.bytes().equals(files.a!.subarray(MiB - 7, 3 * MiB + 12))).toBe(true);
    const empty = new SlowSink();
    await (await stream('empty', 0, -1)).sendTo(empty);
    expect(empty.ended).toBe(true);
    expect(empty.bytes().length).toBe(0);
  });

  it('rejects when the file is shorter than the range it was opened for', async () => {
    const sink = new SlowSink();
    await expect((await stream('b', 0, 4 * MiB)).sendTo(sink)).rejects.toThrow(/ends before byte/);
    expect(sink.ended).toBe(false);
  });

  it('stops, closing the file, when the consumer goes away mid-blob', async () => {
    const sink = new SlowSink(5);
    const source = await stream('a');
    setTimeout(() => sink.destroy(), 8);
    await source.sendTo(sink);
    expect(source.destroyed).toBe(true);
    expect(sink.bytes().length).toBeLessThan(files.a!.length);
  });

  it('reads as a plain stream too (multipart ranges), whole and by range', async () => {
    const whole: Buffer[] = [];
    for await (const chunk of await stream('a')) whole.push(chunk as Buffer);
    expect(Buffer.concat(whole).equals(files.a!)).toBe(true);
    const part: Buffer[] = [];
    for await (const chunk of await stream('b', 10, 20)) part.push(chunk as Buffer);
    expect(Buffer.concat(part).equals(files.b!.subarray(10, 21))).toBe(true);
  });
});
