/**
 * Synthetic OpenShift payloads, written as OCI image layouts for skopeo's `oci:` transport:
 * - a release image whose top layer holds `release-manifests/image-references`, an ImageStream
 *   naming every component as quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:… (some
 *   components multi-arch indexes, some single manifests), as `oc adm release new` builds it;
 * - a file-based operator catalog (`/configs/<package>/catalog.json` as a stream of JSON objects and
 *   `catalog.yaml` as YAML documents, label operators.operatorframework.io.index.configs.v1=/configs)
 *   whose olm.bundle entries name bundle images and relatedImages by digest.
 */
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { buildOciLayoutImage, type BuiltOciImage } from './images.js';
import { buildFilesImage, type BuiltFilesImage } from './files-image.js';

export const ART_DEV = 'quay.io/openshift-release-dev/ocp-v4.0-art-dev';
export const RELEASE_REPO = 'quay.io/openshift-release-dev/ocp-release';

export interface PayloadImage {
  /** What the payload calls it: component tag, bundle name, related image name. */
  name: string;
  /** The name the payload uses: `quay.io/…@sha256:…`. */
  reference: string;
  /** The repository part of `reference`, e.g. quay.io/openshift-release-dev/ocp-v4.0-art-dev. */
  repository: string;
  built: BuiltOciImage;
}

export interface SyntheticRelease {
  components: PayloadImage[];
  release: BuiltFilesImage;
}

const AMD64 = { os: 'linux', architecture: 'amd64' };
const MULTI = [AMD64, { os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 's390x' }];

function payloadImage(layout: string, name: string, repository: string, multiArch: boolean, seed: string, layerBytes: number): PayloadImage {
  const built = buildOciLayoutImage(layout, {
    tag: name,
    seed: `${seed}-${name}`,
    layerBytes,
    ...(multiArch ? { platforms: MULTI } : { platforms: [AMD64], singleManifest: true }),
  });
  return { name, reference: `${repository}@${built.indexDigest}`, repository, built };
}

/** A release of `components` (name → multi-arch?) in the OCI layout at `dir`. */
export function buildSyntheticRelease(
  dir: string,
  options: { version?: string; components?: Record<string, boolean>; seed?: string; layerBytes?: number } = {},
): SyntheticRelease {
  const version = options.version ?? '4.16.0';
  const seed = options.seed ?? `release-${Math.random()}`;
  const spec = options.components ?? { etcd: true, cli: true, 'cluster-version-operator': false, console: false, installer: true };
  const components = Object.entries(spec).map(([name, multi]) => payloadImage(join(dir, 'components'), name, ART_DEV, multi, seed, options.layerBytes ?? 2048));
  const imageStream = {
    kind: 'ImageStream',
    apiVersion: 'image.openshift.io/v1',
    metadata: { name: version, creationTimestamp: null, annotations: { 'release.openshift.io/from-image-stream': 'ocp/4.16-art-latest' } },
    spec: {
      lookupPolicy: { local: false },
      tags: components.map((c) => ({
        name: c.name,
        annotations: { 'io.openshift.build.commit.id': '0123456789abcdef' },
        from: { kind: 'DockerImage', name: c.reference },
        generation: null,
        importPolicy: {},
        referencePolicy: { type: '' },
      })),
    },
    status: { dockerImageRepository: '' },
  };
  const metadata = { kind: 'cincinnati-metadata-v0', version, previous: [], metadata: {} };
  const release = buildFilesImage(join(dir, 'release'), {
    tag: `${version}-x86_64`,
    labels: { 'io.openshift.release': version },
    layers: [
      // A base layer standing for the operating system, then the payload manifests.
      [{ name: 'usr/bin/cluster-version-operator', content: Buffer.from(`cvo ${seed}`) }],
      [
        { name: 'release-manifests/image-references', content: Buffer.from(JSON.stringify(imageStream, null, 2)) },
        { name: 'release-manifests/release-metadata', content: Buffer.from(JSON.stringify(metadata)) },
        { name: 'release-manifests/0000_50_etcd.yaml', content: Buffer.from('kind: ConfigMap\n') },
      ],
    ],
  });
  return { components, release };
}

