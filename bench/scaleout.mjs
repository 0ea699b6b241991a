#!/usr/bin/env node
// airlock on the shared backends of a scale-out deployment (PostgreSQL + S3-compatible object
// storage) next to airlock's embedded default (SQLite + local disk) and next to CNCF distribution
// with its s3 storage driver on the same object store, in one run. The run starts one throwaway
// PostgreSQL and one throwaway Ceph cluster with radosgw (bench/lib/backends.mjs), then:
//
//   airlock-embedded   node dist/cli.js serve, default config (SQLite and blobs in its storage dir)
//   airlock-shared     one replica with database.url and blobs.s3 (bucket airlock-bench)
//   airlock-shared-x2  that replica and a second one on the same database and bucket, the load
//                      split round-robin between them (half the connections each; a push's POST on
//                      one replica and its PUT on the other; downloads alternating)
//   distribution-s3    docker-registry with storage.s3 on the same radosgw (bucket distribution-bench)
//
// Each gets the same content through the HTTP API and is checked to serve it back exactly before
// anything is timed. Figures: manifest GET by tag at c=16 (req/s, p99), 1 MiB blob GET at c=16,
// 256 MiB monolithic push (median of alternating runs) and 256 MiB download (median), printed as
// a table with the ratios airlock-shared / distribution-s3 and airlock-shared / airlock-embedded.
// The whole run goes to bench/results/scaleout-<ISO timestamp>.json.
//
//   npm run bench:scaleout                  3 minutes on an idle 2-core machine, 6-9 on a loaded one
//   node bench/scaleout.mjs --quick         smoke run
//   node bench/scaleout.mjs --only airlock-embedded,distribution-s3
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startCeph, startPostgres } from './lib/backends.mjs';
import { BenchError, MANIFEST_ACCEPT, RegistryClient } from './lib/client.mjs';
import { bytesOf, MiB } from './lib/data.mjs';
import { load, percentile } from './lib/load.mjs';
import { cpuSeconds, cpuSnapshot, foreignCpu, loadAverage } from './lib/machine.mjs';
import { machineInfo, writeResults } from './lib/report.mjs';
import { buildContent, REPOS, seed, verify } from './lib/seed.mjs';
import { AIRLOCK_CLI, distributionVersion, DISTRIBUTION_BIN, PROJECT_ROOT, startAirlock, startDistribution, stopAll } from './lib/servers.mjs';
import { median } from './lib/measure.mjs';
import { positive } from './lib/options.mjs';

const CONTENDERS = ['airlock-embedded', 'airlock-shared', 'airlock-shared-x2', 'distribution-s3'];

const HELP = `Usage: node bench/scaleout.mjs [--quick] [--duration S] [--requests N] [--runs N] [--only NAMES] [--markdown]

  --quick        smoke run: 1 s per load run, one push and one download each
  --duration S   seconds per load run (default 5; 1 with --quick)
  --requests N   cap on responses per load run (default 100000; 20000 with --quick)
  --runs N       pushes and downloads of 256 MiB per contender (default 3; 1 with --quick)
  --only NAMES   comma-separated subset of: ${CONTENDERS.join(', ')}
  --markdown     also print the table as Markdown (for bench/README.md)

Example: npm run build && node bench/scaleout.mjs --markdown
`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      requests: { type: 'string' },
      runs: { type: 'string' },
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
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean) ?? CONTENDERS;
  for (const name of only) if (!CONTENDERS.includes(name)) throw new Error(`--only: unknown contender "${name}" (one of ${CONTENDERS.join(', ')})`);
  return {
    quick,
    duration,
    maxRequests: Math.floor(positive('requests', values.requests, quick ? 20_000 : 100_000)),
    // Never shorter than 1 s: distribution-s3 answers a manifest in ~100-300 ms here, and a
    // shorter warm-up could end before any response arrives.
    warmup: 1,
    runs: Math.floor(positive('runs', values.runs, quick ? 1 : 3)),
    only,
    markdown: values.markdown,
  };
}

