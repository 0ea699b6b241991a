// What a process killed mid-work (kill -9, power cut) can leave behind, and how the next start
// clears it before serving. Blobs become visible by rename after fsync and are recorded after that,
// so a crash leaves at worst: a partial upload file with no session (a pull-through fill), a session
// whose file is gone, a committed file whose row was never written (its push was never acknowledged),
// and a lock record half-rewritten. Upload sessions with their file are kept: clients resume them.

import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import type { BlobStore, FsBlobStore } from '../storage/blobstore.js';
import type { MetadataStore } from '../storage/metadata.js';
import { LOCK_FILE, type LockHolder } from './storage-lock.js';

const DIGEST_FILE_RE = /^[a-f0-9]{32,}$/;

/**
 * Removes temporaries no running work can own: called at start, before anything writes (no fill
 * runs yet, and the storage lock keeps other processes out).
 */
export async function removeStaleTemporaries(storage: string, meta: MetadataStore, blobs: BlobStore, log: Logger): Promise<void> {
  let files = 0;
  let sessions = 0;
  for (const id of await blobs.listUploads()) {
    if (await meta.getUpload(id)) continue;
    await blobs.removeUpload(id);
    files++;
  }
  for (const upload of await meta.allUploads()) {
    if ((await blobs.uploadSize(upload.id)) !== undefined) continue;
    await meta.deleteUpload(upload.id);
    sessions++;
  }
  for (const name of await readdir(storage)) {
    if (name.startsWith(`${LOCK_FILE}.`) && name.endsWith('.tmp') && name !== `${LOCK_FILE}.${process.pid}.tmp`) {
      await rm(join(storage, name), { force: true });
      files++;
    }
  }
  if (files || sessions) log.info({ files, sessions }, 'removed temporaries left by an earlier run');
}

/**
 * After a crash (the previous owner's lock was left behind): removes blob files committed by a push
 * or fill that died before recording them. Their clients were never told the push succeeded.
 */
export async function recoverAfterCrash(storage: string, meta: MetadataStore, blobs: FsBlobStore, log: Logger, previous: LockHolder): Promise<void> {
  const started = Date.now();
  const root = join(storage, 'blobs');
  let removed = 0;
  let scanned = 0;
  for (const algorithm of await list(root)) {
    for (const prefix of await list(join(root, algorithm))) {
      for (const name of await list(join(root, algorithm, prefix))) {
        scanned++;
        if (!DIGEST_FILE_RE.test(name) || !name.startsWith(prefix)) continue; // not ours to judge: fsck reports it
        const digest = `${algorithm}:${name}`;
        if ((await meta.blobSize(digest)) !== undefined) continue;
        await blobs.remove(digest);
        removed++;
      }
    }
  }
  log.warn(
    { previousPid: previous.pid, previousCommand: previous.command, scanned, removedUnrecordedBlobs: removed, ms: Date.now() - started },
    'storage was not released cleanly by its previous owner (crash or kill); recovered',
  );
}

async function list(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw e;
  }
}
