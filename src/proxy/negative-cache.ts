// Remembers recent "not found" answers from upstreams. A typo'd image in a DaemonSet makes every node
// retry every few seconds; without this, each retry would cost an upstream round trip (and count
// against its rate limit). Kept short so an image pushed upstream a moment later shows up soon.

export interface NegativeCacheOptions {
  /** How long a 404 is remembered; default 30s. */
  ttlMs?: number;
  /** Most entries kept; the oldest are dropped first, so a flood of random names cannot grow memory without bound. */
  maxEntries?: number;
  /** Clock, injectable for tests. */
  now?: () => number;
}

export class NegativeCache {
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** key → expiry time; a Map iterates in insertion order, which is also expiry order since the TTL is fixed. */
  private readonly expiries = new Map<string, number>();

  constructor(options: NegativeCacheOptions = {}) {
    this.ttlMs = options.ttlMs ?? 30_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Records that `reference` (tag or digest) of `repo` was not found at `upstream`. */
  remember(upstream: string, repo: string, reference: string): void {
    const key = cacheKey(upstream, repo, reference);
    this.expiries.delete(key); // re-insert so insertion order stays expiry order
    this.expiries.set(key, this.now() + this.ttlMs);
    while (this.expiries.size > this.maxEntries) {
      const oldest = this.expiries.keys().next().value as string;
      this.expiries.delete(oldest);
    }
  }

  /** True when the upstream said "not found" for this within the TTL. */
  has(upstream: string, repo: string, reference: string): boolean {
    const key = cacheKey(upstream, repo, reference);
    const expiry = this.expiries.get(key);
    if (expiry === undefined) return false;
    if (this.now() < expiry) return true;
    this.expiries.delete(key);
    return false;
  }

  /** Drops an entry, e.g. when the content has just been pushed locally. */
  forget(upstream: string, repo: string, reference: string): void {
    this.expiries.delete(cacheKey(upstream, repo, reference));
  }

  get size(): number {
    return this.expiries.size;
  }
}

// NUL cannot occur in URLs, repository names or references, so keys cannot collide.
function cacheKey(upstream: string, repo: string, reference: string): string {
  return `${upstream}\0${repo}\0${reference}`;
}
