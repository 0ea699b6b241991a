// "Will a cluster find everything?" — every image an OpenShift release or an operator catalog
// needs, resolved through the cluster's mirror sets as CRI-O resolves it, and checked on this
// mirror: the manifest, every child of an index, every blob (linked in the repository and present
// on disk).

import type { Readable } from 'node:stream';
import { parseManifest } from '../registry/manifest.js';
import type { ManifestRecord } from '../storage/metadata.js';
import type { MirrorRule } from './mirror-sets.js';
import {
  CATALOG_CONFIGS_LABEL,
  catalogImages,
  PayloadError,
  readPayloadFiles,
  releaseComponents,
  type NeededImage,
} from './payload-references.js';
import { parseImageReference, resolveThroughMirrors } from './resolve.js';

/** Read access to what this mirror holds. */
export interface MirrorContent {
  /** By tag or digest. */
  manifest(repo: string, reference: string): Promise<ManifestRecord | undefined>;
  /** Size of the blob if the repository links it. */
  linkedBlobSize(repo: string, digest: string): Promise<number | undefined>;
  /** Size of the blob's file, undefined when it is not on disk. */
  blobFileSize(digest: string): Promise<number | undefined>;
  openBlob(digest: string): Promise<Readable | undefined>;
}

export type MissingReason = 'invalid-reference' | 'unmapped' | 'no-usable-mirror' | 'manifest-missing' | 'child-missing' | 'blob-missing';

export interface MissingImage {
  /** The reference as the release or catalog names it. */
  reference: string;
  neededBy: string;
  reason: MissingReason;
  /** For a person: what is missing where. */
  message: string;
  /** The local repository looked in, when the reference was resolved. */
  repository?: string;
  /** The missing manifest or blob, when one is. */
  digest?: string;
}

export interface VerifyReport {
  ref: string;
  kind: 'release' | 'catalog';
  /** Distinct images needed. */
  images: number;
  complete: number;
  missing: MissingImage[];
  /** Manifests and blobs checked, and the bytes of those blobs. */
  manifests: number;
  blobs: number;
  bytes: number;
}

export class VerifyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VerifyError';
  }
}

export interface VerifyOptions {
  rules: readonly MirrorRule[];
  /** The local repository a mirror repository names (drops the host of a cluster's mirror location). */
  toLocal: (repository: string) => string;
  /** The recorded origin of REF's repository: the image itself is then needed under that name too. */
  selfOrigin?: string;
  /** Told how many images there are, then about each one checked. */
  onPlan?: (images: number) => void;
  onChecked?: (image: NeededImage, bytes: number, missing: MissingImage | undefined) => void;
}

/** `repo:tag` or `repo@sha256:…`, a local reference. */
export function parseLocalReference(ref: string): { repo: string; reference: string } | undefined {
  const at = ref.indexOf('@');
  if (at !== -1) return at > 0 ? { repo: ref.slice(0, at), reference: ref.slice(at + 1) } : undefined;
  const colon = ref.lastIndexOf(':');
  if (colon <= 0 || colon < ref.lastIndexOf('/')) return undefined;
  return { repo: ref.slice(0, colon), reference: ref.slice(colon + 1) };
}

function parsedManifest(record: ManifestRecord) {
  return parseManifest(record.content, record.mediaType);
}

interface ImageManifest {
  digest: string;
  configDigest: string;
  layers: string[];
}

/** The image manifests of a local image: itself, or every child of an index. */
async function imageManifests(content: MirrorContent, repo: string, record: ManifestRecord, shown: string): Promise<ImageManifest[]> {
  const parsed = parsedManifest(record);
  const records: ManifestRecord[] = [];
  if (!parsed.isIndex) records.push(record);
  for (const child of parsed.isIndex ? parsed.manifestRefs : []) {
    const found = await content.manifest(repo, child);
    if (!found) throw new VerifyError(`${shown} is incomplete on this mirror: its child manifest ${child} is missing`);
    records.push(found);
  }
  return records.map((r) => {
    const doc = JSON.parse(r.content.toString('utf8')) as { config?: { digest?: string }; layers?: { digest: string }[] };
    return { digest: r.digest, configDigest: doc.config?.digest ?? '', layers: (doc.layers ?? []).map((l) => l.digest) };
  });
}

