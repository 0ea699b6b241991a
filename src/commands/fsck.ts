import { parseArgs } from 'node:util';
import type { Cluster } from '../cluster/index.js';
import { loadConfig, parseConfig } from '../config/load.js';
import { openCommandStore, sharedMetadata, type CommandStore } from '../server/command-store.js';
import { fsck, problemsRemaining, type FsckReport, type FsckStore, type Problem } from '../lifecycle/fsck.js';
import { fsckBlobs } from '../lifecycle/fsck-blobs.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes, formatSeconds } from './progress.js';
import { claimStore, commandLogger } from './store-claim.js';
import { delegateToServer, missingStore, STORE_OPTIONS } from './storage-target.js';

export const FSCK_HELP = `Usage: airlock fsck [--repair] [--json] [--config FILE | --storage DIR] [--authfile FILE]

Checks the store: re-hashes every blob file, compares the metadata's rows with the files and the
files with the rows, re-hashes every manifest and follows its references. Reports corrupt blobs,
missing files, orphan files, rows that point at nothing and unfinished uploads, each by name.

  --repair     fix what is safe, and say what was done: corrupt files are moved to
               <storage>/quarantine/ (never deleted), rows of lost blobs are dropped (a pull-through
               cache fetches them again), orphan files and stale temporaries are removed, recorded
               sizes are corrected. References to content that is gone are reported, not removed.
  --json       print the report as JSON
  --authfile   credentials for the server holding the storage (pull-secret / docker config.json
               form), when its config has auth: (the user needs delete on **)

When a server holds the storage, it runs the check itself (POST /api/v1/fsck) and this prints its
report. With shared backends (database: and/or blobs.s3 in the config) it checks the shared store:
blob objects in the bucket are read back and hashed, objects under blobs/ that no row records are
orphans, and corrupt ones move to quarantine/ in the bucket. With a shared database it runs beside
the replicas (no storage lock), under the cluster-wide per-digest lock and fill leases they take.
Exit codes: 0 nothing wrong (or everything found was repaired), 1 something is wrong, 2 bad usage.

Example:
  airlock fsck --config /etc/airlock/airlock.yaml
  airlock fsck --storage /var/lib/airlock --repair
`;

export interface FsckCommandIo {
  stdout: CommandOutput;
  stderr: CommandOutput & { isTTY?: boolean };
}

export async function fsckCommand(args: string[], io: FsckCommandIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...STORE_OPTIONS,
      repair: { type: 'boolean' },
      json: { type: 'boolean' },
      authfile: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    io.stdout.write(FSCK_HELP);
    return EXIT_OK;
  }
  if (positionals.length > 0) {
    io.stderr.write(`airlock fsck: unexpected argument ${positionals[0]}\n\n${FSCK_HELP}`);
    return EXIT_USAGE;
  }
  const config = loadConfig({ config: values.config, storage: values.storage });
  const repair = values.repair ?? false;
  // A local database must be there already: fsck never creates an empty store to check.
  const noStore = sharedMetadata(config) ? undefined : missingStore(config.storage);
  if (noStore) {
    io.stderr.write(`airlock fsck: ${noStore}\n`);
    return EXIT_FAILURE;
  }

  let report: FsckReport;
  const claim = await claimStore(config, 'fsck', 'delegate');
  if (claim.kind === 'server') {
    const answer = await delegateToServer<FsckReport>('fsck', claim, { path: '/api/v1/fsck', body: { repair }, what: 'run the check', authFile: values.authfile }, io.stderr);
    if (!answer) return EXIT_FAILURE;
    report = answer;
  } else {
    try {
      report = await checkStore(claim.store, config.storage, claim.shared, repair, io.stderr);
    } catch (e) {
      io.stderr.write(`airlock fsck: ${(e as Error).message}\n`);
      return EXIT_FAILURE;
    } finally {
      await claim.release();
    }
  }
  io.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatFsckReport(report));
  return problemsRemaining(report) > 0 ? EXIT_FAILURE : EXIT_OK;
}

/** Runs the check on a single-node storage directory this process holds the lock of. */
export async function fsckLocal(storage: string, repair: boolean, progressOut: CommandOutput & { isTTY?: boolean }): Promise<FsckReport> {
  const config = parseConfig({ storage });
  const store = await openCommandStore(config, commandLogger(config), 'fsck');
  try {
    return await checkStore(store, storage, false, repair, progressOut);
  } finally {
    await store.close();
  }
}

