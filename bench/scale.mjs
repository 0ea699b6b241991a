#!/usr/bin/env node
// How airlock's cost grows with the work: the same figures on a small and on a large metadata
// database, side by side. Each scale N seeds, straight through the store (SqliteMetadataStore from
// dist/, the class the server uses), N repositories, 2N image manifests (a config and a layer each,
// blobs recorded and linked), and 10N tags: nine per repository, plus one large repository
// (big/release) holding N tags, like a release repository with every version ever mirrored.
// Then, against `node dist/cli.js serve` on that storage:
//   - start-up time (spawn to the first 200 on /v2/; median of 3 starts), RSS idle and after load;
//   - manifest GET by tag at c=16 over 4,000 random tags of the whole set (p99 too), and the store
//     lookup in process over 20,000 random tags (µs per tag, no HTTP, no manifest cache);
//   - the whole catalog paginated (n=1000), the big repository's tags paginated (n=1000):
//     total time and the slowest page;
//   - /api/v1/stats and /metrics (they count what is stored): server CPU per request;
// Wall times stretch on a busy machine; the server CPU figures (from /proc) much less.
//   - the database size on disk.
// Airlock alone: seeding distribution's filesystem layout with a million tag links is not done here.
//
//   npm run bench:scale                       1k and 100k repositories (about 5 minutes on 2 cores)
//   npm run bench:scale -- --scales 1000,10000 --duration 3
import { mkdtempSync, mkdirSync, rmSync, statSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { load } from './lib/load.mjs';
import { cpuSeconds, cpuSnapshot, foreignCpu } from './lib/machine.mjs';
import { PROJECT_ROOT, readMemory, startAirlock, stopAll } from './lib/servers.mjs';
import { MANIFEST_ACCEPT } from './lib/client.mjs';
import { median } from './lib/measure.mjs';

const HELP = `Usage: node bench/scale.mjs [--scales N,M] [--duration SECONDS] [--json FILE]

  --scales N,M    repositories per scale (default 1000,100000); tags 10x, manifests 2x
  --duration S    seconds of the manifest load run (default 5)
  --json FILE     also write every figure and detail as JSON
  --keep DIR      keep each scale's storage in DIR/<N> (and reuse it when it is there: no seeding)
`;
const { values } = parseArgs({
  options: {
    scales: { type: 'string', default: '1000,100000' },
    duration: { type: 'string', default: '5' },
    json: { type: 'string' },
    keep: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const scales = values.scales.split(',').map(Number);
if (scales.some((n) => !(n >= 10))) throw new Error(`--scales: numbers of repositories of at least 10, got ${values.scales}`);
const duration = Number(values.duration);

const { SqliteMetadataStore } = await import(join(PROJECT_ROOT, 'dist', 'storage', 'metadata.js'));
const t0 = performance.now();
const progress = (msg) => process.stderr.write(`[scale ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
const sha = (text) => `sha256:${createHash('sha256').update(text).digest('hex')}`;
const MIB = 1024 * 1024;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const BIG_REPO = 'big/release';
const PAGE = 1000;

/** Repository i's name: spread over 100 organisations, like a mirror of many projects. */
const repoName = (i) => `org-${String(i % 100).padStart(2, '0')}/app-${String(i).padStart(7, '0')}`;
const tagName = (j) => `v1.${Math.floor(j / 100)}.${j % 100}`;

/** A small deterministic PRNG, so both scales draw their random tags the same way. */
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function manifestFor(repo, k) {
  const config = sha(`config ${repo} ${k}`);
  const layer = sha(`layer ${Number(repo.slice(-7)) % 1000}`);
  const doc = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 1234 },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: 30_000_000 }],
  };
  const content = Buffer.from(JSON.stringify(doc));
  return { config, layer, record: { digest: sha(content), mediaType: OCI_MANIFEST, size: content.length, content, subject: null, artifactType: null, annotations: null, blobRefs: [config, layer], manifestRefs: [] } };
}

/** Seeds the store; returns what the measurements need (repository names, random tag picks). */
function seed(dbPath, n) {
  const store = new SqliteMetadataStore(dbPath);
  // Seeding is not measured: one commit per batch, no fsync (the server opens it with its own settings).
  store.db.pragma('synchronous = OFF');
  const batch = (fn) => store.db.transaction(fn)();
  const repos = [];
  const BATCH = 2000;
  for (let from = 0; from < n; from += BATCH) {
    batch(() => {
      for (let i = from; i < Math.min(n, from + BATCH); i++) {
        const repo = i === 0 ? BIG_REPO : repoName(i);
        repos.push(repo);
        const images = [manifestFor(repo, 0), manifestFor(repo, 1)];
        for (const img of images) {
          store.linkBlob(repo, img.config, 1234);
          store.linkBlob(repo, img.layer, 30_000_000);
        }
        // Each manifest with its first tag as a push stores them; the other tags with the statement
        // putManifest uses for a tag (a million putManifest calls would take most of an hour here).
        store.putManifest(repo, images[0].record, tagName(0));
        store.putManifest(repo, images[1].record, tagName(1));
        const tags = i === 0 ? n : 9;
        const repoId = store.findRepoId(repo);
        const now = Date.now();
        for (let j = 2; j < tags; j++) store.q.upsertTag.run(repoId, tagName(j), images[j % 2].record.digest, 0, now);
      }
    });
    if (from % 20_000 === 0) progress(`  seeded ${Math.min(n, from + BATCH)} of ${n} repositories`);
  }
  store.db.pragma('wal_checkpoint(TRUNCATE)');
  store.close();
  return repos;
}

function pickTags(repos, n, count) {
  const rnd = prng(42);
  const picks = [];
  for (let i = 0; i < count; i++) {
    const r = Math.floor(rnd() * repos.length);
    picks.push({ repo: repos[r], tag: tagName(Math.floor(rnd() * (r === 0 ? n : 9))) });
  }
  return picks;
}

/** µs per getTaggedManifest of a random tag, in this process (no HTTP, no manifest cache). */
function storeLookup(dbPath, picks) {
  const store = new SqliteMetadataStore(dbPath);
  try {
    for (const p of picks.slice(0, 1000)) store.getTaggedManifest(p.repo, p.tag); // warm the page cache
    const started = performance.now();
    for (const p of picks) if (!store.getTaggedManifest(p.repo, p.tag)) throw new Error(`no manifest for ${p.repo}:${p.tag}`);
    return ((performance.now() - started) * 1000) / picks.length;
  } finally {
    store.close();
  }
}

async function get(url, headers = {}) {
  const started = performance.now();
  const res = await request(url, { headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  if (res.statusCode !== 200) throw new Error(`GET ${url} answered ${res.statusCode}: ${body.toString().slice(0, 300)}`);
  return { ms: performance.now() - started, headers: res.headers, body };
}

/** Follows Link rel="next" from `path` to the end; checks the count; total and slowest page. */
async function paginate(base, path, key, expected) {
  let next = `${path}?n=${PAGE}`;
  const pages = [];
  let items = 0;
  let previous = '';
  while (next) {
    const r = await get(new URL(next, base));
    const list = JSON.parse(r.body.toString())[key] ?? [];
    if (list.length && list[0] <= previous) throw new Error(`${path}: page starting ${list[0]} does not follow ${previous}`);
    previous = list.at(-1) ?? previous;
    items += list.length;
    pages.push(r.ms);
    const link = r.headers.link;
    next = link ? /<([^>]+)>;\s*rel="next"/.exec(link)?.[1] : undefined;
  }
  if (items !== expected) throw new Error(`${path}: ${items} entries over ${pages.length} pages, expected ${expected}`);
  return { seconds: pages.reduce((a, b) => a + b, 0) / 1000, pages: pages.length, slowestPageMs: Math.max(...pages), medianPageMs: median(pages) };
}

/** load(), but a failed run (timeouts on a machine too busy) is recorded instead of ending the bench. */
async function runLoad(spec) {
  try {
    return await load(spec);
  } catch (e) {
    progress(`  load run failed: ${e.message}`);
    return { rps: NaN, requests: NaN, latencyMs: { p99: NaN }, failed: e.message };
  }
}

async function startOn(root) {
  const started = performance.now();
  const server = await startAirlock({ root, name: 'airlock', startTimeoutMs: 300_000 });
  // CPU seconds the process used to get there: unlike wall time, not stretched by a busy machine.
  return { server, ms: performance.now() - started, cpuMs: cpuSeconds(server.pid) * 1000 };
}

/** Runs fn and adds the server CPU it cost (ms) to its result. */
async function withCpu(server, fn) {
  const before = cpuSeconds(server.pid);
  const r = await fn();
  return { ...r, serverCpuMs: (cpuSeconds(server.pid) - before) * 1000 };
}

async function measureScale(n) {
  const root = values.keep ? join(values.keep, String(n)) : mkdtempSync(join(tmpdir(), `airlock-scale-${n}-`));
  const out = { repositories: n, manifests: 2 * n, tags: 10 * n - 9 };
  try {
    const storage = join(root, 'storage');
    mkdirSync(storage, { recursive: true });
    const dbPath = join(storage, 'airlock.db');
    const seeded = join(root, 'seeded');
    let repos;
    if (existsSync(seeded)) {
      progress(`scale ${n}: reusing the storage seeded in ${root}`);
      repos = Array.from({ length: n }, (_, i) => (i === 0 ? BIG_REPO : repoName(i)));
    } else {
      progress(`scale ${n}: seeding ${n} repositories, ${2 * n} manifests, ${out.tags} tags`);
      const started = performance.now();
      repos = seed(dbPath, n);
      out.seedSeconds = (performance.now() - started) / 1000;
      if (values.keep) writeFileSync(seeded, `${out.seedSeconds}\n`);
    }
    // Schema migrations added since the storage was seeded run here, once, not in a timed start.
    new SqliteMetadataStore(dbPath).close();
    out.dbMiB = statSync(dbPath).size / MIB;
    const picks = pickTags(repos, n, 20_000);
    out.storeLookupUs = storeLookup(dbPath, picks);
    progress(`  seeded in ${out.seedSeconds?.toFixed(1) ?? "(earlier)"} s, database ${out.dbMiB.toFixed(1)} MiB; store lookup ${out.storeLookupUs.toFixed(1)} µs per random tag`);

    // Start-up: three starts, the median; the last one stays up for the rest.
    const starts = [];
    const startCpu = [];
    let server;
    for (let i = 0; i < 3; i++) {
      if (server) await stopAll([server]);
      const s = await startOn(root);
      server = s.server;
      starts.push(s.ms);
      startCpu.push(s.cpuMs);
    }
    out.startupMs = median(starts);
    out.startupCpuMs = median(startCpu);
    out.startupRuns = starts;
    out.rssIdleMiB = readMemory(server.pid).rss / 1024;
    progress(`  start-up ${starts.map((ms) => ms.toFixed(0)).join(', ')} ms; RSS ${out.rssIdleMiB.toFixed(1)} MiB`);

    const before = cpuSnapshot([server.pid]);
    const requests = picks.slice(0, 4000).map((p) => ({ method: 'GET', path: `/v2/${p.repo}/manifests/${p.tag}`, headers: { accept: MANIFEST_ACCEPT } }));
    // Warm-up (JIT, page cache): a few hundred requests, one at a time.
    for (const req of requests.slice(0, 300)) await get(new URL(req.path, server.url), req.headers);
    const serverCpu = cpuSeconds(server.pid);
    const r = await runLoad({
      base: server.url,
      requests,
      connections: 16,
      duration,
      maxRequests: 200_000,
      check: (_s, h) => (h['content-type'] === OCI_MANIFEST ? undefined : `Content-Type ${h['content-type']}`),
    });
    out.manifestRps = r.rps;
    out.manifestP99Ms = r.latencyMs.p99;
    out.manifestServerCpuUsPerRequest = ((cpuSeconds(server.pid) - serverCpu) * 1e6) / r.requests;
    out.rssAfterLoadMiB = readMemory(server.pid).rss / 1024;
    progress(`  manifest GET by tag c=16: ${r.rps.toFixed(0)} req/s, p99 ${r.latencyMs.p99.toFixed(2)} ms`);

    out.catalog = await withCpu(server, () => paginate(server.url, '/v2/_catalog', 'repositories', n));
    progress(`  catalog: ${out.catalog.pages} pages in ${out.catalog.seconds.toFixed(2)} s, slowest ${out.catalog.slowestPageMs.toFixed(1)} ms`);
    out.tagsList = await withCpu(server, () => paginate(server.url, `/v2/${BIG_REPO}/tags/list`, 'tags', n));
    progress(`  tags of ${BIG_REPO}: ${out.tagsList.pages} pages in ${out.tagsList.seconds.toFixed(2)} s, slowest ${out.tagsList.slowestPageMs.toFixed(1)} ms`);
    const stats = [];
    const metrics = [];
    for (let i = 0; i < 3; i++) {
      stats.push((await withCpu(server, () => get(new URL('/api/v1/stats', server.url)))).serverCpuMs);
      metrics.push((await withCpu(server, () => get(new URL('/metrics', server.url)))).serverCpuMs);
      await new Promise((resolve) => setTimeout(resolve, 1100)); // past the scrape cache
    }
    out.statsMs = median(stats);
    out.metricsMs = median(metrics);
    progress(`  server CPU: /api/v1/stats ${out.statsMs.toFixed(1)} ms, /metrics ${out.metricsMs.toFixed(1)} ms`);
    out.rssPeakMiB = readMemory(server.pid).hwm / 1024;
    out.foreignCpuCores = foreignCpu(before, cpuSnapshot([server.pid]));
    await stopAll([server]);
    if (existsSync(`${dbPath}-wal`)) out.walMiB = statSync(`${dbPath}-wal`).size / MIB;
    return out;
  } finally {
    if (!values.keep) rmSync(root, { recursive: true, force: true });
  }
}

const results = [];
for (const n of scales) results.push(await measureScale(n));

const rows = [
  ['seeding through the store (not a served figure)', 's', (r) => r.seedSeconds, 1],
  ['database size', 'MiB', (r) => r.dbMiB, 1],
  ['start-up (spawn to first 200 on /v2/), median of 3', 'ms', (r) => r.startupMs, 0],
  ['start-up, server CPU', 'ms', (r) => r.startupCpuMs, 0],
  ['RSS after start-up', 'MiB', (r) => r.rssIdleMiB, 1],
  ['RSS after the manifest load', 'MiB', (r) => r.rssAfterLoadMiB, 1],
  ['peak RSS (VmHWM)', 'MiB', (r) => r.rssPeakMiB, 1],
  ['store lookup of a random tag, in process', 'µs', (r) => r.storeLookupUs, 1],
  ['manifest GET by random tag, c=16', 'req/s', (r) => r.manifestRps, 0],
  ['manifest GET by random tag, c=16, p99', 'ms', (r) => r.manifestP99Ms, 2],
  ['manifest GET by random tag, server CPU per request', 'µs', (r) => r.manifestServerCpuUsPerRequest, 0],
  [`catalog, all pages (n=${PAGE}): total`, 's', (r) => r.catalog.seconds, 2],
  ['catalog: pages', '', (r) => r.catalog.pages, 0],
  ['catalog: server CPU per page', 'ms', (r) => r.catalog.serverCpuMs / r.catalog.pages, 2],
  ['catalog: median page', 'ms', (r) => r.catalog.medianPageMs, 1],
  ['catalog: slowest page', 'ms', (r) => r.catalog.slowestPageMs, 1],
  [`tags list of ${BIG_REPO} (N tags), all pages: total`, 's', (r) => r.tagsList.seconds, 2],
  ['tags list: pages', '', (r) => r.tagsList.pages, 0],
  ['tags list: server CPU per page', 'ms', (r) => r.tagsList.serverCpuMs / r.tagsList.pages, 2],
  ['tags list: median page', 'ms', (r) => r.tagsList.medianPageMs, 1],
  ['tags list: slowest page', 'ms', (r) => r.tagsList.slowestPageMs, 1],
  ['/api/v1/stats (counts what is stored), server CPU', 'ms', (r) => r.statsMs, 1],
  ['/metrics scrape, server CPU', 'ms', (r) => r.metricsMs, 1],
];
const fmt = (v, d) => (v === undefined || Number.isNaN(v) ? 'n/a' : v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));
const header = `| figure | unit | ${results.map((r) => `${r.repositories.toLocaleString('en-US')} repos`).join(' | ')} | ratio last/first |`;
const lines = [header, `|---|---|${results.map(() => '--:|').join('')}--:|`];
for (const [label, unit, pick, d] of rows) {
  const vals = results.map(pick);
  lines.push(`| ${label} | ${unit} | ${vals.map((v) => fmt(v, d)).join(' | ')} | ${fmt(vals.at(-1) / vals[0], 2)} |`);
}
console.log(`\nscales: ${results.map((r) => `${r.repositories} repositories / ${r.manifests} manifests / ${r.tags} tags`).join('; ')}`);
console.log(`other load on the machine (cores, during each scale's served part): ${results.map((r) => fmt(r.foreignCpuCores, 2)).join(', ')}\n`);
console.log(lines.join('\n'));
if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2));
