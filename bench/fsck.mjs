#!/usr/bin/env node
// How long does `airlock fsck` take on a large store? Builds a store of --blobs small blobs
// (default 100k, 1–8 KiB each) and --manifests manifests (default 20k, each referencing 5 blobs of
// its repository; 200 repositories), written straight through the storage layer, then runs the
// check the way `airlock fsck` does on a stopped store, and prints items/s (blobs re-hashed +
// manifests re-hashed) and bytes/s. A second pass runs on a warm page cache. --large N adds N blobs
// of 64 MiB (a layer-sized store: MiB/s is then the figure). Each pass also prints how busy the
// event loop was (fsck runs inside a serving process: what it leaves of the loop, its clients get).
//
//   npm run build && node bench/fsck.mjs [--blobs N] [--manifests N] [--large N] [--keep DIR]
//   (defaults take about a minute to build and a few seconds per pass)
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fsck } from '../dist/lifecycle/fsck.js';
import { fsckBlobs } from '../dist/lifecycle/fsck-blobs.js';
import { FsBlobStore } from '../dist/storage/blobstore.js';
import { SqliteMetadataStore } from '../dist/storage/metadata.js';

const { values } = parseArgs({
  options: { blobs: { type: 'string', default: '100000' }, manifests: { type: 'string', default: '20000' }, large: { type: 'string', default: '0' }, keep: { type: 'string' } },
});
const largeCount = Number(values.large);
const LARGE = 64 * 1024 * 1024;
const blobCount = Number(values.blobs);
const manifestCount = Number(values.manifests);
const REPOS = 200;
const storage = values.keep ?? mkdtempSync(join(tmpdir(), 'airlock-bench-fsck-'));
mkdirSync(storage, { recursive: true });

const digestOf = (data) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const rate = (n, seconds) => `${Math.round(n / seconds).toLocaleString('en')}/s`;

function build() {
  const started = Date.now();
  const blobs = new FsBlobStore(storage);
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  // Building is not what is measured: no fsync per row, rows in a few large transactions
  // (the store's private handle, reached from plain JS for this alone).
  meta.db.pragma('synchronous = OFF');
  const inBatches = (count, body) => {
    for (let start = 0; start < count; start += 10_000) meta.db.transaction(() => body(start, Math.min(count, start + 10_000)))();
  };
  const byRepo = Array.from({ length: REPOS }, () => []);
  let bytes = 0;
  const made = new Set();
  // One random pool sliced per blob, plus a counter for uniqueness: cheap to make, distinct digests.
  const pool = randomBytes(1 << 20);
  inBatches(blobCount, (from, to) => { for (let i = from; i < to; i++) {
    const size = 1024 + ((i * 7919) % (7 * 1024));
    const offset = (i * 104729) % (pool.length - size);
    const data = Buffer.concat([Buffer.from(`blob ${i}\n`), pool.subarray(offset, offset + size)]);
    const digest = digestOf(data);
    const path = blobs.blobPath(digest);
    const dir = join(path, '..');
    if (!made.has(dir)) {
      mkdirSync(dir, { recursive: true });
      made.add(dir);
    }
    writeFileSync(path, data);
    const repo = i % REPOS;
    meta.linkBlob(`bench/repo${repo}`, digest, data.length);
    byRepo[repo].push({ digest, size: data.length });
    bytes += data.length;
    if (i % 20000 === 0 && i > 0) process.stderr.write(`  ${i} blobs written\n`);
  } });
  inBatches(manifestCount, (from, to) => { for (let i = from; i < to; i++) {
    const repo = i % REPOS;
    const own = byRepo[repo];
    const refs = Array.from({ length: 5 }, (_, k) => own[(i * 5 + k) % own.length]);
    const content = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...refs[0] },
        layers: refs.slice(1).map((r) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...r })),
        annotations: { n: String(i) },
      }),
    );
    const digest = digestOf(content);
    meta.putManifest(
      `bench/repo${repo}`,
      {
        digest,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        size: content.length,
        content,
        subject: null,
        artifactType: null,
        annotations: null,
        blobRefs: [...new Set(refs.map((r) => r.digest))],
        manifestRefs: [],
      },
      `v${i}`,
    );
  } });
  // Layer-sized blobs: one random 64 MiB buffer, its first bytes made unique per blob.
  const large = largeCount > 0 ? randomBytes(LARGE) : undefined;
  for (let i = 0; i < largeCount; i++) {
    large.write(`large blob ${i}\n`, 0);
    const digest = digestOf(large);
    mkdirSync(join(blobs.blobPath(digest), '..'), { recursive: true });
    writeFileSync(blobs.blobPath(digest), large);
    meta.linkBlob('bench/large', digest, LARGE);
    bytes += LARGE;
  }
  meta.close();
  return { bytes, seconds: (Date.now() - started) / 1000 };
}

async function pass(label) {
  const blobs = new FsBlobStore(storage);
  await blobs.init();
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  const loop = performance.eventLoopUtilization();
  const report = await fsck({ storage, meta, blobs: fsckBlobs(storage, blobs), withBlobLock: (_d, fn) => fn(), isFilling: () => false, live: false }, { repair: false });
  const busy = performance.eventLoopUtilization(loop).utilization;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  const cpuSeconds = (used.user + used.system) / 1e6;
  meta.close();
  const items = report.checked.blobs + report.checked.manifests;
  console.log(
    `${label.padEnd(6)} ${seconds.toFixed(2)}s  ${rate(items, seconds)} items (${report.checked.blobs} blobs + ${report.checked.manifests} manifests), ` +
      `${(report.checked.bytes / seconds / 2 ** 20).toFixed(1)} MiB/s hashed, ${report.checked.files} files walked, ` +
      `${report.checked.references} references followed, ${report.problems.length} problems; ` +
      `CPU ${cpuSeconds.toFixed(2)}s (${rate(items, cpuSeconds)} items per CPU second); ` +
      `event loop busy ${Math.round(busy * 100)} % of the pass`,
  );
  if (report.problems.length > 0) throw new Error(`fsck found problems in a store built clean: ${JSON.stringify(report.problems.slice(0, 3))}`);
}

try {
  console.log(`fsck bench: ${blobCount} blobs, ${manifestCount} manifests in ${REPOS} repositories, ${largeCount} blobs of 64 MiB (${storage})`);
  const built = build();
  console.log(`built in ${built.seconds.toFixed(1)}s (${(built.bytes / 2 ** 20).toFixed(1)} MiB of blobs)`);
  await pass('first');
  await pass('warm');
} finally {
  if (!values.keep) rmSync(storage, { recursive: true, force: true });
}
