// The shared backends of a scale-out airlock, started for one bench run and removed after it:
// a throwaway PostgreSQL cluster and a throwaway single-node Ceph cluster with its S3 gateway
// (radosgw). The same recipes as test/helpers/postgres.ts and test/helpers/ceph.ts, in plain
// JavaScript so that the bench runs from dist/ and node alone (the test helpers are TypeScript
// and are not compiled into dist/). Every daemon is a child of the bench and is killed by pid,
// also when the bench dies (process 'exit').
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { freePort } from './servers.mjs';

// The SDK's notice that later releases need Node 22 is noise on the supported Node 20 (as in src/).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function track(child) {
  running.add(child);
  child.stderrTail = '';
  child.stderr?.on('data', (c) => {
    child.stderrTail = (child.stderrTail + c.toString('utf8')).slice(-4000);
  });
  child.exited = new Promise((ok) => child.once('exit', () => (running.delete(child), ok())));
  return child;
}

async function killHard(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  await child.exited;
}

const idOf = (flag, user) => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim());

/** The directory holding initdb and postgres: AIRLOCK_PG_BIN, PATH, then Debian's versioned dir. */
function postgresBinDir() {
  if (process.env.AIRLOCK_PG_BIN) return process.env.AIRLOCK_PG_BIN;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir;
  }
  const root = '/usr/lib/postgresql';
  for (const v of existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : []) {
    if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  }
  throw new Error("PostgreSQL binaries not found: install Debian's postgresql package (or set AIRLOCK_PG_BIN)");
}

/**
 * PostgreSQL on a free 127.0.0.1 port, user/password airlock/airlock, database `airlock`.
 * initdb refuses root, so as root the cluster belongs to `postgres` (its directory under /tmp,
 * which that user can reach). Durability is off (fsync, synchronous_commit): the bench compares
 * request paths, not disks, and the distribution side has no database at all.
 * Returns { url, pid, stop() }.
 */
export async function startPostgres() {
  const bin = postgresBinDir();
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? { uid: idOf('-u', 'postgres'), gid: idOf('-g', 'postgres') } : {};
  const parent = mkdtempSync(join(tmpdir(), 'airlock-bench-pg-'));
  chmodSync(parent, 0o755);
  const pwfile = join(parent, 'pw');
  writeFileSync(pwfile, 'airlock\n');
  if (asRoot) for (const p of [parent, pwfile]) chownSync(p, owner.uid, owner.gid);
  const data = join(parent, 'data');
  execFileSync(join(bin, 'initdb'), ['-D', data, '-U', 'airlock', '--pwfile', pwfile, '-A', 'scram-sha-256', '--no-sync', '-E', 'UTF8', '--locale', 'C'], { stdio: 'pipe', cwd: parent, ...owner });

  const port = await freePort();
  const args = [
    '-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', parent,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
    '-c', 'max_connections=200', '-c', 'shared_buffers=64MB', '-c', 'log_min_messages=fatal',
  ];
  // Started directly, not through pg_ctl, so that the child's pid is postgres itself.
  const child = track(spawn(join(bin, 'postgres'), args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: parent, ...owner }));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGQUIT'); // postgres' immediate shutdown
      if ((await Promise.race([child.exited.then(() => 'done'), sleep(5000)])) !== 'done') await killHard(child);
    }
    rmSync(parent, { recursive: true, force: true });
  };

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
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`PostgreSQL did not start: ${e.message}\n${child.stderrTail}`);
      }
      await sleep(50);
    }
  }
  // Each connection is a forked backend: its CPU is the database's too.
  return { url: `${base}/airlock`, pid: child.pid, pids: () => [child.pid, ...childrenOf(child.pid)], stop };
}

