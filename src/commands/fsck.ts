import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { singleNodeOnly } from '../server/command-store.js';
import { fsck, problemsRemaining, type FsckReport, type Problem } from '../lifecycle/fsck.js';
import { FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore } from '../storage/metadata.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes, formatSeconds } from './progress.js';
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
report. A single-node store only: with database: or blobs.s3 in the config it refuses (exit 2);
check the shared PostgreSQL and bucket with their own tools. Exit codes: 0 nothing wrong (or
everything found was repaired), 1 something is wrong, 2 bad usage or shared backends.

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
  const shared = singleNodeOnly(config, 'fsck');
  if (shared) {
    io.stderr.write(`airlock fsck: ${shared}\n`);
    return EXIT_USAGE;
  }
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

/** Runs the check on a storage directory this process holds the lock of. */
export async function fsckLocal(storage: string, repair: boolean, progressOut: CommandOutput & { isTTY?: boolean }): Promise<FsckReport> {
  const blobs = new FsBlobStore(storage);
  await blobs.init();
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  const progress = createProgress({ label: 'fsck', output: progressOut });
  try {
    return await fsck(
      { storage, meta, blobs, withBlobLock: (_digest, fn) => fn(), isFilling: () => false, live: false },
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
