import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/**
 * Where damaged content goes instead of being deleted: `<storage>/quarantine/`. A corrupt blob is
 * evidence (of a failing disk, a bad copy, a bug); an operator decides when it is thrown away.
 */
export const QUARANTINE_DIR = 'quarantine';

/**
 * Moves `file` (inside `storage`) into the quarantine under `name`, stamped with the time so a blob
 * that goes bad twice keeps both copies. Returns the new path relative to the storage directory.
 */
export async function quarantineFile(storage: string, file: string, name: string): Promise<string> {
  const dir = join(storage, QUARANTINE_DIR);
  await mkdir(dir, { recursive: true });
  const target = join(dir, `${name}.${quarantineStamp()}`);
  await rename(file, target);
  return relative(storage, target);
}

/** Writes bytes (a corrupt manifest's) into the quarantine as `name`; returns the path relative to the storage. */
export async function quarantineBytes(storage: string, name: string, bytes: Buffer): Promise<string> {
  const dir = join(storage, QUARANTINE_DIR);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, name), bytes);
  return join(QUARANTINE_DIR, name);
}

/** The time, as part of a quarantined name: a blob that goes bad twice keeps both copies. */
export function quarantineStamp(): string {
  return new Date().toISOString().replace(/[:.]/g, '-');
}

/** A digest as a file name: `sha256:ab…` → `sha256-ab…`. */
export function digestFileName(digest: string): string {
  return digest.replace(':', '-');
}
