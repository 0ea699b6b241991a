// Renders mirror rules as the documents clusters apply: ImageDigestMirrorSet / ImageTagMirrorSet
// (config.openshift.io/v1), the legacy ImageContentSourcePolicy (operator.openshift.io/v1alpha1),
// or a CRI-O containers-registries.conf v2 drop-in (TOML). Written through the yaml and smol-toml
// serializers so that any name, however odd, comes out correctly quoted.

import { stringify as toToml } from 'smol-toml';
import { stringify as toYaml } from 'yaml';
import type { UpstreamConfig } from '../config/schema.js';
import { airlockRulesForHost, type MirrorRule, type Origin } from './mirror-sets.js';

export const MIRROR_SET_FORMATS = ['idms', 'itms', 'icsp', 'registries.conf'] as const;
export type MirrorSetFormat = (typeof MIRROR_SET_FORMATS)[number];

export function isMirrorSetFormat(value: string): value is MirrorSetFormat {
  return (MIRROR_SET_FORMATS as readonly string[]).includes(value);
}

/** The kind of pull each format's mirrors serve. */
export function mirrorUseOf(format: MirrorSetFormat): 'digest-only' | 'tag-only' {
  return format === 'itms' ? 'tag-only' : 'digest-only';
}

export interface RenderOptions {
  /** The host clusters reach airlock at; names the objects (airlock-<host>). */
  host: string;
  /** airlock serves plain HTTP: registries.conf mirrors get `insecure = true`. */
  insecure: boolean;
}

/** A Kubernetes object name (DNS subdomain) for the objects airlock writes for `host`. */
export function objectName(host: string): string {
  const cleaned = host
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return `airlock${cleaned ? `-${cleaned}` : ''}`.slice(0, 253).replace(/[^a-z0-9]+$/, '');
}

const SET_KINDS = {
  idms: { kind: 'ImageDigestMirrorSet', list: 'imageDigestMirrors' },
  itms: { kind: 'ImageTagMirrorSet', list: 'imageTagMirrors' },
} as const;

function mirrorSet(format: 'idms' | 'itms', rules: readonly MirrorRule[], options: RenderOptions): object {
  const { kind, list } = SET_KINDS[format];
  return {
    apiVersion: 'config.openshift.io/v1',
    kind,
    metadata: { name: objectName(options.host) },
    spec: {
      [list]: rules.map((rule) => ({
        source: rule.source,
        mirrors: rule.mirrors.map((m) => m.location),
        mirrorSourcePolicy: rule.blocked ? 'NeverContactSource' : 'AllowContactingSource',
      })),
    },
  };
}

function contentSourcePolicy(rules: readonly MirrorRule[], options: RenderOptions): object {
  return {
    apiVersion: 'operator.openshift.io/v1alpha1',
    kind: 'ImageContentSourcePolicy',
    metadata: { name: objectName(options.host) },
    spec: {
      repositoryDigestMirrors: rules.map((rule) => ({ source: rule.source, mirrors: rule.mirrors.map((m) => m.location) })),
    },
  };
}

/**
 * containers-registries.conf(5) v2, as the Machine Config Operator renders an IDMS: one
 * `[[registry]]` per source (prefix = location = the source) with its `[[registry.mirror]]` entries.
 * Meant for /etc/containers/registries.conf.d/ or `--registries-conf` of podman/skopeo/crictl.
 */
function registriesConf(rules: readonly MirrorRule[], options: RenderOptions): string {
  const registry = rules.map((rule) => ({
    prefix: rule.source,
    location: rule.source,
    ...(rule.blocked ? { blocked: true } : {}),
    mirror: rule.mirrors.map((m) => ({
      location: m.location,
      ...(options.insecure ? { insecure: true } : {}),
      'pull-from-mirror': m.use,
    })),
  }));
  const header = `# CRI-O / containers-registries.conf(5) v2 mirrors for ${options.host}, written by airlock.\n`;
  return registry.length ? `${header}\n${toToml({ registry })}\n` : `${header}# (no mirrored sources yet)\n`;
}

/** The document for one format, as text ready to write to a file or `oc apply -f`. */
export function renderMirrorSets(format: MirrorSetFormat, rules: readonly MirrorRule[], options: RenderOptions): string {
  switch (format) {
    case 'idms':
    case 'itms':
      return toYaml(mirrorSet(format, rules, options));
    case 'icsp':
      return toYaml(contentSourcePolicy(rules, options));
    case 'registries.conf':
      return registriesConf(rules, options);
  }
}

/** airlock's own mirror sets (upstreams + recorded origins) as one document for clusters reaching it at `host`. */
export function airlockMirrorSetDocument(
  format: MirrorSetFormat,
  upstreams: readonly UpstreamConfig[],
  origins: readonly Origin[],
  options: RenderOptions,
): string {
  return renderMirrorSets(format, airlockRulesForHost(upstreams, origins, options.host, mirrorUseOf(format)), options);
}
