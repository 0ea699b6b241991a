// An online, consistent copy of a store that `airlock serve --storage DIR` runs from.
//
// The metadata is copied first with SQLite's online backup API: a snapshot of every row as of one
// moment, taken while the server goes on answering. Then every blob that snapshot records is put
// beside it: hard-linked when the backup is on the same filesystem (blob files are immutable once
// committed, so sharing the inode shares nothing that changes), copied otherwise. A blob removed
// from the store between the snapshot and its turn (cache eviction) is forgotten in the copy too;
// a pull-through cache fetches it again. Upload sessions in progress are not part of a backup.
// `airlock.db` appears in DIR only once everything else is in place.

import { constants } from 'node:fs';
import { copyFile, link, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FsBlobStore } from '../storage/blobstore.js';
import { FsBlobStore as BlobFiles, syncDirectory } from '../storage/blobstore.js';
import { SqliteMetadataStore, type MetadataStore } from '../storage/metadata.js';
import { acquireStorageLock } from './storage-lock.js';

/** What to back a bucket's blobs up with instead: backup copies blob files. */
export const BUCKET_BACKUP_ADVICE = "the bucket with the object store's own tools (versioning, replication, rclone or aws s3 sync)";

export interface BackupSource {
  storage: string;
  meta: MetadataStore;
  blobs: FsBlobStore;
  /** Runs `fn` while nothing else changes this digest's file or rows. */
  withBlobLock<T>(digest: string, fn: () => Promise<T>): Promise<T>;
}

export interface BackupReport {
  dir: string;
  blobs: number;
  bytes: number;
  /** Blob files hard-linked (same filesystem) and copied. */
  linked: number;
  copied: number;
  /** Blobs the snapshot recorded that left the store before they were copied (evicted). */
  forgotten: string[];
  manifests: number;
  seconds: number;
}

export interface BackupProgress {
  grow(items: number, bytes?: number): void;
  advance(items: number, bytes?: number): void;
  note(text: string): void;
}

export class BackupTargetError extends Error {}

const PAGE = 1000;

/** DIR must be new or empty: a backup never mixes with other files. */
async function prepareTarget(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const entries = await readdir(dir);
  if (entries.length > 0) throw new BackupTargetError(`backup directory ${dir} is not empty; give a new or empty directory`);
}

export async function backupStore(source: BackupSource, dir: string, progress?: BackupProgress): Promise<BackupReport> {
  const started = Date.now();
  await prepareTarget(dir);
  // Nobody serves from the backup while it is being written.
  const lock = acquireStorageLock(dir, 'backup');
  const partial = join(dir, 'airlock.db.partial');
  try {
    progress?.note(`copying the metadata of ${source.storage} (SQLite online backup)`);
    await source.meta.backupTo(partial);
    const copy = new SqliteMetadataStore(partial);
    const report: BackupReport = { dir, blobs: 0, bytes: 0, linked: 0, copied: 0, forgotten: [], manifests: (await copy.totals()).manifests, seconds: 0 };
    try {
      // Uploads in progress stay with the store they belong to.
      for (const upload of await copy.allUploads()) await copy.deleteUpload(upload.id);
      const totals = await copy.totals();
      progress?.grow(totals.blobs, totals.bytes);
      const target = new BlobFiles(dir);
      await target.init();
      const dirs = new Set<string>();
      let after = '';
      for (;;) {
        const rows = await copy.blobRowsAfter(after, PAGE);
        if (rows.length === 0) break;
        after = rows[rows.length - 1]!.digest;
        for (const row of rows) {
          const to = target.blobPath(row.digest);
          dirs.add(dirname(to));
          const how = await source.withBlobLock(row.digest, () => placeBlob(source.blobs.blobPath(row.digest), to));
          if (how === 'gone') {
            await copy.forgetBlob(row.digest);
            report.forgotten.push(row.digest);
          } else {
            report[how]++;
            report.blobs++;
            report.bytes += row.size;
          }
          progress?.advance(1, row.size);
        }
      }
      for (const d of dirs) await syncDirectory(d);
      await copyAuthKeys(source.storage, dir);
    } finally {
      await copy.close();
    }
    // Last: airlock.db appearing is what makes the directory a store.
    await rm(`${partial}-wal`, { force: true });
    await rm(`${partial}-shm`, { force: true });
    await rename(partial, join(dir, 'airlock.db'));
    await syncDirectory(dir);
    report.seconds = (Date.now() - started) / 1000;
    return report;
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  } finally {
    lock.release();
  }
}

/** Hard link when possible, else a copy (written beside, fsync'd, renamed). */
async function placeBlob(from: string, to: string): Promise<'linked' | 'copied' | 'gone'> {
  await mkdir(dirname(to), { recursive: true });
  try {
    await link(from, to);
    return 'linked';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'gone';
    if (code === 'EEXIST') return 'linked';
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw e;
  }
  const temp = `${to}.partial`;
  try {
    // A reflink where the filesystem offers one, a plain copy otherwise.
    await copyFile(from, temp, constants.COPYFILE_FICLONE);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !(await exists(from))) return 'gone';
    throw e;
  }
  const fh = await open(temp, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(temp, to);
  return 'copied';
}

/** The token signing key: tokens issued by the server stay valid against its backup. */
async function copyAuthKeys(storage: string, dir: string): Promise<void> {
  const from = join(storage, 'auth');
  let names: string[];
  try {
    names = await readdir(from);
  } catch {
    return;
  }
  await mkdir(join(dir, 'auth'), { recursive: true, mode: 0o700 });
  for (const name of names) {
    if ((await stat(join(from, name))).isFile()) await copyFile(join(from, name), join(dir, 'auth', name));
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

