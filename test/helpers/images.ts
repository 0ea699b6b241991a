/**
 * Test image fixtures built on disk, without network: an OCI image layout (for skopeo's `oci:`
 * transport) and a Docker v2-2 image in skopeo's `dir:` transport layout. Both hold a multi-arch
 * image: an index / manifest list whose children are per-platform image manifests, each with a
 * valid image config (rootfs.diff_ids = sha256 of the uncompressed layer tars) and gzip'ed tar
 * layers holding one file of pseudo-random content.
 *
 * Layouts written (both verified against skopeo 1.9.3 by test/fixtures.test.ts):
 *
 * OCI image layout (image-spec v1.0/1.1, what `oci:DIR:TAG` reads and writes):
 *   DIR/oci-layout                {"imageLayoutVersion":"1.0.0"}
 *   DIR/index.json                {"schemaVersion":2,"manifests":[{descriptor of the top-level
 *                                  manifest, annotations:{"org.opencontainers.image.ref.name":TAG}}]}
 *   DIR/blobs/sha256/<hex>        every blob: the image index, the image manifests, configs, layers
 *   skopeo 1.9 `oci:` takes only OCI media types (vnd.oci.image.index / manifest / config / layer).
 *
 * skopeo `dir:` transport (containers/image `directory` package, "Directory Transport Version: 1.1"),
 * as skopeo 1.9.3 writes it for `skopeo copy --all oci:X dir:Y` and reads it back:
 *   DIR/version                   "Directory Transport Version: 1.1\n"
 *   DIR/manifest.json             the top-level manifest (here the manifest list), byte-for-byte
 *   DIR/<hex>.manifest.json       each instance manifest of a list, named by its digest's hex
 *   DIR/<hex>                     every config and layer blob, named by its digest's hex (no
 *                                 "sha256:" prefix, no subdirectories); configs are blobs too
 *   (DIR/signature-N and DIR/<hex>.signature-N only when signatures exist.)
 * The `dir:` transport keeps manifests exactly as given: it accepts Docker v2-2 lists and schema2
 * manifests as well as OCI ones; `--all` copies every instance of the list.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const MEDIA_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface BuildImageOptions {
  /** One image manifest per platform. Default: linux/amd64 + linux/arm64. */
  platforms?: Platform[];
  /** Layers per platform image. Default 2. */
  layersPerImage?: number;
  /** Size of the random file inside each layer tar (uncompressed). Default 1024. */
  layerBytes?: number;
  /** Tag: the `org.opencontainers.image.ref.name` in an OCI layout. Default "latest". */
  tag?: string;
  /**
   * Seed for the layer content. Same seed + same options = byte-identical image (same digests).
   * Default: a fresh random seed, so every build yields new, unique digests.
   */
  seed?: string;
  /**
   * Write a single image manifest as the top-level manifest instead of an index / list.
   * Requires exactly one platform.
   */
  singleManifest?: boolean;
}

export interface BuiltLayer {
  digest: string; // sha256 of the gzip'ed tar (the blob)
  diffId: string; // sha256 of the uncompressed tar
  size: number;
  mediaType: string;
}

export interface BuiltPlatformImage {
  platform: Platform;
  manifestDigest: string;
  manifestSize: number;
  manifestMediaType: string;
  manifestBytes: Buffer;
  configDigest: string;
  configSize: number;
  layers: BuiltLayer[];
}

export interface BuiltImage {
  /** Digest of the top-level manifest: the index / list, or the single manifest with singleManifest. */
  indexDigest: string;
  indexMediaType: string;
  indexBytes: Buffer;
  /** Child image manifests, in platform order (with singleManifest: the one top-level manifest). */
  manifestDigests: string[];
  /** Config and layer digests of every image (no manifests), unique, in write order. */
  blobDigests: string[];
  images: BuiltPlatformImage[];
  tag: string;
}

export interface BuiltOciImage extends BuiltImage {
  /** `oci:${dir}:${tag}` */
  ociRef: string;
}

export interface BuiltDirImage extends BuiltImage {
  /** `dir:${dir}` */
  dirRef: string;
}

export const DEFAULT_PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function digestHex(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`not a sha256 digest: ${digest}`);
  return m[1]!;
}

