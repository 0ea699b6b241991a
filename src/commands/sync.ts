import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { Copier } from '../mirror/copy.js';
import type { ContentSink, CopyItem } from '../mirror/content.js';
import { LayoutDirSink } from '../mirror/oci-layout.js';
import { parsePlatformFilter, type PlatformFilter } from '../mirror/platform.js';
import { isGoneUpstream, localRepository, parseRemoteRef, RefError, RegistrySource } from '../mirror/registry-source.js';
import { isValidName } from '../registry/names.js';
import type { UpstreamConfig } from '../config/schema.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { openDestination, splitPair, UsageError, writeSummary } from './mirror-common.js';
import { createProgress } from './progress.js';
import { STORE_OPTIONS } from './storage-target.js';

export const SYNC_HELP = `Usage: airlock sync SOURCE_REF... | --mapping mapping.txt  [--to-dir DIR] [--dest-prefix P]
                    [--filter-by-os OS/ARCH] [--skip-missing] [--dry-run] [--concurrency N]
                    [--authfile F] [--insecure] [--config FILE] [--storage DIR]

Copies images from remote registries into the store — or, with --to-dir, into an OCI layout
directory (the connected half of an air gap: no server or database needed; carry DIR across and
run \`airlock import DIR\` there). Digests are preserved; a SOURCE_REF named by digest is stored
tagless; every platform of an index is copied unless --filter-by-os. Each image lands in its
registry host + path (quay.io/openshift-release-dev/ocp-release stays that; host:port becomes
host_port), or --dest-prefix P + the path. Each repository records its origin (for mirror sets).
A rerun fetches only what is missing. With database: and blobs.s3 in the config, the store is
the shared PostgreSQL and bucket the replicas serve (written directly, beside them).

  --mapping FILE        SRC=DST lines as \`oc adm catalog mirror --manifests-only\` writes them;
                        DST's path is the local repository (and its tag, if any, the tag)
  --to-dir DIR          write an OCI layout (the format of \`airlock export\`) instead of the store
  --dest-prefix P       land images at P/<path> instead of <host>/<path>
  --filter-by-os O/A    only this platform of multi-platform images (the tag then names it)
  --skip-missing        go on past source images that are gone; list them at the end
  --dry-run             list what would be copied; write nothing
  --concurrency N       images copied at once (default 4)
  --authfile F          pull-secret form credentials ({"auths":{"quay.io":{"auth":"…"}}}); else the
                        matching upstream's from the config
  --insecure            allow plain-HTTP or unverified-TLS sources

Example:
  airlock sync quay.io/openshift-release-dev/ocp-release:4.15.3-x86_64 --authfile pull-secret.json
  airlock sync --mapping manifests-redhat-operator-index/mapping.txt --to-dir /mnt/usb/operators
`;

export interface SyncOptions {
  refs: string[];
  mapping?: string;
  toDir?: string;
  destPrefix?: string;
  filter?: PlatformFilter;
  skipMissing?: boolean;
  dryRun?: boolean;
  concurrency?: number;
  authFile?: string;
  insecure?: boolean;
  /** The store written unless --to / --to-dir names another destination. */
  config: Config;
  upstreams: UpstreamConfig[];
  stdout: CommandOutput & { isTTY?: boolean };
  stderr: CommandOutput & { isTTY?: boolean };
}

/** One SOURCE_REF → what to copy and where it lands. */
export function syncItem(text: string, destPrefix?: string): CopyItem {
  const ref = parseRemoteRef(text);
  const destRepo = localRepository(ref, destPrefix);
  return {
    srcRepo: `${ref.host}/${ref.path}`,
    reference: ref.digest ?? ref.tag!,
    destRepo,
    ...(ref.digest ? {} : { tag: ref.tag! }),
    origin: `${ref.host}/${ref.path}`,
    label: text,
  };
}

