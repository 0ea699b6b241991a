// Recognises OpenShift release payloads and file-based operator catalogs among the stored images,
// from the labels of their config blobs:
// - `oc adm release new` labels a release payload `io.openshift.release=<version>` (its
//   release-manifests/ layer carries the same version, but the label is enough and costs one
//   small read instead of unpacking a layer);
// - an operator catalog image (opm) labels `operators.operatorframework.io.index.configs.v1=<dir>`.
// Each manifest is classified once, in arrival order, and the answer kept in the database.

import type { BlobStore } from '../storage/blobstore.js';
import type { ManifestCursor, MetadataStore, UnclassifiedManifest } from '../storage/metadata.js';
import { isIndexMediaType } from '../registry/manifest.js';

export const RELEASE_LABEL = 'io.openshift.release';
export const CATALOG_LABEL = 'operators.operatorframework.io.index.configs.v1';
/** Config blobs are a few KiB; anything far larger is not worth reading for a label. */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
const BATCH = 200;

export type ImageKind = 'release' | 'catalog' | '';

export interface Classification {
  kind: ImageKind;
  version: string | null;
}

/** Reads a config's labels and says what the image is. */
export function classifyConfig(config: unknown): Classification {
  const labels = (config as { config?: { Labels?: Record<string, unknown> } } | null)?.config?.Labels ?? {};
  const release = labels[RELEASE_LABEL];
  if (typeof release === 'string') return { kind: 'release', version: release || null };
  if (typeof labels[CATALOG_LABEL] === 'string') {
    const version = labels['org.opencontainers.image.version'] ?? labels['version'];
    return { kind: 'catalog', version: typeof version === 'string' ? version : null };
  }
  return { kind: '', version: null };
}

export class ReleaseClassifier {
  private cursor: ManifestCursor | undefined;
  private readonly timer: NodeJS.Timeout;
  private running: Promise<boolean> | undefined;

  constructor(
    private readonly meta: MetadataStore,
    private readonly blobs: BlobStore,
    everyMs = 60_000,
  ) {
    this.timer = setInterval(() => void this.catchUp(5_000).catch(() => undefined), everyMs);
    this.timer.unref();
  }

  /** Classifies what arrived since the last run, for at most `budgetMs`; true when caught up. */
  catchUp(budgetMs: number): Promise<boolean> {
    // One walk at a time: a page view joins the background one rather than racing it.
    this.running ??= this.walk(budgetMs).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async walk(budgetMs: number): Promise<boolean> {
    const deadline = Date.now() + budgetMs;
    for (;;) {
      const batch = await this.meta.manifestsAfter(this.cursor, BATCH);
      if (batch.length === 0) return true;
      for (const m of batch) {
        const result = await this.classify(m);
        // Saved per manifest so an index sees its children, which arrive before it.
        if (result) await this.meta.saveImageKinds([{ repoId: m.repoId, digest: m.digest, ...result }]);
        this.cursor = [m.createdAt, m.repoId, m.digest];
      }
      if (Date.now() > deadline) return false;
    }
  }

  /**
   * Classifies the given manifests of one repository that are not yet (a page view does this for
   * what it shows, without waiting for the walk over everything); returns the release/catalog kinds.
   */
  async classifyRepository(repo: string, manifests: { digest: string; mediaType: string; content: Buffer }[], limit = 200): Promise<Map<string, Classification>> {
    const known = await this.meta.repositoryImageKinds(repo);
    const out = new Map<string, Classification>();
    if (!known) return out;
    for (const [digest, k] of known.kinds) out.set(digest, { kind: k.kind as ImageKind, version: k.version });
    // Images before indexes: an index is what its platform images are.
    const todo = manifests.filter((m) => !known.kinds.has(m.digest)).sort((a, b) => Number(isIndexMediaType(a.mediaType)) - Number(isIndexMediaType(b.mediaType)));
    for (const m of todo.slice(0, limit)) {
      const result = await this.classify({ repoId: known.repoId, repo, digest: m.digest, mediaType: m.mediaType, content: m.content, createdAt: 0 });
      if (!result) continue;
      await this.meta.saveImageKinds([{ repoId: known.repoId, digest: m.digest, ...result }]);
      out.set(m.digest, result);
    }
    return out;
  }

  /** undefined: nothing to record (an index of unknown children, a config not stored here). */
  private async classify(m: UnclassifiedManifest): Promise<Classification | undefined> {
    if (await this.meta.imageKind(m.repoId, m.digest)) return undefined;
    let doc: { config?: { digest?: unknown; size?: unknown }; manifests?: { digest?: unknown }[] };
    try {
      doc = JSON.parse(m.content.toString('utf8'));
    } catch {
      return { kind: '', version: null };
    }
    if (isIndexMediaType(m.mediaType)) {
      // A multi-arch release or catalog: what its platform images are.
      for (const child of doc.manifests ?? []) {
        const known = typeof child.digest === 'string' ? await this.meta.imageKind(m.repoId, child.digest) : undefined;
        if (known && known.kind !== '') return { kind: known.kind as ImageKind, version: known.version };
      }
      return { kind: '', version: null };
    }
    const digest = doc.config?.digest;
    const size = doc.config?.size;
    if (typeof digest !== 'string' || typeof size !== 'number' || size > MAX_CONFIG_BYTES) return { kind: '', version: null };
    const bytes = await this.readBlob(digest);
    if (!bytes) return undefined;
    try {
      return classifyConfig(JSON.parse(bytes.toString('utf8')));
    } catch {
      return { kind: '', version: null };
    }
  }

  private async readBlob(digest: string): Promise<Buffer | undefined> {
    let stream;
    try {
      stream = await this.blobs.open(digest);
    } catch {
      return undefined;
    }
    if (!stream) return undefined;
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of stream) {
      total += (chunk as Buffer).length;
      if (total > MAX_CONFIG_BYTES) {
        stream.destroy();
        return undefined;
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
