// Runs a throwaway single-node Ceph cluster with an S3 gateway (Debian's ceph-mon, ceph-osd and
// radosgw): one monitor, one OSD keeping its objects in RAM (memstore, no block device), no manager,
// pools of size 1, and radosgw's beast frontend on a free 127.0.0.1 port. Everything lives under one
// temp directory with its own ceph.conf; cephx is off. The daemons are children of this process and
// are stopped with SIGKILL by pid (a SIGTERM'd ceph-osd lingers once its monitor is gone).
//
// Start-up speed comes from the monitor's shortened batching (paxos intervals of 10 ms) and radosgw
// asking for the cluster map twice a second; with Ceph's defaults a start takes 6–12 s.
// A failed start prints the daemons' logs; AIRLOCK_KEEP_CEPH=1 keeps its directory for a closer look.

// The SDK's notice that later releases need Node 22 is noise on the supported Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from './distribution.js';

export interface Ceph {
  /** e.g. http://127.0.0.1:40123 */
  endpoint: string;
  /** The same gateway over TLS, e.g. https://127.0.0.1:40124, with a certificate signed by caFile. */
  tlsEndpoint: string;
  /** PEM of the throwaway CA that signed the gateway's certificate (for 127.0.0.1). */
  caFile: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Creates a bucket (a fresh unique name unless given); resolves with its name. */
  createBucket(name?: string): Promise<string>;
  /** SIGKILLs the daemons and removes the directory. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
// A crashed test run must not leave Ceph daemons (and their RAM-held objects) behind it.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

const START_TIMEOUT_MS = 60_000;
/** memstore keeps every object in RAM: 2 GiB holds the largest test blobs with room for RGW's copies. */
const MEMSTORE_BYTES = 2 * 1024 * 1024 * 1024;

let buckets = 0;

export async function startCeph(): Promise<Ceph> {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-ceph-'));
  for (const sub of ['mon', 'osd', 'run', 'log', 'rgw']) mkdirSync(join(dir, sub));
  const [monPort, rgwPort, tlsPort] = [await freePort(), await freePort(), await freePort()];
  const fsid = randomUUID();
  const conf = join(dir, 'ceph.conf');
  const children: ChildProcess[] = [];

  const stop = async (): Promise<void> => {
    await Promise.all(children.map(killHard));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const tls = await makeCertificate(dir);
    writeFileSync(conf, cephConf(dir, fsid, monPort, rgwPort, tlsPort, tls));
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')], dir);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')], dir);
    children.push(daemon('ceph-mon', ['-c', conf, '-f', '-i', 'a'], dir));

    // Registering the OSD is the one monitor command the cluster needs before the OSD can start.
    const osdUuid = randomUUID();
    const osdId = (await run('ceph', ['-c', conf, '--connect-timeout', '20', 'osd', 'new', osdUuid], dir, children)).trim();
    mkdirSync(join(dir, 'osd', `ceph-${osdId}`)); // memstore's mkfs writes its fsid file there
    await run('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid], dir, children);
    children.push(daemon('ceph-osd', ['-c', conf, '-f', '-i', osdId], dir));
    children.push(daemon('radosgw', ['-c', conf, '-f', '-n', 'client.rgw'], dir));

    const accessKeyId = `AIRLOCK${randomBytes(6).toString('hex').toUpperCase()}`;
    const secretAccessKey = randomBytes(20).toString('hex');
    // radosgw-admin waits for the pools RGW creates, so the user exists once the OSD takes writes.
    await run(
      'radosgw-admin',
      ['-c', conf, '-n', 'client.rgw', 'user', 'create', '--uid', 'airlock', '--display-name', 'airlock',
        '--access-key', accessKeyId, '--secret-key', secretAccessKey],
      dir,
      children,
    );
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitForGateway(endpoint, children);

    const region = 'us-east-1';
    const createBucket = async (name = `airlock-${process.pid}-${++buckets}-${randomBytes(3).toString('hex')}`): Promise<string> => {
      const s3 = new S3Client({ endpoint, region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } });
      try {
        await s3.send(new CreateBucketCommand({ Bucket: name }));
      } finally {
        s3.destroy();
      }
      return name;
    };
    return { endpoint, tlsEndpoint: `https://127.0.0.1:${tlsPort}`, caFile: tls.ca, region, accessKeyId, secretAccessKey, createBucket, stop };
  } catch (e) {
    const logs = daemonLogs(dir);
    if (process.env.AIRLOCK_KEEP_CEPH) console.error(`kept ${dir}`);
    else await stop();
    throw new Error(`${(e as Error).message}\n--- ceph logs ---\n${logs}`);
  }
}

