// When a hundred nodes pull the same image at once, the upstream should see one request per manifest
// or blob, not a hundred: concurrent callers asking for the same key share the first caller's promise.

export class SingleFlight<K, V> {
  private readonly inFlight = new Map<K, Promise<V>>();

  /**
   * Runs `fn` unless a call for `key` is already running, in which case its promise is returned.
   * The entry is dropped as soon as the promise settles, so a later call (after a failure, or after
   * the result went stale) starts afresh; results are not cached here.
   */
  do(key: K, fn: () => Promise<V>): Promise<V> {
    const running = this.inFlight.get(key);
    if (running !== undefined) return running;
    const promise = (async () => {
      try {
        return await fn();
      } finally {
        this.inFlight.delete(key);
      }
    })();
    this.inFlight.set(key, promise);
    return promise;
  }

  /** True while a call for `key` is running. */
  has(key: K): boolean {
    return this.inFlight.has(key);
  }

  /** Number of keys with a call running. */
  get size(): number {
    return this.inFlight.size;
  }
}
