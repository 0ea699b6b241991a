import type { ManifestCache } from '../registry/manifest-cache.js';
import type { ChangeFeed } from './notify.js';

/**
 * Keeps a replica's in-memory manifests consistent with the cluster: what another replica changes
 * in a repository drops this replica's cached entries for it, and after a reconnect (when changes
 * may have been missed) the whole cache goes.
 *
 * The other half is the writer's: after each change it calls `announce(repo)` (the same places that
 * call ManifestCache.invalidate locally).
 */
export function syncManifestCache(feed: ChangeFeed, cache: ManifestCache): { announce(repo: string): Promise<void>; stop(): void } {
  const offChange = feed.on('repo', (repo) => cache.invalidate(repo));
  const offResync = feed.onResync(() => cache.clear());
  return {
    announce: (repo) => feed.publish('repo', repo),
    stop() {
      offChange();
      offResync();
    },
  };
}