function cephConf(dir: string, fsid: string, monPort: number, rgwPort: number, tlsPort: number, tls: Certificate): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# msgr2's "secure" mode needs cephx keys; without cephx every connection must use crc mode
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
paxos propose interval = 0.01
paxos min wait = 0.01
mon allow pool delete = true

[osd]
osd data = ${dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES}

[client.rgw]
rgw data = ${dir}/rgw
rgw frontends = beast endpoint=127.0.0.1:${rgwPort} ssl_endpoint=127.0.0.1:${tlsPort} ssl_certificate=${tls.cert} ssl_private_key=${tls.key}
objecter tick interval = 0.5
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw gc processor max time = 5
rgw enable usage log = false
`;
}

function daemon(bin: string, args: string[], cwd: string): ChildProcess {
  const child = spawn(bin, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-4000);
  });
  Object.defineProperty(child, 'stderrTail', { get: () => stderr });
  child.once('exit', () => running.delete(child));
  return child;
}

/** Runs a one-shot tool; fails early if one of the daemons it depends on died meanwhile. */
function run(bin: string, args: string[], cwd: string, daemons: ChildProcess[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const tool = execFile(bin, args, { cwd, timeout: START_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      clearInterval(watch);
      if (err) reject(new Error(`${bin} ${args.join(' ')} failed: ${err.message.slice(0, 300)}\n${stderr.slice(-2000)}`));
      else resolve(stdout);
    });
    const watch = setInterval(() => {
      const dead = daemons.find((d) => d.exitCode !== null || d.signalCode !== null);
      if (dead) {
        tool.kill('SIGKILL');
        clearInterval(watch);
        reject(new Error(`${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode}): ${(dead as unknown as { stderrTail: string }).stderrTail}`));
      }
    }, 100);
  });
}

/** Any HTTP answer from the beast frontend means radosgw is serving. */
async function waitForGateway(endpoint: string, daemons: ChildProcess[]): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      const res = await fetch(endpoint);
      await res.arrayBuffer();
      return;
    } catch {
      const dead = daemons.find((d) => d.exitCode !== null || d.signalCode !== null);
      if (dead) throw new Error(`${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode})`);
      if (Date.now() > deadline) throw new Error(`radosgw did not answer on ${endpoint} within ${START_TIMEOUT_MS / 1000}s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

interface Certificate {
  ca: string;
  cert: string;
  key: string;
}

/** A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl), for the TLS frontend. */
async function makeCertificate(dir: string): Promise<Certificate> {
  const tls = join(dir, 'tls');
  mkdirSync(tls);
  const [caKey, ca, key, csr, cert, ext] = ['ca.key', 'ca.pem', 'rgw.key', 'rgw.csr', 'rgw.pem', 'san.ext'].map((f) => join(tls, f)) as [string, string, string, string, string, string];
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\n');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=airlock test CA'], tls);
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1'], tls);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext], tls);
  return { ca, cert, key };
}

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

/** The tail of every daemon's log file, for a start that failed. */
function daemonLogs(dir: string): string {
  const logDir = join(dir, 'log');
  try {
    return readdirSync(logDir)
      .map((f) => `== ${f}\n${readFileSync(join(logDir, f), 'utf8').slice(-3000)}`)
      .join('\n');
  } catch {
    return '(no logs)';
  }
}
