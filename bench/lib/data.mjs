// Synthetic blob content. Bytes come from an AES-256-CTR keystream keyed by a seed string, so
// both servers receive byte-identical blobs, a 1 GiB blob can be produced chunk by chunk (never
// held whole), and the content is incompressible like real gzip layers.
import { createCipheriv, createHash } from 'node:crypto';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

function cipher(seed) {
  const key = createHash('sha256').update(`airlock-bench:${seed}`).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
}

/** Yields `size` pseudo-random bytes for `seed` as chunks of at most `chunkSize`. */
export function* chunksOf(seed, size, chunkSize = 8 * MiB) {
  const c = cipher(seed);
  const zeros = Buffer.alloc(Math.min(chunkSize, size));
  for (let offset = 0; offset < size; offset += chunkSize) {
    const n = Math.min(chunkSize, size - offset);
    yield c.update(n === zeros.length ? zeros : zeros.subarray(0, n));
  }
}

/** The whole content for `seed` in one buffer (for blobs small enough to keep: up to 256 MiB). */
export function bytesOf(seed, size) {
  const out = Buffer.allocUnsafe(size);
  let offset = 0;
  for (const chunk of chunksOf(seed, size)) {
    chunk.copy(out, offset);
    offset += chunk.length;
  }
  return out;
}

export function sha256(data) {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A blob descriptor kept in memory: bytes plus digest. */
export function blob(seed, size) {
  const data = bytesOf(seed, size);
  return { seed, size, data, digest: sha256(data) };
}

/** A blob described only by seed and size (generated again on every use). */
export function streamedBlob(seed, size) {
  return { seed, size, digest: undefined, chunks: (chunkSize) => chunksOf(seed, size, chunkSize) };
}

/** JSON bytes exactly as they will be pushed (manifests and configs are digested as sent). */
export function jsonBlob(value) {
  const data = Buffer.from(JSON.stringify(value));
  return { size: data.length, data, digest: sha256(data) };
}
