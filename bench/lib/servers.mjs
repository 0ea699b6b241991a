// Starting and stopping the registries under test, each as a child process of the bench so that
// its memory can be read from /proc/<pid>/status. Every started process is remembered and
// killed on exit, whatever way the bench ends (error, Ctrl-C, uncaught exception).
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { RegistryClient } from './client.mjs';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const AIRLOCK_CLI = join(PROJECT_ROOT, 'dist', 'cli.js');
export const DISTRIBUTION_BIN = process.env.DISTRIBUTION_BIN ?? '/usr/bin/docker-registry';

const live = new Set();
process.on('exit', () => {
  // Last resort: synchronous, so only a signal can be sent here.
  for (const server of live) {
    try {
      process.kill(server.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A port the OS just handed out; the tiny race before the server binds it is acceptable here. */
export async function freePort() {
  const srv = createServer();
  await new Promise((ok, fail) => srv.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = srv.address();
  await new Promise((ok) => srv.close(ok));
  return port;
}

/** Reads VmRSS and VmHWM (peak RSS as the kernel saw it) in KiB. */
export function readMemory(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/**
 * Samples a process's RSS every `intervalMs`. Samples are kept with their time so that a workload
 * can ask for the min/max inside its own window (e.g. while one blob streams).
 */
export class RssSampler {
  constructor(pid, intervalMs = 100) {
    this.pid = pid;
    this.samples = []; // [performance.now() ms, KiB]
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
    this.sample();
  }

  sample() {
    const m = readMemory(this.pid);
    if (m && Number.isFinite(m.rss)) {
      this.samples.push([performance.now(), m.rss]);
      this.hwm = m.hwm;
    }
  }

  stop() {
    this.sample();
    clearInterval(this.timer);
  }

  /** {min, max, maxAt, count} in KiB (maxAt: performance.now() of the max) over samples taken in [from, to]. */
  window(from = 0, to = Infinity) {
    let min = Infinity;
    let max = 0;
    let maxAt;
    let count = 0;
    for (const [t, kib] of this.samples) {
      if (t < from || t > to) continue;
      min = Math.min(min, kib);
      if (kib > max) [max, maxAt] = [kib, t];
      count++;
    }
    return { min: count ? min : NaN, max: count ? max : NaN, maxAt, count };
  }
}

export class ServerProcess {
  /**
   * @param {object} spec name (label in the report), kind ('airlock' | 'distribution'), command,
   *   args, port, root (its private temp directory)
   */
  constructor(spec) {
    Object.assign(this, spec);
    this.url = `${spec.scheme ?? 'http'}://127.0.0.1:${spec.port}`;
    this.client = new RegistryClient(spec.name, this.url);
    this.logLines = [];
    this.logCount = 0;
    this.exited = undefined;
  }

  async start(timeoutMs = 20_000) {
    this.child = spawn(this.command, this.args, { cwd: this.root, stdio: ['ignore', 'pipe', 'pipe'], env: this.env ?? process.env });
    this.pid = this.child.pid;
    live.add(this);
    const keep = (chunk) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line.trim()) continue;
        this.logCount++;
        this.logLines.push(line);
        if (this.logLines.length > 200) this.logLines.shift();
      }
    };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    this.exitPromise = new Promise((ok) =>
      this.child.once('exit', (code, signal) => {
        this.exited = { code, signal, stoppedByBench: Boolean(this.stopping) };
        live.delete(this);
        ok();
      }),
    );
    this.child.once('error', (err) => {
      this.exited = { error: err.message };
    });

    try {
      await this.waitReady(timeoutMs);
    } catch (e) {
      await this.stop(); // the caller never gets this object, so it could not stop it
      throw e;
    }
    this.rss = new RssSampler(this.pid);
    return this;
  }

  async waitReady(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exited) throw new Error(`${this.name} exited while starting (${JSON.stringify(this.exited)}):\n${this.logTail()}`);
      try {
        const res = await request(`${this.url}/v2/`);
        await res.body.dump();
        // 401: it answers, under auth: (the conformance runs use one).
        if (res.statusCode === 200 || res.statusCode === 401) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${this.name} did not answer GET /v2/ with 200 (or 401) within ${timeoutMs} ms:\n${this.logTail()}`);
      await sleep(50);
    }
  }

  /** Throws when the process died behind our back (checked between workloads). */
  assertAlive() {
    if (this.exited) throw new Error(`${this.name} exited during the run (${JSON.stringify(this.exited)}):\n${this.logTail()}`);
  }

  logTail(n = 40) {
    return this.logLines.slice(-n).join('\n') || '(no output)';
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. Safe to call twice. */
  async stop(graceMs = 5000) {
    this.rss?.stop();
    if (!this.child || this.exited) return;
    this.stopping = true;
    this.child.kill('SIGTERM');
    const timer = sleep(graceMs).then(() => 'timeout');
    if ((await Promise.race([this.exitPromise, timer])) === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exitPromise;
    }
  }
}

/**
 * The shell statements of the CLI's launcher line (`//bin/true; <settings>; exec node "$0" "$@"`,
 * read by sh when dist/cli.js runs as the `airlock` executable). The bench runs them before
 * `node [nodeArgs] cli.js`, to take node flags and still measure what users run.
 */
export function launcherSettings(cli = AIRLOCK_CLI) {
  const line = readFileSync(cli, 'utf8').split('\n', 2)[1] ?? '';
  if (!line.startsWith('//bin/true;')) return ':'; // a build from before the launcher
  return line.slice('//bin/true;'.length, line.lastIndexOf('; exec node'));
}

/**
 * airlock via `node dist/cli.js serve` after its launcher's settings, with its own config file (so
 * the checkout's config/airlock.yaml cannot change what is measured). `config` is merged into the
 * file: a pull-through workload passes `{ upstreams: [...] }` here; `env` replaces its environment
 * (the launcher keeps a GLIBC_TUNABLES set there, as it keeps an operator's).
 */
export async function startAirlock({ root, name = 'airlock', config = {}, nodeArgs = [], cli = AIRLOCK_CLI, startTimeoutMs = 20_000, env }) {
  mkdirSync(root, { recursive: true });
  const port = await freePort();
  const storage = join(root, 'storage');
  const file = join(root, 'airlock.yaml');
  // YAML is a superset of JSON, so JSON text is a valid config file without a YAML writer.
  writeFileSync(file, JSON.stringify({ listen: `127.0.0.1:${port}`, storage, log: { level: 'warn' }, ...config }, null, 2));
  const node = [process.execPath, ...nodeArgs, cli, 'serve', '--config', file, '--listen', `127.0.0.1:${port}`, '--storage', storage, '--log-level', 'warn'];
  // sh execs node, so the pid is node's, for /proc and for stopping it.
  const args = ['-c', `${launcherSettings(cli)}; exec "$0" "$@"`, ...node];
  return new ServerProcess({ name, kind: 'airlock', command: 'sh', args, port, root, env }).start(startTimeoutMs);
}

/** Merges plain objects key by key (config overrides); anything else replaces. */
function merge(base, extra) {
  const out = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const plain = (x) => x && typeof x === 'object' && !Array.isArray(x);
    out[k] = plain(v) && plain(base[k]) ? merge(base[k], v) : v;
  }
  return out;
}

/**
 * CNCF distribution with the filesystem driver; `proxy` ({ remoteurl }) turns on its
 * pull-through mode; `config` is merged into the file (e.g. { storage: { cache: ... } });
 * `storage` replaces the whole storage section (another driver, e.g. { s3: {...} }); `env` replaces
 * its environment; `tls` ({ certificate, key }: PEM file paths) serves HTTPS (the caller's undici
 * dispatcher must trust the certificate's CA).
 */
export async function startDistribution({ root, name = 'distribution', proxy, config: extra = {}, storage, env, tls }) {
  mkdirSync(root, { recursive: true });
  const port = await freePort();
  const file = join(root, 'config.yml');
  const config = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: storage ?? { filesystem: { rootdirectory: join(root, 'storage') }, delete: { enabled: true } },
    http: { addr: `127.0.0.1:${port}`, ...(tls ? { tls } : {}) },
    ...(proxy ? { proxy } : {}),
  };
  writeFileSync(file, JSON.stringify(merge(config, extra), null, 2));
  const scheme = tls ? 'https' : 'http';
  return new ServerProcess({ name, kind: 'distribution', command: DISTRIBUTION_BIN, args: ['serve', file], port, root, env, scheme }).start();
}

export function distributionVersion() {
  try {
    return execFileSync(DISTRIBUTION_BIN, ['--version'], { encoding: 'utf8' }).trim();
  } catch (e) {
    return `unknown (${e.message})`;
  }
}

export async function stopAll(servers) {
  await Promise.allSettled(servers.map((s) => s.stop()));
}
