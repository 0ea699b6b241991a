import type { Readable } from 'node:stream';

/**
 * The two ends of every air-gap copy (import, export, sync): a source that hands out manifests and
 * blob streams by digest, and a sink that stores them. The copier in copy.ts walks images between
 * them; each end knows only its own medium (an OCI layout, oc's v2/ tree, a remote registry, the
 * local store, a running server).
 */

/** One image to copy: where it is in the source, where it lands. */
export interface CopyItem {
  /** Repository in the source (ignored by an OCI layout, whose blobs are shared). */
  srcRepo: string;
  /** Tag or digest in the source. */
  reference: string;
  /** Local repository it lands in. */
  destRepo: string;
  /** Tag to set in the destination; none for a tagless (by-digest) image. */
  tag?: string;
  /** Where the repository's content comes from, recorded for mirror sets. */
  origin?: string;
  /** How a person names this item in messages, e.g. quay.io/ocp/release:4.15 or layout/index.json#3. */
  label: string;
}

export interface SourceManifest {
  digest: string;
  bytes: Buffer;
  /** When the medium says (index.json descriptor, Content-Type); else the body decides. */
  mediaType?: string;
}

export interface SourceBlob {
  /** Undefined only when a remote streams without a length. */
  size: number | undefined;
  stream: Readable;
  /** The file or URL the bytes come from, for error messages. */
  where: string;
}

export interface ContentSource {
  /** e.g. "OCI layout /mnt/usb/export". */
  readonly description: string;
  /** The manifest by tag or digest, its bytes verified against the digest it is named by. */
  manifest(srcRepo: string, reference: string): Promise<SourceManifest>;
  /** Opens a blob for streaming; throws MissingContentError when the medium does not hold it. */
  blob(srcRepo: string, digest: string, size?: number): Promise<SourceBlob>;
  close(): Promise<void>;
}

export interface ManifestPlacement {
  /** Tag to point at it, if any. */
  tag?: string;
  /** True for what the user asked for (an index entry of a layout); false for an index's children. */
  top: boolean;
  /** Where the repository comes from (a layout records it next to each entry). */
  origin?: string;
}

export interface ContentSink {
  readonly description: string;
  /** True when the blob is already there for this repository (a sink may link it from another one). */
  hasBlob(repo: string, digest: string): Promise<boolean>;
  /** Stores a blob from a stream that errors if its bytes do not match the digest; visible only when whole. */
  putBlob(repo: string, digest: string, size: number | undefined, stream: Readable): Promise<void>;
  hasManifest(repo: string, digest: string): Promise<boolean>;
  /** Stores a manifest whose blobs and children are all stored already, and points the tag at it. */
  putManifest(repo: string, digest: string, bytes: Buffer, mediaType: string, placement: ManifestPlacement): Promise<void>;
  setOrigin(repo: string, origin: string): Promise<void>;
  /** Makes everything stored so far durable and visible as a whole (a layout's index.json). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The source lacks content the copy needs: a blob left out of a layout, an image gone upstream. */
export class MissingContentError extends Error {
  constructor(
    message: string,
    readonly digest: string,
  ) {
    super(message);
    this.name = 'MissingContentError';
  }
}

/** Bytes that do not hash to the digest naming them: the message names the file and the digest. */
export class CorruptContentError extends Error {
  constructor(
    readonly where: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`${where}: content does not match its digest ${expected} (it hashes to ${actual}); the copy is corrupt`);
    this.name = 'CorruptContentError';
  }
}
