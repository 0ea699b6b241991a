#!/bin/sh
//bin/true; export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432}"; exec node "$0" "$@"
// Command-line entry: parses arguments and hands over to a command. Nothing else lives here.
//
// The first two lines are read by sh (as the `airlock` executable; `//bin/true` is a command there,
// a comment here) and start node with glibc's malloc tuned for streaming, unless GLIBC_TUNABLES is
// already set (the operator's choice stands). glibc reads it only when the process starts, so it
// cannot be set from here. The tuning: up to 256 MiB freed at the top of the heap, which holds
// every 64 KiB socket read, stays there for the next transfer instead of going back to the kernel
// (trim_threshold; glibc's default gives back anything over 128 KiB), and the heap is backed by
// transparent huge pages (hugetlb=1). A streamed blob's buffers are freed in bulk by V8's full
// collections, so the heap swings by ~100 MiB per 256 MiB layer: measured on a VM, giving it back
// and faulting it in again was ~30k page faults (0.15–0.4 s) in a fresh process's first cold pull,
// and 3–10k in every later one; tuned, ~6k and under 1k. Setting trim_threshold also stops glibc
// from raising its mmap threshold as it goes (128 KiB to 32 MiB), which left every 1 MiB read
// buffer (export, import, verification) mapped and faulted in anew: 4–7× slower reads. So the
// threshold is set at that 32 MiB too (mmap_threshold). Another C library ignores the variable.
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.js';
import { StorageLockedError } from './lifecycle/storage-lock.js';
import { paceHeapForStreaming } from './heap-pace.js';
// Each command's module is loaded only when that command runs: `serve` need not carry the X.509
// library `cert` uses (about 20 MiB of memory), nor the server the other commands.

const USAGE = `airlock — container mirror registry for disconnected and firewalled clusters

Usage:
  airlock serve [--config FILE] [--listen HOST:PORT] [--storage DIR] [--log-level LEVEL]
  airlock user add NAME [--htpasswd FILE | --config FILE] [--password-stdin]
  airlock cert --host NAME [--host NAME…] [--ip ADDR…] --out DIR [--days N] [--port PORT]
  airlock import SOURCE [--prefix P] [--map LOCAL=ORIGIN]... [--to URL] [--dry-run]
  airlock export REF_OR_GLOB... --to DIR|FILE.tar [--since PREVIOUS_EXPORT] [--filter-by-os OS/ARCH]
  airlock sync SOURCE_REF... | --mapping FILE [--to-dir DIR] [--dest-prefix P] [--filter-by-os OS/ARCH]
               [--skip-missing] [--dry-run] [--concurrency N] [--authfile F] [--insecure]
  airlock mirrorsets --host HOST[:PORT] [--format idms|itms|icsp|registries.conf] [--out FILE]
  airlock verify REF [--mirrorsets FILE] [--json]
  airlock gc [--dry-run] [--untagged-older-than DURATION] [--config FILE] [--storage DIR] [--authfile FILE]
  airlock fsck [--repair] [--json] [--config FILE | --storage DIR] [--authfile FILE]
  airlock backup DIR [--config FILE | --storage DIR] [--authfile FILE]
  airlock migrate --database URL [--s3 URL] [--config FILE | --storage DIR] [--json]
  airlock --help | --version

serve      Run the registry. Config comes from FILE (default config/airlock.yaml, or $AIRLOCK_CONFIG;
           built-in defaults when absent), then AIRLOCK_LISTEN, AIRLOCK_STORAGE, AIRLOCK_LOG_LEVEL,
           then the flags. Defaults: listen 0.0.0.0:5000, storage ./storage, log level info.
user add   Add or update a user (bcrypt) in the htpasswd file: --htpasswd FILE, else the config's
           auth.htpasswd. Prompts for the password twice, or reads one line from stdin with
           --password-stdin.
cert       Write ca.crt/ca.key and server.crt/server.key (with Subject Alternative Names for every
           --host and --ip) into DIR, and print how to make clients and clusters trust the CA.
           An existing ca.crt/ca.key in DIR is reused.
import     Import an OCI layout (dir, .tar, .tar.gz) or oc's v2/ tree into the store (or --to a server).
export     Write images (repo:tag, repo@sha256:…, globs like ocp4/**) as an OCI layout for the air gap.
sync       Copy images from remote registries into the store, or --to-dir an OCI layout.
mirrorsets Print ImageDigestMirrorSet / ImageTagMirrorSet / ImageContentSourcePolicy documents or a
           CRI-O registries.conf that send a cluster's pulls of the mirrored origins here.
verify     Check that a release or file-based catalog image and everything it names can be pulled from
           this mirror through the mirror sets; exit 1 naming what is missing.
           (each: --help for a worked example)
fsck       Check the store (every blob re-hashed, rows against files, manifests' references);
           --repair fixes what is safe. Exit 1 when something is wrong. \`airlock fsck --help\`.
backup     Write a consistent copy of the store into DIR while it runs (blobs hard-linked when on
           the same filesystem); \`airlock serve --storage DIR\` runs from it. \`airlock backup --help\`.
migrate    Move a single-node store into PostgreSQL (and an S3 bucket with --s3) for replicas;
           resumable, every digest verified, the source only read. \`airlock migrate --help\`.
gc         Remove blobs and manifests nothing needs (tagless pushes are kept); inside the server when
           one holds the storage. See airlock gc --help.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
`;

