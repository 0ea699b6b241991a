// The store a maintenance command (import, sync, export, verify, mirrorsets, gc, fsck) works on, opened
// from the same `database:` / `blobs.s3` keys as the server (through openBackends), so that with
// shared backends the command sees and changes what the replicas serve — not an empty SQLite file
// beside them. One place for every command, not one per command.

import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Cluster } from '../cluster/index.js';
import type { Config } from '../config/schema.js';
import { pidRuns } from '../lifecycle/storage-lock.js';
import type { Logger } from '../log.js';
import type { KeyedLock } from '../registry/keyed-lock.js';
import type { FsBlobStore } from '../storage/blobstore.js';
import type { MetadataStore } from '../storage/metadata.js';
import type { S3BlobStore } from '../storage/s3-blobstore.js';
import { openBackends } from './backends.js';

/** Commands' spool directories: `.spool-<pid>-<command>-<random>` under the storage directory. */
const SPOOL_PREFIX = '.spool-';

/**
 * Removes the spools of commands that died without cleaning up (killed mid-import): those whose
 * process no longer runs. A spool of a command still running, here or beside, is left alone.
 */
async function removeDeadSpools(storage: string): Promise<void> {
  for (const name of await readdir(storage).catch(() => [] as string[])) {
    if (!name.startsWith(SPOOL_PREFIX)) continue;
    const pid = Number(name.slice(SPOOL_PREFIX.length).split('-', 1)[0]);
    if (Number.isInteger(pid) && pid > 0 && !pidRuns(pid)) await rm(join(storage, name), { recursive: true, force: true });
  }
}

/** True when the metadata is shared (PostgreSQL): replicas write it all along, no lock guards it. */
export function sharedMetadata(config: Config): boolean {
  return config.database !== undefined;
}

/** True when the config names any shared backend (PostgreSQL, a bucket, or both). */
export function sharedBackends(config: Config): boolean {
  return config.database !== undefined || config.blobs?.s3 !== undefined;
}

export interface CommandStore {
  meta: MetadataStore;
  blobs: FsBlobStore | S3BlobStore;
  /**
   * The per-digest lock that uploads, mounts, fills, eviction and gc take: across replicas when
   * the metadata is shared (PostgreSQL advisory locks), else within this process.
   */
  blobLocks: KeyedLock;
  /** Set with a shared database: change notifications for the replicas' in-memory caches. */
  cluster: Cluster | null;
  /** Where the store is, for messages (no secrets). */
  description: string;
  /** Where one blob is, for messages: its file or s3://bucket/key. */
  where(digest: string): string;
  close(): Promise<void>;
}

/**
 * Opens the configured backends for a command. Blobs bound for a bucket spool in a directory of
 * this process alone (under the storage directory, removed on close, or by a later command once
 * this process is gone): a replica may be running on the same storage directory, and its own
 * spool is not ours to touch. The caller decides about the
 * storage lock (needed for a local SQLite database, not for PostgreSQL).
 */
export async function openCommandStore(config: Config, log: Logger, command: string): Promise<CommandStore> {
  let spoolDir: string | undefined;
  if (config.blobs?.s3) {
    await mkdir(config.storage, { recursive: true });
    await removeDeadSpools(config.storage);
    spoolDir = await mkdtemp(join(config.storage, `${SPOOL_PREFIX}${process.pid}-${command}-`));
  }
  const removeSpool = async () => {
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  };
  let backends;
  try {
    backends = await openBackends(config, log, { spoolDir });
  } catch (e) {
    await removeSpool();
    throw e;
  }
  const { meta, blobs, files, bucket, cluster, blobLocks, describe } = backends;
  return {
    meta,
    blobs,
    blobLocks,
    cluster,
    description: `database ${describe.database}, blobs ${describe.blobs}`,
    where: (digest) => (bucket ? bucket.describe(digest) : files!.blobPath(digest)),
    async close() {
      try {
        await backends.close();
      } finally {
        await removeSpool();
      }
    },
  };
}
