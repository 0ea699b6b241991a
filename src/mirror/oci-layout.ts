import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { MissingContentError, type ContentSink, type ContentSource, type CopyItem, type ManifestPlacement, type SourceBlob, type SourceManifest } from './content.js';
import { readBatches } from '../storage/read-batches.js';
import { indexTar, type TarEntry } from './tar-index.js';
import { checkDigest } from './verify-stream.js';

/**
 * The OCI image layout (image-spec v1.1 "image-layout"): `oci-layout`, `index.json`, `blobs/<alg>/<hex>`.
 * skopeo (`oci:`) writes it, and so do `airlock export` and `airlock sync --to-dir`, which add what
 * an air gap needs to restore content exactly: each index entry names its repository, tag and
 * origin in annotations, and `airlock-export.json` lists the repositories with their origins.
 */
export const REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_REPOSITORY = 'io.airlock.repository';
export const ANNOTATION_TAG = 'io.airlock.tag';
export const ANNOTATION_ORIGIN = 'io.airlock.origin';
export const RECORD_FILE = 'airlock-export.json';
export const SUMS_FILE = 'SHA256SUMS';
const LAYOUT_FILE = 'oci-layout';
const LAYOUT_VERSION = JSON.stringify({ imageLayoutVersion: '1.0.0' });
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface IndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: unknown;
}

export interface ExportRecord {
  format: 1;
  created: string;
  /** The earlier export whose blobs this one leaves out (export --since). */
  since?: string;
  repositories: Record<string, { origin?: string }>;
}

export class LayoutError extends Error {}

/** True when the path is an OCI layout directory or a tar (plain or gzip) of one. */
export async function looksLikeLayout(path: string): Promise<boolean> {
  const info = await stat(path);
  if (info.isDirectory()) return existsSync(join(path, LAYOUT_FILE)) || existsSync(join(path, 'index.json'));
  return info.isFile();
}

/** Reads an OCI layout from a directory, a plain tar (read in place) or a gzip tar (extracted to a temp dir). */
export class OciLayoutSource implements ContentSource {
  readonly description: string;
  private constructor(
    private readonly path: string,
    private readonly files: { read(name: string): Promise<Buffer | undefined>; open(name: string): Promise<{ size: number; stream: Readable } | undefined>; where(name: string): string },
    readonly entries: IndexEntry[],
    readonly record: ExportRecord | undefined,
    private readonly cleanup: () => Promise<void>,
  ) {
    this.description = `OCI layout ${path}`;
  }

  static async open(path: string): Promise<OciLayoutSource> {
    const info = await stat(path);
    if (info.isDirectory()) return OciLayoutSource.fromFiles(path, dirFiles(path), async () => undefined);
    if (await isGzip(path)) {
      // No random access into gzip: extract once to a temp directory, read from there.
      const dir = await mkdtemp(join(tmpdir(), 'airlock-import-'));
      try {
        await extractTar(createReadStream(path).pipe(createGunzip()), dir);
      } catch (e) {
        await rm(dir, { recursive: true, force: true });
        throw new LayoutError(`${path}: cannot read as a gzip tar: ${(e as Error).message}`);
      }
      return OciLayoutSource.fromFiles(path, dirFiles(dir, path), () => rm(dir, { recursive: true, force: true }));
    }
    const index = await indexTar(path);
    return OciLayoutSource.fromFiles(path, tarFiles(path, index), async () => undefined);
  }

  private static async fromFiles(path: string, files: OciLayoutSource['files'], cleanup: () => Promise<void>): Promise<OciLayoutSource> {
    try {
      const indexBytes = await files.read('index.json');
      if (!indexBytes) throw new LayoutError(`${path} is not an OCI image layout: it has no index.json`);
      let index: { manifests?: IndexEntry[] };
      try {
        index = JSON.parse(indexBytes.toString('utf8')) as typeof index;
      } catch (e) {
        throw new LayoutError(`${files.where('index.json')} is not valid JSON: ${(e as Error).message}`);
      }
      if (!Array.isArray(index.manifests)) throw new LayoutError(`${files.where('index.json')} has no "manifests" list`);
      const recordBytes = await files.read(RECORD_FILE);
      const record = recordBytes ? (JSON.parse(recordBytes.toString('utf8')) as ExportRecord) : undefined;
      return new OciLayoutSource(path, files, index.manifests, record, cleanup);
    } catch (e) {
      await cleanup();
      throw e;
    }
  }

