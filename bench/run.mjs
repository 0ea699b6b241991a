#!/usr/bin/env node
// airlock vs CNCF distribution, side by side in one run: both start on 127.0.0.1 with fresh temp
// storage, receive identical content through the HTTP API, are checked to serve it back exactly,
// then face the same workloads one after the other. Figures print as "airlock / distribution /
// ratio" lines and the whole run is written to bench/results/<ISO timestamp>.json.
//
//   npm run bench                 5 s per load run (about 4 minutes in all on 2 cores)
//   npm run bench -- --quick      smoke run, about 95 s
//   npm run bench -- --duration 10 --only manifests,blob-1m
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BenchError } from './lib/client.mjs';
import { cpuSnapshot, foreignCpu, loadAverage } from './lib/machine.mjs';
import { machineInfo, Report, writeResults } from './lib/report.mjs';
import { buildContent, seedAll, verify } from './lib/seed.mjs';
import { AIRLOCK_CLI, distributionVersion, DISTRIBUTION_BIN, PROJECT_ROOT, startAirlock, startDistribution, stopAll } from './lib/servers.mjs';
import { workloads } from './lib/workloads.mjs';
import { positive } from './lib/options.mjs';

const HELP = `Usage: node bench/run.mjs [--quick] [--duration SECONDS] [--requests N] [--only IDS] [--markdown]

  --quick         smoke run: 1 s per load run, short warm-ups, one push per mode (about 95 s)
  --duration S    seconds per load run (default 5; 1 with --quick)
  --requests N    cap on responses per load run (default 100000; 20000 with --quick)
  --only IDS      comma-separated workload ids: ${workloads.map((w) => w.id).join(', ')}
  --markdown      also print the figures as a Markdown table (for bench/README.md)
`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      requests: { type: 'string' },
      only: { type: 'string' },
      markdown: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const quick = values.quick;
  const duration = positive('duration', values.duration, quick ? 1 : 5);
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const id of only ?? []) if (!workloads.some((w) => w.id === id)) throw new Error(`--only: unknown workload "${id}"`);
  return {
    quick,
    duration,
    maxRequests: Math.floor(positive('requests', values.requests, quick ? 20_000 : 100_000)),
    warmup: Math.min(1, duration / 4),
    downloads: 5,
    pushRepeats: quick ? 1 : 5,
    only,
    markdown: values.markdown,
  };
}

const t0 = performance.now();
const progress = (msg) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);

/** Cores used by other processes above which figures are flagged as disturbed. */
const BUSY_CORES = 0.25;

function describeError(e) {
  let text = e?.stack ?? String(e);
  if (e instanceof BenchError && Object.keys(e.detail).length) text += `\n${JSON.stringify(e.detail, null, 2)}`;
  return text;
}

