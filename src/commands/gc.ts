import { parseArgs } from 'node:util';
import { destination } from 'pino';
import { loadConfig } from '../config/load.js';
import { parseDuration } from '../config/units.js';
import { DEFAULT_GC_GRACE_MS, GarbageCollector, type GcResult } from '../lifecycle/gc.js';
import { createLogger } from '../log.js';
import { ManifestCache } from '../registry/manifest-cache.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes } from './progress.js';
import { delegateToServer, STORE_OPTIONS } from './storage-target.js';
import { claimStore } from './store-claim.js';

export const GC_USAGE = `Usage: airlock gc [--dry-run] [--untagged-older-than DURATION] [--config FILE] [--storage DIR] [--authfile FILE]

Removes what nothing needs any more: blobs no manifest references (after a grace period, gc.grace
in the config, default 1h, so pushes under way are never cut short), links to them, and — only with
--untagged-older-than — untagged manifests older than DURATION that no kept index or subject needs.
Kept always: every tagged manifest, every manifest pushed by digest (tagless mirrors are content),
every child of a kept index, every referrer of a kept manifest, cached manifests (cache eviction
governs those), every blob a kept manifest references, and uploads in progress. Repositories left
without a manifest (their images deleted) leave the catalog.

When a server holds the storage directory, the collection runs inside that server (POST /api/v1/gc);
under auth: it needs a user allowed to delete on "**", given by --authfile (pull-secret form,
{"auths":{"HOST:PORT":{"auth":"base64(user:password)"}}}).

With shared backends (database: and blobs.s3 in the config) it collects in the shared PostgreSQL
and bucket directly, safe while replicas serve and take pushes: each blob is removed under the
cluster-wide per-digest lock their uploads, mounts and fills take, and the replicas are told which
repositories lost manifests.

Options:
  --dry-run                       report what would be removed; remove nothing
  --untagged-older-than DURATION  also remove untagged manifests older than DURATION (e.g. 720h, 30d)
  --config FILE, --storage DIR    which storage (as for airlock serve)
  --authfile FILE                 credentials for the server holding the storage

Example:
  airlock gc --storage /var/lib/airlock --dry-run
  airlock gc --config /etc/airlock/airlock.yaml --untagged-older-than 30d --authfile admin.json
  airlock gc --config /etc/airlock/scale-out.yaml --dry-run  # PostgreSQL + S3: beside the replicas

Exit codes: 0 done, 1 failed, 2 bad usage or configuration.
`;

export interface GcCommandOptions {
  args: string[];
  stdout: CommandOutput;
  stderr: CommandOutput & { isTTY?: boolean };
}

/** `airlock gc`: on a free storage directory under its lock, or inside the server holding it. */
export async function runGcCommand({ args, stdout, stderr }: GcCommandOptions): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      'dry-run': { type: 'boolean' },
      'untagged-older-than': { type: 'string' },
      ...STORE_OPTIONS,
      authfile: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    stdout.write(GC_USAGE);
    return EXIT_OK;
  }
  if (positionals.length > 0) {
    stderr.write(`airlock gc: unexpected argument "${positionals[0]}"\n\n${GC_USAGE}`);
    return EXIT_USAGE;
  }
  const dryRun = values['dry-run'] ?? false;
  const untagged = values['untagged-older-than'];
  let untaggedOlderThan: number | undefined;
  if (untagged !== undefined) {
    try {
      untaggedOlderThan = parseDuration(untagged);
    } catch (e) {
      stderr.write(`airlock gc: --untagged-older-than: ${(e as Error).message}\n`);
      return EXIT_USAGE;
    }
  }
  const config = loadConfig({ config: values.config, storage: values.storage });

  const claim = await claimStore(config, 'gc', 'delegate');
  if (claim.kind === 'server') {
    const result = await delegateToServer<GcResult>(
      'gc',
      claim,
      { path: '/api/v1/gc', body: { dryRun, untaggedOlderThan: untagged }, what: 'collect', authFile: values.authfile },
      stderr,
    );
    if (!result) return EXIT_FAILURE;
    printResult(stdout, result);
    return EXIT_OK;
  }

  const { store } = claim;
  const log = createLogger(config.log.level, destination({ fd: 2, sync: true }));
  const progress = createProgress({ label: dryRun ? 'gc (dry run)' : 'gc', output: stderr });
  // Replicas keep manifests in memory: every repository that loses one is announced to them, as
  // their own collector would, and the announcements are out before the database closes.
  const feed = store.cluster?.feed;
  const announced: Promise<unknown>[] = [];
  const manifests = new ManifestCache();
  if (feed) manifests.onChange = (repo) => announced.push(feed.publish('repo', repo));
  // The collection reports blobs checked so far out of the candidates it found.
  let grown = 0;
  let advanced = 0;
  try {
    const gc = new GarbageCollector({
      meta: store.meta,
      blobs: store.blobs,
      // With replicas, the cluster-wide per-digest lock their uploads, mounts and fills take.
      blobLocks: store.blobLocks,
      manifests,
      log,
      graceMs: config.gc?.grace ?? DEFAULT_GC_GRACE_MS,
      onProgress: (done, total) => {
        if (total > grown) {
          progress.grow(total - grown);
          grown = total;
        }
        progress.advance(done - advanced);
        advanced = done;
      },
    });
    if (claim.shared) stderr.write(`airlock gc: collecting in the shared store (${store.description})\n`);
    const result = await gc.run({ dryRun, untaggedOlderThan });
    progress.stop();
    printResult(stdout, result);
    return EXIT_OK;
  } catch (e) {
    progress.stop();
    stderr.write(`airlock gc: ${(e as Error).message}\n`);
    return EXIT_FAILURE;
  } finally {
    const failed = (await Promise.allSettled(announced)).filter((a) => a.status === 'rejected').length;
    if (failed) stderr.write(`airlock gc: ${failed} change notification(s) did not reach the replicas; they drop removed manifests from memory when their connection to the database next resyncs\n`);
    await claim.release();
    log.flush();
  }
}

/** The same lines whether the collection ran here or in the server. */
export function printResult(out: CommandOutput, r: GcResult): void {
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const m of r.manifests) out.write(`${verb} manifest ${m.repo}@${m.digest}\n`);
  if (r.removedManifests > r.manifests.length) out.write(`… and ${r.removedManifests - r.manifests.length} more manifests\n`);
  // Absent from the answer of a server older than this command.
  const forgotten = r.forgotten ?? [];
  const forgottenCount = r.forgottenRepositories ?? 0;
  for (const name of forgotten) out.write(`${r.dryRun ? 'would forget' : 'forgot'} empty repository ${name}\n`);
  if (forgottenCount > forgotten.length) out.write(`… and ${forgottenCount - forgotten.length} more empty repositories\n`);
  const what = `${plural(r.removedManifests, 'manifest')}, ${plural(r.removedBlobs, 'blob')} (${plural(r.removedLinks, 'repository link')})`;
  const forgot = forgottenCount > 0 ? `; ${r.dryRun ? 'would forget' : 'forgot'} ${plural(forgottenCount, 'empty repository', 'empty repositories')}` : '';
  out.write(
    r.dryRun
      ? `gc (dry run): would remove ${what} and free ${formatBytes(r.freedBytes)}${forgot}; nothing was removed\n`
      : `gc: removed ${what}, freed ${formatBytes(r.freedBytes)}${forgot}\n`,
  );
}

function plural(n: number, word: string, words = `${word}s`): string {
  return `${n} ${n === 1 ? word : words}`;
}
