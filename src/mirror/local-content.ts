// Read-only access to a storage directory for the commands that only look (verify, mirrorsets):
// the metadata database opened read-only (WAL lets it be read while a server or an import writes
// it, so no lock is taken and a running server is never in the way), blob files read in place.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { looksLikeDigest } from '../registry/names.js';
import { FsBlobStore, type BlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore, type MetadataStore } from '../storage/metadata.js';
import type { Origin } from './mirror-sets.js';
import type { MirrorContent } from './verify.js';

export interface StorageView {
  content: MirrorContent;
  origins(): Promise<Origin[]>;
  close(): Promise<void>;
}

/** What verify and the dashboard's completeness checks read: manifests by tag or digest, blob links and bytes. */
export function mirrorContent(meta: MetadataStore, blobs: BlobStore): MirrorContent {
  return {
    manifest: (repo, reference) => (looksLikeDigest(reference) ? meta.getManifest(repo, reference) : meta.getTaggedManifest(repo, reference)),
    linkedBlobSize: (repo, digest) => meta.linkedBlobSize(repo, digest),
    blobFileSize: (digest) => blobs.size(digest),
    openBlob: (digest) => blobs.open(digest),
  };
}

/** The storage cannot be read: none there, or a database this airlock cannot read. */
export class StorageViewError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageViewError';
  }
}

export function databasePath(storage: string): string {
  return join(storage, 'airlock.db');
}

export function openStorageView(storage: string): StorageView {
  const path = databasePath(storage);
  if (!existsSync(path)) {
    throw new StorageViewError(`no airlock storage at ${storage} (no airlock.db): pass --storage DIR or --config FILE naming the mirror's storage`);
  }
  let meta: SqliteMetadataStore;
  try {
    meta = new SqliteMetadataStore(path, { readonly: true });
  } catch (e) {
    throw new StorageViewError(`cannot read ${path}: ${(e as Error).message}`);
  }
  const blobs = new FsBlobStore(storage);
  return { content: mirrorContent(meta, blobs), origins: () => meta.listOrigins(), close: () => meta.close() };
}

/** Recorded origins, or none when the storage has no database yet (a fresh pull-through cache). */
export async function readOrigins(storage: string): Promise<Origin[]> {
  if (!existsSync(databasePath(storage))) return [];
  const view = openStorageView(storage);
  try {
    return await view.origins();
  } finally {
    await view.close();
  }
}
