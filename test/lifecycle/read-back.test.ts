// The read-back of a blob a fill just stored: a good file counts as checked (its first whole serve
// need not hash it), a bad one goes to the store's corruption handler, a missing one is skipped.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ReadBack } from '../../src/lifecycle/read-back.js';
import { createLogger } from '../../src/log.js';
import { FsBlobStore } from '../../src/storage/blobstore.js';

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('ReadBack', () => {
  let dir: string;
  let blobs: FsBlobStore;
  let readBack: ReadBack;
  const corrupt: [string, string][] = [];

  /** A committed blob file holding `bytes`, under the digest of `as` (the bytes it should hold). */
  function place(bytes: Buffer, as = bytes): string {
    const digest = sha256(as);
    mkdirSync(dirname(blobs.blobPath(digest)), { recursive: true });
    writeFileSync(blobs.blobPath(digest), bytes);
    return digest;
  }

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-readback-'));
    blobs = new FsBlobStore(dir);
    await blobs.init();
    corrupt.length = 0;
    blobs.onCorrupt = (digest, actual) => corrupt.push([digest, actual]);
    readBack = new ReadBack(blobs, createLogger('silent'));
  });
  afterEach(async () => {
    await readBack.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('records good files as checked, large (hashed on a thread) and small', async () => {
    const large = place(randomBytes(6 * 1024 * 1024));
    const small = place(randomBytes(1000));
    expect(blobs.needsCheck(large)).toBe(true);
    readBack.add(large);
    readBack.add(small);
    await readBack.idle();
    expect(blobs.needsCheck(large)).toBe(false);
    expect(blobs.needsCheck(small)).toBe(false);
    expect(corrupt).toEqual([]);
  });

  it('hands a file that does not hash to its digest to the corruption handler, unchecked', async () => {
    const meant = randomBytes(5 * 1024 * 1024);
    const written = Buffer.from(meant);
    written[12345]! ^= 0x01;
    const digest = place(written, meant);
    readBack.add(digest);
    await readBack.idle();
    expect(corrupt).toEqual([[digest, sha256(written)]]);
    expect(blobs.needsCheck(digest)).toBe(true);
  });

  it('skips a blob removed before its turn, and goes on with the next', async () => {
    const gone = sha256(randomBytes(10));
    const next = place(randomBytes(2000));
    readBack.add(gone);
    readBack.add(next);
    await readBack.idle();
    expect(corrupt).toEqual([]);
    expect(blobs.needsCheck(gone)).toBe(true);
    expect(blobs.needsCheck(next)).toBe(false);
  });

  it('takes nothing more once closed', async () => {
    await readBack.close();
    const late = place(randomBytes(100));
    readBack.add(late);
    await readBack.idle();
    expect(blobs.needsCheck(late)).toBe(true);
  });
});
