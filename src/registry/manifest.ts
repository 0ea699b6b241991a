import type { ManifestRecord } from '../storage/metadata.js';
import { RegistryError } from './errors.js';
import { DIGEST_ALGORITHMS } from './names.js';

export const MediaType = {
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DOCKER_SCHEMA1: 'application/vnd.docker.distribution.manifest.v1+json',
  DOCKER_SCHEMA1_SIGNED: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** Manifest media types airlock stores and serves, most specific first (also the upstream Accept list). */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.OCI_INDEX,
  MediaType.OCI_MANIFEST,
  MediaType.DOCKER_LIST,
  MediaType.DOCKER_MANIFEST,
];

const INDEX_TYPES = new Set<string>([MediaType.OCI_INDEX, MediaType.DOCKER_LIST]);
const SCHEMA1_TYPES = new Set<string>([MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED]);
/** Content-Types that say nothing about which manifest it is; the body decides. */
const GENERIC_TYPES = new Set(['', 'application/json', 'application/octet-stream', 'text/plain']);

/** Layers that are not distributed through registries: a manifest may reference them without the blob. */
const NONDISTRIBUTABLE_LAYER_TYPES = new Set([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: unknown;
}

export interface ParsedManifest {
  mediaType: string;
  isIndex: boolean;
  /** Config and layer digests that must exist in the repository. */
  blobRefs: string[];
  /** Child manifests (index entries) that must exist in the repository. */
  manifestRefs: string[];
  subject?: Descriptor;
  /** artifactType, or for an image manifest without one, its config media type (per the referrers API). */
  artifactType?: string;
  annotations?: Record<string, string>;
}

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

/** "application/json; charset=utf-8" → "application/json" */
export function bareMediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
}

function invalid(message: string, detail?: unknown): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message, detail);
}

