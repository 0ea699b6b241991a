import { open } from 'node:fs/promises';

/** Where a regular file's bytes sit inside an uncompressed tar. */
export interface TarEntry {
  offset: number;
  size: number;
}

const BLOCK = 512;

/**
 * Indexes a plain (uncompressed) tar by reading only its headers: each file's bytes can then be
 * streamed straight from the tar by offset, so importing a multi-GiB tar needs no extraction and
 * no memory beyond the index. Understands ustar (with prefix), GNU long names and pax paths.
 */
export async function indexTar(path: string): Promise<Map<string, TarEntry>> {
  const fh = await open(path, 'r');
  const entries = new Map<string, TarEntry>();
  try {
    const total = (await fh.stat()).size;
    const header = Buffer.alloc(BLOCK);
    let offset = 0;
    let longName: string | undefined;
    while (offset + BLOCK <= total) {
      await readExactly(fh, header, offset);
      if (header.every((b) => b === 0)) break;
      if (!checksumOk(header)) throw new Error(`${path}: not a tar file (bad header checksum at byte ${offset})`);
      const size = parseNumber(header.subarray(124, 136));
      const type = String.fromCharCode(header[156]!);
      const dataOffset = offset + BLOCK;
      if (type === 'x' || type === 'L') {
        const data = Buffer.alloc(size);
        await readExactly(fh, data, dataOffset);
        longName = type === 'L' ? data.toString('utf8').replace(/\0+$/, '') : (paxPath(data) ?? longName);
      } else {
        const name = longName ?? ustarName(header);
        longName = undefined;
        if (type === '0' || type === '\0' || type === '7') entries.set(normalise(name), { offset: dataOffset, size });
      }
      offset = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    }
  } finally {
    await fh.close();
  }
  return entries;
}

async function readExactly(fh: import('node:fs/promises').FileHandle, buffer: Buffer, position: number): Promise<void> {
  const { bytesRead } = await fh.read(buffer, 0, buffer.length, position);
  if (bytesRead !== buffer.length) throw new Error(`tar ends in the middle of an entry (byte ${position})`);
}

function field(buffer: Buffer, start: number, end: number): string {
  const raw = buffer.subarray(start, end);
  const nul = raw.indexOf(0);
  return raw.subarray(0, nul === -1 ? raw.length : nul).toString('utf8');
}

function ustarName(header: Buffer): string {
  const name = field(header, 0, 100);
  const prefix = field(header, 257, 263).startsWith('ustar') ? field(header, 345, 500) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function parseNumber(raw: Buffer): number {
  // GNU base-256 for sizes beyond 8 GiB.
  if (raw[0]! & 0x80) {
    let value = 0;
    for (let i = 1; i < raw.length; i++) value = value * 256 + raw[i]!;
    return value;
  }
  const text = raw.toString('ascii').replace(/[\0 ]+$/g, '').trim();
  return text === '' ? 0 : parseInt(text, 8);
}

function checksumOk(header: Buffer): boolean {
  const stored = parseNumber(header.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
  return sum === stored;
}

function paxPath(data: Buffer): string | undefined {
  let pos = 0;
  let path: string | undefined;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) break;
    const length = parseInt(data.subarray(pos, space).toString('ascii'), 10);
    if (!(length > 0)) break;
    const record = data.subarray(space + 1, pos + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (record.slice(0, eq) === 'path') path = record.slice(eq + 1);
    pos += length;
  }
  return path;
}

function normalise(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}
