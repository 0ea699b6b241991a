import type { Readable } from 'node:stream';

/**
 * Reads a stream as batches of whatever chunks are buffered at the moment, collecting until
 * `maxBytes` is reached (one read may return more: all the stream had buffered, which its own
 * highWaterMark bounds):
 * a fast sender fills big batches (few write syscalls), a slow one gets each chunk written as soon
 * as it arrives (nothing lingers in memory waiting for a batch to fill).
 */
export async function* readBatches(source: Readable, maxBytes: number): AsyncGenerator<Buffer[]> {
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onReadable = () => wake?.();
  const onEnd = () => {
    ended = true;
    wake?.();
  };
  const onError = (e: Error) => {
    failure = e;
    wake?.();
  };
  // A request whose client went away may close without 'end' or 'error'.
  const onClose = () => {
    if (!ended) failure ??= closedEarly();
    wake?.();
  };
  source.on('readable', onReadable);
  source.on('end', onEnd);
  source.on('error', onError);
  source.on('close', onClose);
  try {
    for (;;) {
      const batch: Buffer[] = [];
      let bytes = 0;
      let chunk: Buffer | null;
      while (bytes < maxBytes && (chunk = source.read() as Buffer | null) !== null) {
        batch.push(chunk);
        bytes += chunk.length;
      }
      if (batch.length > 0) {
        yield batch;
        continue;
      }
      if (failure) throw failure;
      if (ended || source.readableEnded) return;
      // Destroyed before these listeners were attached (a request whose body failed to parse while
      // its handler was still checking access): no event will come, so do not wait for one.
      if (source.destroyed) throw source.errored ?? closedEarly();
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    source.off('readable', onReadable);
    source.off('end', onEnd);
    source.off('error', onError);
    source.off('close', onClose);
  }
}

function closedEarly(): Error {
  return Object.assign(new Error('the stream closed before its end (client went away)'), { code: 'ECONNRESET' });
}
