import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { constants, mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileAppender } from '../../src/storage/file-appender.js';

/** Bytes that differ at every offset, so a misplaced or repeated slice shows. */
function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 12)) & 255;
  return out;
}

/** Whether the file system under `dir` takes O_DIRECT at all (tmpfs did not before Linux 6.6). */
async function takesDirectIO(dir: string): Promise<boolean> {
  const probe = join(dir, 'probe');
  await writeFile(probe, '');
  try {
    await (await open(probe, constants.O_WRONLY | constants.O_DIRECT)).close();
    return true;
  } catch {
    return false;
  }
}

describe('FileAppender', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'airlock-appender-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('appends writes of every shape in order: unaligned heads and tails, several slabs, empty buffers', async () => {
    const path = join(dir, 'upload');
    await writeFile(path, pattern(1000, 0));
    const expected = [pattern(1000, 0)];
    const file = await FileAppender.open(path);
    expect(file.size).toBe(1000);
    // A 4 KiB-aligned run after an unaligned start, a write smaller than a block, more in one call
    // than the slabs one write may borrow (8 MiB), a call spread over many small buffers, and zero-length buffers.
    const writes = [
      [pattern(3096, 1), pattern(8192, 2)],
      [pattern(10, 3)],
      [pattern(9.5 * 1024 * 1024 + 123, 4)],
      Array.from({ length: 50 }, (_, i) => pattern(4000 + i, 10 + i)),
      [Buffer.alloc(0), pattern(4096, 5), Buffer.alloc(0)],
    ];
    for (const buffers of writes) {
      const bytes = buffers.reduce((n, b) => n + b.length, 0);
      await file.write(buffers, bytes);
      expected.push(...buffers);
    }
    const total = Buffer.concat(expected);
    expect(file.size).toBe(total.length);
    await file.close();
    expect((await readFile(path)).equals(total)).toBe(true);

    // Opened again (the next PATCH of a chunked push), it goes on from the file's unaligned end.
    const again = await FileAppender.open(path);
    expect(again.size).toBe(total.length);
    const more = pattern(3 * 1024 * 1024, 99);
    await again.write([more], more.length);
    await again.close();
    expect((await readFile(path)).equals(Buffer.concat([total, more]))).toBe(true);
  });

  it('keeps every file whole when more transfers write at once than the aligned slabs serve (the rest go buffered)', async () => {
    // Three writers of 8 MiB calls against a pool of 16 slabs: at least one call finds none free.
    const contents = [0, 1, 2].map((i) => Array.from({ length: 4 }, (_, k) => pattern(8 * 1024 * 1024 + 777, i * 10 + k)));
    await Promise.all(
      contents.map(async (writes, i) => {
        const path = join(dir, `upload-${i}`);
        await writeFile(path, '');
        const file = await FileAppender.open(path);
        try {
          for (const bytes of writes) await file.write([bytes], bytes.length);
        } finally {
          await file.close();
        }
      }),
    );
    for (const [i, writes] of contents.entries()) expect((await readFile(join(dir, `upload-${i}`))).equals(Buffer.concat(writes))).toBe(true);
  });

  it('sends the aligned middle of a write straight to the device where the file system allows it, unless told not to', async () => {
    const path = join(dir, 'upload');
    await writeFile(path, '');
    const file = await FileAppender.open(path);
    try {
      const bytes = pattern(2 * 1024 * 1024, 7);
      await file.write([bytes], bytes.length);
      expect(file.writesDirect).toBe(await takesDirectIO(dir));
      expect((await readFile(path)).equals(bytes)).toBe(true);
    } finally {
      await file.close();
    }
    // A spool read back at once stays in the page cache.
    const spool = await FileAppender.open(join(dir, 'spool'), { direct: false });
    try {
      const bytes = pattern(2 * 1024 * 1024, 8);
      await spool.write([bytes], bytes.length);
      expect(spool.writesDirect).toBe(false);
      expect((await readFile(join(dir, 'spool'))).equals(bytes)).toBe(true);
    } finally {
      await spool.close();
    }
  });

  it('fails a write that does not fit with ENOSPC and keeps the bytes written before (a real full volume, as root)', async () => {
    const mountPoint = mkdtempSync(join(tmpdir(), 'airlock-appender-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
    try {
      const path = join(mountPoint, 'upload');
      await writeFile(path, '');
      const file = await FileAppender.open(path);
      const fits = pattern(3 * 1024 * 1024 + 100, 1);
      await file.write([fits], fits.length);
      const tooMuch = pattern(2 * 1024 * 1024, 2);
      await expect(file.write([tooMuch], tooMuch.length)).rejects.toMatchObject({ code: 'ENOSPC' });
      await file.close();
      expect((await readFile(path)).subarray(0, fits.length).equals(fits)).toBe(true);
    } finally {
      execFileSync('umount', ['-l', mountPoint]);
      rmSync(mountPoint, { recursive: true, force: true });
    }
  });

  it('writes through the page cache where no aligned memory can be had (a process under a tight ulimit -v)', async () => {
    // Node runs under 4 GB of address space, but a WebAssembly memory (which reserves far more) cannot
    // be made there: the built appender must fall back, not fail.
    const built = fileURLToPath(new URL('../../dist/storage/file-appender.js', import.meta.url));
    const path = join(dir, 'upload');
    const script = `
      import { FileAppender } from ${JSON.stringify(built)};
      import { writeFileSync } from 'node:fs';
      writeFileSync(${JSON.stringify(path)}, '');
      const file = await FileAppender.open(${JSON.stringify(path)});
      const bytes = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
      await file.write([bytes], bytes.length);
      await file.close();
      let memory = 'made';
      try { new WebAssembly.Memory({ initial: 256, maximum: 256 }); } catch { memory = 'refused'; }
      console.log(memory);`;
    const out = execFileSync('bash', ['-c', 'ulimit -v 4000000 && exec node --input-type=module -e "$0"', script], { encoding: 'utf8' });
    expect(out.trim()).toBe('refused');
    expect((await readFile(path)).equals(Buffer.alloc(3 * 1024 * 1024 + 5, 7))).toBe(true);
  });
});
