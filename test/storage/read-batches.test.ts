import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readBatches } from '../../src/storage/read-batches.js';

async function collect(source: Readable, max: number): Promise<Buffer[][]> {
  const batches: Buffer[][] = [];
  for await (const batch of readBatches(source, max)) batches.push(batch);
  return batches;
}

describe('readBatches', () => {
  it('delivers every byte in order', async () => {
    const source = new PassThrough();
    const chunks = Array.from({ length: 20 }, (_, i) => Buffer.alloc(1000, i));
    for (const c of chunks) source.write(c);
    source.end();
    const batches = await collect(source, 4096);
    expect(Buffer.concat(batches.flat()).equals(Buffer.concat(chunks))).toBe(true);
  });

  it('gives a slow sender its chunks as they come, without waiting for a batch to fill', async () => {
    const source = new PassThrough();
    const seen: number[] = [];
    const reading = (async () => {
      for await (const batch of readBatches(source, 1024 * 1024)) seen.push(batch.reduce((n, b) => n + b.length, 0));
    })();
    source.write(Buffer.alloc(10));
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual([10]);
    source.end(Buffer.alloc(5));
    await reading;
    expect(seen).toEqual([10, 5]);
  });

  it('fails at once on a stream destroyed before reading began, instead of waiting forever', async () => {
    const source = new PassThrough();
    // As with a request body, the error was already seen by whoever owns the stream.
    source.on('error', () => undefined);
    source.destroy(new Error('parse error'));
    await new Promise((r) => setImmediate(r));
    await expect(collect(source, 1024)).rejects.toThrow('parse error');
  });

  it('fails when the stream closes before its end', async () => {
    const source = new PassThrough();
    const reading = collect(source, 1024);
    source.write(Buffer.alloc(10));
    setTimeout(() => source.destroy(), 10);
    await expect(reading).rejects.toThrow(/closed before its end/);
  });
});