export interface SyntheticCatalog {
  /** Bundle images and related images, each once. */
  images: PayloadImage[];
  catalog: BuiltFilesImage;
  bundles: string[];
}

/**
 * A catalog with two packages: etcd (two bundles, JSON stream) and prometheus (one bundle, YAML).
 * Related images: each bundle's own image, an operator image (multi-arch) shared by the etcd
 * bundles, and an operand image.
 */
export function buildSyntheticCatalog(dir: string, options: { seed?: string } = {}): SyntheticCatalog {
  const seed = options.seed ?? `catalog-${Math.random()}`;
  const layout = join(dir, 'images');
  const img = (name: string, repository: string, multi: boolean) => payloadImage(layout, name, repository, multi, seed, 1024);
  const etcdBundle1 = img('etcd-bundle-v0.9.2', 'quay.io/operatorhubio/etcd', false);
  const etcdBundle2 = img('etcd-bundle-v0.9.4', 'quay.io/operatorhubio/etcd', false);
  const etcdOperator = img('etcd-operator', 'quay.io/coreos/etcd-operator', true);
  const promBundle = img('prometheus-bundle-v0.47.0', 'quay.io/operatorhubio/prometheus', false);
  const promOperator = img('prometheus-operator', 'quay.io/prometheus-operator/prometheus-operator', true);
  const promOperand = img('prometheus', 'quay.io/prometheus/prometheus', false);

  const bundle = (name: string, pkg: string, image: PayloadImage, related: PayloadImage[]) => ({
    schema: 'olm.bundle',
    name,
    package: pkg,
    image: image.reference,
    properties: [{ type: 'olm.package', value: { packageName: pkg, version: name.split('.v')[1] } }],
    relatedImages: [{ name: '', image: image.reference }, ...related.map((r) => ({ name: r.name, image: r.reference }))],
  });
  const etcd = [
    { schema: 'olm.package', name: 'etcd', defaultChannel: 'singlenamespace-alpha' },
    { schema: 'olm.channel', package: 'etcd', name: 'singlenamespace-alpha', entries: [{ name: 'etcdoperator.v0.9.2' }, { name: 'etcdoperator.v0.9.4', replaces: 'etcdoperator.v0.9.2' }] },
    bundle('etcdoperator.v0.9.2', 'etcd', etcdBundle1, [etcdOperator]),
    bundle('etcdoperator.v0.9.4', 'etcd', etcdBundle2, [etcdOperator]),
  ];
  const prometheus = [
    { schema: 'olm.package', name: 'prometheus', defaultChannel: 'beta' },
    { schema: 'olm.channel', package: 'prometheus', name: 'beta', entries: [{ name: 'prometheusoperator.v0.47.0' }] },
    bundle('prometheusoperator.v0.47.0', 'prometheus', promBundle, [promOperator, promOperand]),
  ];
  const catalog = buildFilesImage(join(dir, 'catalog'), {
    tag: 'v4.16',
    labels: { 'operators.operatorframework.io.index.configs.v1': '/configs' },
    layers: [
      [{ name: 'bin/opm', content: Buffer.from(`opm ${seed}`) }],
      [
        // opm writes a stream of JSON objects, not an array.
        { name: 'configs/etcd/catalog.json', content: Buffer.from(etcd.map((o) => JSON.stringify(o, null, 2)).join('\n')) },
        { name: 'configs/prometheus/catalog.yaml', content: Buffer.from(prometheus.map((o) => toYaml(o)).join('---\n')) },
      ],
    ],
  });
  return {
    images: [etcdBundle1, etcdBundle2, etcdOperator, promBundle, promOperator, promOperand],
    catalog,
    bundles: ['etcdoperator.v0.9.2', 'etcdoperator.v0.9.4', 'prometheusoperator.v0.47.0'],
  };
}
