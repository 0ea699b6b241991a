// Resolution through mirror sets as CRI-O does it, the mirror set files clusters use, and what
// release and catalog layers say they need (whiteouts, JSON streams, YAML documents).

import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { parseMirrorSetFile } from '../../src/mirror/mirror-set-files.js';
import { catalogFileImages, catalogImages, parseJsonStream, readPayloadFiles, releaseComponents } from '../../src/mirror/payload-references.js';
import { mergeRules, parseImageReference, resolveThroughMirrors, stripRegistryHost } from '../../src/mirror/resolve.js';
import { makeTar } from '../helpers/images.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('parseImageReference', () => {
  it('reads host/path@digest, host/path:tag, tag@digest and Docker Hub short names', () => {
    expect(parseImageReference(`quay.io/openshift-release-dev/ocp-v4.0-art-dev@${D}`)).toEqual({
      name: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev',
      digest: D,
      tag: undefined,
    });
    expect(parseImageReference('registry.example.com:5000/a/b:v1')).toEqual({ name: 'registry.example.com:5000/a/b', tag: 'v1', digest: undefined });
    expect(parseImageReference(`quay.io/a/b:v1@${D}`)).toMatchObject({ name: 'quay.io/a/b', tag: 'v1', digest: D });
    expect(parseImageReference('busybox')).toEqual({ name: 'docker.io/library/busybox', tag: 'latest', digest: undefined });
    expect(parseImageReference('prom/prometheus:v2')).toMatchObject({ name: 'docker.io/prom/prometheus', tag: 'v2' });
    expect(parseImageReference('quay.io/a@sha256:nothex!')).toBeUndefined();
    expect(parseImageReference('')).toBeUndefined();
  });
});

