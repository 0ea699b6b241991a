/**
 * A single-platform OCI image whose layers hold given files (gzip'ed tars), written into an OCI
 * image layout: what release and catalog images look like to a reader of their layers.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { digestHex, makeTar, MEDIA_TYPES, sha256Digest } from './images.js';

export interface BuiltFilesImage {
  /** Digest of the image manifest. */
  digest: string;
  manifestBytes: Buffer;
  configDigest: string;
  layerDigests: string[];
  tag: string;
  /** `oci:${dir}:${tag}` */
  ociRef: string;
}

export function buildFilesImage(
  dir: string,
  options: { tag: string; labels?: Record<string, string>; layers: { name: string; content: Buffer }[][] },
): BuiltFilesImage {
  const blobDir = join(dir, 'blobs', 'sha256');
  mkdirSync(blobDir, { recursive: true });
  const addBlob = (data: Buffer) => {
    const digest = sha256Digest(data);
    writeFileSync(join(blobDir, digestHex(digest)), data);
    return digest;
  };
  const layers = options.layers.map((files) => {
    const tar = makeTar(files.map((f) => ({ ...f, mtime: 1704067200 })));
    const gz = gzipSync(tar);
    return { digest: addBlob(gz), size: gz.length, diffId: sha256Digest(tar) };
  });
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: options.labels ?? {}, Entrypoint: ['/bin/true'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const configDigest = addBlob(config);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: MEDIA_TYPES.ociLayerGzip, digest: l.digest, size: l.size })),
    }),
  );
  const digest = addBlob(manifestBytes);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const refKey = 'org.opencontainers.image.ref.name';
  const indexPath = join(dir, 'index.json');
  type Desc = { mediaType: string; digest: string; size: number; annotations?: Record<string, string> };
  const existing: Desc[] = existsSync(indexPath) ? ((JSON.parse(readFileSync(indexPath, 'utf8')) as { manifests: Desc[] }).manifests ?? []) : [];
  const manifests = existing.filter((m) => m.annotations?.[refKey] !== options.tag);
  manifests.push({ mediaType: MEDIA_TYPES.ociManifest, digest, size: manifestBytes.length, annotations: { [refKey]: options.tag } });
  writeFileSync(indexPath, JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }));
  return { digest, manifestBytes, configDigest, layerDigests: layers.map((l) => l.digest), tag: options.tag, ociRef: `oci:${dir}:${options.tag}` };
}
