import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { SqliteMetadataStore } from '../../src/storage/metadata.js';
import { skopeoCopy, listBlobsOfOciLayout } from '../helpers/skopeo.js';

/** Origins recorded in a storage directory (read after its server stopped). */
export async function originsOf(storage: string): Promise<Record<string, string>> {
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  try {
    return Object.fromEntries((await meta.listOrigins()).map((o) => [o.repo, o.origin]));
  } finally {
    await meta.close();
  }
}

/** Every blob file in a storage directory hashes to its name: nothing corrupt on disk. */
export function expectStoreIntact(storage: string): number {
  const root = join(storage, 'blobs', 'sha256');
  let count = 0;
  for (const two of readdirSync(root)) {
    for (const hex of readdirSync(join(root, two))) {
      expect(createHash('sha256').update(readFileSync(join(root, two, hex))).digest('hex')).toBe(hex);
      count++;
    }
  }
  return count;
}

/** Pulls `docker://host/ref` with skopeo (--all) into a fresh OCI layout and returns its blobs by digest. */
export async function pullWithSkopeo(host: string, ref: string, dir: string): Promise<Map<string, Buffer>> {
  await skopeoCopy(`docker://${host}/${ref}`, `oci:${dir}:pulled`, { srcInsecure: true });
  return new Map(listBlobsOfOciLayout(dir).map((b) => [b.digest, readFileSync(b.path)]));
}

/** Runs `sha256sum -c SHA256SUMS` in dir; throws when any file does not match. */
export function checkSums(dir: string): string {
  return execFileSync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: dir, encoding: 'utf8' });
}