async function readBlobText(content: MirrorContent, digest: string): Promise<string | undefined> {
  const stream = await content.openBlob(digest);
  if (!stream) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The labels of an image config (none when it has none, or is not an image config at all). */
function imageLabels(configText: string | undefined): Record<string, string> {
  if (!configText) return {};
  try {
    const labels = (JSON.parse(configText) as { config?: { Labels?: unknown } } | null)?.config?.Labels;
    return typeof labels === 'object' && labels !== null ? (labels as Record<string, string>) : {};
  } catch {
    return {};
  }
}

/** What the release or catalog at a local reference needs, read from its layers. */
export async function neededImages(
  content: MirrorContent,
  ref: string,
  selfOrigin?: string,
): Promise<{ kind: 'release' | 'catalog'; needed: NeededImage[] }> {
  const local = parseLocalReference(ref);
  if (!local) throw new VerifyError(`"${ref}" is not a local reference: use repo:tag or repo@sha256:…`);
  const record = await content.manifest(local.repo, local.reference);
  if (!record) throw new VerifyError(`${ref} is not on this mirror (no such repository, tag or manifest)`);

  const needed: NeededImage[] = [];
  let kind: 'release' | 'catalog' | undefined;
  for (const image of await imageManifests(content, local.repo, record, ref)) {
    const labels = imageLabels(await readBlobText(content, image.configDigest));
    const files = await readPayloadFiles(
      image.layers.map((digest) => ({ digest, open: () => content.openBlob(digest) })),
      labels[CATALOG_CONFIGS_LABEL] ?? 'configs',
    );
    if (files.imageReferences) {
      kind = 'release';
      needed.push(...releaseComponents(files.imageReferences));
      continue;
    }
    const catalog = catalogImages(files.catalogFiles);
    if (catalog.bundles > 0) {
      kind ??= 'catalog';
      needed.push(...catalog.needed);
    }
  }
  if (!kind) {
    throw new VerifyError(
      `${ref} is neither an OpenShift release image (no release-manifests/image-references in its layers) ` +
        'nor a file-based operator catalog (no olm.bundle entries under /configs)',
    );
  }
  // The image itself, under the name clusters know it by (an upgrade pulls
  // quay.io/openshift-release-dev/ocp-release@sha256:… through the same mirror sets).
  if (selfOrigin) needed.unshift({ reference: `${selfOrigin}@${record.digest}`, neededBy: `the ${kind} image itself` });
  // Each image once, named by what first needed it (a component shared by arches, an image related to many bundles).
  const seen = new Map<string, NeededImage>();
  for (const n of needed) if (!seen.has(n.reference)) seen.set(n.reference, n);
  return { kind, needed: [...seen.values()] };
}

interface Counter {
  manifests: number;
  blobs: Set<string>;
  bytes: number;
}

/** Whether `repo` holds the image at `reference` whole; the first thing missing otherwise. */
async function checkImage(
  content: MirrorContent,
  repo: string,
  reference: string,
  counter: Counter,
): Promise<{ reason: MissingReason; message: string; digest?: string } | undefined> {
  const record = await content.manifest(repo, reference);
  if (!record) return { reason: 'manifest-missing', message: `manifest ${reference} is not in ${repo}`, digest: reference.includes(':') ? reference : undefined };
  counter.manifests++;
  const parsed = parsedManifest(record);
  for (const child of parsed.manifestRefs) {
    const childRecord = await content.manifest(repo, child);
    if (!childRecord) return { reason: 'child-missing', message: `index ${record.digest} in ${repo} lacks its child manifest ${child}`, digest: child };
    const problem = await checkImage(content, repo, child, counter);
    if (problem) return problem;
  }
  for (const blob of parsed.blobRefs) {
    const linked = await content.linkedBlobSize(repo, blob);
    if (linked === undefined) return { reason: 'blob-missing', message: `blob ${blob} of manifest ${record.digest} is not in ${repo}`, digest: blob };
    // A layer shared by many images (a release's base layers) is looked for on disk once.
    if (counter.blobs.has(blob)) continue;
    const onDisk = await content.blobFileSize(blob);
    if (onDisk === undefined) return { reason: 'blob-missing', message: `blob ${blob} of manifest ${record.digest} in ${repo} has no file on disk`, digest: blob };
    counter.blobs.add(blob);
    counter.bytes += onDisk;
  }
  return undefined;
}

/** Resolves and checks one needed image; undefined when a mirror holds it whole. */
async function checkNeeded(content: MirrorContent, image: NeededImage, options: VerifyOptions, counter: Counter): Promise<MissingImage | undefined> {
  const ref = parseImageReference(image.reference);
  const base = { reference: image.reference, neededBy: image.neededBy };
  if (!ref) return { ...base, reason: 'invalid-reference', message: `"${image.reference}" is not an image reference` };
  const resolution = resolveThroughMirrors(ref, options.rules);
  if (resolution.kind === 'unmapped') {
    return { ...base, reason: 'unmapped', message: `no mirror set covers ${ref.name}: a cluster would pull it from its source` };
  }
  if (resolution.kind === 'no-usable-mirror') return { ...base, reason: 'no-usable-mirror', message: resolution.reason };
  let first: MissingImage | undefined;
  for (const candidate of resolution.candidates) {
    const repo = options.toLocal(candidate.repository);
    const problem = await checkImage(content, repo, ref.digest ?? ref.tag!, counter);
    if (!problem) return undefined;
    first ??= { ...base, ...problem, repository: repo };
  }
  if (first && resolution.candidates.length > 1) first.message += ` (nor in any of the ${resolution.candidates.length - 1} other mirrors of ${resolution.source})`;
  return first;
}

/** Checks every image the release or catalog at `ref` needs. */
export async function verifyPayload(content: MirrorContent, ref: string, options: VerifyOptions): Promise<VerifyReport> {
  const { kind, needed } = await neededImages(content, ref, options.selfOrigin).catch((e: unknown) => {
    if (e instanceof PayloadError) throw new VerifyError(`cannot read ${ref}: ${e.message}`);
    throw e;
  });
  options.onPlan?.(needed.length);
  const counter: Counter = { manifests: 0, blobs: new Set(), bytes: 0 };
  const missing: MissingImage[] = [];
  for (const image of needed) {
    const before = counter.bytes;
    const problem = await checkNeeded(content, image, options, counter);
    if (problem) missing.push(problem);
    options.onChecked?.(image, counter.bytes - before, problem);
  }
  return {
    ref,
    kind,
    images: needed.length,
    complete: needed.length - missing.length,
    missing,
    manifests: counter.manifests,
    blobs: counter.blobs.size,
    bytes: counter.bytes,
  };
}
