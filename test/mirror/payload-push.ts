// Shared pieces of the mirror-set and verify tests: pushing synthetic payload images with skopeo.

import { skopeoCopy } from '../helpers/skopeo.js';
import type { BuiltFilesImage } from '../helpers/files-image.js';
import type { PayloadImage } from '../helpers/payloads.js';

/** Drops the registry host: quay.io/openshift-release-dev/x → openshift-release-dev/x. */
export function pathOf(repository: string): string {
  return repository.slice(repository.indexOf('/') + 1);
}

/** Pushes each image by digest (tagless, as release and catalog mirroring does) to `host`/`repoOf(image)`. */
export async function pushByDigest(host: string, images: PayloadImage[], repoOf: (image: PayloadImage) => string): Promise<void> {
  // Two at a time: the machine is small and shared.
  for (let i = 0; i < images.length; i += 2) {
    await Promise.all(
      images.slice(i, i + 2).map((image) =>
        skopeoCopy(image.built.ociRef, `docker://${host}/${repoOf(image)}@${image.built.indexDigest}`, {
          destInsecure: true,
        }),
      ),
    );
  }
}

export async function pushTagged(host: string, image: BuiltFilesImage, repoAndTag: string): Promise<void> {
  await skopeoCopy(image.ociRef, `docker://${host}/${repoAndTag}`, { destInsecure: true });
}
