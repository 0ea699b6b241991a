import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Cluster } from '../cluster/index.js';
import { loadConfig } from '../config/load.js';
import { sharedBackends, type CommandStore } from '../server/command-store.js';
import { fsck, problemsRemaining, type FsckReport, type FsckStore, type Problem } from '../lifecycle/fsck.js';
import { bucketBlobs, fileBlobs } from '../lifecycle/fsck-blobs.js';
import { FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore } from '../storage/metadata.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes, formatSeconds } from './progress.js';
import { claimStore } from './store-claim.js';
import { claimStorage, delegateToServer, missingStore, STORE_OPTIONS } from './storage-target.js';

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
  if (sharedBackends(config)) return fsckShared(config, repair, values.json ?? false, values.authfile, io);
  const noStore = missingStore(config.storage);
  if (noStore) {
    io.stderr.write(`airlock fsck: ${noStore}\n`);
    return EXIT_FAILURE;
  }
  const target = claimStorage(config.storage, 'fsck');

  let report: FsckReport;
  if (target.kind === 'server') {
    const answer = await delegateToServer<FsckReport>(
      'fsck',
      target,
      { path: '/api/v1/fsck', body: { repair }, what: 'run the check', authFile: values.authfile },
      io.stderr,
    );
    if (!answer) return EXIT_FAILURE;
    report = answer;
  } else {
    try {
      report = await fsckLocal(config.storage, repair, io.stderr);
    } finally {
      target.lock.release();
    }
  }
  io.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatFsckReport(report));
  return problemsRemaining(report) > 0 ? EXIT_FAILURE : EXIT_OK;
}

/**
 * The check of a store on shared backends: opened like one more replica (PostgreSQL), or under the
 * storage lock (a local SQLite database with a bucket), or asked of the server that holds it.
 */
async function fsckShared(config: ReturnType<typeof loadConfig>, repair: boolean, json: boolean, authFile: string | undefined, io: FsckCommandIo): Promise<number> {
  let report: FsckReport;
  const claim = await claimStore(config, 'fsck', 'delegate');
  if (claim.kind === 'server') {
    const answer = await delegateToServer<FsckReport>('fsck', claim, { path: '/api/v1/fsck', body: { repair }, what: 'run the check', authFile }, io.stderr);
    if (!answer) return EXIT_FAILURE;
    report = answer;
  } else {
    const progress = createProgress({ label: 'fsck', output: io.stderr });
    try {
      report = await fsck(sharedFsckStore(claim.store, config.storage, !claim.shared), { repair, progress });
    } catch (e) {
      io.stderr.write(`airlock fsck: ${(e as Error).message}\n`);
      return EXIT_FAILURE;
    } finally {
      progress.stop();
      await claim.release();
    }
  }
  io.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : formatFsckReport(report));
  return problemsRemaining(report) > 0 ? EXIT_FAILURE : EXIT_OK;
}

/** The upstream fill lease is held this long at most by a check of one blob. */
const CHECK_LEASE_TTL_MS = 60_000;

/**
 * What fsck needs, from a command's store on the storage directory `storage` (where blob files
 * are, without a bucket); `locked` when this process holds that directory's lock.
 */
function sharedFsckStore(store: CommandStore, storage: string, locked: boolean): FsckStore {
  const feed = store.cluster?.feed;
  return {
    name: store.description,
    storage: locked ? storage : undefined,
    meta: store.meta,
    blobs: store.blobs instanceof FsBlobStore ? fileBlobs(storage, store.blobs) : bucketBlobs(store.blobs),
    withBlobLock: (digest, fn) => store.blobLocks.run(digest, fn),
    unlessFilling: store.cluster ? leaseGuard(store.cluster) : (_digest, fn) => fn(),
    // With replicas running, a fresh session-less upload may be one of their fills.
    live: store.cluster !== null,
    // Replicas keep manifests in memory: a repair that removed one is announced to them.
    manifestRemoved: feed ? (repo) => void feed.publish('repo', repo).catch(() => undefined) : undefined,
  };
}

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

/** Runs the check on a storage directory this process holds the lock of. */
export async function fsckLocal(storage: string, repair: boolean, progressOut: CommandOutput & { isTTY?: boolean }): Promise<FsckReport> {
  const blobs = new FsBlobStore(storage);
  await blobs.init();
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  const progress = createProgress({ label: 'fsck', output: progressOut });
  try {
    return await fsck(
      { name: storage, storage, meta, blobs: fileBlobs(storage, blobs), withBlobLock: (_digest, fn) => fn(), unlessFilling: (_digest, fn) => fn(), live: false },
      { repair, progress },
    );
  } finally {
    progress.stop();
    await meta.close();
  }
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