/** Deterministic pseudo-random bytes: sha256 in counter mode over (seed, label). */
function pseudoRandomBytes(seed: string, label: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  let off = 0;
  for (let counter = 0; off < n; counter++) {
    const block = createHash('sha256').update(`${seed}\0${label}\0${counter}`).digest();
    off += block.copy(out, off);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Minimal ustar writer: one regular file per archive, 512-byte header + data padded to 512,
// then two zero blocks. Enough for any tar reader (and for skopeo, which never unpacks here).

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  // length-1 octal digits, zero-padded, then NUL.
  const s = value.toString(8).padStart(length - 1, '0');
  if (s.length > length - 1) throw new Error(`tar field overflow: ${value}`);
  buf.write(s, offset, length - 1, 'ascii');
  buf[offset + length - 1] = 0;
}

export function makeTar(files: { name: string; content: Buffer; mode?: number; mtime?: number }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    if (Buffer.byteLength(f.name) > 100) throw new Error(`tar name too long: ${f.name}`);
    const h = Buffer.alloc(512, 0);
    h.write(f.name, 0, 100, 'utf8'); // name
    writeOctal(h, 100, 8, f.mode ?? 0o644); // mode
    writeOctal(h, 108, 8, 0); // uid
    writeOctal(h, 116, 8, 0); // gid
    writeOctal(h, 124, 12, f.content.length); // size
    writeOctal(h, 136, 12, f.mtime ?? 0); // mtime
    h.fill(0x20, 148, 156); // checksum field counts as spaces while summing
    h.write('0', 156, 1, 'ascii'); // typeflag: regular file
    h.write('ustar\u0000', 257, 6, 'ascii'); // magic
    h.write('00', 263, 2, 'ascii'); // version
    h.write('root', 265, 32, 'ascii'); // uname
    h.write('root', 297, 32, 'ascii'); // gname
    let sum = 0;
    for (const b of h) sum += b;
    // checksum: six octal digits, NUL, space
    h.write(sum.toString(8).padStart(6, '0'), 148, 6, 'ascii');
    h[154] = 0;
    h[155] = 0x20;
    parts.push(h, f.content);
    const pad = (512 - (f.content.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad, 0));
  }
  parts.push(Buffer.alloc(1024, 0));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------

interface Flavor {
  index: string;
  manifest: string;
  config: string;
  layer: string;
}

const OCI: Flavor = {
  index: MEDIA_TYPES.ociIndex,
  manifest: MEDIA_TYPES.ociManifest,
  config: MEDIA_TYPES.ociConfig,
  layer: MEDIA_TYPES.ociLayerGzip,
};
const DOCKER: Flavor = {
  index: MEDIA_TYPES.dockerList,
  manifest: MEDIA_TYPES.dockerManifest,
  config: MEDIA_TYPES.dockerConfig,
  layer: MEDIA_TYPES.dockerLayerGzip,
};

interface Generated {
  built: BuiltImage;
  /** Every blob by digest, manifests included. */
  blobs: Map<string, Buffer>;
}

function platformLabel(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

function generate(flavor: Flavor, opts: BuildImageOptions): Generated {
  const platforms = opts.platforms ?? DEFAULT_PLATFORMS;
  const layersPerImage = opts.layersPerImage ?? 2;
  const layerBytes = opts.layerBytes ?? 1024;
  const tag = opts.tag ?? 'latest';
  const seed = opts.seed ?? randomBytes(16).toString('hex');
  if (platforms.length === 0) throw new Error('at least one platform is required');
  if (opts.singleManifest && platforms.length !== 1) throw new Error('singleManifest needs exactly one platform');
  if (layersPerImage < 1) throw new Error('layersPerImage must be >= 1');

  const blobs = new Map<string, Buffer>();
  const blobDigests: string[] = [];
  const addBlob = (data: Buffer): string => {
    const d = sha256Digest(data);
    if (!blobs.has(d)) blobs.set(d, data);
    return d;
  };
  const created = '2024-01-01T00:00:00Z';

  const images: BuiltPlatformImage[] = platforms.map((platform, pi) => {
    const label = platformLabel(platform);
    const layers: BuiltLayer[] = [];
    for (let li = 0; li < layersPerImage; li++) {
      const content = pseudoRandomBytes(seed, `${pi}:${label}:layer${li}`, layerBytes);
      const tar = makeTar([{ name: `layer${li}-${platform.architecture}.bin`, content, mtime: 1704067200 }]);
      const gz = gzipSync(tar, { level: 6 });
      const digest = addBlob(gz);
      if (!blobDigests.includes(digest)) blobDigests.push(digest);
      layers.push({ digest, diffId: sha256Digest(tar), size: gz.length, mediaType: flavor.layer });
    }
    const config: Record<string, unknown> = {
      created,
      architecture: platform.architecture,
      ...(platform.variant ? { variant: platform.variant } : {}),
      os: platform.os,
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/true'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, li) => ({ created, created_by: `airlock test fixture layer ${li} (${label})` })),
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = addBlob(configBytes);
    if (!blobDigests.includes(configDigest)) blobDigests.push(configDigest);

    const manifest = {
      schemaVersion: 2,
      mediaType: flavor.manifest,
      config: { mediaType: flavor.config, digest: configDigest, size: configBytes.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2));
    const manifestDigest = addBlob(manifestBytes);
    return {
      platform,
      manifestDigest,
      manifestSize: manifestBytes.length,
      manifestMediaType: flavor.manifest,
      manifestBytes,
      configDigest,
      configSize: configBytes.length,
      layers,
    };
  });

  let indexBytes: Buffer;
  let indexMediaType: string;
  if (opts.singleManifest) {
    indexBytes = images[0]!.manifestBytes;
    indexMediaType = flavor.manifest;
  } else {
    const index = {
      schemaVersion: 2,
      mediaType: flavor.index,
      manifests: images.map((img) => ({
        mediaType: img.manifestMediaType,
        digest: img.manifestDigest,
        size: img.manifestSize,
        platform: {
          architecture: img.platform.architecture,
          os: img.platform.os,
          ...(img.platform.variant ? { variant: img.platform.variant } : {}),
        },
      })),
    };
    indexBytes = Buffer.from(JSON.stringify(index, null, 2));
    indexMediaType = flavor.index;
  }
  const indexDigest = addBlob(indexBytes);

  return {
    built: {
      indexDigest,
      indexMediaType,
      indexBytes,
      manifestDigests: images.map((i) => i.manifestDigest),
      blobDigests,
      images,
      tag,
    },
    blobs,
  };
}

/**
 * Writes a multi-arch OCI image into an OCI image layout at `dir` (created if missing). When the
 * layout already exists, the image is added to it and the tag (ref.name) is replaced if present.
 */
export function buildOciLayoutImage(dir: string, opts: BuildImageOptions = {}): BuiltOciImage {
  const { built, blobs } = generate(OCI, opts);
  const blobDir = join(dir, 'blobs', 'sha256');
  mkdirSync(blobDir, { recursive: true });
  for (const [digest, data] of blobs) writeFileSync(join(blobDir, digestHex(digest)), data);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const refKey = 'org.opencontainers.image.ref.name';
  const indexPath = join(dir, 'index.json');
  type Desc = { mediaType: string; digest: string; size: number; annotations?: Record<string, string> };
  let manifests: Desc[] = [];
  if (existsSync(indexPath)) {
    const existing = JSON.parse(readFileSync(indexPath, 'utf8')) as { manifests?: Desc[] };
    manifests = (existing.manifests ?? []).filter((m) => m.annotations?.[refKey] !== built.tag);
  }
  manifests.push({
    mediaType: built.indexMediaType,
    digest: built.indexDigest,
    size: built.indexBytes.length,
    annotations: { [refKey]: built.tag },
  });
  writeFileSync(indexPath, JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }, null, 2));
  return { ...built, ociRef: `oci:${dir}:${built.tag}` };
}

/**
 * Writes a multi-arch Docker v2-2 image (manifest list + schema2 manifests) in skopeo's `dir:`
 * transport layout at `dir` (created if missing; one image per directory — the `dir:` transport
 * has no tags, `tag` is only echoed back in the result).
 */
export function buildDockerDirImage(dir: string, opts: BuildImageOptions = {}): BuiltDirImage {
  const { built, blobs } = generate(DOCKER, opts);
  mkdirSync(dir, { recursive: true });
  const manifestDigests = new Set(built.manifestDigests);
  for (const [digest, data] of blobs) {
    if (digest === built.indexDigest) continue;
    if (manifestDigests.has(digest)) {
      if (!opts.singleManifest) writeFileSync(join(dir, `${digestHex(digest)}.manifest.json`), data);
      continue;
    }
    writeFileSync(join(dir, digestHex(digest)), data);
  }
  writeFileSync(join(dir, 'manifest.json'), built.indexBytes);
  writeFileSync(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  return { ...built, dirRef: `dir:${dir}` };
}