const t0 = performance.now();
const progress = (msg) => process.stderr.write(`[scaleout ${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);
const MB = 1e6;
const BUSY_CORES = 0.25;
const AIRLOCK_BUCKET = 'airlock-bench';
const DISTRIBUTION_BUCKET = 'distribution-bench';
const SIZE_256M = 256 * MiB;

function describeError(e) {
  let text = e?.stack ?? String(e);
  if (e instanceof BenchError && Object.keys(e.detail).length) text += `\n${JSON.stringify(e.detail, null, 2)}`;
  return text;
}

// ---------------------------------------------------------------------------------------------
// The table: one row per figure, one column per contender, then the ratios the issue asks for.

const RATIOS = [
  ['airlock-shared', 'distribution-s3'],
  ['airlock-shared', 'airlock-embedded'],
  ['airlock-shared-x2', 'distribution-s3'],
];
const DECIMALS = { 'req/s': 0, ms: 1, 's': 2, 'MB/s': 0 };

class Table {
  constructor(columns) {
    this.columns = columns;
    this.rows = [];
    this.byId = new Map();
  }

  add({ id, label, unit, better = 'higher', contender, value }) {
    let row = this.byId.get(id);
    if (!row) {
      row = { id, label, unit, better, values: {} };
      this.byId.set(id, row);
      this.rows.push(row);
    }
    row.values[contender] = value;
    progress(`  ${contender}: ${label} ${fmt(value, unit)} ${unit}`);
  }

  ratio(row, [a, b]) {
    const x = row.values[a] / row.values[b];
    return Number.isFinite(x) ? x.toFixed(2) : 'n/a';
  }

  ratios() {
    return RATIOS.filter(([a, b]) => this.columns.includes(a) && this.columns.includes(b));
  }

  text() {
    const head = ['figure', 'unit', ...this.columns, ...this.ratios().map(([a, b]) => `${short(a)}/${short(b)}`), 'better'];
    const body = this.rows.map((r) => [r.label, r.unit, ...this.columns.map((c) => fmt(r.values[c], r.unit)), ...this.ratios().map((p) => this.ratio(r, p)), r.better]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    const line = (cells) => cells.map((c, i) => (i < 2 || i === cells.length - 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
    return [line(head), ...body.map(line)].join('\n');
  }

  markdown() {
    const ratios = this.ratios();
    const out = [
      `| figure | unit | ${this.columns.join(' | ')} | ${ratios.map(([a, b]) => `${a} / ${b}`).join(' | ')} | better |`,
      `|---|---|${this.columns.map(() => '--:|').join('')}${ratios.map(() => '--:|').join('')}---|`,
    ];
    for (const r of this.rows) {
      out.push(`| ${r.label} | ${r.unit} | ${this.columns.map((c) => fmt(r.values[c], r.unit)).join(' | ')} | ${ratios.map((p) => this.ratio(r, p)).join(' | ')} | ${r.better} |`);
    }
    return out.join('\n');
  }

  toJSON() {
    return { columns: this.columns, ratios: this.ratios(), rows: this.rows };
  }
}

const short = (name) => ({ 'airlock-embedded': 'embedded', 'airlock-shared': 'shared', 'airlock-shared-x2': 'shared-x2', 'distribution-s3': 'dist-s3' })[name] ?? name;

function fmt(value, unit) {
  if (!Number.isFinite(value)) return 'n/a';
  const d = DECIMALS[unit] ?? 2;
  return value.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

// ---------------------------------------------------------------------------------------------
// Load split across a contender's replicas.

/**
 * One load run against a contender: with several replicas, the connections are split evenly and
 * the runs go at the same time; req/s add up and p99 comes from every response of all of them.
 */
async function splitLoad(contender, spec) {
  const n = contender.servers.length;
  const runs = await Promise.all(
    contender.servers.map((s) => load({ ...spec, base: s.url, connections: Math.max(1, Math.round(spec.connections / n)), keepLatencies: true })),
  );
  const latencies = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  return {
    requests: runs.reduce((sum, r) => sum + r.requests, 0),
    rps: runs.reduce((sum, r) => sum + r.rps, 0),
    p99: percentile(latencies, 99),
    p50: percentile(latencies, 50),
    perReplica: runs.map((r) => ({ requests: r.requests, rps: r.rps, latencyMs: r.latencyMs })),
  };
}

/**
 * CPU seconds used from now on by a set of processes that may change (PostgreSQL forks a backend
 * per connection): `since()` adds each current process's use since the start, or all of it for
 * one that started since. A process that exits in between drops out (its share is small: the
 * replicas keep their connections).
 */
function cpuMeter(pids) {
  const start = new Map(pids().map((pid) => [pid, cpuSeconds(pid)]));
  return { since: () => pids().reduce((sum, pid) => sum + cpuSeconds(pid) - (start.get(pid) ?? 0), 0) };
}

/**
 * Server and backend CPU meters for one measured operation of a contender: `backends` is
 * PostgreSQL and Ceph together, also kept apart (idle Ceph costs a few hundredths of a core).
 */
function meters(ctx, contender) {
  const server = cpuMeter(contender.pids);
  const postgres = cpuMeter(ctx.postgresPids);
  const ceph = cpuMeter(ctx.cephPids);
  return () => {
    const [pg, rados] = [postgres.since(), ceph.since()];
    return { server: server.since(), backends: pg + rados, postgres: pg, ceph: rados };
  };
}

async function measuredLoad(ctx, contender, spec) {
  if (ctx.opts.warmup > 0) await splitLoad(contender, { ...spec, duration: ctx.opts.warmup, maxRequests: Math.ceil(ctx.opts.maxRequests / 10) });
  const used = meters(ctx, contender);
  const r = await splitLoad(contender, { ...spec, duration: ctx.opts.duration, maxRequests: ctx.opts.maxRequests });
  const cpu = used();
  r.serverCpuSeconds = cpu.server;
  r.backendCpuSeconds = cpu.backends;
  r.postgresCpuSeconds = cpu.postgres;
  r.cephCpuSeconds = cpu.ceph;
  return r;
}

/** Runs fn for each contender, alternating the order from one call to the next. */
let turn = 0;
async function eachContender(ctx, fn) {
  const order = turn++ % 2 === 0 ? ctx.contenders : [...ctx.contenders].reverse();
  for (const c of order) {
    await fn(c);
    for (const s of c.servers) s.assertAlive();
  }
}

// ---------------------------------------------------------------------------------------------
// Workloads

async function manifestGets(ctx) {
  const { manifests } = ctx.content;
  const byDigest = new Map(manifests.map((m) => [m.blob.digest, m]));
  const check = (_status, h) => {
    const m = byDigest.get(h['docker-content-digest']);
    if (!m) return `Docker-Content-Digest ${h['docker-content-digest']} is not a seeded manifest`;
    if (h['content-type'] !== m.mediaType) return `Content-Type ${h['content-type']} for a ${m.mediaType}`;
    if (Number(h['content-length']) !== m.blob.size) return `Content-Length ${h['content-length']} for ${m.blob.size} bytes`;
    return undefined;
  };
  const headers = { accept: MANIFEST_ACCEPT };
  // Each connection alternates between the OCI and the Docker schema2 image, as in run.mjs.
  const requests = manifests.map((m) => ({ method: 'GET', path: `/v2/${m.repo}/manifests/${m.tag}`, headers }));
  progress('manifest GET by tag, c=16');
  await eachContender(ctx, async (c) => {
    const r = await measuredLoad(ctx, c, { requests, connections: 16, check });
    ctx.table.add({ id: 'manifest.rps', label: 'manifest GET by tag, c=16', unit: 'req/s', contender: c.name, value: r.rps });
    ctx.table.add({ id: 'manifest.p99', label: 'manifest GET by tag, c=16, p99', unit: 'ms', better: 'lower', contender: c.name, value: r.p99 });
    ctx.details.push({ id: 'manifest', contender: c.name, ...r });
  });
}

async function smallBlobGets(ctx) {
  const layer = ctx.content.layer1m;
  const check = (_status, h) => {
    if (h['docker-content-digest'] !== layer.digest) return `Docker-Content-Digest ${h['docker-content-digest']}`;
    if (Number(h['content-length']) !== layer.size) return `Content-Length ${h['content-length']}`;
    return undefined;
  };
  progress('blob GET 1 MiB, c=16');
  await eachContender(ctx, async (c) => {
    const r = await measuredLoad(ctx, c, {
      requests: [{ method: 'GET', path: `/v2/${REPOS.oci}/blobs/${layer.digest}` }],
      connections: 16,
      check,
      minBytes: layer.size, // every response carried the whole body
    });
    ctx.table.add({ id: 'blob1m.rps', label: 'blob GET 1 MiB, c=16', unit: 'req/s', contender: c.name, value: r.rps });
    ctx.details.push({ id: 'blob1m', contender: c.name, ...r });
  });
}

/**
 * A monolithic push (POST, then PUT ?digest= with the whole body). With two replicas the POST goes
 * to one and the PUT to the other: the upload session must live in the shared backends.
 */
async function pushAcross(first, second, data, digest) {
  const location = await first.client.startUpload(REPOS.push);
  const { pathname, search } = new URL(location);
  const res = await second.client.fetch('PUT', RegistryClient.withDigest(second.client.url(pathname + search), digest), {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(data.length) },
    body: data,
    expect: [201],
  });
  second.client.checkDigestHeader(res, digest, `PUT blob ${digest}`);
}

async function pushes(ctx) {
  const times = new Map(withDirect(ctx).map((c) => [c.name, []]));
  const cpu = new Map(ctx.contenders.map((c) => [c.name, []]));
  for (let run = 0; run < ctx.opts.runs; run++) {
    progress(`push 256 MiB monolithic, run ${run + 1} of ${ctx.opts.runs}`);
    // Fresh bytes each run so that no server can skip work for a blob it has; the digest is
    // known before the clock starts, as a real client knows it.
    const data = bytesOf(`scaleout-push-${run}-${Date.now()}`, SIZE_256M);
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    await eachContender(ctx, async (c) => {
      const n = c.servers.length;
      const [first, second] = [c.servers[run % n], c.servers[(run + 1) % n]];
      const used = meters(ctx, c);
      const started = performance.now();
      await pushAcross(first, second, data, digest);
      const seconds = (performance.now() - started) / 1000;
      cpu.get(c.name).push(used());
      // Every replica must see the blob at once, with its size and digest.
      for (const s of c.servers) {
        const head = await s.client.fetch('HEAD', `/v2/${REPOS.push}/blobs/${digest}`);
        if (Number(head.headers['content-length']) !== SIZE_256M || head.headers['docker-content-digest'] !== digest) {
          throw new BenchError(`${s.name}: pushed blob ${digest} reads back wrong`, { headers: head.headers });
        }
      }
      times.get(c.name).push(seconds);
    });
    if (ctx.direct) {
      const started = performance.now();
      await ctx.direct.put(`push-${run}`, data);
      times.get(DIRECT).push((performance.now() - started) / 1000);
    }
  }
  for (const c of withDirect(ctx)) {
    const runs = times.get(c.name);
    ctx.table.add({ id: 'push.s', label: `push 256 MiB monolithic, median of ${runs.length}`, unit: 's', better: 'lower', contender: c.name, value: median(runs) });
    ctx.table.add({ id: 'push.mbps', label: `push 256 MiB monolithic, median of ${runs.length}`, unit: 'MB/s', contender: c.name, value: SIZE_256M / median(runs) / MB });
    ctx.details.push({ id: 'push', contender: c.name, seconds: runs, cpuSeconds: cpu.get(c.name) });
  }
}

async function downloads(ctx) {
  const layer = ctx.content.layer256m;
  const times = new Map(withDirect(ctx).map((c) => [c.name, []]));
  const cpu = new Map(ctx.contenders.map((c) => [c.name, []]));
  for (let run = 0; run < ctx.opts.runs; run++) {
    progress(`download 256 MiB, run ${run + 1} of ${ctx.opts.runs}`);
    await eachContender(ctx, async (c) => {
      const server = c.servers[run % c.servers.length];
      const used = meters(ctx, c);
      // Counted, not hashed: every replica's bytes were hashed before timing (verify).
      const r = await server.client.download(`/v2/${REPOS.oci}/blobs/${layer.digest}`);
      if (r.bytes !== layer.size) throw new BenchError(`${server.name}: 256 MiB download returned ${r.bytes} bytes`, { headers: r.headers });
      cpu.get(c.name).push(used());
      times.get(c.name).push(r.seconds);
    });
    if (ctx.direct) {
      const started = performance.now();
      const bytes = await ctx.direct.get('push-0');
      if (bytes !== layer.size) throw new BenchError(`direct GetObject returned ${bytes} bytes, expected ${layer.size}`);
      times.get(DIRECT).push((performance.now() - started) / 1000);
    }
  }
  for (const c of withDirect(ctx)) {
    const runs = times.get(c.name);
    ctx.table.add({ id: 'download.s', label: `download 256 MiB, median of ${runs.length}`, unit: 's', better: 'lower', contender: c.name, value: median(runs) });
    ctx.table.add({ id: 'download.mbps', label: `download 256 MiB, median of ${runs.length}`, unit: 'MB/s', contender: c.name, value: SIZE_256M / median(runs) / MB });
    ctx.details.push({ id: 'download', contender: c.name, seconds: runs, cpuSeconds: cpu.get(c.name) });
  }
}

/**
 * A reference for the S3-backed transfers: the same 256 MiB straight to radosgw from the bench,
 * one PutObject of the whole buffer and one streamed GetObject, no registry in between. It is what
 * one plain request through the AWS SDK for JavaScript gets, not a hard floor: a server that reads
 * with parallel ranged GETs, or a Go client, can download faster than it.
 */
const DIRECT = 's3-direct';
const DIRECT_BUCKET = 'direct-bench';
const withDirect = (ctx) => [...ctx.contenders, ...(ctx.direct ? [{ name: DIRECT }] : [])];

function directClient(ceph) {
  const s3 = new S3Client({
    endpoint: ceph.endpoint,
    region: ceph.region,
    forcePathStyle: true,
    credentials: { accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey },
    // What airlock sets too: the SDK's default checksums cost a CRC pass over every byte.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return {
    async put(key, data) {
      await s3.send(new PutObjectCommand({ Bucket: DIRECT_BUCKET, Key: key, Body: data, ContentLength: data.length }));
    },
    async get(key) {
      const res = await s3.send(new GetObjectCommand({ Bucket: DIRECT_BUCKET, Key: key }));
      let bytes = 0;
      for await (const chunk of res.Body) bytes += chunk.length;
      return bytes;
    },
    destroy: () => s3.destroy(),
  };
}

const WORKLOADS = [
  ['manifests', manifestGets],
  ['blob-1m', smallBlobGets],
  ['push', pushes],
  ['download', downloads],
];

// ---------------------------------------------------------------------------------------------

/**
 * Proof that the shared replicas really store in the object store (not on their local disks): the
 * 256 MiB layer is the object <prefix>/blobs/sha256/<xx>/<hex> of the bucket, whole.
 */
async function checkInBucket(ceph, digest, size) {
  const hex = digest.slice('sha256:'.length);
  const s3 = new S3Client({ endpoint: ceph.endpoint, region: ceph.region, forcePathStyle: true, credentials: { accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey } });
  try {
    const key = `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
    const head = await s3.send(new HeadObjectCommand({ Bucket: AIRLOCK_BUCKET, Key: key }));
    if (head.ContentLength !== size) throw new BenchError(`s3://${AIRLOCK_BUCKET}/${key} holds ${head.ContentLength} bytes, expected ${size}`);
  } catch (e) {
    if (e instanceof BenchError) throw e;
    throw new BenchError(`airlock-shared did not store ${digest} in s3://${AIRLOCK_BUCKET} (${e.name}: ${e.message}): is the shared-backend wiring in this build?`);
  }
}

