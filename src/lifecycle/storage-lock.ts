import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * One owner per storage directory. `serve`, `gc`, `fsck`, `backup`, `import` and `user add` take
 * this lock before touching a store; a second owner gets a clear error naming the holder instead of
 * two processes writing one SQLite file and one blob tree.
 *
 * The lock is a file created with O_EXCL holding who owns it (pid, command, and for a server the
 * URL it listens on, so that commands can ask the running server to do their work). A lock left by
 * a process that died (kill -9, power cut) is taken over: its pid no longer runs.
 */
export const LOCK_FILE = 'airlock.lock';
/**
 * Written when a lock is taken over from a dead holder, removed once a server has recovered the
 * store (lifecycle/recovery.ts): a command that takes the lock in between (fsck, backup) must not
 * make the next server believe the previous one stopped cleanly.
 */
export const UNCLEAN_MARKER = 'airlock.unclean';

export interface LockHolder {
  pid: number;
  /** What holds it: "serve", "gc", "import", … */
  command: string;
  /** Where a holding server listens (http://host:port), once it does. */
  url?: string;
  /** ms since the epoch. */
  since: number;
}

export class StorageLockedError extends Error {
  constructor(
    readonly storage: string,
    readonly holder: LockHolder,
    /** What is locked, for the message: "storage" or e.g. "htpasswd file". */
    kind = 'storage',
  ) {
    super(
      `${kind} ${storage} is in use by airlock ${holder.command} (pid ${holder.pid}${holder.url ? `, serving ${holder.url}` : ''}); ` +
        `stop it first${holder.command === 'serve' ? ', or let that server do the work' : ''}`,
    );
    this.name = 'StorageLockedError';
  }
}

export interface StorageLock {
  readonly path: string;
  /**
   * The holder whose lock was left behind and taken over (it died without releasing it: kill -9,
   * power cut), so the new owner knows to recover what a crash may have left half-done.
   */
  readonly tookOverFrom?: LockHolder;
  /** Records more about the holder (a server's URL once it listens). */
  update(fields: Partial<Pick<LockHolder, 'url'>>): void;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): void;
}

/** True while a process with this pid runs (as any user). */
export function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Who holds the storage directory's lock, if a living process does. */
export function readLockHolder(storage: string): LockHolder | undefined {
  return readLockFile(join(storage, LOCK_FILE));
}

function readLockFile(path: string): LockHolder | undefined {
  const holder = readRecord(path);
  if (!holder || typeof holder.pid !== 'number' || !pidRuns(holder.pid)) return undefined;
  return holder;
}

/** The record in a lock file whether or not its holder still runs. */
function readRecord(path: string): LockHolder | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as LockHolder;
  } catch {
    // A lock file cut short by a crash between create and write: nobody can be identified by it.
    return undefined;
  }
}

/**
 * Takes the storage directory's lock for `command`, or throws StorageLockedError naming the holder.
 * The directory must exist.
 */
export function acquireStorageLock(storage: string, command: string): StorageLock {
  const lock = acquireLockFile(join(storage, LOCK_FILE), storage, command);
  if (lock.tookOverFrom) {
    try {
      writeFileSync(join(storage, UNCLEAN_MARKER), JSON.stringify(lock.tookOverFrom), { flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  return lock;
}

/** True when a previous owner died holding the storage and no server has recovered it since. */
export function storageUnclean(storage: string): LockHolder | undefined {
  const holder = readRecord(join(storage, UNCLEAN_MARKER));
  return holder ?? (existsSync(join(storage, UNCLEAN_MARKER)) ? { pid: 0, command: 'unknown', since: 0 } : undefined);
}

/** Records that the store was recovered after an unclean stop. */
export function markStorageClean(storage: string): void {
  rmSync(join(storage, UNCLEAN_MARKER), { force: true });
}

/**
 * The same lock on any file (e.g. `users.htpasswd.lock` for `user add`); `what` names the locked
 * thing in the error.
 */
export function acquireLockFile(path: string, what: string, command: string, kind = 'storage'): StorageLock {
  const holder: LockHolder = { pid: process.pid, command, since: Date.now() };
  let stale: LockHolder | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const current = readLockFile(path);
      if (current) throw new StorageLockedError(what, current, kind);
      // Stale: its owner died. Remove it and race for a fresh one (O_EXCL decides the winner).
      // An unreadable record (cut short by a crash) counts as a dead owner too.
      stale = readRecord(path) ?? { pid: 0, command: 'unknown', since: 0 };
      try {
        unlinkSync(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      continue;
    }
    try {
      writeSync(fd, JSON.stringify(holder));
    } finally {
      closeSync(fd);
    }
    return ownLock(path, holder, stale);
  }
  const current = readLockFile(path);
  throw current ? new StorageLockedError(what, current, kind) : new Error(`could not take the lock ${path}: it keeps reappearing`);
}

function ownLock(path: string, holder: LockHolder, tookOverFrom: LockHolder | undefined): StorageLock {
  let released = false;
  const isOurs = () => {
    try {
      const current = JSON.parse(readFileSync(path, 'utf8')) as LockHolder;
      return current.pid === holder.pid && current.since === holder.since && current.command === holder.command;
    } catch {
      return false;
    }
  };
  return {
    path,
    tookOverFrom,
    update(fields) {
      if (released) return;
      Object.assign(holder, fields);
      // Write beside and rename, so a reader never sees half a record.
      const next = `${path}.${process.pid}.tmp`;
      writeFileSync(next, JSON.stringify(holder));
      renameSync(next, path);
    },
    release() {
      if (released) return;
      released = true;
      if (!isOurs()) return;
      try {
        unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    },
  };
}
