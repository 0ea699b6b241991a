import { createHash, type Hash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { CorruptContentError } from './content.js';

/**
 * Passes bytes through while hashing them; fails at the end, before the consumer sees the end of
 * the stream, when they do not hash to `digest` (or do not have the announced size). A sink that
 * makes a blob visible only after the stream ended therefore never exposes corrupt content.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private seen = 0;

  constructor(
    private readonly digest: string,
    private readonly size: number | undefined,
    private readonly where: string,
    private readonly onBytes?: (bytes: number) => void,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.hash = createHash(digest.slice(0, digest.indexOf(':')));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.seen += chunk.length;
    this.onBytes?.(chunk.length);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    const actual = `${this.digest.slice(0, this.digest.indexOf(':'))}:${this.hash.digest('hex')}`;
    if (actual !== this.digest) return done(new CorruptContentError(this.where, this.digest, actual));
    if (this.size !== undefined && this.seen !== this.size) {
      return done(new CorruptContentError(this.where, this.digest, `${this.seen} bytes instead of ${this.size}`));
    }
    done();
  }
}

/** Wraps a source stream in a verifier; errors of the source reach the consumer too. */
export function verified(source: Readable, digest: string, size: number | undefined, where: string, onBytes?: (n: number) => void): Readable {
  const out = new VerifyingStream(digest, size, where, onBytes);
  source.on('error', (e) => out.destroy(e));
  out.on('close', () => {
    if (!source.destroyed) source.destroy();
  });
  source.pipe(out);
  return out;
}

/** Checks small content held in memory (manifests). */
export function checkDigest(bytes: Buffer, digest: string, where: string): void {
  const algorithm = digest.slice(0, digest.indexOf(':'));
  if (algorithm !== 'sha256' && algorithm !== 'sha512') throw new CorruptContentError(where, digest, `unsupported algorithm ${algorithm}`);
  const actual = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
  if (actual !== digest) throw new CorruptContentError(where, digest, actual);
}

export function sha256Of(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}