type Command = (args: string[]) => Promise<number>;

async function serve(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string', short: 'l' },
      storage: { type: 'string', short: 's' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const config = loadConfig({ config: values.config, listen: values.listen, storage: values.storage, logLevel: values['log-level'] });
  const { startServer } = await import('./server/start.js');
  const server = await startServer(config, { parsed: true });
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      server.log.info({ signal }, 'shutting down: finishing in-flight requests');
      server.close().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

async function user(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      htpasswd: { type: 'string' },
      config: { type: 'string', short: 'c' },
      'password-stdin': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [sub, name, ...extra] = positionals;
  if (sub !== 'add' || name === undefined || extra.length > 0) {
    process.stderr.write(`airlock: usage: airlock user add NAME [--htpasswd FILE | --config FILE] [--password-stdin]\n`);
    return 2;
  }
  const file = values.htpasswd ?? loadConfig({ config: values.config }).auth?.htpasswd;
  if (file === undefined) {
    process.stderr.write('airlock: no htpasswd file: pass --htpasswd FILE, or a --config whose auth.htpasswd names one\n');
    return 2;
  }
  const { runUserAdd } = await import('./commands/user.js');
  return runUserAdd({
    file,
    name,
    passwordStdin: values['password-stdin'] ?? false,
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
  });
}

async function cert(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: 'string', multiple: true },
      ip: { type: 'string', multiple: true },
      out: { type: 'string', short: 'o' },
      days: { type: 'string' },
      port: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const days = values.days === undefined ? undefined : Number(values.days);
  const port = values.port === undefined ? undefined : Number(values.port);
  if (!values.out || (!values.host?.length && !values.ip?.length) || (days !== undefined && !(days > 0)) || (port !== undefined && !(port > 0 && port < 65536))) {
    process.stderr.write('airlock: usage: airlock cert --host NAME [--ip ADDR] --out DIR [--days N (>0)] [--port PORT]\n');
    return 2;
  }
  const { runCert } = await import('./commands/cert.js');
  return runCert({ hosts: values.host ?? [], ips: values.ip ?? [], outDir: values.out, days, port, stdout: process.stdout, stderr: process.stderr });
}

async function mirrorsets(args: string[]): Promise<number> {
  const { mirrorsetsCommand } = await import('./commands/mirrorsets.js');
  return mirrorsetsCommand(args);
}

async function verify(args: string[]): Promise<number> {
  const { verifyCommand } = await import('./commands/verify.js');
  return verifyCommand(args);
}

async function importImages(args: string[]): Promise<number> {
  const { importCommand } = await import('./commands/import.js');
  return importCommand(args);
}

async function exportImages(args: string[]): Promise<number> {
  const { exportCommand } = await import('./commands/export.js');
  return exportCommand(args);
}

async function sync(args: string[]): Promise<number> {
  const { syncCommand } = await import('./commands/sync.js');
  return syncCommand(args);
}

async function fsckCmd(args: string[]): Promise<number> {
  const { fsckCommand } = await import('./commands/fsck.js');
  return fsckCommand(args, { stdout: process.stdout, stderr: process.stderr });
}

async function backupCmd(args: string[]): Promise<number> {
  const { backupCommand } = await import('./commands/backup.js');
  return backupCommand(args, { stdout: process.stdout, stderr: process.stderr });
}

async function migrate(args: string[]): Promise<number> {
  const { migrateCommand } = await import('./commands/migrate.js');
  return migrateCommand(args, { stdout: process.stdout, stderr: process.stderr });
}

async function gc(args: string[]): Promise<number> {
  const { runGcCommand } = await import('./commands/gc.js');
  return runGcCommand({ args, stdout: process.stdout, stderr: process.stderr });
}

const COMMANDS: Record<string, Command> = {
  serve,
  user,
  cert,
  import: importImages,
  export: exportImages,
  sync,
  mirrorsets,
  verify,
  gc,
  fsck: fsckCmd,
  backup: backupCmd,
  migrate,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    const { createRequire } = await import('node:module');
    process.stdout.write(`${(createRequire(import.meta.url)('../package.json') as { version: string }).version}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`airlock: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  // Every command may stream large blobs (serve, import, export, sync, migrate, fsck).
  paceHeapForStreaming();
  try {
    return await command(rest);
  } catch (e) {
    if (e instanceof StorageLockedError) {
      process.stderr.write(`airlock: ${e.message}\n`);
      return 1;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`airlock: ${e.message}\n`);
      return 2;
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      const reason = { EADDRINUSE: 'the address is already in use', EACCES: 'permission denied', EADDRNOTAVAIL: 'no such local address' }[code];
      process.stderr.write(`airlock: cannot listen on ${(e as { address?: string }).address ?? '?'}:${(e as { port?: number }).port ?? '?'}: ${reason}\n`);
      return 1;
    }
    if (code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`airlock: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    process.stderr.write(`airlock: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}

// Until the command answers, exiting means it never finished (its work stalled with nothing left
// to wait for): that must not look like success.
process.exitCode = 1;
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`airlock: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  },
);