describe('resolveThroughMirrors', () => {
  const rules = mergeRules([
    { source: 'quay.io', mirrors: [{ location: 'm.example:5000/quay', use: 'digest-only' }] },
    { source: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev', mirrors: [{ location: 'm.example:5000/ocp4/openshift4', use: 'digest-only' }] },
    { source: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev', mirrors: [{ location: 'backup.example/ocp', use: 'digest-only' }] },
    { source: 'registry.example.com/tags', mirrors: [{ location: 'm.example:5000/tags', use: 'tag-only' }] },
  ]);

  it('the longest source ending at a path boundary wins; mirrors in order, the rest of the name appended', () => {
    const r = resolveThroughMirrors(parseImageReference(`quay.io/openshift-release-dev/ocp-v4.0-art-dev@${D}`)!, rules);
    expect(r).toEqual({
      kind: 'mirrored',
      source: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev',
      candidates: [
        { mirror: 'm.example:5000/ocp4/openshift4', repository: 'm.example:5000/ocp4/openshift4' },
        { mirror: 'backup.example/ocp', repository: 'backup.example/ocp' },
      ],
    });
    // ocp-v4.0-art-devx is not below ocp-v4.0-art-dev: the quay.io rule takes it.
    const other = resolveThroughMirrors(parseImageReference(`quay.io/openshift-release-dev/ocp-v4.0-art-devx@${D}`)!, rules);
    expect(other).toMatchObject({ kind: 'mirrored', source: 'quay.io', candidates: [{ repository: 'm.example:5000/quay/openshift-release-dev/ocp-v4.0-art-devx' }] });
  });

  it('digest-only mirrors do not serve tags, tag-only mirrors do not serve digests, no rule = unmapped', () => {
    expect(resolveThroughMirrors(parseImageReference('quay.io/a/b:v1')!, rules)).toMatchObject({ kind: 'no-usable-mirror', source: 'quay.io' });
    expect(resolveThroughMirrors(parseImageReference(`registry.example.com/tags/x@${D}`)!, rules)).toMatchObject({ kind: 'no-usable-mirror' });
    expect(resolveThroughMirrors(parseImageReference('registry.example.com/tags/x:v1')!, rules)).toMatchObject({
      kind: 'mirrored',
      candidates: [{ repository: 'm.example:5000/tags/x' }],
    });
    expect(resolveThroughMirrors(parseImageReference(`registry.redhat.io/ubi9/ubi@${D}`)!, rules)).toEqual({ kind: 'unmapped' });
  });

  it('stripRegistryHost drops a host (dot, port or localhost) and keeps a plain path', () => {
    expect(stripRegistryHost('mirror.example.com:5000/ocp4/openshift4')).toBe('ocp4/openshift4');
    expect(stripRegistryHost('localhost/ocp4')).toBe('ocp4');
    expect(stripRegistryHost('127.0.0.1:5000')).toBe('');
    expect(stripRegistryHost('ocp4/openshift4')).toBe('ocp4/openshift4');
  });
});

describe('parseMirrorSetFile', () => {
  it('IDMS + ITMS documents in one file, with NeverContactSource', () => {
    const text = `apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata: { name: a }
spec:
  imageDigestMirrors:
  - source: quay.io/openshift-release-dev/ocp-release
    mirrors: [m.example:5000/ocp4/release]
    mirrorSourcePolicy: NeverContactSource
---
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata: { name: b }
spec:
  imageTagMirrors:
  - source: quay.io/openshift-release-dev/ocp-release
    mirrors: [m.example:5000/ocp4/release-tags]
`;
    expect(parseMirrorSetFile(text, 'f.yaml')).toEqual([
      { source: 'quay.io/openshift-release-dev/ocp-release', mirrors: [{ location: 'm.example:5000/ocp4/release', use: 'digest-only' }], blocked: true },
      { source: 'quay.io/openshift-release-dev/ocp-release', mirrors: [{ location: 'm.example:5000/ocp4/release-tags', use: 'tag-only' }], blocked: false },
    ]);
  });

  it('an ICSP inside a List, and an install-config with imageContentSources', () => {
    const list = `apiVersion: v1
kind: List
items:
- apiVersion: operator.openshift.io/v1alpha1
  kind: ImageContentSourcePolicy
  spec:
    repositoryDigestMirrors:
    - mirrors: [m/x]
      source: registry.redhat.io/x
`;
    expect(parseMirrorSetFile(list, 'l.yaml')).toEqual([{ source: 'registry.redhat.io/x', mirrors: [{ location: 'm/x', use: 'digest-only' }], blocked: false }]);
    const installConfig = `apiVersion: v1
baseDomain: example.com
imageContentSources:
- mirrors: [m.example:5000/ocp4/openshift4]
  source: quay.io/openshift-release-dev/ocp-v4.0-art-dev
`;
    expect(parseMirrorSetFile(installConfig, 'install-config.yaml')[0]).toMatchObject({ source: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev' });
  });

  it('a registries.conf: pull-from-mirror, mirror-by-digest-only, a rewritten location, blocked', () => {
    const conf = `unqualified-search-registries = ["registry.access.redhat.com"]
[[registry]]
prefix = ""
location = "quay.io/openshift-release-dev/ocp-release"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.example:5000/ocp4/release"

[[registry]]
prefix = "registry.example.com/a"
location = "other.example.com/a"
blocked = false
[[registry.mirror]]
location = "m.example:5000/a"
pull-from-mirror = "tag-only"
`;
    expect(parseMirrorSetFile(conf, 'registries.conf')).toEqual([
      { source: 'quay.io/openshift-release-dev/ocp-release', mirrors: [{ location: 'm.example:5000/ocp4/release', use: 'digest-only' }], blocked: false },
      {
        source: 'registry.example.com/a',
        mirrors: [
          { location: 'm.example:5000/a', use: 'tag-only' },
          { location: 'other.example.com/a', use: 'all' },
        ],
        blocked: false,
      },
    ]);
  });

  it('a file without mirror sets, or a broken one, is refused with a reason', () => {
    expect(() => parseMirrorSetFile('kind: ConfigMap\n', 'cm.yaml')).toThrow(/holds no mirror sets/);
    expect(() => parseMirrorSetFile('kind: ImageDigestMirrorSet\nspec:\n  imageDigestMirrors:\n  - mirrors: [a]\n', 'x.yaml')).toThrow(/source must be/);
    expect(() => parseMirrorSetFile('[[registry]]\nlocation = \n', 'r.conf')).toThrow(/not valid TOML/);
  });
});

describe('payload references', () => {
  const layer = (files: { name: string; content: string }[]) => {
    const data = gzipSync(makeTar(files.map((f) => ({ name: f.name, content: Buffer.from(f.content) }))));
    return { digest: `sha256:${files.length}`, open: async () => Readable.from([data]) };
  };
  const stream = (name: string) =>
    JSON.stringify({ kind: 'ImageStream', spec: { tags: [{ name, from: { kind: 'DockerImage', name: `quay.io/x/y@${D}` } }] } });

  it('release: the top layer wins, a whiteout removes, an opaque directory hides the lower layers', async () => {
    const files = await readPayloadFiles([
      layer([{ name: 'release-manifests/image-references', content: stream('old') }]),
      layer([{ name: 'release-manifests/image-references', content: stream('new') }]),
    ]);
    expect(releaseComponents(files.imageReferences!)).toEqual([{ reference: `quay.io/x/y@${D}`, neededBy: 'component new' }]);
    const removed = await readPayloadFiles([
      layer([{ name: 'release-manifests/image-references', content: stream('old') }]),
      layer([{ name: 'release-manifests/.wh.image-references', content: '' }]),
    ]);
    expect(removed.imageReferences).toBeUndefined();
    const opaque = await readPayloadFiles([
      layer([{ name: 'configs/a/catalog.json', content: '{}' }]),
      layer([{ name: 'configs/.wh..wh..opq', content: '' }, { name: 'configs/b/catalog.yaml', content: 'schema: olm.package\n' }]),
    ]);
    expect([...opaque.catalogFiles.keys()]).toEqual(['configs/b/catalog.yaml']);
  });

  it('catalog: JSON streams (strings with braces included) and YAML documents', () => {
    expect(parseJsonStream('{"a":"}{"}\n{"b":[1,{"c":"\\"]"}]}\n[{"d":1}]')).toEqual([{ a: '}{' }, { b: [1, { c: '"]' }] }, { d: 1 }]);
    const raw: [string, Buffer][] = [
      [
        'configs/p/catalog.json',
        Buffer.from(
          `${JSON.stringify({ schema: 'olm.package', name: 'p' })}\n${JSON.stringify({
            schema: 'olm.bundle',
            name: 'p.v1',
            image: `quay.io/p/bundle@${D}`,
            relatedImages: [{ name: 'op', image: `quay.io/p/op@${D}` }],
          })}`,
        ),
      ],
      ['configs/q/catalog.yaml', Buffer.from(`schema: olm.channel\nname: c\n---\nschema: olm.bundle\nname: q.v2\nimage: quay.io/q/bundle:v2\n`)],
    ];
    const files = new Map(raw.reverse().map(([path, bytes]) => [path, catalogFileImages(path, bytes)]));
    expect(catalogImages(files)).toEqual({
      bundles: 2,
      needed: [
        { reference: `quay.io/p/bundle@${D}`, neededBy: 'bundle p.v1' },
        { reference: `quay.io/p/op@${D}`, neededBy: 'related image of p.v1 (op)' },
        { reference: 'quay.io/q/bundle:v2', neededBy: 'bundle q.v2' },
      ],
    });
  });
});
