import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { crashHashThreads, InlineHash, OFF_THREAD_MIN_BYTES, streamHash, type StreamHash } from '../../src/storage/stream-hash.js';

const MiB = 1024 * 1024;

/** Splits bytes into chunks of the given sizes, repeated until the bytes run out. */
function chunked(bytes: Buffer, sizes: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - at);
    chunks.push(bytes.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

/** Feeds the chunks in batches of `perUpdate`, each update awaited as callers do. */
async function feed(hash: StreamHash, chunks: Buffer[], perUpdate = 3): Promise<void> {
  for (let i = 0; i < chunks.length; i += perUpdate) await hash.update(chunks.slice(i, i + perUpdate));
}

const sha = (algorithm: string, bytes: Buffer) => createHash(algorithm).update(bytes).digest('hex');

describe('stream hash on a thread', () => {
  it('digests what it was given, whatever the chunk sizes (slots filled, split and spanned)', async () => {
    // 13 MiB: more than the ring of slots, with chunks from 1 byte to 3 MiB (larger than a slot).
    const bytes = randomBytes(13 * MiB + 12_345);
    for (const sizes of [[65_536], [1, 7, 4096, 100_000], [3 * MiB, 17], [MiB]]) {
      const hash = streamHash('sha256');
      expect(hash).not.toBeInstanceOf(InlineHash);
      await feed(hash, chunked(bytes, sizes));
      expect(await hash.digest()).toBe(sha('sha256', bytes));
    }
  });

  it('computes sha512 too', async () => {
    const bytes = randomBytes(5 * MiB + 3);
    const hash = streamHash('sha512');
    await feed(hash, chunked(bytes, [65_536]));
    expect(await hash.digest()).toBe(sha('sha512', bytes));
  });

  it('a copy continues from the state at the copy, independently of the original', async () => {
    const head = randomBytes(2 * MiB + 5);
    const tailA = randomBytes(3 * MiB);
    const tailB = randomBytes(MiB + 1);
    const hash = streamHash('sha256');
    await feed(hash, chunked(head, [65_536]));
    const copy = await hash.copy();
    await feed(hash, chunked(tailA, [65_536]));
    await feed(copy, chunked(tailB, [100_000]));
    expect(await copy.digest()).toBe(sha('sha256', Buffer.concat([head, tailB])));
    expect(await hash.digest()).toBe(sha('sha256', Buffer.concat([head, tailA])));
  });

  it('keeps many hashes apart when they run at once and wait for slots', async () => {
    const bodies = Array.from({ length: 24 }, (_, i) => randomBytes(3 * MiB + i * 1000));
    const digests = await Promise.all(
      bodies.map(async (bytes, i) => {
        const hash = streamHash('sha256');
        await feed(hash, chunked(bytes, [65_536 + i]), 4);
        return hash.digest();
      }),
    );
    expect(digests).toEqual(bodies.map((b) => sha('sha256', b)));
  });

  it('a dropped hash (even with an update on its way) leaves the thread working for the others', async () => {
    const dropped = streamHash('sha256');
    const pending = dropped.update([randomBytes(2 * MiB)]);
    dropped.dispose();
    await pending;
    const abandoned = streamHash('sha256');
    await abandoned.update([randomBytes(100)]);
    abandoned.dispose();
    await expect(abandoned.digest()).rejects.toThrow(/dropped/);
    const bytes = randomBytes(4 * MiB);
    const hash = streamHash('sha256');
    await feed(hash, chunked(bytes, [65_536]));
    expect(await hash.digest()).toBe(sha('sha256', bytes));
  });

  it('refuses an algorithm it cannot hash as createHash does, and the threads keep working', async () => {
    expect(() => streamHash('no-such-algorithm')).toThrow(/Digest method not supported/);
    expect(() => streamHash('no-such-algorithm', 100)).toThrow(/Digest method not supported/);
    const bytes = randomBytes(2 * MiB);
    const hash = streamHash('SHA256');
    await feed(hash, chunked(bytes, [65_536]));
    expect(await hash.digest()).toBe(sha('sha256', bytes));
  });

  it('a thread that dies fails its hashes with an error, and the next hash gets a new thread', async () => {
    const doomed = streamHash('sha256');
    await doomed.update([randomBytes(2 * MiB)]);
    await crashHashThreads();
    await expect(doomed.digest()).rejects.toThrow();
    const bytes = randomBytes(3 * MiB);
    const hash = streamHash('sha256');
    await feed(hash, chunked(bytes, [65_536]));
    expect(await hash.digest()).toBe(sha('sha256', bytes));
  });

  it('flush lets go of the buffers without changing the digest', async () => {
    const bytes = randomBytes(3 * MiB);
    const hash = streamHash('sha256');
    for (const part of chunked(bytes, [300_000])) {
      await hash.update([part]);
      await hash.flush();
    }
    expect(await hash.digest()).toBe(sha('sha256', bytes));
  });

  it('hashes a body known to be small on the calling thread, with the same result', async () => {
    const bytes = randomBytes(OFF_THREAD_MIN_BYTES - 1);
    const hash = streamHash('sha256', bytes.length);
    expect(hash).toBeInstanceOf(InlineHash);
    await feed(hash, chunked(bytes, [65_536]));
    const copy = await hash.copy();
    expect(await hash.digest()).toBe(sha('sha256', bytes));
    expect(await copy.digest()).toBe(sha('sha256', bytes));
  });
});

describe('the hashing thread and the process', () => {
  const built = fileURLToPath(new URL('../../dist/storage/stream-hash.js', import.meta.url));
  const run = (script: string) => promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 });

  it('keeps a command alive while it waits for a digest, and lets it end once done', async () => {
    // Nothing else keeps this process's event loop alive while the thread hashes: were the thread
    // not holding the process then, it would end early (exit code 13, digest never printed).
    const script = `
      import { streamHash } from ${JSON.stringify(built)};
      const hash = streamHash('sha256');
      await hash.update([Buffer.alloc(9 * 1024 * 1024, 7)]);
      console.log(await hash.digest());
    `;
    // execFile's timeout kills a process the idle thread would hold once the digest is out.
    const { stdout } = await run(script);
    expect(stdout.trim()).toBe(sha('sha256', Buffer.alloc(9 * MiB, 7)));
  });
});
