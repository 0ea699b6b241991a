// Integrity check of a store: every blob file re-hashed (streamed), rows compared with files and
// files with rows, every manifest re-hashed and its references followed. With `repair`, what is
// safe to fix is fixed, and each fix is said: corrupt files are quarantined (never deleted), rows of
// lost blobs are dropped (a pull-through cache fetches them again; a push sends them again), orphan
// files and stale temporaries are removed, blob sizes are corrected.
//
// It runs offline (under the storage lock), inside the server that holds the storage, or beside the
// replicas of a shared store (PostgreSQL, a bucket), while clients push and pull: whatever looks
// wrong is confirmed again under the blob's lock (which pushes, imports and eviction take around
// their file and row changes; across replicas with a shared database) before it is reported or fixed.
// The blobs are files or objects in a bucket (fsck-blobs.ts); the check is the same.

import { createHash } from 'node:crypto';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DanglingRow, MetadataStore } from '../storage/metadata.js';
import { HASH_CHUNK, type BlobEntry, type FileState, type FsckBlobs } from './fsck-blobs.js';
import { digestFileName, quarantineStamp } from './quarantine.js';
import { LOCK_FILE } from './storage-lock.js';

export type ProblemKind =
  | 'corrupt-blob'
  | 'missing-file'
  | 'size-mismatch'
  | 'orphan-file'
  | 'corrupt-manifest'
  | 'dangling-reference'
  | 'dangling-row'
  | 'dangling-upload'
  | 'stale-temporary';

export interface Problem {
  kind: ProblemKind;
  /** What is wrong, by name: a digest, a path relative to the storage, repo@digest, repo:tag. */
  subject: string;
  detail: string;
  /** What --repair did about it. */
  repaired?: string;
  /** Why --repair left it (it cannot be fixed safely by removing or moving something). */
  unrepaired?: string;
}

export interface UnfinishedUpload {
  id: string;
  repo: string;
  bytes: number;
  updatedAt: number;
}

export interface FsckReport {
  /** The store checked: its directory, or its database and bucket. */
  storage: string;
  repair: boolean;
  checked: { blobs: number; bytes: number; files: number; manifests: number; references: number };
  problems: Problem[];
  /** Upload sessions in progress (resumable): not a problem, listed for the operator. */
  unfinishedUploads: UnfinishedUpload[];
  totals: { blobs: number; bytes: number };
  seconds: number;
}

/** What fsck needs of a store; the server passes its own locks so checks and repairs do not race clients. */
export interface FsckStore {
  /** The store, for the report: its directory, or its database and bucket. */
  name: string;
  /** The storage directory whose lock record is looked at; undefined for a shared database's. */
  storage: string | undefined;
  meta: MetadataStore;
  blobs: FsckBlobs;
  /** Runs `fn` while nothing else changes this digest's file or rows. */
  withBlobLock<T>(digest: string, fn: () => Promise<T>): Promise<T>;
  /**
   * Runs `fn` unless a pull-through fill writes this digest (its file lands before its row), and
   * keeps fills of it from starting meanwhile where it can; undefined when one is running.
   */
  unlessFilling<T>(digest: string, fn: () => Promise<T>): Promise<T | undefined>;
  /** Set when a server is running: a session-less upload file may be a fill in progress. */
  live: boolean;
  /** Told when a manifest row was removed, so in-memory copies are dropped. */
  manifestRemoved?(repo: string): void;
}

export interface FsckProgress {
  grow(items: number, bytes?: number): void;
  advance(items: number, bytes?: number): void;
}

export interface FsckOptions {
  repair: boolean;
  progress?: FsckProgress;
  /** Files hashed at once: keeps the disk busy with many small blobs. */
  concurrency?: number;
}

const PAGE = 1000;
/** With a server running, a session-less upload file this fresh may be a fill in progress. */
const LIVE_TEMPORARY_GRACE_MS = 10 * 60_000;

