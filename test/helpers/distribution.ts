// Runs a real CNCF distribution registry (Debian's docker-registry 2.8) on a free 127.0.0.1 port, as an
// upstream for pull-through tests and as a reference registry for benchmarks.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';

export const DOCKER_REGISTRY_BIN = process.env.DOCKER_REGISTRY_BIN ?? '/usr/bin/docker-registry';

export interface DistributionOptions {
  /** Users for htpasswd Basic auth; without them the registry is open. */
  users?: Record<string, string>;
  /** Runs distribution as a pull-through cache of another registry (it then refuses pushes). */
  proxy?: { remoteurl: string; username?: string; password?: string };
  /** Leave the storage directory in place on stop() (the caller removes it). */
  keepStorage?: boolean;
}

export interface Distribution {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** e.g. 127.0.0.1:40123 */
  host: string;
  port: number;
  /** The registry's filesystem storage root. */
  storage: string;
  /** SIGTERM, then SIGKILL after a grace period; resolves with the storage path. */
  stop(): Promise<string>;
}

const running = new Set<ChildProcess>();
// A crashed test run must not leave registries listening behind it.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function startDistribution(options: DistributionOptions = {}): Promise<Distribution> {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-distribution-'));
  const storage = join(dir, 'storage');
  const port = await freePort();
  const config = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(storage)}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
  ];
  if (options.users !== undefined) {
    const htpasswd = join(dir, 'htpasswd');
    const lines = Object.entries(options.users).map(([user, password]) => `${user}:${bcrypt.hashSync(password, 4)}`);
    writeFileSync(htpasswd, `${lines.join('\n')}\n`);
    config.push('auth:', '  htpasswd:', '    realm: airlock-test', `    path: ${JSON.stringify(htpasswd)}`);
  }
  if (options.proxy !== undefined) {
    config.push('proxy:', `  remoteurl: ${JSON.stringify(options.proxy.remoteurl)}`);
    if (options.proxy.username !== undefined) config.push(`  username: ${JSON.stringify(options.proxy.username)}`);
    if (options.proxy.password !== undefined) config.push(`  password: ${JSON.stringify(options.proxy.password)}`);
  }
  const configPath = join(dir, 'config.yml');
  writeFileSync(configPath, `${config.join('\n')}\n`);

  // A clean environment: REGISTRY_* variables from the caller's shell would override the config file.
  const child = spawn(DOCKER_REGISTRY_BIN, ['serve', configPath], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<string> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killed = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    running.delete(child);
    if (options.keepStorage) {
      rmSync(configPath, { force: true });
    } else {
      rmSync(dir, { recursive: true, force: true });
    }
    return storage;
  };

  try {
    await waitUntilAnswering(`${url}/v2/`, () => (child.exitCode !== null ? `docker-registry exited: ${stderr}` : undefined));
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, host: `127.0.0.1:${port}`, port, storage, stop };
}

/** Any HTTP answer counts (with htpasswd /v2/ answers 401); gives up after 15s or when the process died. */
async function waitUntilAnswering(url: string, failure: () => string | undefined): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      return;
    } catch {
      const why = failure();
      if (why !== undefined) throw new Error(why);
      if (Date.now() > deadline) throw new Error(`docker-registry did not answer on ${url} within 15s`);
      await sleep(50);
    }
  }
}

/** Asks the OS for a free port (bind to 0, read it, release it); the tiny race is acceptable in tests. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
