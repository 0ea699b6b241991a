// A blob file found corrupt while being served whole (its bytes did not hash to its digest, see
// BlobFileStream): it is quarantined as fsck --repair would, and its rows dropped, so the next
// request for it misses. Content from an upstream is then fetched again; pushed content must be
// pushed again (a client's HEAD now says it is missing, so a push sends it).

import type { Logger } from '../log.js';
import type { KeyedLock } from '../registry/keyed-lock.js';
import type { FsBlobStore } from '../storage/blobstore.js';
import type { MetadataStore } from '../storage/metadata.js';
import { hashBlobFile } from './fsck-blobs.js';
import { digestFileName, quarantineFile } from './quarantine.js';

export interface ServedCorruptionDeps {
  storage: string;
  meta: MetadataStore;
  blobs: FsBlobStore;
  blobLocks: KeyedLock;
  log: Logger;
}

/** The handler FsBlobStore.onCorrupt calls; runs in the background, never throws. */
export function quarantineServedBlobs(deps: ServedCorruptionDeps): (digest: string, actual: string) => void {
  return (digest, actual) => {
    deps.blobLocks
      .run(digest, async () => {
        // Another request may have quarantined it already, or a push replaced it with good bytes.
        const state = await hashBlobFile(deps, digest);
        if (state.kind !== 'wrong') return;
        const moved = await quarantineFile(deps.storage, deps.blobs.blobPath(digest), digestFileName(digest));
        await deps.meta.forgetBlob(digest);
        deps.log.error(
          { digest, actual: state.actual, quarantined: moved },
          'corrupt blob file found while serving: moved to quarantine and forgotten (an upstream blob is fetched again when next asked for; pushed content must be pushed again)',
        );
      })
      .catch((err: unknown) => deps.log.error({ err, digest, actual }, 'could not quarantine a corrupt blob file'));
  };
}
