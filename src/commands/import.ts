import { parseArgs } from 'node:util';
import { stat } from 'node:fs/promises';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { Copier } from '../mirror/copy.js';
import type { ContentSource, CopyItem } from '../mirror/content.js';
import { LayoutError, OciLayoutSource } from '../mirror/oci-layout.js';
import { V2TreeSource } from '../mirror/v2-tree.js';
import { isValidName } from '../registry/names.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { openDestination, splitPair, UsageError, writeSummary } from './mirror-common.js';
import { createProgress } from './progress.js';
import { STORE_OPTIONS } from './storage-target.js';

export const IMPORT_HELP = `Usage: airlock import SOURCE [--prefix P] [--map LOCAL=ORIGIN]... [--to URL] [--dry-run]
                      [--authfile F] [--config FILE] [--storage DIR]

Imports the images of SOURCE into airlock. SOURCE is detected by itself:
  - an OCI image layout (oci-layout, index.json, blobs/sha256/…) as a directory, a .tar (read in
    place) or a .tar.gz (extracted to $TMPDIR first: it needs that much room), as written by
    \`airlock export\`, \`airlock sync --to-dir\` or \`skopeo copy … oci:DIR:TAG\`.
    An airlock export restores its repositories, tags, tagless images and origins by itself; a bare
    tag (skopeo) lands in the repository --prefix names.
  - the v2/ tree that \`oc image mirror --dir\`, \`oc adm release mirror --to-dir\` and
    \`oc adm catalog mirror … file://\` write (SOURCE is the v2/ directory or the one holding it);
    repository R lands at P/R.

Every digest is verified before anything becomes visible; blobs are stored before manifests before
tags, so no image is ever half there; what is already present is skipped, so a rerun after an
interruption resumes. Into a storage directory no server holds, import writes directly; when a
server holds it (or with --to URL) it pushes through that server, with credentials from --authfile.
With shared backends (database: and blobs.s3 in the config) it writes into the shared PostgreSQL
and bucket directly, while the replicas run: every replica serves the images at once.

  --prefix P            put every repository below P (for a plain skopeo layout: the repository)
  --map LOCAL=ORIGIN    record that local repository LOCAL mirrors ORIGIN (for mirror sets)
  --to URL              push into the airlock at URL instead of the configured storage
  --authfile F          pull-secret form credentials for the server ({"auths":{"host:port":{…}}})
  --dry-run             list what would be imported; write nothing

Example:
  airlock import /mnt/usb/ocp-4.15 --storage /var/lib/airlock
  airlock import /mnt/usb/ocp-4.15 --config /etc/airlock/scale-out.yaml   # PostgreSQL + S3
  airlock import ./mirror/v2 --prefix ocp4 --map ocp4/openshift/release=quay.io/openshift-release-dev/ocp-v4.0-art-dev
`;

export interface ImportOptions {
  source: string;
  /** The store written unless --to / --to-dir names another destination. */
  config: Config;
  prefix?: string;
  maps?: [string, string][];
  to?: string;
  authFile?: string;
  dryRun?: boolean;
  stdout: CommandOutput & { isTTY?: boolean };
  stderr: CommandOutput & { isTTY?: boolean };
}

/** Opens SOURCE as whichever format it is, with the images it holds. */
export async function openImportSource(path: string, prefix: string | undefined): Promise<{ source: ContentSource; items: CopyItem[] }> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new UsageError(`${path}: no such file or directory`);
  const v2 = info.isDirectory() ? V2TreeSource.find(path) : undefined;
  if (v2) {
    const source = await V2TreeSource.open(v2);
    if (!source.repositories.length) throw new UsageError(`${v2}: no repository (no directory holding manifests/ and blobs/)`);
    return { source, items: await source.items(prefix) };
  }
  const source = await OciLayoutSource.open(path);
  try {
    return { source, items: source.items(prefix) };
  } catch (e) {
    await source.close();
    throw e instanceof LayoutError ? new UsageError(e.message) : e;
  }
}

export async function runImport(options: ImportOptions): Promise<number> {
  const started = Date.now();
  const { source, items } = await openImportSource(options.source, options.prefix);
  const invalid = items.find((item) => !isValidName(item.destRepo));
  if (invalid) {
    await source.close();
    throw new UsageError(`${invalid.label}: "${invalid.destRepo}" is not a valid repository name`);
  }
  let destination: Awaited<ReturnType<typeof openDestination>>;
  try {
    destination = await openDestination({ config: options.config, to: options.to, authFile: options.authFile, command: 'import', dryRun: options.dryRun });
  } catch (e) {
    await source.close();
    throw e;
  }
  const progress = createProgress({ label: options.dryRun ? 'import (dry run)' : 'import', output: options.stderr });
  try {
    const sink = destination.sink;
    const copier = new Copier(source, sink, { progress, dryRun: options.dryRun, concurrency: 2 });
    await copier.copyAll(items);
    if (!options.dryRun) {
      for (const [local, origin] of options.maps ?? []) await sink.setOrigin(local, origin);
      await sink.flush();
    }
    progress.stop();
    writeSummary(options.stdout, options.dryRun ? 'import (dry run)' : 'import', copier.tally, (Date.now() - started) / 1000, options.dryRun);
    return copier.tally.failed.length ? EXIT_FAILURE : EXIT_OK;
  } finally {
    progress.stop();
    await destination.close();
    await source.close();
  }
}

export async function importCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      prefix: { type: 'string' },
      map: { type: 'string', multiple: true },
      to: { type: 'string' },
      authfile: { type: 'string' },
      'dry-run': { type: 'boolean' },
      ...STORE_OPTIONS,
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(IMPORT_HELP);
    return EXIT_OK;
  }
  try {
    if (positionals.length !== 1) throw new UsageError('import takes exactly one SOURCE');
    if (values.prefix !== undefined && !isValidName(values.prefix)) throw new UsageError(`--prefix "${values.prefix}" is not a valid repository path`);
    const maps = (values.map ?? []).map((m) => splitPair(m, '--map'));
    const config = loadConfig({ config: values.config, storage: values.storage });
    return await runImport({
      source: positionals[0]!,
      config,
      prefix: values.prefix,
      maps,
      to: values.to,
      authFile: values.authfile,
      dryRun: values['dry-run'],
      stdout: process.stdout,
      stderr: process.stderr,
    });
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`airlock import: ${e.message}\n\n${IMPORT_HELP}`);
      return EXIT_USAGE;
    }
    throw e;
  }
}