export function problemsRemaining(report: FsckReport): number {
  return report.problems.filter((p) => p.repaired === undefined).length;
}

export async function fsck(store: FsckStore, options: FsckOptions): Promise<FsckReport> {
  const started = Date.now();
  const { meta } = store;
  const report: FsckReport = {
    storage: store.name,
    repair: options.repair,
    checked: { blobs: 0, bytes: 0, files: 0, manifests: 0, references: 0 },
    problems: [],
    unfinishedUploads: [],
    totals: { blobs: 0, bytes: 0 },
    seconds: 0,
  };
  const before = await meta.totals();
  options.progress?.grow(before.blobs + before.manifests, before.bytes);

  await checkBlobRows(store, options, report);
  await checkBlobFiles(store, options, report);
  await checkManifests(store, options, report);
  await checkRows(store, options, report);
  await checkUploads(store, options, report);

  const after = await meta.totals();
  report.totals = { blobs: after.blobs, bytes: after.bytes };
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

// ---- blob rows → files ---------------------------------------------------------------------

async function checkBlobRows(store: FsckStore, options: FsckOptions, report: FsckReport): Promise<void> {
  const concurrency = Math.max(1, options.concurrency ?? 4);
  // One read buffer per worker, reused for every file: no allocation per blob.
  const buffers = Array.from({ length: concurrency }, () => Buffer.allocUnsafeSlow(HASH_CHUNK));
  let after = '';
  for (;;) {
    const rows = await store.meta.blobRowsAfter(after, PAGE);
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.digest;
    let next = 0;
    const worker = async (buffer: Buffer) => {
      while (next < rows.length) {
        const row = rows[next++]!;
        await checkBlob(store, options, report, row.digest, row.size, buffer);
        options.progress?.advance(1, row.size);
      }
    };
    await Promise.all(buffers.slice(0, Math.min(concurrency, rows.length)).map(worker));
  }
}

async function checkBlob(store: FsckStore, options: FsckOptions, report: FsckReport, digest: string, size: number, buffer: Buffer): Promise<void> {
  let state: FileState;
  try {
    state = await store.blobs.hash(digest, buffer, size);
  } catch (e) {
    // An unsupported algorithm or an unreadable file: the blob cannot be served either.
    state = { kind: 'wrong', size: -1, actual: `unreadable (${(e as Error).message})` };
  }
  if (state.kind === 'ok') {
    report.checked.blobs++;
    report.checked.bytes += state.size;
    if (state.size === size) return;
  }
  // Something looks wrong: look again where no push, fill or eviction can be halfway through.
  await store.withBlobLock(digest, async () => {
    const rowSize = await store.meta.blobSize(digest);
    if (rowSize === undefined) return; // evicted or removed meanwhile: nothing left to check
    const now = await store.blobs.hash(digest, buffer, rowSize).catch((e: Error) => ({ kind: 'wrong', size: -1, actual: `unreadable (${e.message})` }) as FileState);
    if (now.kind === 'ok' && now.size === rowSize) return;
    if (now.kind === 'missing') {
      const problem: Problem = { kind: 'missing-file', subject: digest, detail: `recorded (${rowSize} bytes) but ${store.blobs.where(digest)} is missing` };
      if (options.repair) {
        await store.meta.forgetBlob(digest);
        problem.repaired = 'dropped its rows: a pull-through cache fetches it again when asked; pushed content must be pushed again';
      }
      report.problems.push(problem);
      return;
    }
    if (now.kind === 'ok') {
      const problem: Problem = { kind: 'size-mismatch', subject: digest, detail: `recorded as ${rowSize} bytes, its (intact) file has ${now.size}` };
      if (options.repair) {
        await store.meta.setBlobSize(digest, now.size);
        problem.repaired = `recorded size corrected to ${now.size} bytes`;
      }
      report.problems.push(problem);
      return;
    }
    const problem: Problem = { kind: 'corrupt-blob', subject: digest, detail: `${store.blobs.where(digest)} hashes to ${now.actual}` };
    if (options.repair) {
      const moved = await store.blobs.quarantineBlob(digest);
      await store.meta.forgetBlob(digest);
      problem.repaired = `moved to ${moved} and dropped its rows: a pull-through cache fetches it again when asked; pushed content must be pushed again`;
    }
    report.problems.push(problem);
  });
}

// ---- blob files → rows ---------------------------------------------------------------------

/** Everything kept where blobs are: each must be a recorded blob at its own place. */
async function checkBlobFiles(store: FsckStore, options: FsckOptions, report: FsckReport): Promise<void> {
  for await (const entry of store.blobs.entries()) {
    report.checked.files++;
    const digest = entry.digest;
    if (digest !== undefined && (await store.meta.blobSize(digest)) !== undefined) continue;
    if (digest === undefined) {
      await orphan(store, options, report, entry, 'is not a blob at its place (blobs/<algorithm>/<first two hex>/<hex>)');
      continue;
    }
    await store.withBlobLock(digest, async () => {
      // A blob whose row is on its way (a push or an import between storing and recording happens
      // under this lock; a fill holds its digest otherwise) is not an orphan.
      await store.unlessFilling(digest, async () => {
        if ((await store.meta.blobSize(digest)) !== undefined) return;
        await orphan(store, options, report, entry, `holds ${digest} but no row records it`);
      });
    });
  }
}

async function orphan(store: FsckStore, options: FsckOptions, report: FsckReport, entry: BlobEntry, detail: string): Promise<void> {
  const problem: Problem = { kind: 'orphan-file', subject: entry.name, detail };
  if (options.repair) {
    await store.blobs.removeEntry(entry);
    problem.repaired = 'removed';
  }
  report.problems.push(problem);
}

// ---- manifests ------------------------------------------------------------------------------

async function checkManifests(store: FsckStore, options: FsckOptions, report: FsckReport): Promise<void> {
  let after: { repoId: number; digest: string } | undefined;
  for (;;) {
    const rows = await store.meta.manifestRowsAfter(after, PAGE);
    if (rows.length === 0) break;
    const last = rows[rows.length - 1]!;
    after = { repoId: last.repoId, digest: last.digest };
    for (const row of rows) {
      report.checked.manifests++;
      options.progress?.advance(1);
      const algorithm = row.digest.slice(0, row.digest.indexOf(':'));
      let actual: string;
      try {
        actual = `${algorithm}:${createHash(algorithm).update(row.content).digest('hex')}`;
      } catch {
        actual = `(unsupported algorithm ${algorithm})`;
      }
      if (actual === row.digest) continue;
      const subject = `${row.repo}@${row.digest}`;
      const problem: Problem = { kind: 'corrupt-manifest', subject, detail: `stored bytes hash to ${actual}` };
      if (options.repair) {
        const name = `manifest-${row.repo.replace(/\//g, '_')}-${digestFileName(row.digest)}.${quarantineStamp()}`;
        const saved = await store.blobs.quarantineBytes(name, row.content);
        await store.meta.deleteManifest(row.repo, row.digest);
        store.manifestRemoved?.(row.repo);
        problem.repaired = `bytes saved to ${saved}, manifest removed with its tags (a pull-through cache fetches it again; pushed content must be pushed again)`;
      }
      report.problems.push(problem);
    }
  }
}

// ---- rows that point at nothing ------------------------------------------------------------

function describeDangling(row: DanglingRow): { subject: string; detail: string } {
  switch (row.kind) {
    case 'blob-ref':
      return { subject: `${row.repo}@${row.from}`, detail: `references blob ${row.to}, which ${row.repo} does not hold` };
    case 'manifest-ref':
      return { subject: `${row.repo}@${row.from}`, detail: `references manifest ${row.to}, which ${row.repo} does not hold` };
    case 'orphan-ref':
      return { subject: `${row.repo}@${row.from}`, detail: `reference row to ${row.to} left by a manifest that no longer exists` };
    case 'tag':
      return { subject: `${row.repo}:${row.from}`, detail: `tag points at manifest ${row.to}, which ${row.repo} does not hold` };
    case 'link':
      return { subject: `${row.repo} → ${row.to}`, detail: 'repository links a blob that has no row' };
  }
}

async function checkRows(store: FsckStore, options: FsckOptions, report: FsckReport): Promise<void> {
  report.checked.references = await store.meta.countReferences();
  const rows = await store.meta.danglingRows(100_000);
  for (const row of rows) {
    const { subject, detail } = describeDangling(row);
    const reference = row.kind === 'blob-ref' || row.kind === 'manifest-ref';
    const problem: Problem = { kind: reference ? 'dangling-reference' : 'dangling-row', subject, detail };
    if (options.repair) {
      if (reference) {
        problem.unrepaired = `push ${row.to} to ${row.repo} again (or delete the manifest): removing the reference would misdescribe the manifest`;
      } else if (await store.meta.removeDanglingRow(row)) {
        problem.repaired = 'row removed';
        if (row.kind === 'tag') store.manifestRemoved?.(row.repo);
      } else {
        continue; // gone meanwhile
      }
    }
    report.problems.push(problem);
  }
}

// ---- uploads and temporaries ----------------------------------------------------------------

async function checkUploads(store: FsckStore, options: FsckOptions, report: FsckReport): Promise<void> {
  const sessions = new Map((await store.meta.allUploads()).map((u) => [u.id, u]));
  const files = new Set(await store.blobs.listUploads());
  for (const upload of sessions.values()) {
    const bytes = await store.blobs.uploadSize(upload.id);
    if (bytes !== undefined) {
      report.unfinishedUploads.push({ id: upload.id, repo: upload.repo, bytes, updatedAt: upload.updatedAt });
      continue;
    }
    // The session was being opened (its row comes after its file, so not that) or its file was lost.
    if ((await store.meta.getUpload(upload.id)) === undefined) continue;
    const problem: Problem = { kind: 'dangling-upload', subject: `uploads/${upload.id}`, detail: `upload session for ${upload.repo} has no file` };
    if (options.repair) {
      await store.meta.deleteUpload(upload.id);
      problem.repaired = 'session removed (its client must start the upload again)';
    }
    report.problems.push(problem);
  }
  const now = Date.now();
  for (const id of files) {
    if (sessions.has(id)) continue;
    const modified = await store.blobs.uploadModifiedAt(id);
    if (modified === undefined) continue;
    // A server's pull-through fills write session-less files: only ones nobody writes to any more are stale.
    if (store.live && now - modified < LIVE_TEMPORARY_GRACE_MS) continue;
    if (await store.meta.getUpload(id)) continue;
    const problem: Problem = { kind: 'stale-temporary', subject: `uploads/${id}`, detail: 'partial transfer with no upload session (left by a crash or an interrupted fill)' };
    if (options.repair) {
      await store.blobs.removeUpload(id);
      problem.repaired = 'removed';
    }
    report.problems.push(problem);
  }
  // The lock file is rewritten beside itself and renamed: a crash in between leaves the copy.
  if (store.storage === undefined) return;
  for (const name of await readdir(store.storage).catch(() => [] as string[])) {
    if (!name.startsWith(`${LOCK_FILE}.`) || !name.endsWith('.tmp')) continue;
    const path = join(store.storage, name);
    const info = await stat(path).catch(() => undefined);
    if (!info || (store.live && now - info.mtimeMs < LIVE_TEMPORARY_GRACE_MS)) continue;
    const problem: Problem = { kind: 'stale-temporary', subject: name, detail: 'lock record left half-written by a crash' };
    if (options.repair) {
      await rm(path, { force: true });
      problem.repaired = 'removed';
    }
    report.problems.push(problem);
  }
}
