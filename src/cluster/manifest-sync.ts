import type { Logger } from '../log.js';
import type { ManifestCache } from '../registry/manifest-cache.js';
import type { ChangeFeed } from './notify.js';

/**
 * Keeps a replica's in-memory manifests consistent with the cluster: every change made here is
 * announced to the others, what another replica changes in a repository drops this replica's
 * cached entries for it, and after a reconnect (when changes may have been missed) the whole cache
 * goes. Tags are not cached at all with replicas (see ManifestCache.tagsCached); the server keeps
 * no manifests either (contentCached), so this is what keeps any cache that is on honest.
 */
export function syncManifestCache(feed: ChangeFeed, cache: ManifestCache, log?: Logger): { stop(): void } {
  cache.tagsCached = false;
  cache.onChange = (repo) => {
    feed.publish('repo', repo).catch((err: Error) => {
      // Unannounced, other replicas would keep a deleted manifest: they drop everything instead
      // when their feed resyncs; until then say so.
      log?.warn({ repo, err: err.message }, 'change not announced to other replicas');
    });
  };
  const offChange = feed.on('repo', (repo) => cache.forget(repo));
  const offResync = feed.onResync(() => cache.clear());
  return {
    stop() {
      cache.onChange = undefined;
      offChange();
      offResync();
    },
  };
}
