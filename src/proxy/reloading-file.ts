// A small file whose contents are used on every upstream request (a pull secret, a CA bundle) and
// that operators replace while airlock runs: a rotated robot password, a renewed private CA. The
// file is checked before each use (one stat, next to a network round trip) and read again only when
// it changed. A replacement that cannot be used (briefly missing while being swapped, half written)
// keeps the last good contents and is reported once; the next change is tried again.

import { readFileSync, statSync } from 'node:fs';

/** Identifies one version of the file: an atomic replace changes the inode even within the same mtime tick. */
function fileVersion(s: { mtimeMs: number; size: number; ino: number }): string {
  return `${s.mtimeMs}:${s.size}:${s.ino}`;
}

export interface ReloadingFileEvents {
  /** The file changed and its new contents are in use. */
  reloaded?: (path: string) => void;
  /** The file changed but cannot be used; the previous contents stay in use. */
  refused?: (path: string, reason: string) => void;
}

export class ReloadingFile<T> {
  private value: T;
  private version: string;
  /** The last version that could not be used, so it is reported once rather than on every request. */
  private refusedVersion: string | undefined;

  /**
   * Reads and parses the file now; throws (with `parse`'s or the file system's reason) when it cannot,
   * since at start-up a broken file is a configuration error.
   */
  constructor(
    readonly path: string,
    private readonly parse: (text: string) => T,
    private readonly events: ReloadingFileEvents = {},
  ) {
    const version = fileVersion(statSync(path));
    this.value = parse(readFileSync(path, 'utf8'));
    this.version = version;
  }

  /** The contents in use: re-read first when the file changed since the last look. */
  current(): T {
    let version: string;
    try {
      version = fileVersion(statSync(this.path));
    } catch (e) {
      this.refuse(`missing:${(e as NodeJS.ErrnoException).code}`, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return this.value;
    }
    if (version === this.version || version === this.refusedVersion) return this.value;
    try {
      this.value = this.parse(readFileSync(this.path, 'utf8'));
    } catch (e) {
      this.refuse(version, (e as Error).message);
      return this.value;
    }
    this.version = version;
    this.refusedVersion = undefined;
    this.events.reloaded?.(this.path);
    return this.value;
  }

  private refuse(version: string, reason: string): void {
    if (this.refusedVersion === version) return;
    this.refusedVersion = version;
    this.events.refused?.(this.path, reason);
  }
}
