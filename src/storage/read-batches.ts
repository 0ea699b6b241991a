import type { Readable } from 'node:stream';

/**
 * Reads a stream as batches of whatever chunks arrived since the last batch was taken, collecting
 * until `maxBytes` is reached (the stream is paused there until the batch is taken): a fast sender
 * fills big batches (few write syscalls), a slow one gets each chunk written as soon as it arrives
 * (nothing lingers in memory waiting for a batch to fill).
 *
 * The chunks are the stream's own buffers, never copied: the stream flows into a list rather than
 * being read with read(), which concatenates everything buffered into a new buffer (a copy and an
 * allocation of every byte, and the garbage collections that follow, measured on blob transfers).
 */
export async function* readBatches(source: Readable, maxBytes: number): AsyncGenerator<Buffer[]> {
  let batch: Buffer[] = [];
  let bytes = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onData = (chunk: Buffer) => {
    batch.push(chunk);
    bytes += chunk.length;
    if (bytes >= maxBytes) source.pause();
    wake?.();
  };
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
  source.on('end', onEnd);
  source.on('error', onError);
  source.on('close', onClose);
  source.on('data', onData);
  source.resume();
  try {
    for (;;) {
      if (batch.length > 0) {
        const taken = batch;
        batch = [];
        bytes = 0;
        // More may arrive while the consumer works on this batch, up to the next one's size.
        if (!ended) source.resume();
        yield taken;
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
    source.off('data', onData);
    source.off('end', onEnd);
    source.off('error', onError);
    source.off('close', onClose);
    // Whatever the consumer did not take stays in the stream, as with a stream nobody reads.
    if (!ended && !source.destroyed) source.pause();
  }
}

function closedEarly(): Error {
  return Object.assign(new Error('the stream closed before its end (client went away)'), { code: 'ECONNRESET' });
}
