// Which store a command works on, and how it may: the one decision import, sync, export, verify,
// mirrorsets, gc and fsck share.
//
// - A shared database (PostgreSQL): the command opens the shared backends directly, like one more
//   replica, while the replicas keep running elsewhere (or on this machine). No storage lock: the
//   database serialises writers, the per-digest cluster lock guards blobs, and the command's spool
//   directory is its own.
// - A local SQLite database (with blob files or a bucket): one owner per storage directory, as
//   ever — the command works under the storage lock, or a server holds it and either does the work
//   (writes, gc) or is read beside (export, which only reads).

import { existsSync } from 'node:fs';
import { destination } from 'pino';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { createLogger, type Logger } from '../log.js';
import { databasePath, mirrorContent, openStorageView, readOrigins, StorageViewError, type StorageView } from '../mirror/local-content.js';
import type { Origin } from '../mirror/mirror-sets.js';
import { openCommandStore, sharedBackends, sharedMetadata, type CommandStore } from '../server/command-store.js';
import { claimStorage, type StorageTarget } from './storage-target.js';

export type StoreClaim =
  | Extract<StorageTarget, { kind: 'server' }>
  | {
      kind: 'open';
      store: CommandStore;
      /** True with a shared database: replicas may be writing at the same time. */
      shared: boolean;
      /** Closes the store and gives up the storage lock, if one was taken. */
      release(): Promise<void>;
    };

/**
 * Opens the store for `command`. `whenServed` says what to do when a server holds a local
 * SQLite store: 'delegate' returns that server (the command asks it to do the work), 'read' opens
 * the store anyway without the lock (SQLite allows readers beside its writer; blobs never change).
 */
export async function claimStore(config: Config, command: string, whenServed: 'delegate' | 'read', log = commandLogger(config)): Promise<StoreClaim> {
  if (sharedMetadata(config)) {
    const store = await openCommandStore(config, log, command);
    return { kind: 'open', store, shared: true, release: () => store.close() };
  }
  const target = claimStorage(config.storage, command);
  if (target.kind === 'server' && whenServed === 'delegate') return target;
  const lock = target.kind === 'local' ? target.lock : undefined;
  let store: CommandStore;
  try {
    store = await openCommandStore(config, log, command);
  } catch (e) {
    lock?.release();
    throw e;
  }
  return {
    kind: 'open',
    store,
    shared: false,
    async release() {
      try {
        await store.close();
      } finally {
        lock?.release();
      }
    },
  };
}

/**
 * Log lines of the backends (connections, retries) on stderr, beside the command's own output:
 * warnings and errors only, unless the config asks for debug or trace.
 */
export function commandLogger(config: Config): Logger {
  const level = config.log.level === 'debug' || config.log.level === 'trace' ? config.log.level : 'warn';
  return createLogger(level, destination({ fd: 2, sync: true }));
}

/**
 * The read-only view verify and mirrorsets take: a storage directory's SQLite opened read-only
 * (no lock; a running server may hold it), or the configured shared backends, read beside the
 * replicas. Throws StorageViewError when there is no store to read.
 */
export async function openStoreView(config: Config): Promise<StorageView> {
  if (!sharedBackends(config)) return openStorageView(config.storage);
  // Blobs in a bucket, metadata in this directory's SQLite: it must exist (a view creates nothing).
  if (!sharedMetadata(config) && !existsSync(databasePath(config.storage))) {
    throw new StorageViewError(`no airlock storage at ${config.storage} (no airlock.db): pass --storage DIR or --config FILE naming the mirror's storage`);
  }
  let store: CommandStore;
  try {
    store = await openCommandStore(config, commandLogger(config), 'read');
  } catch (e) {
    if (e instanceof ConfigError) throw new StorageViewError(e.message);
    throw e;
  }
  const { meta, blobs } = store;
  return { content: mirrorContent(meta, blobs), origins: () => meta.listOrigins(), close: () => store.close() };
}

/** Recorded origins of the configured store; none when a storage directory has no database yet. */
export async function readStoreOrigins(config: Config): Promise<Origin[]> {
  if (!sharedBackends(config)) return readOrigins(config.storage);
  const view = await openStoreView(config);
  try {
    return await view.origins();
  } finally {
    await view.close();
  }
}
