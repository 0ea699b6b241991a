// Moves a single-node store (SQLite + blob files under <storage>) into the shared backends: the
// metadata into PostgreSQL, and the blobs into an S3-compatible bucket when one is given (without
// one, the blobs stay where they are: a storage directory every replica mounts).
//
// - Resumable: blobs already in the bucket with the right size are skipped, rows are inserted with
//   ON CONFLICT DO NOTHING, so a second run after a kill finishes the work and changes nothing else.
// - Verified: every blob is re-hashed on its way (into the bucket, or in place when it stays), every
//   manifest's bytes are re-hashed before their row is written. A blob that fails is reported and
//   its rows are left behind, so the target never references bytes it does not hold.
// - The source is only read. The PostgreSQL schema has the same tables and columns as SQLite's
//   (src/storage/postgres/migrations.ts), so rows are copied table by table, ids included.

import { createHash } from 'node:crypto';
import { createReadStream, existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { assertDigest } from '../registry/names.js';
import { DigestMismatchError, FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore } from '../storage/metadata.js';
import { PostgresMetadataStore } from '../storage/postgres/store.js';
import type { S3BlobStore } from '../storage/s3-blobstore.js';

export interface MigrateProgress {
  grow(items: number, bytes?: number): void;
  advance(items: number, bytes?: number): void;
  note(text: string): void;
}

export interface MigrateOptions {
  /** The single-node store to read (its lock is held by the caller). */
  storage: string;
  databaseUrl: string;
  /** The bucket to move blobs into; absent: blobs stay under <storage>/blobs. */
  s3?: S3BlobStore;
  progress?: MigrateProgress;
  /** Blobs copied at once. */
  concurrency?: number;
}

export interface MigrateReport {
  source: string;
  blobs: { total: number; copied: number; alreadyThere: number; verifiedInPlace: number; bytes: number };
  /** Rows written per table (rows already there from an earlier run are not counted). */
  rows: Record<string, number>;
  /** Blobs and manifests that could not be moved, each with the reason; their rows stayed behind. */
  problems: { digest: string; problem: string }[];
}

/**
 * The tables in an order that satisfies the foreign keys, each with the columns that page it.
 * Left out: `uploads` (sessions whose bytes sit in this directory; clients start again) and
 * `storage_totals` (PostgreSQL's triggers count the rows as they arrive).
 */
const TABLES: { name: string; key: string[]; page?: number }[] = [
  { name: 'repositories', key: ['id'] },
  { name: 'blobs', key: ['digest'] },
  { name: 'repo_blobs', key: ['repo_id', 'digest'] },
  // Manifests carry their bytes (up to a few MiB each): smaller pages keep memory flat.
  { name: 'manifests', key: ['repo_id', 'digest'], page: 100 },
  { name: 'manifest_refs', key: ['repo_id', 'parent', 'child'] },
  { name: 'tags', key: ['repo_id', 'name'] },
  { name: 'image_kinds', key: ['repo_id', 'digest'] },
  { name: 'repo_origins', key: ['repo'] },
  { name: 'counters', key: ['name'] },
  { name: 'upstream_notes', key: ['prefix'] },
  { name: 'gc_runs', key: ['id'] },
  { name: 'stats_history', key: ['at'] },
  { name: 'audit_events', key: ['id'] },
];
/** Tables whose identity column must continue after the copied ids. */
const IDENTITIES = ['repositories', 'gc_runs', 'audit_events'];
const PAGE = 1000;

export class MigrateRefusedError extends Error {}

export async function migrateStore(options: MigrateOptions): Promise<MigrateReport> {
  const dbPath = join(options.storage, 'airlock.db');
  if (!existsSync(dbPath)) throw new MigrateRefusedError(`there is no airlock store in ${options.storage} (no airlock.db)`);
  // Brings an older store's schema up to date first, so its columns match the target's.
  await new SqliteMetadataStore(dbPath).close();
  const source = new Database(dbPath, { readonly: true, fileMustExist: true });
  const target = await PostgresMetadataStore.open(options.databaseUrl);
  const report: MigrateReport = {
    source: realpathSync(options.storage),
    blobs: { total: 0, copied: 0, alreadyThere: 0, verifiedInPlace: 0, bytes: 0 },
    rows: {},
    problems: [],
  };
  try {
    await claimTarget(target.pool, report.source);
    const failed = await moveBlobs(source, options, report);
    await copyTables(source, target.pool, failed, report, options.progress);
    await target.pool.query('UPDATE migrated_stores SET finished_at = $2 WHERE source = $1', [report.source, Date.now()]);
  } finally {
    source.close();
    await target.close();
  }
  return report;
}

/**
 * A database that already holds another store is refused (ids would collide); one this source
 * started to fill is resumed.
 */
async function claimTarget(pool: pg.Pool, source: string): Promise<void> {
  await pool.query('CREATE TABLE IF NOT EXISTS migrated_stores (source TEXT PRIMARY KEY, started_at BIGINT NOT NULL, finished_at BIGINT)');
  const { rows } = await pool.query('SELECT source FROM migrated_stores');
  const others = rows.map((r) => r.source as string).filter((s) => s !== source);
  if (others.length > 0) {
    throw new MigrateRefusedError(`the database already holds the store migrated from ${others[0]}; migrate into an empty database`);
  }
  if (rows.length === 0) {
    const { rows: repos } = await pool.query('SELECT 1 FROM repositories LIMIT 1');
    if (repos.length > 0) {
      throw new MigrateRefusedError('the database already holds repositories (a running cluster?); migrate into an empty database');
    }
    await pool.query('INSERT INTO migrated_stores (source, started_at) VALUES ($1, $2) ON CONFLICT DO NOTHING', [source, Date.now()]);
  }
}

/** Copies (or checks in place) every blob; returns the digests that failed. */
async function moveBlobs(source: Database.Database, options: MigrateOptions, report: MigrateReport): Promise<Set<string>> {
  const files = new FsBlobStore(options.storage);
  const failed = new Set<string>();
  const { count, bytes } = source.prepare('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM blobs').get() as { count: number; bytes: number };
  report.blobs.total = count;
  options.progress?.grow(count, bytes);
  const page = source.prepare('SELECT digest, size FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?');
  const concurrency = Math.max(1, options.concurrency ?? 4);
  let after = '';
  for (;;) {
    const rows = page.all(after, PAGE) as { digest: string; size: number }[];
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.digest;
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const { digest, size } = rows[next++]!;
        try {
          await moveBlob(files, options.s3, digest, size, report);
        } catch (e) {
          failed.add(digest);
          report.problems.push({ digest, problem: (e as Error).message });
          options.progress?.note(`blob ${digest}: ${(e as Error).message}`);
        }
        options.progress?.advance(1, size);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }
  return failed;
}

async function moveBlob(files: FsBlobStore, s3: S3BlobStore | undefined, digest: string, size: number, report: MigrateReport): Promise<void> {
  const algorithm = assertDigest(digest);
  const path = files.blobPath(digest);
  if (!existsSync(path)) throw new Error(`its file ${path} is missing (run airlock fsck on the source)`);
  if (s3) {
    if ((await s3.size(digest)) === size) {
      report.blobs.alreadyThere++;
      return;
    }
    // putVerified completes the object only when the bytes hash to the digest.
    await s3.putVerified(createReadStream(path, { highWaterMark: 1024 * 1024 }), digest, algorithm);
    report.blobs.copied++;
    report.blobs.bytes += size;
    return;
  }
  const hash = createHash(algorithm);
  let read = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    read += (chunk as Buffer).length;
  }
  const actual = `${algorithm}:${hash.digest('hex')}`;
  if (actual !== digest) throw new DigestMismatchError(digest, actual);
  if (read !== size) throw new Error(`its file holds ${read} bytes, the metadata says ${size}`);
  report.blobs.verifiedInPlace++;
}

