#!/usr/bin/env node
// Air-gap throughput: `airlock import` and `airlock export` of an OCI layout next to
// `skopeo copy oci:… docker://…` of the same layout into CNCF distribution (and into airlock),
// same data, same run. See bench/README.md ("airgap.mjs").
//
//   npm run build && node bench/airgap.mjs [--size 1GiB] [--layers 4] [--json]
//
// The layout is generated once (incompressible AES-CTR content, like real gzip layers) and read
// by every contender in turn; it sits in the page cache for all of them alike. Peak RSS of each
// airlock command is sampled from /proc every 50 ms: streaming keeps it flat whatever the size.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, writeSync, renameSync, rmSync, writeFileSync, statSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunksOf, MiB, GiB } from './lib/data.mjs';
import { AIRLOCK_CLI, DISTRIBUTION_BIN, freePort, PROJECT_ROOT, readMemory } from './lib/servers.mjs';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};
const parseSize = (text) => {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(text);
  if (!m) throw new Error(`--size ${text}: expected e.g. 512MiB or 2GiB`);
  return Math.round(Number(m[1]) * { b: 1, kib: 1024, mib: MiB, gib: GiB }[(m[2] ?? 'b').toLowerCase()]);
};
const SIZE = parseSize(option('size', '1GiB'));
const LAYERS = Number(option('layers', '4'));
const SKOPEO = process.env.AIRLOCK_SKOPEO ?? '/usr/bin/skopeo';

const root = mkdtempSync(join(tmpdir(), 'airlock-bench-airgap-'));
const children = new Set();
const cleanup = () => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
};
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

const sha256 = (data) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Writes an OCI layout holding one image of LAYERS incompressible layers, SIZE bytes in all. */
function generateLayout(dir) {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  const writeBlob = (data) => {
    const digest = sha256(data);
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
    return { digest, size: data.length };
  };
  const layers = [];
  for (let i = 0; i < LAYERS; i++) {
    const size = Math.floor(SIZE / LAYERS);
    const temp = join(dir, `layer-${i}`);
    const fd = openSync(temp, 'w');
    const hash = createHash('sha256');
    for (const chunk of chunksOf(`airgap-layer-${i}-${SIZE}`, size)) {
      hash.update(chunk);
      writeSync(fd, chunk);
    }
    closeSync(fd);
    const digest = `sha256:${hash.digest('hex')}`;
    rmSync(join(dir, 'blobs', 'sha256', digest.slice(7)), { force: true });
    renameSync(temp, join(dir, 'blobs', 'sha256', digest.slice(7)));
    layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size });
  }
  const config = writeBlob(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, config: {} })),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers,
    }),
  );
  const m = writeBlob(manifest);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  );
  return layers.reduce((sum, l) => sum + l.size, 0) + config.size + m.size;
}

/** Runs a command to completion; returns seconds and the peak RSS (MiB) seen every 50 ms. */
function timed(command, argv, options = {}) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    children.add(child);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    let peak = 0;
    const sampler = setInterval(() => {
      const mem = readMemory(child.pid);
      if (mem && mem.rss > peak) peak = mem.rss;
    }, 50);
    child.once('exit', (code) => {
      clearInterval(sampler);
      children.delete(child);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) reject(new Error(`${command} ${argv.join(' ')} exited ${code}:\n${out.slice(-3000)}`));
      else resolve({ seconds, peakRssMiB: Math.round(peak / 1024), output: out });
    });
  });
}

