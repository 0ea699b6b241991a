// What an OpenShift release image or an operator catalog image says it needs, read from its layers
// (tar, gzip'ed or not, streamed one entry at a time; later layers override earlier ones, with
// whiteouts honoured):
// - a release image's `release-manifests/image-references`: an ImageStream whose spec.tags[].from.name
//   name every component, as quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:…;
// - a file-based catalog's `/configs/**.json|yaml` (or the directory its
//   operators.operatorframework.io.index.configs.v1 label names): every `olm.bundle`'s `image` and
//   `relatedImages[].image`.

import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { parseAllDocuments, parse as parseYaml } from 'yaml';

export const IMAGE_REFERENCES_PATH = 'release-manifests/image-references';
export const CATALOG_CONFIGS_LABEL = 'operators.operatorframework.io.index.configs.v1';

/** One image a payload needs, with what names it there (component tag, bundle, related image). */
export interface NeededImage {
  reference: string;
  /** e.g. `component etcd`, `bundle etcdoperator.v0.9.4`, `related image of etcdoperator.v0.9.4 (etcd-operator)`. */
  neededBy: string;
}

export interface PayloadContents {
  /** `release-manifests/image-references` as found, if any. */
  imageReferences?: Buffer;
  /** What each catalog config file (by path, below the configs directory) names; parsed as read, one file in memory at a time. */
  catalogFiles: Map<string, CatalogFile>;
}

export class PayloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PayloadError';
  }
}

function normalizePath(name: string): string {
  return posix.normalize(`/${name}`).slice(1);
}

/** Opens a layer and hands back its tar stream (gunzipped when gzip'ed). */
async function tarStreamOf(layer: Readable, digest: string): Promise<Readable> {
  // Peek at the first bytes to tell gzip (1f 8b) from a plain tar and from zstd (28 b5 2f fd).
  const iterator = layer[Symbol.asyncIterator]();
  const first = await iterator.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : Buffer.from(first.value as Buffer);
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) {
    layer.destroy();
    throw new PayloadError(`layer ${digest} is zstd-compressed, which this airlock cannot read`);
  }
  const rest = Readable.from(
    (async function* () {
      if (head.length) yield head;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield next.value as Buffer;
      }
    })(),
  );
  if (head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = createGunzip();
    rest.on('error', (e) => gunzip.destroy(e));
    return rest.pipe(gunzip);
  }
  return rest;
}

