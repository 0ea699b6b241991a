import { RegistryError } from './errors.js';

// Grammar from the OCI Distribution Spec v1.1 ("Pulling manifests" / "Workflow categories").
const PATH_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Longest repository name accepted (distribution's limit, hostname included). */
export const MAX_NAME_LENGTH = 255;

/** Digest algorithms airlock can verify, with the length of their lowercase hex encoding. */
export const DIGEST_ALGORITHMS = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof DIGEST_ALGORITHMS;

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function assertName(name: string): void {
  if (!isValidName(name)) {
    throw new RegistryError(
      'NAME_INVALID',
      `invalid repository name "${truncate(name)}": path components must match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*, separated by "/", at most ${MAX_NAME_LENGTH} characters`,
      { name: truncate(name) },
    );
  }
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function assertTag(tag: string): void {
  if (!isValidTag(tag)) {
    throw new RegistryError('TAG_INVALID', `invalid tag "${truncate(tag)}": must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, {
      tag: truncate(tag),
    });
  }
}

/** True when the string has the shape algorithm:encoded (it may still use an unknown algorithm). */
export function looksLikeDigest(ref: string): boolean {
  return ref.includes(':');
}

/** An algorithm named on its own (POST …/uploads/?digest-algorithm=): one airlock can verify. */
export function assertDigestAlgorithm(name: string): DigestAlgorithm {
  if (!Object.hasOwn(DIGEST_ALGORITHMS, name)) throw unsupportedAlgorithm(name, { algorithm: truncate(name) });
  return name as DigestAlgorithm;
}

function unsupportedAlgorithm(name: string, detail: Record<string, string>): RegistryError {
  return new RegistryError('DIGEST_INVALID', `unsupported digest algorithm "${truncate(name)}": use ${Object.keys(DIGEST_ALGORITHMS).join(' or ')}`, detail);
}

/** Checks a digest's grammar and that its algorithm is one airlock verifies; returns the algorithm. */
export function assertDigest(digest: string): DigestAlgorithm {
  if (!DIGEST_RE.test(digest)) {
    throw new RegistryError('DIGEST_INVALID', `invalid digest "${truncate(digest)}": expected algorithm:hex, e.g. sha256:<64 hex>`, {
      digest: truncate(digest),
    });
  }
  const [algorithm, encoded] = digest.split(':', 2) as [string, string];
  if (!Object.hasOwn(DIGEST_ALGORITHMS, algorithm)) throw unsupportedAlgorithm(algorithm, { digest: truncate(digest) });
  const length = DIGEST_ALGORITHMS[algorithm as DigestAlgorithm];
  if (encoded.length !== length || !/^[a-f0-9]+$/.test(encoded)) {
    throw new RegistryError('DIGEST_INVALID', `invalid ${algorithm} digest: expected ${length} lowercase hex characters`, {
      digest: truncate(digest),
    });
  }
  return algorithm as DigestAlgorithm;
}

/**
 * A reference as a read (GET, HEAD) takes it: a digest, a tag, or undefined when it is neither —
 * then no manifest can have it as a name, which is "unknown" (404), not a malformed request (400),
 * as distribution and zot answer. Never throws.
 */
export function readReference(ref: string): ParsedReference | undefined {
  if (looksLikeDigest(ref)) {
    if (!DIGEST_RE.test(ref)) return undefined;
    const [algorithm, encoded] = ref.split(':', 2) as [string, string];
    const length = DIGEST_ALGORITHMS[algorithm as DigestAlgorithm];
    if (length === undefined || encoded.length !== length || !/^[a-f0-9]+$/.test(encoded)) return undefined;
    return { kind: 'digest', digest: ref, algorithm: algorithm as DigestAlgorithm };
  }
  return isValidTag(ref) ? { kind: 'tag', tag: ref } : undefined;
}

export type ParsedReference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: string; algorithm: DigestAlgorithm };

/** A manifest reference is a tag or a digest; this says which, after checking its grammar. */
export function parseReference(ref: string): ParsedReference {
  if (looksLikeDigest(ref)) return { kind: 'digest', digest: ref, algorithm: assertDigest(ref) };
  assertTag(ref);
  return { kind: 'tag', tag: ref };
}

export function truncate(text: string): string {
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