async function main() {
  const opts = options(process.argv.slice(2));
  if (!existsSync(AIRLOCK_CLI)) throw new Error(`${AIRLOCK_CLI} is missing: build first (npm run build), or use npm run bench:scaleout`);
  const wants = (name) => opts.only.includes(name);
  const shared = wants('airlock-shared') || wants('airlock-shared-x2');
  if (wants('distribution-s3') && !existsSync(DISTRIBUTION_BIN)) throw new Error(`${DISTRIBUTION_BIN} is missing (Debian package docker-registry, or set DISTRIBUTION_BIN)`);

  const startedAt = new Date();
  const root = mkdtempSync(join(tmpdir(), 'airlock-scaleout-'));
  const servers = [];
  let ceph;
  let postgres;
  let direct;
  const results = {
    startedAt: startedAt.toISOString(),
    machine: machineInfo(PROJECT_ROOT, distributionVersion()),
    options: opts,
    loadAverageAtStart: loadAverage(),
    foreignCpuCores: {},
  };
  let cleaned;
  const cleanup = () =>
    (cleaned ??= (async () => {
      await stopAll(servers);
      direct?.destroy();
      await Promise.allSettled([ceph?.stop(), postgres?.stop()]);
      rmSync(root, { recursive: true, force: true });
    })());
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      progress(`${signal}: stopping servers and backends, removing ${root}`);
      cleanup().finally(() => process.exit(130));
    });
  }
  for (const event of ['uncaughtException', 'unhandledRejection']) {
    process.once(event, (e) => {
      process.stderr.write(`scaleout: ${event}: ${describeError(e)}\n`);
      cleanup().finally(() => process.exit(1));
    });
  }

  const usesS3 = shared || wants('distribution-s3');
  const table = new Table([...CONTENDERS.filter(wants), ...(usesS3 ? [DIRECT] : [])]);
  const details = [];
  let failed;
  try {
    if (usesS3) {
      progress('starting Ceph (mon, memstore osd, radosgw)');
      ceph = await startCeph();
      progress(`radosgw at ${ceph.endpoint}`);
      await ceph.createBucket(DIRECT_BUCKET);
      direct = directClient(ceph);
    }
    if (shared) {
      progress('starting PostgreSQL');
      postgres = await startPostgres();
      progress(`PostgreSQL pid ${postgres.pid}`);
    }
    const postgresPids = () => postgres?.pids() ?? [];
    const cephPids = () => ceph?.pids() ?? [];
    const backendPids = () => [...cephPids(), ...postgresPids()];

    const contenders = [];
    const content = buildContent();
    if (wants('airlock-embedded')) {
      const s = await startAirlock({ root: join(root, 'embedded'), name: 'airlock-embedded' });
      servers.push(s);
      contenders.push({ name: 'airlock-embedded', servers: [s], seeded: s });
    }
    if (shared) {
      await ceph.createBucket(AIRLOCK_BUCKET);
      const config = {
        database: { url: postgres.url },
        blobs: {
          s3: { endpoint: ceph.endpoint, bucket: AIRLOCK_BUCKET, region: ceph.region, prefix: '', forcePathStyle: true, accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey, redirect: false },
        },
      };
      // One after the other: the first replica runs the PostgreSQL migrations.
      const a = await startAirlock({ root: join(root, 'shared-a'), name: 'airlock-shared-a', config });
      servers.push(a);
      const b = await startAirlock({ root: join(root, 'shared-b'), name: 'airlock-shared-b', config });
      servers.push(b);
      if (wants('airlock-shared')) contenders.push({ name: 'airlock-shared', servers: [a], seeded: a });
      if (wants('airlock-shared-x2')) contenders.push({ name: 'airlock-shared-x2', servers: [a, b], seeded: wants('airlock-shared') ? undefined : a });
    }
    if (wants('distribution-s3')) {
      await ceph.createBucket(DISTRIBUTION_BUCKET);
      const s = await startDistribution({
        root: join(root, 'distribution-s3'),
        name: 'distribution-s3',
        // Its AWS SDK (Go) panics at start when AWS_CA_BUNDLE is set and the endpoint is plain
        // http ("HTTPClient's transport unsupported type"); the keys come from the config file.
        env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_'))),
        storage: {
          s3: {
            regionendpoint: ceph.endpoint,
            bucket: DISTRIBUTION_BUCKET,
            region: ceph.region,
            accesskey: ceph.accessKeyId,
            secretkey: ceph.secretAccessKey,
            secure: false,
            v4auth: true,
            rootdirectory: '/',
          },
          delete: { enabled: true },
          // Bytes through the registry, as airlock's blobs.s3.redirect: false does.
          redirect: { disable: true },
          // What the Debian package's own config.yml sets.
          cache: { blobdescriptor: 'inmemory' },
        },
      });
      servers.push(s);
      contenders.push({ name: 'distribution-s3', servers: [s], seeded: s });
    }
    for (const c of contenders) c.pids = () => c.servers.map((s) => s.pid);
    progress(servers.map((s) => `${s.name} pid ${s.pid} at ${s.url}`).join('; '));

    // Seeding and checking are not timed, so every store gets them at once. No 1 GiB blob: the
    // object store keeps everything in RAM.
    progress('seeding (257 MiB each)');
    await Promise.all(contenders.filter((c) => c.seeded).map((c) => seed(c.seeded, content, { big: false })));
    if (shared) await checkInBucket(ceph, content.layer256m.digest, content.layer256m.size);
    progress('verifying what every server (every replica) serves');
    await Promise.all(servers.map((s) => verify(s, content, { big: false })));

    const ctx = { contenders, content, opts, table, details, postgresPids, cephPids, direct };
    const pids = () => [...servers.map((s) => s.pid), ...backendPids()];
    const whole = cpuSnapshot(pids());
    for (const [id, run] of WORKLOADS) {
      const before = cpuSnapshot(pids());
      await run(ctx);
      const cores = foreignCpu(before, cpuSnapshot(pids()));
      if (cores === undefined) continue;
      results.foreignCpuCores[id] = Math.round(cores * 100) / 100;
      if (cores > BUSY_CORES) progress(`  WARNING: other processes used ${cores.toFixed(2)} cores during ${id}; its figures are disturbed`);
    }
    results.foreignCpuCores.wholeRun = Math.round(foreignCpu(whole, cpuSnapshot(pids())) * 100) / 100;
  } catch (e) {
    failed = e;
  }

  await cleanup();
  results.serverLogs = Object.fromEntries(servers.map((s) => [s.name, { pid: s.pid, exit: s.exited, lines: s.logCount, tail: s.logLines.slice(-50) }]));
  process.stdout.write(`\n${table.text()}\n`);
  if (opts.markdown) process.stdout.write(`\n${table.markdown()}\n`);
  for (const s of servers) if (s.logCount) process.stderr.write(`\n${s.name} logged ${s.logCount} line(s); last ones:\n${s.logTail(20)}\n`);

  Object.assign(results, { table: table.toJSON(), details, finishedAt: new Date().toISOString() });
  if (failed) results.error = { message: failed.message, detail: failed.detail, stack: failed.stack };
  const file = writeResults(join(PROJECT_ROOT, 'bench', 'results'), startedAt, results, 'scaleout-');
  const busy = results.foreignCpuCores?.wholeRun;
  if (busy > BUSY_CORES) {
    process.stdout.write(`\nWARNING: other processes kept ${busy} cores busy on average during the run (load average at start ${results.loadAverageAtStart.join(' ')}); the figures are not a clean comparison.\n`);
  }
  process.stdout.write(`\nresults: ${file}\n`);
  if (failed) {
    process.stderr.write(`\nSCALEOUT BENCH FAILED: ${describeError(failed)}\n`);
    for (const s of servers) {
      const died = s.exited && !s.exited.stoppedByBench;
      process.stderr.write(`\n--- ${s.name} (pid ${s.pid}) ${died ? `EXITED on its own (${JSON.stringify(s.exited)})` : 'was running until the bench stopped it'}; log tail ---\n${s.logTail()}\n`);
    }
    process.exitCode = 1;
  }
}

main().catch((e) => {
  process.stderr.write(`scaleout: ${describeError(e)}\n`);
  process.exitCode = 1;
});
