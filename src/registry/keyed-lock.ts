/** Runs tasks for the same key one after another (e.g. PATCHes of one upload session). */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Holds every key (given sorted and unique) while the task runs; see runAll. */
  runMany<T>(sortedKeys: string[], task: () => Promise<T>): Promise<T> {
    const take = (i: number): Promise<T> => (i === sortedKeys.length ? task() : this.run(sortedKeys[i]!, () => take(i + 1)));
    return take(0);
  }

  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const current = previous.then(task, task);
    const tail = current.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await current;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/**
 * Runs a task holding several keys of one lock at once. Keys are taken in sorted order, so two
 * callers of runAll never wait on each other in a cycle; single-key holders never wait on a second key.
 */
export function runAll<T>(lock: KeyedLock, keys: Iterable<string>, task: () => Promise<T>): Promise<T> {
  return lock.runMany([...new Set(keys)].sort(), task);
}
