/**
 * A thin wrapper around the real skopeo (1.9.3 at /usr/bin/skopeo) for end-to-end tests, plus
 * helpers to write a containers-registries.conf(5) v2 file and to read what skopeo wrote in its
 * `dir:` and `oci:` layouts (for byte comparisons).
 *
 * Facts about skopeo 1.9.3 on this machine (Debian 1.9.3+ds1, containers/image 5.23.x):
 * - `--insecure-policy` is a GLOBAL flag (before the sub-command); `--registries-conf FILE` too.
 * - Plain-HTTP registries on 127.0.0.1 need the per-sub-command flags: `copy --src-tls-verify=false`
 *   / `--dest-tls-verify=false`, `inspect|list-tags|delete --tls-verify=false`. References pulled
 *   through a registries.conf mirror use the mirror's `insecure = true` instead (tls-verify flags
 *   apply to the logical reference, not to the mirror endpoint).
 * - registries.conf v2: `[[registry]]` with `prefix`, `location`, `insecure`, `blocked`,
 *   `mirror-by-digest-only`; `[[registry.mirror]]` with `location`, `insecure`, and
 *   `pull-from-mirror` ("all" | "digest-only" | "tag-only"). The binary knows `pull-from-mirror`
 *   (its error strings include "unsupported pull-from-mirror value" and "cannot set mirror usage
 *   mirror-by-digest-only for the registry ... and pull-from-mirror for per-mirror ... at the same
 *   time"), and test/fixtures.test.ts proves it is honoured: a digest pull is served by a
 *   `digest-only` mirror while a tag pull of the same image bypasses it. Setting both
 *   `mirror-by-digest-only` and `pull-from-mirror` on one entry is an error.
 * - `copy --all` copies every instance of a list; `copy --all --format v2s2` from an OCI index
 *   converts to a Docker manifest list (new manifest digests, same config/layer blobs).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const SKOPEO_BIN = process.env.AIRLOCK_SKOPEO ?? '/usr/bin/skopeo';

/** `copy` flag: the source registry is plain HTTP / self-signed. */
export const SRC_INSECURE = '--src-tls-verify=false';
/** `copy` / `sync` flag: the destination registry is plain HTTP / self-signed. */
export const DEST_INSECURE = '--dest-tls-verify=false';
/** `inspect`, `list-tags`, `delete` flag: the registry is plain HTTP / self-signed. */
export const TLS_INSECURE = '--tls-verify=false';

export interface SkopeoOptions {
  /** Passed as the global `--registries-conf FILE`. */
  registriesConf?: string;
  /** Global `--insecure-policy` (accept any image, no policy.json needed). Default true. */
  insecurePolicy?: boolean;
  /** Global `--debug`. */
  debug?: boolean;
  /** Kill skopeo after this long. Default 120 s. */
  timeoutMs?: number;
  /** Extra environment (merged over process.env). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw (with stderr in the message) when skopeo exits non-zero. Default false. */
  check?: boolean;
}

export interface SkopeoResult {
  stdout: string;
  stderr: string;
  code: number;
  /** The full argv that was run (after the binary), for error messages. */
  argv: string[];
}

