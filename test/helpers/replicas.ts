// Several airlock replicas on one shared PostgreSQL and one shared S3 bucket (Ceph's radosgw), all
// real and all on 127.0.0.1: the setup of the scale-out end-to-end tests.
//
//   const backends = await startBackends();              // one PostgreSQL + one Ceph per test file
//   const store = await backends.sharedStore();          // a fresh database and a fresh bucket
//   const [a, b] = await startReplicas(store);           // two in-process replicas on them
//   const c = await startReplicaProcess(store, dir);     // or `node dist/cli.js serve` (SIGKILL-able)
//   const relay = await startTcpRelay(backends.pg.port); // a link to a backend the test can cut
//
// Each replica has its own temp storage directory: with shared backends it holds only the
// replica's local spool (pull-through fills in progress) and its storage lock.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.js';
import type { CliProcess } from '../server/cli.js';
import { startCeph, type Ceph } from './ceph.js';
import { startPostgres, type Postgres } from './postgres.js';
import { startTestServer, type TestServer } from './server.js';

export type S3Input = NonNullable<ConfigInput['blobs']>['s3'];

/** Where a group of replicas keeps its shared state. */
export interface SharedStore {
  databaseUrl: string;
  s3: S3Input;
}

export interface Backends {
  pg: Postgres;
  ceph: Ceph;
  /** A fresh database on `pg` and a fresh bucket on `ceph` (nothing shared with other stores). */
  sharedStore(options?: { redirect?: boolean; prefix?: string }): Promise<SharedStore>;
  /** The S3 config of an existing bucket of `ceph`. */
  s3Config(bucket: string, options?: { redirect?: boolean; prefix?: string }): S3Input;
  stop(): Promise<void>;
}

/** Starts PostgreSQL and Ceph side by side (each takes a couple of seconds). */
export async function startBackends(): Promise<Backends> {
  const [pgResult, cephResult] = await Promise.allSettled([startPostgres(), startCeph()]);
  if (pgResult.status === 'rejected' || cephResult.status === 'rejected') {
    if (pgResult.status === 'fulfilled') await pgResult.value.stop();
    if (cephResult.status === 'fulfilled') await cephResult.value.stop();
    throw pgResult.status === 'rejected' ? pgResult.reason : (cephResult as PromiseRejectedResult).reason;
  }
  const pg = pgResult.value;
  const ceph = cephResult.value;
  const s3Config = (bucket: string, options: { redirect?: boolean; prefix?: string } = {}): S3Input => ({
    endpoint: ceph.endpoint,
    bucket,
    region: ceph.region,
    prefix: options.prefix ?? '',
    forcePathStyle: true,
    accessKeyId: ceph.accessKeyId,
    secretAccessKey: ceph.secretAccessKey,
    redirect: options.redirect ?? false,
  });
  return {
    pg,
    ceph,
    s3Config,
    async sharedStore(options = {}) {
      const [databaseUrl, bucket] = await Promise.all([pg.createDatabase(), ceph.createBucket()]);
      return { databaseUrl, s3: s3Config(bucket, options) };
    },
    async stop() {
      await Promise.allSettled([pg.stop(), ceph.stop()]);
    },
  };
}

/** The config keys that put a replica on the shared store, merged over `overrides`. */
export function replicaConfig(store: SharedStore, overrides: Partial<ConfigInput> = {}): Partial<ConfigInput> {
  return { ...overrides, database: { url: store.databaseUrl }, blobs: { s3: store.s3 } };
}

/**
 * Starts two in-process replicas on the shared store, one after the other (the first creates the
 * schema), each on its own port and temp storage directory.
 */
export async function startReplicas(store: SharedStore, overrides: Partial<ConfigInput> = {}): Promise<[TestServer, TestServer]> {
  const a = await startTestServer(replicaConfig(store, overrides));
  try {
    return [a, await startTestServer(replicaConfig(store, overrides))];
  } catch (e) {
    await closeAll([a]);
    throw e;
  }
}

/** Closes replicas, each given at most `timeoutMs` (a replica cut off from its database may hang). */
export async function closeAll(replicas: (TestServer | undefined)[], timeoutMs = 15_000): Promise<void> {
  await Promise.all(
    replicas.map(async (r) => {
      if (!r) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        r.close().catch(() => {}),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }),
  );
}

export interface ReplicaProcess extends CliProcess {
  /** e.g. 127.0.0.1:40123 */
  host: string;
  /** The replica's own storage directory (its spool). */
  storage: string;
  configFile: string;
}

/**
 * Runs a replica as `node dist/cli.js serve --config FILE` (so that it can be SIGKILLed mid-work),
 * with its config file and storage directory under `dir`.
 */
export async function startReplicaProcess(store: SharedStore, dir: string, overrides: Partial<ConfigInput> = {}): Promise<ReplicaProcess> {
  const storage = mkdtempSync(join(dir, 'replica-'));
  const configFile = join(storage, 'airlock.yaml');
  // info: startCli waits for the "airlock listening" line.
  const config = replicaConfig(store, { listen: '127.0.0.1:0', log: { level: 'info' }, ...overrides, storage: join(storage, 'data') });
  writeFileSync(configFile, stringify(config));
  // Loaded here: test/server/cli.ts insists on a built dist/, which in-process replicas do not need.
  const { startCli } = await import('../server/cli.js');
  const cli = await startCli(['--config', configFile]);
  return Object.assign(cli, { host: `127.0.0.1:${cli.port}`, storage: join(storage, 'data'), configFile });
}

/** A temp directory for one test file's scratch files; remove() deletes it. */
export function scratchDir(name: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `airlock-replicas-${name}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface TcpRelay {
  /** e.g. 40123: put it in place of the real port (a database URL's). */
  port: number;
  /** Cuts every connection and refuses new ones, as a network partition or a stopped server does. */
  cut(): Promise<void>;
  /** Accepts connections again on the same port. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/** A TCP relay on 127.0.0.1 to `targetPort` that a test can cut and restore (a backend going away and coming back). */
export async function startTcpRelay(targetPort: number): Promise<TcpRelay> {
  const sockets = new Set<Socket>();
  const handler = (client: Socket) => {
    const server = connect(targetPort, '127.0.0.1');
    for (const s of [client, server]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        server.destroy();
      });
    }
    client.pipe(server).pipe(client);
  };
  let listener: Server | undefined;
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      const l = createServer(handler);
      l.once('error', reject);
      l.listen(port, '127.0.0.1', () => {
        listener = l;
        resolve((l.address() as AddressInfo).port);
      });
    });
  const port = await listen(0);
  const cut = async () => {
    const l = listener;
    listener = undefined;
    for (const s of sockets) s.destroy();
    if (l) await new Promise<void>((resolve) => l.close(() => resolve()));
  };
  return {
    port,
    cut,
    async restore() {
      if (!listener) await listen(port);
    },
    close: cut,
  };
}
