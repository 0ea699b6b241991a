import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { sharedBackends } from '../server/command-store.js';
import { backupStore, BackupTargetError, BUCKET_BACKUP_ADVICE, type BackupReport } from '../lifecycle/backup.js';
import { FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore } from '../storage/metadata.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes, formatSeconds } from './progress.js';
import { claimStorage, delegateToServer, missingStore, STORE_OPTIONS } from './storage-target.js';

export const BACKUP_HELP = `Usage: airlock backup DIR [--json] [--config FILE | --storage DIR] [--authfile FILE]

Writes a consistent copy of the store into DIR (new or empty) while the registry keeps serving:
the metadata through SQLite's online backup API, then every blob it records, hard-linked when DIR
is on the same filesystem as the storage (blob files never change once written), copied otherwise.
Restoring is serving from it: airlock serve --storage DIR. Upload sessions in progress are not
copied. A hard-linked backup shares the disk with the store: back up to another filesystem to
survive the loss of that disk.

  --json       print the report as JSON
  --authfile   credentials for the server holding the storage (pull-secret / docker config.json
               form), when its config has auth: (the user needs delete on **)

When a server holds the storage, it makes the copy itself (POST /api/v1/backup) and this prints
its report. A single-node store only: with database: or blobs.s3 in the config it refuses (exit 2);
back PostgreSQL up with pg_dump and the bucket with the object store's own tools.
Exit codes: 0 done, 1 failed, 2 bad usage or shared backends.

Example:
  airlock backup /srv/backups/airlock-$(date +%F) --config /etc/airlock/airlock.yaml
`;

export async function backupCommand(args: string[], io: { stdout: CommandOutput; stderr: CommandOutput & { isTTY?: boolean } }): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...STORE_OPTIONS,
      json: { type: 'boolean' },
      authfile: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    io.stdout.write(BACKUP_HELP);
    return EXIT_OK;
  }
  if (positionals.length !== 1) {
    io.stderr.write(`airlock backup: give exactly one target directory\n\n${BACKUP_HELP}`);
    return EXIT_USAGE;
  }
  const dir = resolve(positionals[0]!);
  const config = loadConfig({ config: values.config, storage: values.storage });
  if (resolve(config.storage) === dir) {
    io.stderr.write('airlock backup: the backup directory is the storage directory itself\n');
    return EXIT_USAGE;
  }
  const shared = sharedRefusal(config);
  if (shared) {
    io.stderr.write(`airlock backup: ${shared}\n`);
    return EXIT_USAGE;
  }
  const noStore = missingStore(config.storage);
  if (noStore) {
    io.stderr.write(`airlock backup: ${noStore}\n`);
    return EXIT_FAILURE;
  }
  const target = claimStorage(config.storage, 'backup');
  let report: BackupReport;
  if (target.kind === 'server') {
    const answer = await delegateToServer<BackupReport>(
      'backup',
      target,
      { path: '/api/v1/backup', body: { dir }, what: 'make the copy', authFile: values.authfile },
      io.stderr,
    );
    if (!answer) return EXIT_FAILURE;
    report = answer;
  } else {
    const blobs = new FsBlobStore(config.storage);
    const meta = new SqliteMetadataStore(join(config.storage, 'airlock.db'));
    const progress = createProgress({ label: 'backup', output: io.stderr });
    try {
      await blobs.init();
      report = await backupStore({ storage: config.storage, meta, blobs, withBlobLock: (_d, fn) => fn() }, dir, progress);
    } catch (e) {
      if (e instanceof BackupTargetError) {
        io.stderr.write(`airlock backup: ${e.message}\n`);
        return EXIT_FAILURE;
      }
      throw e;
    } finally {
      progress.stop();
      await meta.close();
      target.lock.release();
    }
  }
  io.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatBackupReport(report));
  return EXIT_OK;
}

export function formatBackupReport(r: BackupReport): string {
  const lines = [
    `backup ${r.dir}: ${r.blobs} blobs (${formatBytes(r.bytes)}; ${r.linked} hard-linked, ${r.copied} copied), ${r.manifests} manifests in ${formatSeconds(r.seconds)}`,
  ];
  if (r.forgotten.length) lines.push(`${r.forgotten.length} cached blob(s) left the store while copying and are not in the backup (fetched again when asked for)`);
  lines.push(`serve it with: airlock serve --storage ${r.dir}`);
  return `${lines.join('\n')}\n`;
}

/**
 * Why backup refuses a config with shared backends (it copies one node's SQLite database and blob
 * files), and what to do instead; undefined for a single-node store.
 */
function sharedRefusal(config: Config): string | undefined {
  if (!sharedBackends(config)) return undefined;
  const shared = [config.database ? 'database: (PostgreSQL)' : '', config.blobs?.s3 ? 'blobs.s3 (an S3 bucket)' : ''].filter(Boolean).join(' and ');
  return (
    `the config names shared backends (${shared}); backup works on a single-node store (<storage>/airlock.db and blob files) only. ` +
    `Instead, back PostgreSQL up with pg_dump (or its continuous archiving) and ${BUCKET_BACKUP_ADVICE}. To back up a single-node store, give --storage DIR (or a --config) without database: and blobs.s3.`
  );
}
