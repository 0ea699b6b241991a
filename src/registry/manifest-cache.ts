import type { ManifestRecord, TagRecord } from '../storage/metadata.js';

/**
 * Hot manifests in memory, so the pull path of a busy tag does not query SQLite every time (a
 * cluster pulling one release asks for the same few manifests thousands of times).
 *
 * Entries are keyed by repository, reference and the repository's generation: every change to a
 * repository bumps its generation, which makes all its entries unreachable at once (they then age
 * out of the LRU). Bounded by total content bytes.
 *
 * Pull-through repositories also keep their tag records here (digest, and when the upstream last
 * confirmed the tag, which decides revalidation), so a GET by tag of a cached image does not read
 * SQLite either. Bounded by count.
 */
export class ManifestCache {
  private readonly entries = new Map<string, ManifestRecord>();
  private readonly tags = new Map<string, TagRecord>();
  private readonly generations = new Map<string, number>();
  /** Bumped by clear(), so reads that began before it are not cached after it. */
  private epoch = 0;
  private bytes = 0;

  /**
   * With replicas sharing one database, tags are not kept here: a tag another replica moved must
   * be served moved at once, and a notification arrives only after that replica answered its
   * client. (Content by digest never changes, but see contentCached.)
   */
  tagsCached = true;
  /**
   * With replicas, manifests are not answered from here either: one deleted on another replica must
   * not be served from memory while the notification of its deletion is on its way. They are still
   * kept, by digest, for lastKnown(): what a replica serves while the database does not answer.
   */
  contentCached = true;
  /** Called on every change made here (replicas announce it to the others). */
  onChange: ((repo: string) => void) | undefined;

  constructor(
    private readonly maxBytes = 64 * 1024 * 1024,
    private readonly maxTags = 20_000,
  ) {}

  private key(repo: string, reference: string): string {
    return `${this.generation(repo)}\0${repo}\0${reference}`;
  }

  /**
   * The repository's current generation. Read it before an awaited store read and pass it to set
   * or setTag: a change that lands while the read is in flight then keeps its stale answer out.
   */
  generation(repo: string): number {
    // The epoch counts clear()s: the sum only grows, with every change to the repository or the whole cache.
    return this.epoch + (this.generations.get(repo) ?? 0);
  }

  get(repo: string, reference: string): ManifestRecord | undefined {
    if (!this.contentCached || (!this.tagsCached && !isDigest(reference))) return undefined;
    return touched(this.entries, this.key(repo, reference));
  }

  set(repo: string, reference: string, manifest: ManifestRecord, asOf?: number): void {
    if (manifest.size > this.maxBytes / 16) return;
    if (!this.tagsCached && !isDigest(reference)) return;
    if (asOf !== undefined && asOf !== this.generation(repo)) return;
    const key = this.key(repo, reference);
    const previous = this.entries.get(key);
    if (previous) this.bytes -= previous.size;
    this.entries.set(key, manifest);
    this.bytes += manifest.size;
    for (const [oldest, value] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= value.size;
    }
  }

  /** The manifest as last read, even where contentCached is off: for when the store cannot answer. */
  lastKnown(repo: string, reference: string): ManifestRecord | undefined {
    if (!this.tagsCached && !isDigest(reference)) return undefined;
    return touched(this.entries, this.key(repo, reference));
  }

  getTag(repo: string, tag: string): TagRecord | undefined {
    if (!this.tagsCached) return undefined;
    return touched(this.tags, this.key(repo, tag));
  }

  /** Remembers a tag record; a later setTag of the same tag replaces it (a revalidation's new time). */
  setTag(repo: string, tag: string, record: TagRecord, asOf?: number): void {
    if (!this.tagsCached) return;
    if (asOf !== undefined && asOf !== this.generation(repo)) return;
    const key = this.key(repo, tag);
    this.tags.delete(key);
    this.tags.set(key, record);
    if (this.tags.size > this.maxTags) this.tags.delete(this.tags.keys().next().value!);
  }

  /** Called on every change to the repository's manifests or tags. */
  invalidate(repo: string): void {
    this.forget(repo);
    this.onChange?.(repo);
  }

  /** Drops the repository's entries without announcing it (a change another replica made). */
  forget(repo: string): void {
    this.generations.set(repo, (this.generations.get(repo) ?? 0) + 1);
  }

  /** Forgets everything: after changes may have been missed (another replica's, while cut off). */
  clear(): void {
    this.epoch++;
    this.entries.clear();
    this.tags.clear();
    this.bytes = 0;
  }
}

/** Tags cannot hold ':', digests always do. */
function isDigest(reference: string): boolean {
  return reference.includes(':');
}

/** The entry under `key`, moved to the most recently used end of the map (insertion order). */
function touched<V>(map: Map<string, V>, key: string): V | undefined {
  const found = map.get(key);
  if (found !== undefined) {
    map.delete(key);
    map.set(key, found);
  }
  return found;
}