/** Pids whose parent is `pid` (from /proc). */
export function childrenOf(pid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Runs a one-shot tool; fails early when a daemon it needs died meanwhile. */
function run(bin, args, cwd, daemons = []) {
  return new Promise((resolve, reject) => {
    const tool = execFile(bin, args, { cwd, timeout: 60_000, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      clearInterval(watch);
      if (err) reject(new Error(`${bin} ${args.join(' ')} failed: ${err.message.slice(0, 300)}\n${stderr.slice(-2000)}`));
      else resolve(stdout);
    });
    const watch = setInterval(() => {
      const dead = daemons.find((d) => d.exitCode !== null || d.signalCode !== null);
      if (!dead) return;
      clearInterval(watch);
      tool.kill('SIGKILL');
      reject(new Error(`${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode}): ${dead.stderrTail}`));
    }, 100);
  });
}

function cephConf(dir, fsid, monPort, rgwPort, memstoreBytes) {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0

[mon]
mon data = ${dir}/mon/$cluster-$id
# start in 1-2 s instead of 6-12 s
paxos propose interval = 0.01
paxos min wait = 0.01

[osd]
osd data = ${dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = ${memstoreBytes}

[client.rgw]
rgw data = ${dir}/rgw
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
objecter tick interval = 0.5
# memstore frees a deleted object only when RGW's garbage collection removes it
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw gc processor max time = 5
rgw enable usage log = false
`;
}

/**
 * A single-node Ceph (one ceph-mon, one ceph-osd on memstore, no ceph-mgr) and radosgw on a free
 * 127.0.0.1 port, with one S3 user. memstore keeps objects in RAM, up to `memstoreBytes`.
 * Returns { endpoint, region, accessKeyId, secretAccessKey, createBucket(name), pids(), stop() }.
 */
export async function startCeph({ memstoreBytes = 6 * 2 ** 30 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-ceph-'));
  for (const sub of ['mon', 'osd', 'run', 'log', 'rgw']) mkdirSync(join(dir, sub));
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  const conf = join(dir, 'ceph.conf');
  const children = [];
  const daemon = (bin, args) => {
    const child = track(spawn(bin, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }));
    children.push(child);
    return child;
  };
  // A SIGTERM'd ceph-osd lingers once its monitor is gone: SIGKILL them all.
  const stop = async () => {
    await Promise.all(children.map(killHard));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    writeFileSync(conf, cephConf(dir, fsid, monPort, rgwPort, memstoreBytes));
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')], dir);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')], dir);
    daemon('ceph-mon', ['-c', conf, '-f', '-i', 'a']);
    const osdUuid = randomUUID();
    const osdId = (await run('ceph', ['-c', conf, '--connect-timeout', '20', 'osd', 'new', osdUuid], dir, children)).trim();
    mkdirSync(join(dir, 'osd', `ceph-${osdId}`));
    await run('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid], dir, children);
    daemon('ceph-osd', ['-c', conf, '-f', '-i', osdId]);
    daemon('radosgw', ['-c', conf, '-f', '-n', 'client.rgw']);

    const accessKeyId = `BENCH${randomBytes(6).toString('hex').toUpperCase()}`;
    const secretAccessKey = randomBytes(20).toString('hex');
    // radosgw-admin waits for the pools RGW creates, so the user exists once the OSD takes writes.
    await run('radosgw-admin', ['-c', conf, '-n', 'client.rgw', 'user', 'create', '--uid', 'bench', '--display-name', 'bench', '--access-key', accessKeyId, '--secret-key', secretAccessKey], dir, children);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await (await fetch(endpoint)).arrayBuffer();
        break;
      } catch {
        const dead = children.find((d) => d.exitCode !== null || d.signalCode !== null);
        if (dead) throw new Error(`${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode})`);
        if (Date.now() > deadline) throw new Error(`radosgw did not answer on ${endpoint} within 60 s`);
        await sleep(50);
      }
    }
    const region = 'us-east-1';
    const createBucket = async (name) => {
      const s3 = new S3Client({ endpoint, region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } });
      try {
        await s3.send(new CreateBucketCommand({ Bucket: name }));
      } finally {
        s3.destroy();
      }
      return name;
    };
    return { endpoint, region, accessKeyId, secretAccessKey, createBucket, pids: () => children.map((c) => c.pid), logTail: () => logs(dir), stop };
  } catch (e) {
    const tail = logs(dir);
    await stop();
    throw new Error(`${e.message}\n--- ceph logs ---\n${tail}`);
  }
}

function logs(dir) {
  try {
    return readdirSync(join(dir, 'log'))
      .map((f) => `== ${f}\n${readFileSync(join(dir, 'log', f), 'utf8').slice(-3000)}`)
      .join('\n');
  } catch {
    return '(no logs)';
  }
}
