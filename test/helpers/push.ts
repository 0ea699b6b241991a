// Pushes a small random image through the plain Distribution HTTP API (monolithic uploads), so tests
// can fill a registry without docker, skopeo or any fixture files.

import { createHash, randomBytes } from 'node:crypto';

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

export interface PushOptions {
  /** Number of random layers; default 1. */
  layers?: number;
  /** Bytes per layer; default 1024. */
  layerSize?: number;
  /** Manifest flavour; default 'docker' (schema2). */
  format?: 'docker' | 'oci';
  /** Basic credentials for registries behind htpasswd. */
  credentials?: { username: string; password: string };
}

export interface PushedImage {
  manifestDigest: string;
  mediaType: string;
  /** The manifest bytes exactly as pushed. */
  manifest: Buffer;
  configDigest: string;
  layerDigests: string[];
  /** Every pushed blob (config and layers) by digest. */
  blobs: Map<string, Buffer>;
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export async function pushImage(baseUrl: string, repo: string, tag: string, options: PushOptions = {}): Promise<PushedImage> {
  const format = options.format ?? 'docker';
  const headers: Record<string, string> = {};
  if (options.credentials !== undefined) {
    const { username, password } = options.credentials;
    headers.authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  }

  const blobs = new Map<string, Buffer>();
  const layers = Array.from({ length: options.layers ?? 1 }, () => randomBytes(options.layerSize ?? 1024));
  const layerDigests: string[] = [];
  for (const layer of layers) layerDigests.push(await pushBlob(baseUrl, repo, layer, headers, blobs));
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layerDigests } }),
  );
  const configDigest = await pushBlob(baseUrl, repo, config, headers, blobs);

  const mediaType = format === 'oci' ? OCI_MANIFEST : DOCKER_MANIFEST;
  const configType = format === 'oci' ? 'application/vnd.oci.image.config.v1+json' : 'application/vnd.docker.container.image.v1+json';
  const layerType = format === 'oci' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.docker.image.rootfs.diff.tar.gzip';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: configType, digest: configDigest, size: config.length },
      layers: layers.map((layer, i) => ({ mediaType: layerType, digest: layerDigests[i], size: layer.length })),
    }),
  );
  const res = await fetch(`${baseUrl}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': mediaType },
    body: manifest,
  });
  await expectStatus(res, 201, `PUT manifest ${repo}:${tag}`);
  return { manifestDigest: sha256(manifest), mediaType, manifest, configDigest, layerDigests, blobs };
}

/** POST to open an upload session, then PUT the whole blob with its digest (monolithic upload). */
async function pushBlob(
  baseUrl: string,
  repo: string,
  data: Buffer,
  headers: Record<string, string>,
  blobs: Map<string, Buffer>,
): Promise<string> {
  const digest = sha256(data);
  const start = await fetch(`${baseUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  await expectStatus(start, 202, `POST upload ${repo}`);
  const location = new URL(start.headers.get('location') ?? '', baseUrl);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/octet-stream' },
    body: data,
  });
  await expectStatus(put, 201, `PUT blob ${repo}@${digest}`);
  blobs.set(digest, data);
  return digest;
}

async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  const body = await res.text();
  if (res.status !== status) throw new Error(`${what}: expected ${status}, got ${res.status}: ${body}`);
}
