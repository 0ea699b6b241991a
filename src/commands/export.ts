import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { Copier } from '../mirror/copy.js';
import type { ContentSink } from '../mirror/content.js';
import { blobsOfLayout, LayoutDirSink, LayoutError, LayoutTarSink } from '../mirror/oci-layout.js';
import { parsePlatformFilter, type PlatformFilter } from '../mirror/platform.js';
import { selectImages, SelectionError } from '../mirror/select.js';
import { StoreSource } from '../mirror/store.js';
import type { Config } from '../config/schema.js';
import { claimStore } from './store-claim.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { UsageError, writeSummary } from './mirror-common.js';
import { createProgress } from './progress.js';
import { STORE_OPTIONS } from './storage-target.js';

export const EXPORT_HELP = `Usage: airlock export REF_OR_GLOB... --to DIR|FILE.tar [--since PREVIOUS_EXPORT] [--filter-by-os OS/ARCH]
                      [--config FILE] [--storage DIR]

Writes images from the store as an OCI image layout, to carry across an air gap and load there with
\`airlock import\`. REF_OR_GLOB is repo:tag, repo@sha256:…, a repository name (all of it) or a glob
(ocp4/** = every tag and tagless image of every repository below ocp4; * stays within one path
component). Each image is complete (all platforms of an index unless --filter-by-os). index.json
names each image's repository, tag and origin (annotations io.airlock.repository, io.airlock.tag,
io.airlock.origin; org.opencontainers.image.ref.name is REPO:TAG, so \`skopeo copy oci:DIR:REPO:TAG\`
works too); airlock-export.json lists the repositories and origins; SHA256SUMS checks every file
(\`sha256sum -c SHA256SUMS\`). With database: and blobs.s3 in the config, the images are read from
the shared PostgreSQL and bucket the replicas serve.

  --to DIR|FILE.tar         a directory (created or added to), or a tar when the name ends in .tar
  --since PREVIOUS_EXPORT   leave out the blobs an earlier export (its directory or tar) carried:
                            the other side imports that one first, then this one
  --filter-by-os OS/ARCH    only this platform of multi-platform images (the tag then names it)

Example:
  airlock export 'ocp4/**' quay.io/openshift-release-dev/ocp-release:4.15.3-x86_64 --to /mnt/usb/ocp-4.15.tar
  airlock export 'ocp4/**' --to /mnt/usb/ocp-4.15.4.tar --since /mnt/usb/ocp-4.15.tar
`;

export interface ExportOptions {
  selectors: string[];
  to: string;
  /** The store read: a storage directory, or the shared backends replicas serve. */
  config: Config;
  since?: string;
  filter?: PlatformFilter;
  stdout: CommandOutput & { isTTY?: boolean };
  stderr: CommandOutput & { isTTY?: boolean };
}

export async function runExport(options: ExportOptions): Promise<number> {
  const started = Date.now();
  const exclude = options.since ? await blobsOfLayout(options.since) : undefined;
  // Reading needs no lock when a server holds the storage: blobs never change once written and the
  // database allows readers next to its writer. Anything else holding it (gc, an import) is waited out.
  // Shared backends are read beside the replicas, like one more of them.
  const claim = await claimStore(options.config, 'export', 'read');
  if (claim.kind !== 'open') throw new Error('unreachable: export reads the store itself');
  const { store } = claim;
  const described = claim.shared ? store.description : `storage ${options.config.storage}`;
  let sink: ContentSink | undefined;
  try {
    const items = await selectImages(store.meta, options.selectors);
    sink = options.to.endsWith('.tar') ? new LayoutTarSink(options.to, options.since) : await LayoutDirSink.create(options.to, { since: options.since });
    const progress = createProgress({ label: 'export', output: options.stderr });
    // A tar is written front to back: one image at a time.
    const copier = new Copier(new StoreSource(store, described), sink, { progress, filter: options.filter, exclude, concurrency: 1, stopOnFailure: true });
    await copier.copyAll(items);
    // A tar with an image missing must not look finished: it stays .partial and is removed.
    if (!(copier.tally.failed.length && sink instanceof LayoutTarSink)) await sink.flush();
    progress.stop();
    writeSummary(options.stdout, 'export', copier.tally, (Date.now() - started) / 1000);
    if (exclude) options.stdout.write(`left out blobs carried by ${options.since}\n`);
    return copier.tally.failed.length ? EXIT_FAILURE : EXIT_OK;
  } finally {
    await sink?.close();
    await claim.release();
  }
}

export async function exportCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      to: { type: 'string' },
      since: { type: 'string' },
      'filter-by-os': { type: 'string' },
      ...STORE_OPTIONS,
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(EXPORT_HELP);
    return EXIT_OK;
  }
  try {
    if (!positionals.length) throw new UsageError('name at least one REF_OR_GLOB');
    if (!values.to) throw new UsageError('--to DIR|FILE.tar is required');
    let filter: PlatformFilter | undefined;
    try {
      filter = values['filter-by-os'] === undefined ? undefined : parsePlatformFilter(values['filter-by-os']);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const config = loadConfig({ config: values.config, storage: values.storage });
    return await runExport({ selectors: positionals, to: values.to, config, since: values.since, filter, stdout: process.stdout, stderr: process.stderr });
  } catch (e) {
    if (e instanceof UsageError || e instanceof SelectionError || e instanceof LayoutError) {
      process.stderr.write(`airlock export: ${e.message}\n${e instanceof UsageError ? `\n${EXPORT_HELP}` : ''}`);
      return e instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
    }
    throw e;
  }
}
