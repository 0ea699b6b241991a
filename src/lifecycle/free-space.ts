import { statfsSync } from 'node:fs';
import { formatBytes } from '../config/units.js';

/** Bytes an unprivileged process may still write on the volume holding `dir`. */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * Throws (for /readyz) when the storage volume has less than `minFree` bytes free: reported before
 * it runs out, while the registry still serves, so an operator or an alert can act in time.
 */
export function checkFreeSpace(storage: string, minFree: number): void {
  if (minFree <= 0) return;
  const free = freeBytes(storage);
  if (free < minFree) {
    throw new Error(
      `low disk space: ${formatBytes(free)} free on the storage volume, below storageMinFree (${formatBytes(minFree)}); ` +
        'pushes and pull-through fills fail once it is full',
    );
  }
}
