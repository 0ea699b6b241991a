// Helpers for garbage collection tests: make stored content look old (the grace period is real
// time; tests move the store's clock back instead of waiting), look at blob files, ask for a GC.
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { http } from '../helpers/http.js';

/** Moves every recorded time of the store `ms` into the past, as if it had all been written then. */
export function ageStore(storage: string, ms: number): void {
  const db = new Database(join(storage, 'airlock.db'));
  try {
    db.pragma('busy_timeout = 5000');
    db.transaction(() => {
      db.prepare('UPDATE blobs SET created_at = created_at - ?, last_access = last_access - ?').run(ms, ms);
      db.prepare('UPDATE repo_blobs SET created_at = created_at - ?').run(ms);
      db.prepare('UPDATE manifests SET created_at = created_at - ?, last_access = last_access - ?').run(ms, ms);
      db.prepare('UPDATE tags SET updated_at = updated_at - ?').run(ms);
    })();
  } finally {
    db.close();
  }
}

/**
 * Writes down the access times the server keeps in memory (a collection starts with that; a dry
 * run changes nothing else), so that ageStore then moves them too.
 */
export async function writeDownAccess(server: { gc: { run(o: { dryRun: boolean }): Promise<unknown> } }): Promise<void> {
  await server.gc.run({ dryRun: true });
}

export function blobPath(storage: string, digest: string): string {
  const hex = digest.slice(digest.indexOf(':') + 1);
  return join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

export function hasBlobFile(storage: string, digest: string): boolean {
  return existsSync(blobPath(storage, digest));
}

export interface GcAnswer {
  dryRun: boolean;
  startedAt: number;
  durationMs: number;
  removedManifests: number;
  removedBlobs: number;
  removedLinks: number;
  freedBytes: number;
  forgottenRepositories: number;
  forgotten: string[];
  manifests: { repo: string; digest: string }[];
}

/** POST /api/v1/gc and expect it to succeed. */
export async function gcOverHttp(base: string, body: { dryRun?: boolean; untaggedOlderThan?: string } = {}, headers: Record<string, string> = {}): Promise<GcAnswer> {
  const res = await http(base, '/api/v1/gc', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  expect(res.status, res.text).toBe(200);
  return res.json() as GcAnswer;
}
