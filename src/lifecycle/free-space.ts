import { statfsSync } from 'node:fs';

/** Bytes an unprivileged process may still write on the volume holding `dir`. */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

function describe(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
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
      `low disk space: ${describe(free)} free on the storage volume, below storageMinFree (${describe(minFree)}); ` +
        'pushes and pull-through fills fail once it is full',
    );
  }
}