  /**
   * The images to import: each index entry lands in the repository its annotations name (an
   * airlock export) or that its `repo:tag` ref name names, below `prefix`; a bare tag (what
   * `skopeo copy oci:DIR:TAG` writes) lands in `prefix` itself.
   */
  items(prefix: string | undefined): CopyItem[] {
    return this.entries.map((entry, i) => {
      const a = entry.annotations ?? {};
      let repo = a[ANNOTATION_REPOSITORY];
      let tag = a[ANNOTATION_TAG];
      const refName = a[REF_NAME];
      if (repo === undefined && refName !== undefined) {
        const colon = refName.lastIndexOf(':');
        if (colon > 0 && !refName.slice(colon).includes('/')) {
          repo = refName.slice(0, colon);
          tag = refName.slice(colon + 1);
        } else tag = refName;
      } else if (repo !== undefined && tag === undefined && refName !== undefined && !refName.includes(':')) {
        tag = refName;
      }
      const label = `${this.path} index.json entry ${i + 1}${refName ? ` (${refName})` : ` (${entry.digest})`}`;
      const destRepo = [prefix, repo].filter((p) => p !== undefined && p !== '').join('/');
      if (destRepo === '') {
        throw new LayoutError(`${label} names no repository: pass --prefix REPO (e.g. --prefix mirror/${basename(this.path).replace(/[^a-z0-9._-]/g, '') || 'image'})`);
      }
      const origin = a[ANNOTATION_ORIGIN] ?? (repo !== undefined ? this.record?.repositories[repo]?.origin : undefined);
      return { srcRepo: '', reference: entry.digest, destRepo, ...(tag ? { tag } : {}), ...(origin ? { origin } : {}), label };
    });
  }

  async manifest(_repo: string, digest: string): Promise<SourceManifest> {
    const name = blobName(digest);
    const bytes = await this.files.read(name);
    if (!bytes) throw new MissingContentError(`manifest ${digest} is not in ${this.description} (no ${name})`, digest);
    checkDigest(bytes, digest, this.files.where(name));
    const entry = this.entries.find((e) => e.digest === digest);
    return { digest, bytes, ...(entry ? { mediaType: entry.mediaType } : {}) };
  }

  async blob(_repo: string, digest: string): Promise<SourceBlob> {
    const name = blobName(digest);
    const opened = await this.files.open(name);
    if (!opened) {
      const hint = this.record?.since ? ` (this export was made --since ${this.record.since}: import that one first)` : '';
      throw new MissingContentError(`blob ${digest} is not in ${this.description} and not in the destination${hint}`, digest);
    }
    return { size: opened.size, stream: opened.stream, where: this.files.where(name) };
  }

  async close(): Promise<void> {
    await this.cleanup();
  }
}

function blobName(digest: string): string {
  const [algorithm, hex] = digest.split(':', 2) as [string, string];
  if (!/^[a-z0-9]+$/.test(algorithm) || !/^[a-f0-9]+$/.test(hex ?? '')) throw new LayoutError(`invalid digest ${digest}`);
  return `blobs/${algorithm}/${hex}`;
}