/** Starts a server process and waits until /v2/ answers. */
async function startServer(command, argv, url) {
  const child = spawn(command, argv, { stdio: 'ignore' });
  children.add(child);
  for (let i = 0; i < 300; i++) {
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      return child;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${command} did not answer on ${url}`);
}

function dirBytes(dir) {
  let total = 0;
  for (const name of readdirSync(dir, { recursive: true })) {
    const info = statSync(join(dir, String(name)));
    if (info.isFile()) total += info.size;
  }
  return total;
}

const layout = join(root, 'layout');
console.log(`generating an OCI layout: ${LAYERS} layer(s), ${(SIZE / GiB).toFixed(2)} GiB in ${root}`);
const bytes = generateLayout(layout);
const results = [];
const record = (name, what, r) => {
  const mbps = bytes / 1e6 / r.seconds;
  results.push({ name, what, seconds: Number(r.seconds.toFixed(2)), mbPerSecond: Number(mbps.toFixed(1)), peakRssMiB: r.peakRssMiB });
  console.log(`${name.padEnd(44)} ${r.seconds.toFixed(2).padStart(7)} s ${mbps.toFixed(1).padStart(8)} MB/s   peak RSS ${r.peakRssMiB ?? '-'} MiB`);
};

// distribution and a serving airlock, both on fresh storage, both on 127.0.0.1.
const distPort = await freePort();
const distStorage = join(root, 'distribution');
writeFileSync(
  join(root, 'distribution.yml'),
  `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${JSON.stringify(distStorage)}\nhttp:\n  addr: 127.0.0.1:${distPort}\n`,
);
await startServer(DISTRIBUTION_BIN, ['serve', join(root, 'distribution.yml')], `http://127.0.0.1:${distPort}`);
const airPort = await freePort();
await startServer(process.execPath, [AIRLOCK_CLI, 'serve', '--listen', `127.0.0.1:${airPort}`, '--storage', join(root, 'served'), '--log-level', 'error'], `http://127.0.0.1:${airPort}`);

const node = process.execPath;
const cli = (...a) => [AIRLOCK_CLI, ...a];
// Run from the temp dir: no config/airlock.yaml there, so built-in defaults plus the flags.
const env = { cwd: root };

record('skopeo copy oci: → distribution', 'skopeo', await timed(SKOPEO, ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://127.0.0.1:${distPort}/bench/app:latest`]));
record('airlock import (storage, no server)', 'import', await timed(node, cli('import', layout, '--prefix', 'bench/app', '--storage', join(root, 'store')), env));
record('airlock export → directory', 'export-dir', await timed(node, cli('export', 'bench/app:latest', '--to', join(root, 'export'), '--storage', join(root, 'store')), env));
record('airlock export → tar', 'export-tar', await timed(node, cli('export', 'bench/app:latest', '--to', join(root, 'export.tar'), '--storage', join(root, 'store')), env));
record('airlock import of the tar (storage)', 'import-tar', await timed(node, cli('import', join(root, 'export.tar'), '--storage', join(root, 'store-tar')), env));
record('airlock import --to a serving airlock', 'import-http', await timed(node, cli('import', layout, '--prefix', 'bench/app', '--to', `http://127.0.0.1:${airPort}`), env));
record('skopeo copy oci: → airlock', 'skopeo-airlock', await timed(SKOPEO, ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://127.0.0.1:${airPort}/bench/skopeo:latest`]));

// Sanity: everyone stored all the bytes.
const stored = dirBytes(join(root, 'store', 'blobs'));
if (stored < bytes - 64 * 1024) throw new Error(`airlock import stored ${stored} bytes of ${bytes}`);
const exported = dirBytes(join(root, 'export', 'blobs'));
if (exported < bytes) throw new Error(`export wrote ${exported} bytes of ${bytes}`);

const load = (await import('node:os')).loadavg();
const summary = { date: new Date().toISOString(), bytes, layers: LAYERS, loadAverage: load, results };
mkdirSync(join(PROJECT_ROOT, 'bench', 'results'), { recursive: true });
const file = join(PROJECT_ROOT, 'bench', 'results', `airgap-${summary.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify(summary, null, 2));
console.log(`load average during the run: ${load.map((l) => l.toFixed(1)).join(' ')} (2 cores); written ${file}`);
if (args.includes('--json')) console.log(JSON.stringify(summary));
process.exit(0);
