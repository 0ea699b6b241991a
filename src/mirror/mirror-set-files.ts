// Reads the mirror sets a cluster uses from the files people have at hand: ImageDigestMirrorSet /
// ImageTagMirrorSet / ImageContentSourcePolicy YAML (what `oc adm release mirror` prints, what
// `oc adm catalog mirror` writes as imageContentSourcePolicy.yaml, what oc-mirror writes; several
// documents or a `kind: List` in one file), an install-config's `imageContentSources` /
// `imageDigestSources`, or a containers-registries.conf v2 (TOML).

import { parse as parseToml } from 'smol-toml';
import { parseAllDocuments } from 'yaml';
import type { Mirror, MirrorRule, MirrorUse } from './mirror-sets.js';

export class MirrorSetFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MirrorSetFileError';
  }
}

type Obj = Record<string, unknown>;

function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function strings(value: unknown, where: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new MirrorSetFileError(`${where} must be a list of strings`);
  return value as string[];
}

/** `[{source, mirrors, mirrorSourcePolicy?}]` entries of IDMS, ITMS, ICSP and install-config alike. */
function rulesFromEntries(entries: unknown, where: string, use: MirrorUse): MirrorRule[] {
  if (entries === undefined || entries === null) return [];
  if (!Array.isArray(entries)) throw new MirrorSetFileError(`${where} must be a list`);
  return entries.map((entry, i) => {
    if (!isObj(entry) || typeof entry.source !== 'string' || entry.source === '') {
      throw new MirrorSetFileError(`${where}[${i}].source must be a repository name such as quay.io/openshift-release-dev/ocp-release`);
    }
    const mirrors: Mirror[] = strings(entry.mirrors, `${where}[${i}].mirrors`).map((location) => ({ location, use }));
    return { source: entry.source, mirrors, blocked: entry.mirrorSourcePolicy === 'NeverContactSource' };
  });
}

function rulesFromYamlObject(doc: unknown, where: string): MirrorRule[] {
  if (!isObj(doc)) return [];
  if (doc.kind === 'List' && Array.isArray(doc.items)) return doc.items.flatMap((item, i) => rulesFromYamlObject(item, `${where}.items[${i}]`));
  const spec = isObj(doc.spec) ? doc.spec : {};
  switch (doc.kind) {
    case 'ImageDigestMirrorSet':
      return rulesFromEntries(spec.imageDigestMirrors, `${where} spec.imageDigestMirrors`, 'digest-only');
    case 'ImageTagMirrorSet':
      return rulesFromEntries(spec.imageTagMirrors, `${where} spec.imageTagMirrors`, 'tag-only');
    case 'ImageContentSourcePolicy':
      return rulesFromEntries(spec.repositoryDigestMirrors, `${where} spec.repositoryDigestMirrors`, 'digest-only');
  }
  // An install-config.yaml (or the snippet `oc adm release mirror` prints for it).
  return [
    ...rulesFromEntries(doc.imageContentSources, `${where} imageContentSources`, 'digest-only'),
    ...rulesFromEntries(doc.imageDigestSources, `${where} imageDigestSources`, 'digest-only'),
  ];
}

function parseYamlRules(text: string, file: string): MirrorRule[] {
  const rules: MirrorRule[] = [];
  for (const [i, doc] of parseAllDocuments(text).entries()) {
    if (doc.errors.length) throw new MirrorSetFileError(`${file} is not valid YAML: ${doc.errors[0]!.message}`);
    rules.push(...rulesFromYamlObject(doc.toJS(), `${file} (document ${i + 1})`));
  }
  return rules;
}

const PULL_FROM_MIRROR: ReadonlySet<string> = new Set(['all', 'digest-only', 'tag-only']);

/** containers-registries.conf(5) v2: `[[registry]]` prefix/location/blocked/mirror-by-digest-only + `[[registry.mirror]]`. */
function parseRegistriesConf(text: string, file: string): MirrorRule[] {
  let doc: Obj;
  try {
    doc = parseToml(text) as Obj;
  } catch (e) {
    throw new MirrorSetFileError(`${file} is not valid TOML: ${(e as Error).message.split('\n', 1)[0]}`);
  }
  const registries = doc.registry ?? [];
  if (!Array.isArray(registries)) throw new MirrorSetFileError(`${file}: registry must be an array of tables ([[registry]])`);
  return registries.map((entry: unknown, i) => {
    const where = `${file} [[registry]] #${i + 1}`;
    if (!isObj(entry)) throw new MirrorSetFileError(`${where} must be a table`);
    const location = typeof entry.location === 'string' ? entry.location : '';
    const source = typeof entry.prefix === 'string' && entry.prefix !== '' ? entry.prefix : location;
    if (source === '') throw new MirrorSetFileError(`${where} needs a prefix or a location`);
    const byDigestOnly = entry['mirror-by-digest-only'] === true;
    const mirrors: Mirror[] = (Array.isArray(entry.mirror) ? entry.mirror : []).map((m: unknown, j) => {
      if (!isObj(m) || typeof m.location !== 'string') throw new MirrorSetFileError(`${where} mirror #${j + 1} needs a location`);
      const pull = m['pull-from-mirror'];
      if (pull !== undefined && (typeof pull !== 'string' || !PULL_FROM_MIRROR.has(pull))) {
        throw new MirrorSetFileError(`${where} mirror #${j + 1}: pull-from-mirror must be all, digest-only or tag-only`);
      }
      return { location: m.location, use: (pull as MirrorUse | undefined) ?? (byDigestOnly ? 'digest-only' : 'all') };
    });
    // A location other than the prefix rewrites the source itself: it is tried after the mirrors.
    if (location !== '' && location !== source && entry.blocked !== true) mirrors.push({ location, use: 'all' });
    return { source, mirrors, blocked: entry.blocked === true };
  });
}

/** The mirror rules a file states, whichever of the supported forms it is in. */
export function parseMirrorSetFile(text: string, file: string): MirrorRule[] {
  const looksToml = /^\s*\[\[\s*registry\s*\]\]/m.test(text) || /^\s*[a-z-]+\s*=/m.test(text);
  const rules = looksToml ? parseRegistriesConf(text, file) : parseYamlRules(text, file);
  if (!rules.length) {
    throw new MirrorSetFileError(
      `${file} holds no mirror sets: expected ImageDigestMirrorSet, ImageTagMirrorSet or ImageContentSourcePolicy YAML, ` +
        'an install-config with imageContentSources/imageDigestSources, or a registries.conf with [[registry]] entries',
    );
  }
  return rules;
}