export class SkopeoError extends Error {
  constructor(public readonly result: SkopeoResult) {
    super(`skopeo ${result.argv.join(' ')} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = 'SkopeoError';
  }
}

/** Runs skopeo without a shell. Global flags from `opts` go first, then `args` verbatim. */
export function skopeo(args: string[], opts: SkopeoOptions = {}): Promise<SkopeoResult> {
  const argv: string[] = [];
  if (opts.insecurePolicy ?? true) argv.push('--insecure-policy');
  if (opts.registriesConf) argv.push('--registries-conf', opts.registriesConf);
  if (opts.debug) argv.push('--debug');
  argv.push(...args);
  return new Promise((resolve, reject) => {
    execFile(
      SKOPEO_BIN,
      argv,
      {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        timeout: opts.timeoutMs ?? 120_000,
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        let code = 0;
        if (err) {
          const c = (err as NodeJS.ErrnoException & { code?: unknown }).code;
          if (typeof c === 'number') code = c;
          else if (err.killed || c === null || c === undefined) code = -1; // killed (timeout / signal)
          else {
            reject(err); // spawn failure (ENOENT, …)
            return;
          }
        }
        const result: SkopeoResult = { stdout, stderr, code, argv };
        if (opts.check && code !== 0) reject(new SkopeoError(result));
        else resolve(result);
      },
    );
  });
}

/** Like skopeo() but throws SkopeoError on a non-zero exit. */
export function skopeoOk(args: string[], opts: SkopeoOptions = {}): Promise<SkopeoResult> {
  return skopeo(args, { ...opts, check: true });
}

export interface CopyOptions extends SkopeoOptions {
  /** `--all`: copy every instance of a manifest list / index. Default true. */
  all?: boolean;
  srcInsecure?: boolean;
  destInsecure?: boolean;
  /** e.g. 'v2s2' | 'oci' */
  format?: string;
  /** Extra `copy` flags. */
  extra?: string[];
}

/** `skopeo copy [--all] [tls flags] SRC DEST`; resolves with the result, rejects unless opts.check === false. */
export function skopeoCopy(src: string, dest: string, opts: CopyOptions = {}): Promise<SkopeoResult> {
  const args = ['copy'];
  if (opts.all ?? true) args.push('--all');
  if (opts.srcInsecure) args.push(SRC_INSECURE);
  if (opts.destInsecure) args.push(DEST_INSECURE);
  if (opts.format) args.push('--format', opts.format);
  args.push(...(opts.extra ?? []), src, dest);
  return skopeo(args, { ...opts, check: opts.check ?? true });
}

/** `skopeo inspect --raw REF` → the exact manifest bytes (stdout is the raw manifest, no newline added). */
export async function skopeoInspectRaw(
  ref: string,
  opts: SkopeoOptions & { insecure?: boolean } = {},
): Promise<{ raw: string; digest: string; json: unknown }> {
  const args = ['inspect', '--raw'];
  if (opts.insecure) args.push(TLS_INSECURE);
  args.push(ref);
  const r = await skopeo(args, { ...opts, check: opts.check ?? true });
  return { raw: r.stdout, digest: sha256Of(Buffer.from(r.stdout, 'utf8')), json: JSON.parse(r.stdout) as unknown };
}

// ---------------------------------------------------------------------------------------------
// containers-registries.conf v2

export type PullFromMirror = 'all' | 'digest-only' | 'tag-only';

export interface MirrorEntry {
  location: string;
  insecure?: boolean;
  pullFromMirror?: PullFromMirror;
}

export interface RegistryEntry {
  /** Logical name prefix, e.g. 'quay.io/openshift-release-dev/ocp-v4.0-art-dev'. */
  prefix?: string;
  /** Physical location; defaults to prefix (at least one of prefix/location is required). */
  location?: string;
  /** Shorthand for one mirror: `mirror: '127.0.0.1:5000/ocp4/openshift4'` (uses `insecure` + `pullFromMirror`). */
  mirror?: string | string[];
  /** Full mirror list (appended after `mirror`). */
  mirrors?: MirrorEntry[];
  /** Per-mirror `pull-from-mirror` for the `mirror` shorthand. */
  pullFromMirror?: PullFromMirror;
  /** Registry-level `mirror-by-digest-only` (cannot be combined with pullFromMirror). */
  mirrorByDigestOnly?: boolean;
  /** For the `mirror` shorthand: mirrors are plain HTTP. Also sets the [[registry]] itself insecure when registryInsecure is undefined. */
  insecure?: boolean;
  /** `insecure` on the [[registry]] table itself. Default: same as `insecure`. */
  registryInsecure?: boolean;
  blocked?: boolean;
}

export interface RegistriesConfOptions {
  unqualifiedSearchRegistries?: string[];
}

function tomlString(s: string): string {
  // JSON string escapes are valid TOML basic-string escapes for everything we emit.
  return JSON.stringify(s);
}

/** Renders a containers-registries.conf v2 (TOML) document. */
export function renderRegistriesConf(entries: RegistryEntry | RegistryEntry[], opts: RegistriesConfOptions = {}): string {
  const list = Array.isArray(entries) ? entries : [entries];
  const lines: string[] = ['# written by airlock test/helpers/skopeo.ts'];
  lines.push(
    `unqualified-search-registries = [${(opts.unqualifiedSearchRegistries ?? []).map(tomlString).join(', ')}]`,
    'short-name-mode = "permissive"',
  );
  for (const e of list) {
    const location = e.location ?? e.prefix;
    if (!location) throw new Error('registries.conf entry needs a prefix or a location');
    if (e.mirrorByDigestOnly && (e.pullFromMirror || e.mirrors?.some((m) => m.pullFromMirror))) {
      throw new Error('mirror-by-digest-only and pull-from-mirror cannot be combined (containers/image rejects it)');
    }
    lines.push('', '[[registry]]');
    if (e.prefix) lines.push(`prefix = ${tomlString(e.prefix)}`);
    lines.push(`location = ${tomlString(location)}`);
    const regInsecure = e.registryInsecure ?? e.insecure;
    if (regInsecure !== undefined) lines.push(`insecure = ${regInsecure}`);
    if (e.blocked !== undefined) lines.push(`blocked = ${e.blocked}`);
    if (e.mirrorByDigestOnly !== undefined) lines.push(`mirror-by-digest-only = ${e.mirrorByDigestOnly}`);
    const shorthand = e.mirror === undefined ? [] : Array.isArray(e.mirror) ? e.mirror : [e.mirror];
    const mirrors: MirrorEntry[] = [
      ...shorthand.map((location) => ({ location, insecure: e.insecure, pullFromMirror: e.pullFromMirror })),
      ...(e.mirrors ?? []),
    ];
    for (const m of mirrors) {
      lines.push('', '[[registry.mirror]]', `location = ${tomlString(m.location)}`);
      if (m.insecure !== undefined) lines.push(`insecure = ${m.insecure}`);
      if (m.pullFromMirror) lines.push(`pull-from-mirror = ${tomlString(m.pullFromMirror)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Writes renderRegistriesConf(...) to `path` and returns the text written. */
export function writeRegistriesConf(
  path: string,
  entries: RegistryEntry | RegistryEntry[],
  opts: RegistriesConfOptions = {},
): string {
  const text = renderRegistriesConf(entries, opts);
  writeFileSync(path, text);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Reading what skopeo wrote

export function sha256Of(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export interface BlobFile {
  digest: string;
  path: string;
  size: number;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Config + layer blobs of a `dir:` transport directory (files named by 64-hex digest), sorted by digest. */
export function listBlobsOfDir(dir: string): BlobFile[] {
  return readdirSync(dir)
    .filter((n) => HEX64.test(n))
    .sort()
    .map((n) => ({ digest: `sha256:${n}`, path: join(dir, n), size: statSync(join(dir, n)).size }));
}

/** Instance manifests of a `dir:` directory (`<hex>.manifest.json`), as digests, sorted. */
export function listDirInstanceManifests(dir: string): string[] {
  return readdirSync(dir)
    .map((n) => /^([0-9a-f]{64})\.manifest\.json$/.exec(n)?.[1])
    .filter((h): h is string => h !== undefined)
    .sort()
    .map((h) => `sha256:${h}`);
}

export interface ManifestFile {
  bytes: Buffer;
  digest: string;
  mediaType: string | undefined;
  json: Record<string, unknown>;
}

function manifestFile(bytes: Buffer): ManifestFile {
  const json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  return { bytes, digest: sha256Of(bytes), mediaType: typeof json.mediaType === 'string' ? json.mediaType : undefined, json };
}

/** `manifest.json` of a `dir:` directory, or the instance manifest `<hex>.manifest.json`. */
export function readDirManifest(dir: string, instanceDigest?: string): ManifestFile {
  let name = 'manifest.json';
  if (instanceDigest) {
    const m = /^sha256:([0-9a-f]{64})$/.exec(instanceDigest);
    if (!m) throw new Error(`bad digest ${instanceDigest}`);
    name = `${m[1]}.manifest.json`;
  }
  return manifestFile(readFileSync(join(dir, name)));
}

/** All blobs of an OCI layout (`blobs/sha256/*`, manifests included), sorted by digest. */
export function listBlobsOfOciLayout(dir: string): BlobFile[] {
  const bdir = join(dir, 'blobs', 'sha256');
  if (!existsSync(bdir)) return [];
  return readdirSync(bdir)
    .filter((n) => HEX64.test(n))
    .sort()
    .map((n) => ({ digest: `sha256:${n}`, path: join(bdir, n), size: statSync(join(bdir, n)).size }));
}

export interface OciLayoutIndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** `index.json` of an OCI layout. */
export function readOciLayoutIndex(dir: string): { manifests: OciLayoutIndexEntry[] } {
  return JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: OciLayoutIndexEntry[] };
}

/** The blob `digest` of an OCI layout, parsed as a manifest. */
export function readOciLayoutManifest(dir: string, digest: string): ManifestFile {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`bad digest ${digest}`);
  return manifestFile(readFileSync(join(dir, 'blobs', 'sha256', m[1]!)));
}

/** The top-level manifest an OCI layout tags `tag` with (`org.opencontainers.image.ref.name`). */
export function readOciLayoutTagged(dir: string, tag: string): ManifestFile {
  const entry = readOciLayoutIndex(dir).manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`tag ${tag} not in ${dir}/index.json`);
  return readOciLayoutManifest(dir, entry.digest);
}