async function copyTables(
  source: Database.Database,
  pool: pg.Pool,
  failedBlobs: Set<string>,
  report: MigrateReport,
  progress: MigrateProgress | undefined,
): Promise<void> {
  const sourceTables = new Set((source.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
  for (const table of TABLES) {
    if (!sourceTables.has(table.name)) continue;
    const columns = await sharedColumns(source, pool, table.name);
    const keyList = table.key.join(', ');
    const size = table.page ?? PAGE;
    const page = source.prepare(
      `SELECT ${columns.map(quote).join(', ')} FROM ${table.name} WHERE (${keyList}) > (${table.key.map(() => '?').join(', ')}) ORDER BY ${keyList} LIMIT ${size}`,
    );
    const first = source.prepare(`SELECT ${columns.map(quote).join(', ')} FROM ${table.name} ORDER BY ${keyList} LIMIT ${size}`);
    let rows = first.all() as Record<string, unknown>[];
    let written = 0;
    while (rows.length > 0) {
      const keep = rows.filter((row) => admissible(table.name, row, failedBlobs, report));
      if (keep.length > 0) written += await insertRows(pool, table.name, columns, keep);
      const last = rows[rows.length - 1]!;
      rows = rows.length < size ? [] : (page.all(...table.key.map((k) => last[k])) as Record<string, unknown>[]);
    }
    report.rows[table.name] = written;
    progress?.note(`${table.name}: ${written} rows`);
  }
  for (const table of IDENTITIES) {
    if (!sourceTables.has(table)) continue;
    await pool.query(`SELECT setval(pg_get_serial_sequence('${table}', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM ${table}), 1))`);
  }
}

/** Rows pointing at a blob that could not be moved stay behind; manifests are re-hashed. */
function admissible(table: string, row: Record<string, unknown>, failedBlobs: Set<string>, report: MigrateReport): boolean {
  if ((table === 'blobs' || table === 'repo_blobs') && failedBlobs.has(row.digest as string)) return false;
  if (table === 'manifests') {
    const digest = row.digest as string;
    const algorithm = assertDigest(digest);
    const actual = `${algorithm}:${createHash(algorithm).update(row.content as Buffer).digest('hex')}`;
    if (actual !== digest) {
      report.problems.push({ digest, problem: `manifest bytes hash to ${actual}; not moved (run airlock fsck on the source)` });
      return false;
    }
  }
  return true;
}

/** Columns both sides have (a column added by a later migration on one side only is left out). */
async function sharedColumns(source: Database.Database, pool: pg.Pool, table: string): Promise<string[]> {
  const here = (source.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name);
  const { rows } = await pool.query('SELECT column_name FROM information_schema.columns WHERE table_name = $1', [table]);
  const there = new Set(rows.map((r) => r.column_name as string));
  return here.filter((c) => there.has(c));
}

async function insertRows(pool: pg.Pool, table: string, columns: string[], rows: Record<string, unknown>[]): Promise<number> {
  const values: unknown[] = [];
  const tuples = rows.map((row) => {
    const marks = columns.map((c) => {
      values.push(row[c]);
      return `$${values.length}`;
    });
    return `(${marks.join(', ')})`;
  });
  const result = await pool.query(`INSERT INTO ${table} (${columns.map(quote).join(', ')}) VALUES ${tuples.join(', ')} ON CONFLICT DO NOTHING`, values);
  return result.rowCount ?? 0;
}

/** `user` and other reserved words are column names here. */
function quote(column: string): string {
  return `"${column}"`;
}