async function readEntry(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Walks the layers in order and keeps the files that matter, as the image's filesystem finally
 * has them. `configsDir` is the catalog directory without leading slash (default "configs").
 */
export async function readPayloadFiles(
  layers: { digest: string; open: () => Promise<Readable | undefined> }[],
  configsDir = 'configs',
): Promise<PayloadContents> {
  const contents: PayloadContents = { catalogFiles: new Map() };
  const configs = normalizePath(configsDir).replace(/\/$/, '');
  const inConfigs = (path: string) => path === configs || path.startsWith(`${configs}/`);

  for (const layer of layers) {
    const blob = await layer.open();
    if (!blob) throw new PayloadError(`layer ${layer.digest} is not on this mirror`);
    const extract = tar.extract();
    const source = await tarStreamOf(blob, layer.digest);
    source.on('error', (e) => extract.destroy(e));
    source.pipe(extract);
    try {
      for await (const entry of extract) {
        const path = normalizePath(entry.header.name);
        const base = posix.basename(path);
        const dir = posix.dirname(path);
        if (base === '.wh..wh..opq') {
          // Opaque directory: what lower layers had below it is gone.
          const prefix = dir === '.' ? '' : `${dir}/`;
          for (const key of [...contents.catalogFiles.keys()]) if (key.startsWith(prefix)) contents.catalogFiles.delete(key);
          if (IMAGE_REFERENCES_PATH.startsWith(prefix)) contents.imageReferences = undefined;
        } else if (base.startsWith('.wh.')) {
          const gone = posix.join(dir, base.slice(4));
          contents.catalogFiles.delete(gone);
          for (const key of [...contents.catalogFiles.keys()]) if (key.startsWith(`${gone}/`)) contents.catalogFiles.delete(key);
          if (IMAGE_REFERENCES_PATH === gone || IMAGE_REFERENCES_PATH.startsWith(`${gone}/`)) contents.imageReferences = undefined;
        } else if (entry.header.type === 'file' && path === IMAGE_REFERENCES_PATH) {
          contents.imageReferences = await readEntry(entry);
          continue;
        } else if (entry.header.type === 'file' && inConfigs(path) && /\.(json|ya?ml)$/i.test(path)) {
          contents.catalogFiles.set(path, catalogFileImages(path, await readEntry(entry)));
          continue;
        }
        entry.resume();
      }
    } catch (e) {
      if (e instanceof PayloadError) throw e;
      throw new PayloadError(`layer ${layer.digest} is not a readable tar: ${(e as Error).message}`);
    }
  }
  return contents;
}

function isObj(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The components an ImageStream (JSON or YAML) names: spec.tags[].from.name of kind DockerImage. */
export function releaseComponents(imageReferences: Buffer): NeededImage[] {
  let doc: unknown;
  try {
    doc = parseYaml(imageReferences.toString('utf8'));
  } catch (e) {
    throw new PayloadError(`${IMAGE_REFERENCES_PATH} is neither JSON nor YAML: ${(e as Error).message}`);
  }
  const tags = isObj(doc) && isObj(doc.spec) ? doc.spec.tags : undefined;
  if (!Array.isArray(tags)) throw new PayloadError(`${IMAGE_REFERENCES_PATH} is not an ImageStream with spec.tags`);
  const needed: NeededImage[] = [];
  for (const tag of tags) {
    if (!isObj(tag) || !isObj(tag.from) || typeof tag.from.name !== 'string') continue;
    if (tag.from.kind !== undefined && tag.from.kind !== 'DockerImage') continue;
    needed.push({ reference: tag.from.name, neededBy: `component ${typeof tag.name === 'string' ? tag.name : '?'}` });
  }
  return needed;
}

/** The JSON values of a file-based-catalog .json file: a stream of concatenated objects (or one array). */
export function parseJsonStream(text: string): unknown[] {
  const values: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{' || c === '[') {
      if (depth === 0) start = i;
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0 && start !== -1) {
        const value = JSON.parse(text.slice(start, i + 1)) as unknown;
        if (Array.isArray(value)) values.push(...(value as unknown[]));
        else values.push(value);
        start = -1;
      }
    }
  }
  if (depth !== 0) throw new SyntaxError('unterminated JSON value');
  return values;
}

export interface CatalogFile {
  needed: NeededImage[];
  bundles: number;
}

/** Every bundle image and related image one catalog file's olm.bundle entries name. */
export function catalogFileImages(path: string, bytes: Buffer): CatalogFile {
  const needed: NeededImage[] = [];
  let bundles = 0;
  let objects: unknown[];
  const text = bytes.toString('utf8');
  try {
    objects = /\.json$/i.test(path) ? parseJsonStream(text) : parseAllDocuments(text).map((d) => d.toJS() as unknown);
  } catch (e) {
    throw new PayloadError(`catalog file /${path} cannot be parsed: ${(e as Error).message}`);
  }
  for (const obj of objects) {
    if (!isObj(obj) || obj.schema !== 'olm.bundle') continue;
    bundles++;
    const bundle = typeof obj.name === 'string' ? obj.name : '?';
    if (typeof obj.image === 'string' && obj.image !== '') needed.push({ reference: obj.image, neededBy: `bundle ${bundle}` });
    if (Array.isArray(obj.relatedImages)) {
      for (const related of obj.relatedImages) {
        if (!isObj(related) || typeof related.image !== 'string' || related.image === '') continue;
        const label = typeof related.name === 'string' && related.name !== '' ? ` (${related.name})` : '';
        needed.push({ reference: related.image, neededBy: `related image of ${bundle}${label}` });
      }
    }
  }
  return { needed, bundles };
}

/** The whole catalog: its files in path order. */
export function catalogImages(files: Map<string, CatalogFile>): CatalogFile {
  const sorted = [...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  return { needed: sorted.flatMap(([, f]) => f.needed), bundles: sorted.reduce((n, [, f]) => n + f.bundles, 0) };
}
