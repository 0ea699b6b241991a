// Small helpers for reading undici responses, shared by the client and the token fetcher.

import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';

export type ResponseData = Dispatcher.ResponseData;

/** One header value; repeated headers are joined the way HTTP allows (", "). */
export function headerValue(res: ResponseData, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** All values of a header that may be repeated (WWW-Authenticate, Link). */
export function headerValues(res: ResponseData, name: string): string[] {
  const v = res.headers[name];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

export function contentLength(res: ResponseData): number | undefined {
  const v = headerValue(res, 'content-length');
  return v !== undefined && /^\d+$/.test(v.trim()) ? Number(v) : undefined;
}

/** Reads a whole body, refusing (and cancelling the transfer) once it passes `maxBytes`. */
export async function readCapped(body: Readable, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    // Throwing out of for-await destroys the stream, which aborts the request.
    if (total > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Discards a body we do not need, so the connection can go back to the pool. */
export async function discard(res: ResponseData): Promise<void> {
  try {
    await res.body.dump();
  } catch {
    // The body is unwanted; failing to drain it only means the connection is not reused.
  }
}

/**
 * The registry's explanation of an error response ({"errors":[{"code","message"}]}), or a short text
 * excerpt; reads at most a few KiB so a misbehaving server cannot make us buffer much.
 */
export async function errorDetail(res: ResponseData): Promise<string | undefined> {
  let text: string;
  try {
    text = (await readCapped(res.body, 4096, () => new Error('too long'))).toString('utf8').trim();
  } catch {
    await discard(res);
    return undefined;
  }
  if (text === '') return undefined;
  try {
    const doc = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = doc.errors?.[0];
    if (first !== undefined) return [first.code, first.message].filter((p) => typeof p === 'string' && p !== '').join(' ');
  } catch {
    // Not the registry JSON error format; fall through to the raw text.
  }
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