/**
 * Checks a command's store, with a progress bar. `shared`: the database is shared (PostgreSQL), the
 * replicas are running, and `storage` is not this store's (its lock is not held).
 */
async function checkStore(store: CommandStore, storage: string, shared: boolean, repair: boolean, progressOut: CommandOutput & { isTTY?: boolean }): Promise<FsckReport> {
  const feed = store.cluster?.feed;
  const progress = createProgress({ label: 'fsck', output: progressOut });
  try {
    return await fsck(
      {
        name: shared ? store.description : storage,
        storage: shared ? undefined : storage,
        meta: store.meta,
        blobs: fsckBlobs(storage, store.blobs),
        withBlobLock: (digest, fn) => store.blobLocks.run(digest, fn),
        unlessFilling: store.cluster ? leaseGuard(store.cluster) : (_digest, fn) => fn(),
        // With replicas running, a fresh session-less upload may be one of their fills.
        live: shared,
        // Replicas keep manifests in memory: a repair that removed one is announced to them.
        manifestRemoved: feed ? (repo) => void feed.publish('repo', repo).catch(() => undefined) : undefined,
      },
      { repair, progress },
    );
  } finally {
    progress.stop();
  }
}

/** The upstream fill lease is held this long at most by a check of one blob. */
const CHECK_LEASE_TTL_MS = 60_000;

/**
 * A replica filling a blob from its upstream holds the blob's fill lease from before its object is
 * written until its row is: holding the lease keeps such a fill from starting, and failing to take
 * it means one is under way.
 */
function leaseGuard(cluster: Cluster): FsckStore['unlessFilling'] {
  return async (digest, fn) => {
    const lease = await cluster.leases.tryAcquire(digest, CHECK_LEASE_TTL_MS);
    if (!lease) return undefined;
    try {
      return await fn();
    } finally {
      await lease.release().catch(() => undefined);
    }
  };
}

const LABELS: Record<Problem['kind'], string> = {
  'corrupt-blob': 'corrupt blob',
  'missing-file': 'missing file',
  'size-mismatch': 'size mismatch',
  'orphan-file': 'orphan file',
  'corrupt-manifest': 'corrupt manifest',
  'dangling-reference': 'dangling reference',
  'dangling-row': 'dangling row',
  'dangling-upload': 'dangling upload',
  'stale-temporary': 'stale temporary',
};

/** The report as people read it: one line per problem (and what was done), then a summary. */
export function formatFsckReport(report: FsckReport): string {
  const lines: string[] = [];
  const c = report.checked;
  lines.push(
    `fsck ${report.storage}: checked ${c.blobs + countBlobProblems(report)} blobs (${formatBytes(c.bytes)} hashed), ${c.files} files, ` +
      `${c.manifests} manifests, ${c.references} references in ${formatSeconds(report.seconds)}`,
  );
  for (const p of report.problems) {
    lines.push(`${LABELS[p.kind].padEnd(18)} ${p.subject}: ${p.detail}`);
    if (p.repaired) lines.push(`${''.padEnd(18)}   repaired: ${p.repaired}`);
    if (p.unrepaired) lines.push(`${''.padEnd(18)}   not repaired: ${p.unrepaired}`);
  }
  for (const u of report.unfinishedUploads) {
    lines.push(`${'unfinished upload'.padEnd(18)} uploads/${u.id}: ${formatBytes(u.bytes)} for ${u.repo}, last written ${new Date(u.updatedAt).toISOString()}`);
  }
  const remaining = problemsRemaining(report);
  const repaired = report.problems.length - remaining;
  const totals = `storage totals: ${report.totals.blobs} blobs, ${formatBytes(report.totals.bytes)}`;
  if (report.problems.length === 0) lines.push(`clean: no problems found; ${totals}`);
  else if (report.repair) lines.push(`${report.problems.length} problem(s) found, ${repaired} repaired, ${remaining} remaining; ${totals}`);
  else lines.push(`${report.problems.length} problem(s) found; run airlock fsck --repair to fix what is safe; ${totals}`);
  return `${lines.join('\n')}\n`;
}

function countBlobProblems(report: FsckReport): number {
  return report.problems.filter((p) => p.kind === 'corrupt-blob' || p.kind === 'missing-file').length;
}