async function main() {
  const opts = options(process.argv.slice(2));
  if (!existsSync(AIRLOCK_CLI)) throw new Error(`${AIRLOCK_CLI} is missing: build first (npm run build), or use npm run bench`);
  if (!existsSync(DISTRIBUTION_BIN)) throw new Error(`${DISTRIBUTION_BIN} is missing (Debian package docker-registry, or set DISTRIBUTION_BIN)`);

  const startedAt = new Date();
  const root = mkdtempSync(join(tmpdir(), 'airlock-bench-'));
  const servers = []; // the compared pair, [airlock, distribution]
  const extra = []; // servers a workload starts for itself (e.g. an upstream); stopped the same way
  // 'direct' is the reference value of the pull-through figures: the same request sent straight to
  // the upstream registry both caches sit in front of.
  const report = new Report(['airlock', 'distribution'], 'direct');
  const results = {
    startedAt: startedAt.toISOString(),
    machine: machineInfo(PROJECT_ROOT, distributionVersion()),
    options: opts,
    loadAverageAtStart: loadAverage(),
    // cores used by processes other than the bench and its servers, per workload
    foreignCpuCores: {},
  };

  let cleaned;
  const cleanup = () =>
    (cleaned ??= (async () => {
      await stopAll([...servers, ...extra]);
      rmSync(root, { recursive: true, force: true });
    })());
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      progress(`${signal}: stopping servers and removing ${root}`);
      cleanup().finally(() => process.exit(130));
    });
  }
  // An exception thrown from an event handler (autocannon, undici, a sampler) bypasses the try
  // below; the servers and the temp directory must still go.
  for (const event of ['uncaughtException', 'unhandledRejection']) {
    process.once(event, (e) => {
      process.stderr.write(`bench: ${event}: ${describeError(e)}\n`);
      cleanup().finally(() => process.exit(1));
    });
  }

  // What the run was doing when: the peak-rss workload names the phase its peak fell in.
  const phases = [];
  const phase = (name) => {
    const now = performance.now();
    if (phases.length) phases.at(-1).to = now;
    phases.push({ name, from: now, to: Infinity });
  };

  let failed;
  try {
    phase('start');
    progress(`temp storage under ${root}`);
    progress('generating content');
    const content = buildContent();
    servers.push(await startAirlock({ root: join(root, 'airlock') }));
    servers.push(await startDistribution({ root: join(root, 'distribution') }));
    progress(`airlock pid ${servers[0].pid} at ${servers[0].url}; distribution pid ${servers[1].pid} at ${servers[1].url}`);

    // Seeding and verification are not timed, so both servers get them at once.
    progress('seeding both servers (1.3 GiB each)');
    phase('seed');
    const seeded = performance.now();
    await seedAll(servers, content);
    results.seedSeconds = (performance.now() - seeded) / 1000;
    progress('verifying what both servers serve');
    phase('verify');
    await Promise.all(servers.map((s) => verify(s, content)));

    const ctx = {
      servers: [...servers],
      content,
      opts,
      report,
      progress,
      root,
      track: (server) => (extra.push(server), server),
      phases,
    };
    // Servers a workload starts count as the bench's own CPU, not as other load on the machine;
    // they keep running until the cleanup, so their CPU time never drops out of a later snapshot.
    const pids = () => [...servers, ...extra].map((s) => s.pid);
    const whole = cpuSnapshot(pids());
    for (const w of workloads) {
      if (opts.only && !opts.only.includes(w.id) && w.id !== 'peak-rss') continue;
      progress(`== ${w.title}`);
      phase(w.id);
      const before = cpuSnapshot(pids());
      await w.run(ctx);
      const cores = foreignCpu(before, cpuSnapshot(pids()));
      if (cores === undefined) continue;
      results.foreignCpuCores[w.id] = Math.round(cores * 100) / 100;
      if (cores > BUSY_CORES) progress(`  WARNING: other processes used ${cores.toFixed(2)} cores during this workload; its figures are disturbed`);
    }
    results.foreignCpuCores.wholeRun = Math.round(foreignCpu(whole, cpuSnapshot(pids())) * 100) / 100;
  } catch (e) {
    failed = e;
  }

  // Anything a server logged (airlock runs at warn, distribution at error) is worth seeing.
  await cleanup();
  results.serverLogs = Object.fromEntries([...servers, ...extra].map((s) => [s.name, { pid: s.pid, exit: s.exited, lines: s.logCount, tail: s.logLines.slice(-50) }]));

  report.print();
  if (opts.markdown) process.stdout.write(`\n${report.markdown()}\n`);
  for (const s of [...servers, ...extra]) if (s.logCount) process.stderr.write(`\n${s.name} logged ${s.logCount} line(s); last ones:\n${s.logTail(20)}\n`);

  Object.assign(results, report.toJSON(), { finishedAt: new Date().toISOString() });
  if (failed) results.error = { message: failed.message, detail: failed.detail, stack: failed.stack };
  const file = writeResults(join(PROJECT_ROOT, 'bench', 'results'), startedAt, results);
  const busy = results.foreignCpuCores?.wholeRun;
  if (busy > BUSY_CORES) {
    process.stdout.write(`\nWARNING: other processes kept ${busy} cores busy on average during the run (load average at start ${results.loadAverageAtStart.join(' ')}); the figures are not a clean comparison.\n`);
  }
  process.stdout.write(`\nresults: ${file}\n`);

  if (failed) {
    process.stderr.write(`\nBENCH FAILED: ${describeError(failed)}\n`);
    for (const s of [...servers, ...extra]) {
      const died = s.exited && !s.exited.stoppedByBench;
      const state = died ? `EXITED on its own (code ${s.exited.code}, signal ${s.exited.signal})` : 'was running until the bench stopped it';
      process.stderr.write(`\n--- ${s.name} (pid ${s.pid}) ${state}; log tail ---\n${s.logTail()}\n`);
    }
    process.exitCode = 1;
  }
}

main().catch((e) => {
  process.stderr.write(`bench: ${describeError(e)}\n`);
  process.exitCode = 1;
});