/** Quotes client-sent text in an error without echoing megabytes of it back. */
function clip(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDigestString(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const [algorithm, hex] = value.split(':', 2);
  const length = DIGEST_ALGORITHMS[algorithm as keyof typeof DIGEST_ALGORITHMS];
  return length !== undefined && hex !== undefined && hex.length === length && /^[a-f0-9]+$/.test(hex);
}

function parseDescriptor(value: unknown, where: string, mediaTypeRequired: boolean): Descriptor {
  if (!isObject(value)) throw invalid(`${where} must be a descriptor object`);
  if (!isDigestString(value.digest)) throw invalid(`${where}.digest is not a valid sha256/sha512 digest`, typeof value.digest === 'string' ? { digest: clip(value.digest) } : undefined);
  if (typeof value.size !== 'number' || !Number.isSafeInteger(value.size) || value.size < 0) {
    throw invalid(`${where}.size must be a non-negative integer`);
  }
  if (value.mediaType !== undefined && typeof value.mediaType !== 'string') throw invalid(`${where}.mediaType must be a string`);
  if (mediaTypeRequired && typeof value.mediaType !== 'string') throw invalid(`${where}.mediaType is required`);
  if (value.urls !== undefined && !(Array.isArray(value.urls) && value.urls.every((u) => typeof u === 'string'))) {
    throw invalid(`${where}.urls must be an array of strings`);
  }
  if (value.annotations !== undefined && !isStringMap(value.annotations)) throw invalid(`${where}.annotations must map strings to strings`);
  return value as unknown as Descriptor;
}

function isStringMap(value: unknown): value is Record<string, string> {
  return isObject(value) && Object.values(value).every((v) => typeof v === 'string');
}

function descriptorArray(value: unknown, where: string, mediaTypeRequired: boolean): Descriptor[] {
  if (!Array.isArray(value)) throw invalid(`${where} must be an array of descriptors`);
  return value.map((d, i) => parseDescriptor(d, `${where}[${i}]`, mediaTypeRequired));
}

/** Decides the manifest's media type from its mediaType field and the request's Content-Type. */
function resolveMediaType(doc: Record<string, unknown>, contentType: string | undefined): string {
  const declared = doc.mediaType;
  if (declared !== undefined && typeof declared !== 'string') throw invalid('mediaType must be a string');
  const header = bareMediaType(contentType);
  if (SCHEMA1_TYPES.has(header) || SCHEMA1_TYPES.has(declared ?? '') || doc.schemaVersion === 1) {
    throw invalid('Docker schema1 manifests are not supported: push schema2 or OCI manifests (schema1 is deprecated and insecure)');
  }
  const known = (t: string) => MANIFEST_MEDIA_TYPES.includes(t);
  if (declared !== undefined && !known(declared)) {
    throw invalid(`unsupported manifest mediaType "${clip(declared)}": expected one of ${MANIFEST_MEDIA_TYPES.join(', ')}`);
  }
  if (!GENERIC_TYPES.has(header) && !known(header)) {
    throw invalid(`unsupported manifest Content-Type "${clip(header)}": expected one of ${MANIFEST_MEDIA_TYPES.join(', ')}`);
  }
  if (declared !== undefined && !GENERIC_TYPES.has(header) && declared !== header) {
    throw invalid(`manifest mediaType "${clip(declared)}" does not match the Content-Type "${clip(header)}" it was sent with`);
  }
  if (declared !== undefined) return declared;
  if (known(header)) return header;
  // Neither says: an OCI manifest may omit mediaType, so the shape decides.
  return Array.isArray(doc.manifests) ? MediaType.OCI_INDEX : MediaType.OCI_MANIFEST;
}

/**
 * Parses and validates a manifest body. Only a manifest that really is malformed yields
 * MANIFEST_INVALID: clients such as `oc` react to that code by retrying with the legacy schema1 format.
 */
export function parseManifest(body: Buffer, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw invalid(`manifest is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc)) throw invalid('manifest must be a JSON object');
  const mediaType = resolveMediaType(doc, contentType);
  if (doc.schemaVersion !== 2) throw invalid('schemaVersion must be 2');
  if (doc.artifactType !== undefined && typeof doc.artifactType !== 'string') throw invalid('artifactType must be a string');
  if (doc.annotations !== undefined && !isStringMap(doc.annotations)) throw invalid('annotations must map strings to strings');
  const subject = doc.subject === undefined ? undefined : parseDescriptor(doc.subject, 'subject', true);
  const common = {
    mediaType,
    subject,
    annotations: doc.annotations as Record<string, string> | undefined,
  };

  if (INDEX_TYPES.has(mediaType)) {
    const manifests = descriptorArray(doc.manifests, 'manifests', mediaType === MediaType.DOCKER_LIST);
    return {
      ...common,
      isIndex: true,
      blobRefs: [],
      manifestRefs: unique(manifests.map((d) => d.digest)),
      artifactType: doc.artifactType as string | undefined,
    };
  }

  const docker = mediaType === MediaType.DOCKER_MANIFEST;
  const config = parseDescriptor(doc.config, 'config', true);
  const layers = doc.layers === undefined && !docker ? [] : descriptorArray(doc.layers, 'layers', docker);
  const distributable = layers.filter((l) => !(l.urls?.length && NONDISTRIBUTABLE_LAYER_TYPES.has(l.mediaType ?? '')));
  return {
    ...common,
    isIndex: false,
    blobRefs: unique([config.digest, ...distributable.map((l) => l.digest)]),
    manifestRefs: [],
    artifactType: (doc.artifactType as string | undefined) ?? config.mediaType,
  };
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

/**
 * Whether a stored manifest may be served to a client with this Accept header. No header or a
 * wildcard accepts anything; otherwise the stored type must be listed (as CNCF distribution does,
 * which answers MANIFEST_UNKNOWN rather than sending a type the client cannot parse).
 */
export function acceptsMediaType(accept: string | undefined, mediaType: string): boolean {
  if (!accept) return true;
  const accepted = accept.split(',').map((part) => bareMediaType(part));
  if (accepted.some((t) => t === '*/*' || t === 'application/*' || t === 'application/json' || t === '')) return true;
  // A client that lists no manifest type at all did not mean to negotiate.
  if (!accepted.some((t) => MANIFEST_MEDIA_TYPES.includes(t) || SCHEMA1_TYPES.has(t))) return true;
  return accepted.includes(mediaType);
}

/** What the metadata keeps of a parsed manifest: the bytes as received, and what listings need. */
export function manifestRecord(digest: string, body: Buffer, parsed: ParsedManifest): ManifestRecord {
  return {
    digest,
    mediaType: parsed.mediaType,
    size: body.length,
    content: body,
    subject: parsed.subject?.digest ?? null,
    artifactType: parsed.artifactType ?? null,
    annotations: parsed.annotations ? JSON.stringify(parsed.annotations) : null,
  };
}