function dirFiles(dir: string, shownAs = dir): OciLayoutSource['files'] {
  return {
    async read(name) {
      try {
        return await readFile(join(dir, name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      }
    },
    async open(name) {
      const path = join(dir, name);
      try {
        const fh = await open(path, 'r');
        const { size } = await fh.stat();
        return { size, stream: fh.createReadStream({ highWaterMark: 1024 * 1024 }) };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      }
    },
    where: (name) => (shownAs === dir ? join(dir, name) : `${shownAs}: ${name}`),
  };
}

function tarFiles(path: string, index: Map<string, TarEntry>): OciLayoutSource['files'] {
  const open = (name: string) => {
    const entry = index.get(name);
    if (!entry) return undefined;
    const stream =
      entry.size === 0 ? Readable.from([]) : createReadStream(path, { start: entry.offset, end: entry.offset + entry.size - 1, highWaterMark: 1024 * 1024 });
    return { size: entry.size, stream };
  };
  return {
    async read(name) {
      const opened = open(name);
      if (!opened) return undefined;
      const chunks: Buffer[] = [];
      for await (const chunk of opened.stream) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
    async open(name) {
      return open(name);
    },
    where: (name) => `${path}: ${name}`,
  };
}

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(2);
    await fh.read(head, 0, 2, 0);
    return head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

async function extractTar(input: Readable, dir: string): Promise<void> {
  const extract = tar.extract();
  const done = pipeline(input, extract);
  for await (const entry of extract) {
    const name = entry.header.name.replace(/^(\.\/)+/, '');
    if (entry.header.type === 'file' && !name.split('/').includes('..') && !name.startsWith('/')) {
      const target = join(dir, name);
      await mkdir(dirname(target), { recursive: true });
      await pipeline(entry, createWriteStream(target));
    } else {
      entry.resume();
    }
  }
  await done;
}

/** The index entry a layout records for an image: its place, tag and origin travel with it. */
function entryFor(repo: string, digest: string, size: number, mediaType: string, placement: ManifestPlacement): IndexEntry {
  const annotations: Record<string, string> = { [ANNOTATION_REPOSITORY]: repo };
  if (placement.tag !== undefined) {
    annotations[ANNOTATION_TAG] = placement.tag;
    // skopeo and other layout readers find images by this name: `oci:DIR:REPO:TAG`.
    annotations[REF_NAME] = `${repo}:${placement.tag}`;
  }
  if (placement.origin) annotations[ANNOTATION_ORIGIN] = placement.origin;
  return { mediaType, digest, size, annotations };
}

const entryKey = (e: IndexEntry) => {
  const a = e.annotations ?? {};
  return a[ANNOTATION_TAG] !== undefined || a[REF_NAME] !== undefined ? `${a[ANNOTATION_REPOSITORY] ?? ''}:${a[ANNOTATION_TAG] ?? a[REF_NAME]}` : `${a[ANNOTATION_REPOSITORY] ?? ''}@${e.digest}`;
};

/** What both layout writers keep: the index entries and the record, merged as images arrive. */
class LayoutBook {
  readonly entries = new Map<string, IndexEntry>();
  readonly record: ExportRecord;

  constructor(since?: string) {
    this.record = { format: 1, created: new Date().toISOString(), ...(since ? { since } : {}), repositories: {} };
  }

  add(entry: IndexEntry): void {
    this.entries.set(entryKey(entry), entry);
    const repo = entry.annotations?.[ANNOTATION_REPOSITORY];
    if (repo !== undefined) this.record.repositories[repo] ??= {};
  }

  setOrigin(repo: string, origin: string): void {
    this.record.repositories[repo] = { origin };
  }

  indexJson(): Buffer {
    return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...this.entries.values()] }, null, 2));
  }

  recordJson(): Buffer {
    return Buffer.from(JSON.stringify(this.record, null, 2));
  }
}

/**
 * Writes an OCI layout directory (export, sync --to-dir). Blobs land through a temp file and a
 * rename, so a file under blobs/ is always whole; index.json is rewritten (atomically) after each
 * image, so a killed run keeps what it finished and a rerun merges into it and skips those blobs.
 */
export class LayoutDirSink implements ContentSink {
  readonly description: string;
  private readonly book: LayoutBook;
  private readonly tmp: string;

  private constructor(
    private readonly dir: string,
    since?: string,
  ) {
    this.description = `OCI layout ${dir}`;
    this.book = new LayoutBook(since);
    this.tmp = join(dir, '.airlock-tmp');
  }

