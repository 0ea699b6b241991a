// Maps /v2/ paths to the resource they address. Repository names contain slashes, so the
// resource is recognised by the path's tail; the name is everything before it.

export type V2Route =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'tags'; name: string }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'uploads'; name: string }
  | { kind: 'upload'; name: string; id: string }
  | { kind: 'referrers'; name: string; digest: string };

const PATTERNS: [RegExp, (m: RegExpExecArray) => V2Route][] = [
  [/^\/v2\/?$/, () => ({ kind: 'base' })],
  [/^\/v2\/_catalog\/?$/, () => ({ kind: 'catalog' })],
  [/^\/v2\/(.+)\/tags\/list\/?$/, (m) => ({ kind: 'tags', name: m[1]! })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: 'manifest', name: m[1]!, reference: m[2]! })],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: 'uploads', name: m[1]! })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: 'upload', name: m[1]!, id: m[2]! })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: 'blob', name: m[1]!, digest: m[2]! })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: 'referrers', name: m[1]!, digest: m[2]! })],
];

/** The raw (undecoded) path decides: a percent-encoded name is invalid, never decoded into one. */
export function matchV2Route(path: string): V2Route | undefined {
  for (const [re, build] of PATTERNS) {
    const m = re.exec(path);
    if (m) return build(m);
  }
  return undefined;
}

export function manifestPath(name: string, reference: string): string {
  return `/v2/${name}/manifests/${reference}`;
}

export function blobPath(name: string, digest: string): string {
  return `/v2/${name}/blobs/${digest}`;
}

export function uploadPath(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`;
}
