import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isStorageFull, RegistryError } from '../registry/errors.js';
import { BlobFileStream } from '../storage/blob-file-stream.js';

export type Headers = Record<string, string | number | string[]>;

/** Writes a whole small response straight to the Node response (no Web Response copy). */
export function send(res: ServerResponse, status: number, headers: Headers, body?: Buffer | string, isHead = false): void {
  const payload = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : body;
  if (payload !== undefined && headers['Content-Length'] === undefined) headers['Content-Length'] = payload.length;
  res.writeHead(status, headers);
  res.end(isHead ? undefined : payload);
}

export function sendJson(res: ServerResponse, status: number, headers: Headers, value: unknown, isHead = false): void {
  send(res, status, { 'Content-Type': 'application/json; charset=utf-8', ...headers }, JSON.stringify(value), isHead);
}

/**
 * Streams a body; a client that goes away tears the source down instead of leaking it. Rejects
 * when a blob file cannot be read to its end (the response is cut short).
 */
export async function sendStream(res: ServerResponse, status: number, headers: Headers, body: Readable): Promise<void> {
  res.writeHead(status, headers);
  if (body instanceof BlobFileStream) {
    // A blob file straight to the socket, without a buffer allocated per chunk.
    try {
      await body.sendTo(res);
    } catch (e) {
      // The file failed mid-response (unreadable, or shorter than recorded): all the client can be
      // told is a cut-short body; the caller logs why, as for any failed request.
      res.destroy();
      throw e;
    }
    return;
  }
  try {
    await pipeline(body, res);
  } catch {
    // Client disconnects are normal; pipeline has already destroyed both streams.
  }
}

/** The spec's error JSON with its status; internal failures get a generic message (details go to the log). */
export function sendError(res: ServerResponse, err: unknown, isHead = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const e =
    err instanceof RegistryError
      ? err
      : isStorageFull(err)
        ? new RegistryError('STORAGE_FULL', 'the registry storage is full; nothing of this request was stored (an operator must free space)').withReason(
            'storage full, nothing stored',
          )
        : new RegistryError('UNKNOWN', 'internal error; see the server log').withReason('internal error, see the server log');
  // writeHead keeps a statusMessage set beforehand instead of the standard phrase.
  if (e.status >= 500 && e.reason !== undefined) res.statusMessage = reasonPhrase(e.reason);
  sendJson(res, e.status, e.headers, e.toJSON(), isHead);
}

/** Longest reason phrase sent: a status line stays one short line in a client's error message. */
export const MAX_REASON_LENGTH = 120;

/**
 * A reason phrase HTTP allows (RFC 9112: HTAB, SP, visible ASCII; obs-text is left out so every
 * client prints it alike): anything else becomes a space, runs of spaces one, and it is cut to
 * MAX_REASON_LENGTH characters.
 */
export function reasonPhrase(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]+/g, ' ').replace(/ {2,}/g, ' ').trim();
  if (clean === '') return 'Error';
  return clean.length > MAX_REASON_LENGTH ? `${clean.slice(0, MAX_REASON_LENGTH - 3)}...` : clean;
}