  static async create(dir: string, options: { since?: string } = {}): Promise<LayoutDirSink> {
    const sink = new LayoutDirSink(dir, options.since);
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    // Leftovers of a killed run: partial files never renamed into blobs/.
    await rm(sink.tmp, { recursive: true, force: true });
    await mkdir(sink.tmp, { recursive: true });
    await writeFile(join(dir, LAYOUT_FILE), LAYOUT_VERSION);
    const previous = await readFile(join(dir, 'index.json')).catch(() => undefined);
    if (previous) for (const entry of (JSON.parse(previous.toString('utf8')) as { manifests?: IndexEntry[] }).manifests ?? []) sink.book.add(entry);
    const record = await readFile(join(dir, RECORD_FILE)).catch(() => undefined);
    if (record) {
      for (const [repo, info] of Object.entries((JSON.parse(record.toString('utf8')) as ExportRecord).repositories ?? {})) {
        if (info.origin) sink.book.setOrigin(repo, info.origin);
      }
    }
    return sink;
  }

  private path(digest: string): string {
    return join(this.dir, blobName(digest));
  }

  async hasBlob(_repo: string, digest: string): Promise<boolean> {
    return existsSync(this.path(digest));
  }

  async putBlob(_repo: string, digest: string, _size: number | undefined, stream: Readable): Promise<void> {
    const temp = join(this.tmp, randomUUID());
    try {
      const fh = await open(temp, 'w');
      try {
        for await (const batch of readBatches(stream, 1024 * 1024)) {
          const bytes = batch.reduce((sum, chunk) => sum + chunk.length, 0);
          const { bytesWritten } = await fh.writev(batch);
          if (bytesWritten < bytes) throw Object.assign(new Error(`${temp}: short write (no space left on device?)`), { code: 'ENOSPC' });
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      await mkdir(dirname(this.path(digest)), { recursive: true });
      await rename(temp, this.path(digest));
    } catch (e) {
      await rm(temp, { force: true });
      throw e;
    }
  }

  async hasManifest(_repo: string, digest: string): Promise<boolean> {
    return existsSync(this.path(digest));
  }

  async putManifest(repo: string, digest: string, bytes: Buffer, mediaType: string, placement: ManifestPlacement): Promise<void> {
    if (!existsSync(this.path(digest))) await this.putBlob(repo, digest, bytes.length, Readable.from([bytes]));
    if (!placement.top) return;
    this.book.add(entryFor(repo, digest, bytes.length, mediaType, placement));
    await this.writeIndex();
  }

  async setOrigin(repo: string, origin: string): Promise<void> {
    this.book.setOrigin(repo, origin);
    await this.writeAtomically(RECORD_FILE, this.book.recordJson());
  }

  private async writeIndex(): Promise<void> {
    await this.writeAtomically('index.json', this.book.indexJson());
  }

  private async writeAtomically(name: string, bytes: Buffer): Promise<void> {
    const temp = join(this.tmp, `${name}.${randomUUID()}`);
    await writeFile(temp, bytes);
    await rename(temp, join(this.dir, name));
  }

  async flush(): Promise<void> {
    await this.writeIndex();
    await this.writeAtomically(RECORD_FILE, this.book.recordJson());
    // Every blob's file name is its sha256, so the sums need no re-reading of the blobs.
    const lines: string[] = [];
    for (const name of ['oci-layout', 'index.json', RECORD_FILE]) {
      lines.push(`${checksum(await readFile(join(this.dir, name)))}  ${name}`);
    }
    for (const hex of (await readdir(join(this.dir, 'blobs', 'sha256'))).sort()) lines.push(`${hex}  blobs/sha256/${hex}`);
    await this.writeAtomically(SUMS_FILE, Buffer.from(`${lines.join('\n')}\n`));
  }

  async close(): Promise<void> {
    await rm(this.tmp, { recursive: true, force: true });
  }
}

/**
 * Writes an OCI layout as one tar (export --to FILE.tar), front to back: the blobs as they come,
 * then index.json, the record and SHA256SUMS. Written to FILE.tar.partial and renamed at the end, so
 * a tar at the final name is always complete.
 */
export class LayoutTarSink implements ContentSink {
  readonly description: string;
  private readonly book: LayoutBook;
  private readonly pack = tar.pack();
  private readonly written = new Set<string>();
  private readonly sums: string[] = [];
  private readonly done: Promise<void>;
  private readonly partial: string;
  /** tar entries go one after the other. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    since?: string,
  ) {
    this.description = `OCI layout tar ${file}`;
    this.book = new LayoutBook(since);
    this.partial = `${file}.partial`;
    this.done = pipeline(this.pack, createWriteStream(this.partial));
    this.done.catch(() => undefined);
    void this.addSmall(LAYOUT_FILE, Buffer.from(LAYOUT_VERSION));
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private addSmall(name: string, bytes: Buffer): Promise<void> {
    return this.serial(
      () =>
        new Promise<void>((resolve, reject) => {
          this.pack.entry({ name, size: bytes.length, mtime: new Date() }, bytes, (e) => (e ? reject(e) : resolve()));
          this.sums.push(`${checksum(bytes)}  ${name}`);
        }),
    );
  }

  async hasBlob(_repo: string, digest: string): Promise<boolean> {
    return this.written.has(digest);
  }

  async putBlob(_repo: string, digest: string, size: number | undefined, stream: Readable): Promise<void> {
    if (size === undefined) throw new Error(`blob ${digest}: a tar entry needs the size in advance`);
    await this.serial(async () => {
      const entry = this.pack.entry({ name: blobName(digest), size, mtime: new Date(0) });
      await pipeline(stream, entry);
    });
    this.written.add(digest);
    this.sums.push(`${digest.slice(digest.indexOf(':') + 1)}  ${blobName(digest)}`);
  }

  async hasManifest(_repo: string, digest: string): Promise<boolean> {
    return this.written.has(digest);
  }

  async putManifest(repo: string, digest: string, bytes: Buffer, mediaType: string, placement: ManifestPlacement): Promise<void> {
    if (!this.written.has(digest)) await this.putBlob(repo, digest, bytes.length, Readable.from([bytes]));
    if (placement.top) this.book.add(entryFor(repo, digest, bytes.length, mediaType, placement));
  }

  async setOrigin(repo: string, origin: string): Promise<void> {
    this.book.setOrigin(repo, origin);
  }

  async flush(): Promise<void> {
    await this.addSmall('index.json', this.book.indexJson());
    await this.addSmall(RECORD_FILE, this.book.recordJson());
    await this.serial(async () => undefined);
    const sums = Buffer.from(`${this.sums.join('\n')}\n`);
    await new Promise<void>((resolve, reject) => this.pack.entry({ name: SUMS_FILE, size: sums.length, mtime: new Date() }, sums, (e) => (e ? reject(e) : resolve())));
    this.pack.finalize();
    await this.done;
    const fh = await open(this.partial, 'r+');
    await fh.sync();
    await fh.close();
    await rename(this.partial, this.file);
  }

  async close(): Promise<void> {
    if (existsSync(this.partial)) {
      this.pack.destroy();
      await this.done.catch(() => undefined);
      await rm(this.partial, { force: true });
    }
  }
}

function checksum(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The set of blob digests an earlier export carried (export --since), from its directory or tar. */
export async function blobsOfLayout(path: string): Promise<Set<string>> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new LayoutError(`--since ${path}: no such export`);
  const names: string[] = [];
  if (info.isDirectory()) {
    for (const algorithm of await readdir(join(path, 'blobs')).catch(() => [] as string[])) {
      for (const hex of await readdir(join(path, 'blobs', algorithm))) names.push(`blobs/${algorithm}/${hex}`);
    }
  } else {
    if (await isGzip(path)) throw new LayoutError(`--since ${path}: a gzip tar cannot be listed cheaply; name the plain tar or directory`);
    names.push(...(await indexTar(path)).keys());
  }
  const digests = new Set<string>();
  for (const name of names) {
    const m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
    if (m) digests.add(`${m[1]}:${m[2]}`);
  }
  if (!digests.size && !existsSync(join(path, 'index.json')) && info.isDirectory()) throw new LayoutError(`--since ${path} is not an OCI layout`);
  return digests;
}
