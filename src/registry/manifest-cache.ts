import type { ManifestRecord } from '../storage/metadata.js';

/**
 * Hot manifests in memory, so the pull path of a busy tag does not query SQLite every time (a
 * cluster pulling one release asks for the same few manifests thousands of times).
 *
 * Entries are keyed by repository, reference and the repository's generation: every change to a
 * repository bumps its generation, which makes all its entries unreachable at once (they then age
 * out of the LRU). Bounded by total content bytes.
 */
export class ManifestCache {
  private readonly entries = new Map<string, ManifestRecord>();
  private readonly generations = new Map<string, number>();
  private bytes = 0;

  constructor(private readonly maxBytes = 64 * 1024 * 1024) {}

  private key(repo: string, reference: string): string {
    return `${this.generations.get(repo) ?? 0}\0${repo}\0${reference}`;
  }

  get(repo: string, reference: string): ManifestRecord | undefined {
    const key = this.key(repo, reference);
    const found = this.entries.get(key);
    if (found) {
      // Most recently used last.
      this.entries.delete(key);
      this.entries.set(key, found);
    }
    return found;
  }

  set(repo: string, reference: string, manifest: ManifestRecord): void {
    if (manifest.size > this.maxBytes / 16) return;
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

  /** Called on every change to the repository's manifests or tags. */
  invalidate(repo: string): void {
    this.generations.set(repo, (this.generations.get(repo) ?? 0) + 1);
  }
}
