import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { redactUrl } from '../config/redact-url.js';
import { loadConfig } from '../config/load.js';
import { bucketNameProblem, type S3BlobsConfig } from '../config/schema.js';
import { migrateStore, MigrateRefusedError, type MigrateReport } from '../lifecycle/migrate.js';
import { S3BlobStore } from '../storage/s3-blobstore.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes, formatSeconds } from './progress.js';
import { claimStorage, missingStore, STORE_OPTIONS } from './storage-target.js';

export const MIGRATE_HELP = `Usage: airlock migrate --database URL [--s3 URL] [--config FILE | --storage DIR] [--json]

Moves a single-node store into the shared backends that several replicas use: its metadata from
<storage>/airlock.db into PostgreSQL, and its blobs into an S3-compatible bucket when --s3 is given
(without it they stay under <storage>, for replicas that mount that directory). Every blob is
re-hashed on its way (or in place), every manifest's bytes too; what fails is named and left
behind. The source is only read. Stop the server first: the store must be quiet while it is read.

Resumable: after an interruption, run the same command again; what already arrived is skipped.
The database must be empty, or hold what an earlier run of this same migration wrote.
Upload sessions in progress are not moved (clients start those again).

  --database URL   postgres://USER:PASSWORD@HOST:5432/DATABASE (default: database.url of --config)
  --s3 URL         the bucket as http(s)://HOST[:PORT]/BUCKET[/PREFIX], path-style, e.g.
                   https://s3.example:443/airlock (default: blobs.s3 of --config). Credentials
                   from blobs.s3 of --config, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
  --s3-region R    default us-east-1 (or AWS_REGION)
  --s3-ca-file F   PEM bundle for an https endpoint with a private CA
  --json           print the report as JSON

Then point every replica's config at the same database.url (and blobs.s3) and start them.
Exit codes: 0 everything moved, 1 something could not be moved or the target refused, 2 bad usage.

Example:
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… airlock migrate --storage /var/lib/airlock \\
    --database postgres://airlock:secret@db:5432/airlock --s3 https://s3.example:443/airlock
`;

export async function migrateCommand(args: string[], io: { stdout: CommandOutput; stderr: CommandOutput & { isTTY?: boolean } }): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...STORE_OPTIONS,
      database: { type: 'string' },
      s3: { type: 'string' },
      's3-region': { type: 'string' },
      's3-ca-file': { type: 'string' },
      json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    io.stdout.write(MIGRATE_HELP);
    return EXIT_OK;
  }
  if (positionals.length > 0) {
    io.stderr.write(`airlock migrate: unexpected argument ${positionals[0]}\n\n${MIGRATE_HELP}`);
    return EXIT_USAGE;
  }
  const config = loadConfig({ config: values.config, storage: values.storage });
  const databaseUrl = values.database ?? config.database?.url;
  if (!databaseUrl) {
    io.stderr.write(`airlock migrate: give --database postgres://USER:PASSWORD@HOST:5432/DATABASE (or database.url in --config)\n\n${MIGRATE_HELP}`);
    return EXIT_USAGE;
  }
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    io.stderr.write(`airlock migrate: --database must be a postgres:// URL, e.g. postgres://airlock:secret@db:5432/airlock\n`);
    return EXIT_USAGE;
  }
  let s3: S3BlobsConfig | undefined = config.blobs?.s3;
  if (values.s3 !== undefined) {
    const parsed = parseS3Url(values.s3);
    if (typeof parsed === 'string') {
      io.stderr.write(`airlock migrate: --s3 ${parsed}\n`);
      return EXIT_USAGE;
    }
    s3 = {
      ...parsed,
      region: values['s3-region'] ?? process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: true,
      caFile: values['s3-ca-file'],
      redirect: false,
      accessKeyId: config.blobs?.s3.accessKeyId,
      secretAccessKey: config.blobs?.s3.secretAccessKey,
    };
  }
  const noStore = missingStore(config.storage);
  if (noStore) {
    io.stderr.write(`airlock migrate: ${noStore}\n`);
    return EXIT_FAILURE;
  }
  const target = claimStorage(config.storage, 'migrate');
  if (target.kind === 'server') {
    io.stderr.write(`airlock migrate: a server (${target.url}) is serving ${config.storage}; stop it first, so that the store is quiet while it is read\n`);
    return EXIT_FAILURE;
  }
  const progress = createProgress({ label: 'migrate', output: io.stderr });
  const started = Date.now();
  const blobs = s3 ? new S3BlobStore({ ...s3, spoolDir: config.storage }) : undefined;
  let report: MigrateReport;
  try {
    if (blobs) await blobs.ping();
    report = await migrateStore({ storage: config.storage, databaseUrl, s3: blobs, progress });
  } catch (e) {
    progress.stop();
    const message = e instanceof MigrateRefusedError ? e.message : `${(e as Error).message} (target ${redactUrl(databaseUrl)})`;
    io.stderr.write(`airlock migrate: ${message}\n`);
    return EXIT_FAILURE;
  } finally {
    progress.stop();
    blobs?.close();
    target.lock.release();
  }
  io.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatMigrateReport(report, (Date.now() - started) / 1000, redactUrl(databaseUrl), s3));
  return report.problems.length > 0 ? EXIT_FAILURE : EXIT_OK;
}

/** http(s)://HOST[:PORT]/BUCKET[/PREFIX] → endpoint, bucket, prefix; or what is wrong with it. */
export function parseS3Url(text: string): { endpoint: string; bucket: string; prefix: string } | string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `must be a URL like https://s3.example:443/BUCKET[/PREFIX] (got ${text})`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `must start with http:// or https:// (got ${url.protocol}//)`;
  const [bucket = '', ...rest] = url.pathname.replace(/^\/+|\/+$/g, '').split('/');
  if (!bucket) return `names no bucket: give https://${url.host}/BUCKET[/PREFIX]`;
  const problem = bucketNameProblem(bucket);
  if (problem) return `bucket name "${bucket}" ${problem}`;
  return { endpoint: `${url.protocol}//${url.host}`, bucket, prefix: rest.join('/') };
}

export function formatMigrateReport(report: MigrateReport, seconds: number, database: string, s3: S3BlobsConfig | undefined): string {
  const lines: string[] = [];
  for (const p of report.problems) lines.push(`not moved: ${p.digest}: ${p.problem}`);
  const b = report.blobs;
  const where = s3 ? `into ${s3.endpoint}/${s3.bucket}${s3.prefix ? `/${s3.prefix}` : ''}` : `verified in place under ${join(report.source, 'blobs')}`;
  lines.push(
    s3
      ? `blobs: ${b.copied} copied (${formatBytes(b.bytes)}), ${b.alreadyThere} already there, of ${b.total}, ${where}`
      : `blobs: ${b.verifiedInPlace} of ${b.total} ${where}`,
  );
  const rows = Object.entries(report.rows)
    .filter(([, n]) => n > 0)
    .map(([table, n]) => `${table} ${n}`);
  lines.push(`rows written to ${database}: ${rows.length ? rows.join(', ') : 'none (all there already)'}`);
  lines.push(
    report.problems.length === 0
      ? `migrated ${report.source} in ${formatSeconds(seconds)}; point every replica's database.url${s3 ? ' and blobs.s3' : ''} at it`
      : `${report.problems.length} item(s) not moved; repair the source (airlock fsck --repair) and run the same command again`,
  );
  return `${lines.join('\n')}\n`;
}
