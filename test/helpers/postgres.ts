// Runs a real PostgreSQL (Debian's postgresql package) in a throwaway cluster: initdb into a temp
// directory, pg_ctl start on a free 127.0.0.1 port, stopped by pid and removed afterwards.
// initdb refuses to run as root, so as root the cluster belongs to the `postgres` user, and its
// directory sits under a parent that user can reach (a root-only mkdtemp is not).
// The server is started without pg_ctl, so the child's pid is postgres itself and stop() signals it.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './distribution.js';

export interface Postgres {
  /** postgres://airlock:airlock@127.0.0.1:PORT/airlock */
  url: string;
  port: number;
  /** A fresh, empty database on the same server; its URL. */
  createDatabase(name?: string): Promise<string>;
  /** SIGKILL (when `hard`) or a fast shutdown; removes the cluster directory unless keep. */
  stop(options?: { hard?: boolean }): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's versioned dir. */
export function postgresBinDir(): string {
  const fromEnv = process.env.AIRLOCK_PG_BIN;
  if (fromEnv) return fromEnv;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir;
  }
  const versions = existsSync('/usr/lib/postgresql') ? readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(join(dir, 'initdb'))) return dir;
  }
  throw new Error('PostgreSQL binaries not found: install Debian\'s postgresql package (or set AIRLOCK_PG_BIN)');
}

let counter = 0;

export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBinDir();
  const asRoot = process.getuid?.() === 0;
  // /tmp is world-traversable, so the postgres user reaches a directory made there.
  const parent = mkdtempSync(join(tmpdir(), 'airlock-pg-'));
  chmodSync(parent, 0o755);
  const data = join(parent, 'data');
  const port = await freePort();
  // As root, the processes run as postgres through spawn's uid/gid, so the child pid is postgres itself.
  const owner = asRoot ? { uid: uid('postgres'), gid: gid('postgres') } : {};
  if (asRoot) chownSync(parent, uid('postgres'), gid('postgres'));

  const pwfile = join(parent, 'pw');
  writeFileSync(pwfile, 'airlock\n');
  if (asRoot) chownSync(pwfile, uid('postgres'), gid('postgres'));
  execFileSync(join(bin, 'initdb'), ['-D', data, '-U', 'airlock', '--pwfile', pwfile, '-A', 'scram-sha-256', '--no-sync', '-E', 'UTF8', '--locale', 'C'], {
    stdio: 'pipe',
    cwd: parent,
    ...owner,
  });

  // Started directly (not through pg_ctl) so that the child's pid is postgres itself: stop() signals it.
  const serveArgs = [
    '-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', parent,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
    '-c', 'max_connections=200', '-c', 'shared_buffers=64MB', '-c', 'log_min_messages=fatal',
  ];
  const child = spawn(join(bin, 'postgres'), serveArgs, { stdio: ['ignore', 'ignore', 'pipe'], cwd: parent, ...owner });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const base = `postgres://airlock:airlock@127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const client = new pg.Client({ connectionString: `${base}/postgres` });
    try {
      await client.connect();
      await client.query('CREATE DATABASE airlock');
      await client.end();
      break;
    } catch (e) {
      await client.end().catch(() => {});
      if (child.exitCode !== null) throw new Error(`postgres exited: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 20s: ${(e as Error).message} ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  return {
    url: `${base}/airlock`,
    port,
    async createDatabase(name = `airlock_${process.pid}_${++counter}`) {
      const client = new pg.Client({ connectionString: `${base}/postgres` });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE "${name}"`);
      } finally {
        await client.end();
      }
      return `${base}/${name}`;
    },
    async stop(options = {}) {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGQUIT is postgres' immediate shutdown; SIGKILL when asked to simulate a crash.
        child.kill(options.hard ? 'SIGKILL' : 'SIGQUIT');
        const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
        if (!done) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      running.delete(child);
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

function uid(user: string): number {
  return Number(execFileSync('id', ['-u', user]).toString().trim());
}
function gid(user: string): number {
  return Number(execFileSync('id', ['-g', user]).toString().trim());
}