/** mapping.txt: `SRC=DST` per line (oc adm catalog mirror --manifests-only); DST's path is the local repository. */
export function mappingItems(text: string): CopyItem[] {
  const items: CopyItem[] = [];
  for (const [n, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [src, dst] = splitPair(line, `mapping line ${n + 1}`);
    const item = syncItem(src);
    const target = dst.replace(/^docker:\/\//, '');
    const first = target.split('/', 1)[0]!;
    const withoutHost = target.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? target.slice(first.length + 1) : target;
    const at = withoutHost.indexOf('@');
    const plain = at === -1 ? withoutHost : withoutHost.slice(0, at);
    const colon = plain.lastIndexOf(':');
    const repo = colon > plain.lastIndexOf('/') && colon !== -1 ? plain.slice(0, colon) : plain;
    const tag = colon > plain.lastIndexOf('/') && colon !== -1 ? plain.slice(colon + 1) : undefined;
    if (!isValidName(repo)) throw new UsageError(`mapping line ${n + 1}: "${repo}" is not a valid repository name`);
    items.push({ ...item, destRepo: repo, ...(tag !== undefined ? { tag } : item.tag !== undefined ? { tag: item.tag } : {}), label: src });
  }
  return items;
}

export async function runSync(options: SyncOptions): Promise<number> {
  const started = Date.now();
  const items = [...options.refs.map((r) => syncItem(r, options.destPrefix)), ...(options.mapping ? mappingItems(await readFile(options.mapping, 'utf8')) : [])];
  for (const item of items) if (!isValidName(item.destRepo)) throw new UsageError(`${item.label}: "${item.destRepo}" is not a valid repository name`);
  const source = new RegistrySource({ upstreams: options.upstreams, authFile: options.authFile, insecure: options.insecure });
  let sink: ContentSink;
  let closeSink: () => Promise<void>;
  if (options.toDir !== undefined) {
    const dir = await LayoutDirSink.create(options.toDir);
    sink = dir;
    closeSink = () => dir.close();
  } else {
    const destination = await openDestination({ config: options.config, authFile: options.authFile, command: 'sync', dryRun: options.dryRun });
    sink = destination.sink;
    closeSink = destination.close;
  }
  const progress = createProgress({ label: options.dryRun ? 'sync (dry run)' : 'sync', output: options.stderr });
  try {
    const copier = new Copier(source, sink, {
      progress,
      filter: options.filter,
      dryRun: options.dryRun,
      concurrency: options.concurrency ?? 4,
      skipMissing: options.skipMissing,
      stopOnFailure: true,
      isMissing: isGoneUpstream,
    });
    await copier.copyAll(items);
    // A directory keeps what finished even after a failure: the rerun resumes from it.
    if (!options.dryRun) await sink.flush();
    progress.stop();
    writeSummary(options.stdout, options.dryRun ? 'sync (dry run)' : 'sync', copier.tally, (Date.now() - started) / 1000, options.dryRun);
    return copier.tally.failed.length ? EXIT_FAILURE : EXIT_OK;
  } finally {
    progress.stop();
    await closeSink();
    await source.close();
  }
}

export async function syncCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      mapping: { type: 'string' },
      'to-dir': { type: 'string' },
      'dest-prefix': { type: 'string' },
      'filter-by-os': { type: 'string' },
      'skip-missing': { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      concurrency: { type: 'string' },
      authfile: { type: 'string' },
      insecure: { type: 'boolean' },
      ...STORE_OPTIONS,
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(SYNC_HELP);
    return EXIT_OK;
  }
  try {
    if (!positionals.length && values.mapping === undefined) throw new UsageError('name at least one SOURCE_REF, or --mapping FILE');
    const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
    if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency > 0 && concurrency <= 64)) throw new UsageError('--concurrency takes a number from 1 to 64');
    if (values['dest-prefix'] !== undefined && !isValidName(values['dest-prefix'])) throw new UsageError(`--dest-prefix "${values['dest-prefix']}" is not a valid repository path`);
    let filter: PlatformFilter | undefined;
    try {
      filter = values['filter-by-os'] === undefined ? undefined : parsePlatformFilter(values['filter-by-os']);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const config = loadConfig({ config: values.config, storage: values.storage });
    return await runSync({
      refs: positionals,
      mapping: values.mapping,
      toDir: values['to-dir'],
      destPrefix: values['dest-prefix'],
      filter,
      skipMissing: values['skip-missing'],
      dryRun: values['dry-run'],
      concurrency,
      authFile: values.authfile,
      insecure: values.insecure,
      config,
      upstreams: config.upstreams,
      stdout: process.stdout,
      stderr: process.stderr,
    });
  } catch (e) {
    if (e instanceof UsageError || e instanceof RefError) {
      process.stderr.write(`airlock sync: ${e.message}\n\n${SYNC_HELP}`);
      return EXIT_USAGE;
    }
    throw e;
  }
}
