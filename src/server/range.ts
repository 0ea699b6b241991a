import { RegistryError } from '../registry/errors.js';

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

const MAX_RANGES = 64;

/**
 * Parses a `Range: bytes=a-b,c-d,-n,e-` request header against a blob of `size` bytes.
 * Returns undefined when there is no header or its unit is not bytes. Malformed or unsatisfiable → 416 with the
 * `Content-Range: bytes *\/size` the client needs to recover.
 */
export function parseRangeHeader(header: string | undefined, size: number): ByteRange[] | undefined {
  if (header === undefined || header === '') return undefined;
  const unsatisfiable = (why: string) =>
    new RegistryError('RANGE_INVALID', `${why}; the blob has ${size} bytes`, { range: header.slice(0, 200) }).withHeaders({
      'Content-Range': `bytes */${size}`,
    });
  // A range unit other than bytes is not ours to interpret: RFC 9110 §14.2 says to ignore the header.
  if (!/^\s*bytes\s*=/i.test(header)) return undefined;
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m) throw unsatisfiable(`Range "${header.slice(0, 100)}" is not of the form bytes=start-end`);
  const parts = m[1]!.split(',');
  if (parts.length > MAX_RANGES) throw unsatisfiable(`at most ${MAX_RANGES} ranges are served per request`);
  const ranges: ByteRange[] = [];
  for (const raw of parts) {
    const part = /^\s*(\d*)\s*-\s*(\d*)\s*$/.exec(raw);
    if (!part || (part[1] === '' && part[2] === '')) throw unsatisfiable(`range "${raw.trim().slice(0, 50)}" is malformed`);
    let start: number;
    let end: number;
    if (part[1] === '') {
      // Suffix range: the last n bytes.
      const n = Number(part[2]);
      if (n === 0) continue;
      start = Math.max(size - n, 0);
      end = size - 1;
    } else {
      start = Number(part[1]);
      end = part[2] === '' ? size - 1 : Math.min(Number(part[2]), size - 1);
      if (part[2] !== '' && Number(part[2]) < start) throw unsatisfiable(`range "${raw.trim()}" ends before it starts`);
      if (start >= size) continue;
    }
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) throw unsatisfiable('range bounds are too large');
    ranges.push({ start, end });
  }
  if (ranges.length === 0) throw unsatisfiable('no requested range overlaps the blob');
  return ranges;
}

/**
 * Parses an upload chunk's `Content-Range: start-end` (the spec's form, without a unit; a
 * `bytes ` or `bytes=` prefix is tolerated since some clients send one).
 */
export function parseContentRange(header: string | undefined): ByteRange | undefined {
  if (header === undefined || header === '') return undefined;
  const m = /^\s*(?:bytes[ =])?\s*(\d+)-(\d+)(?:\/(?:\d+|\*))?\s*$/i.exec(header);
  const start = Number(m?.[1]);
  const end = Number(m?.[2]);
  if (!m || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', `Content-Range "${header.slice(0, 100)}" must be start-end with start <= end, e.g. 0-1048575`, undefined, 416);
  }
  return { start, end };
}
