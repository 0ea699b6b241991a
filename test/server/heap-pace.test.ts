// The memory of a streaming server, seen from the outside during cold pull-throughs:
// - the heap's growth between full garbage collections (src/heap-pace.ts): `airlock serve` started
//   with V8's --trace-gc-verbose prints the factor of every new heap limit ("[HeapController]
//   Limit: old size: … KB, new limit: … KB (3.5)"); every limit set meanwhile must use the factor,
//   or the operator's own;
// - glibc's malloc, tuned by the `airlock` executable's launcher lines (src/cli.ts): the heap that
//   holds every socket read is advised for huge pages, as the kernel shows in /proc/<pid>/smaps
//   (`hg` in the VmFlags of a `[heap]` mapping); and a node under the launcher's settings reuses
//   the memory of 1 MiB file-read buffers (export, import, verification) instead of mapping and
//   faulting in each one anew (its minor page faults while it reads a file again).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEAP_GROWING_PERCENT, paceHeapForStreaming } from '../../src/heap-pace.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { hashBlob } from '../pullthrough/support.js';
import { CLI, startCli, type CliProcess } from './cli.js';

const LAYER = 128 * 1024 * 1024;

let registry: Distribution;
let image: PushedImage;
const dirs: string[] = [];
const servers: CliProcess[] = [];

beforeAll(async () => {
  registry = await startDistribution();
  image = await pushImage(registry.url, 'big/image', 'v1', { layers: 3, layerSize: LAYER });
  image.blobs.clear();
}, 120_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.kill()));
  await registry?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Starts `airlock serve` (under `node [nodeArgs]`, or as the executable) in front of the registry. */
async function startPullThrough(options: { nodeArgs?: string[]; asExecutable?: boolean; env?: Record<string, string> }): Promise<CliProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-heap-'));
  dirs.push(dir);
  const config = join(dir, 'airlock.yaml');
  writeFileSync(config, JSON.stringify({ storage: join(dir, 'storage'), upstreams: [{ prefix: 'up', url: registry.url, insecure: true }] }));
  const server = await startCli(['--config', config, '--listen', '127.0.0.1:0'], options);
  servers.push(server);
  return server;
}

async function pullCold(server: CliProcess, layers: string[]): Promise<void> {
  for (const layer of layers) {
    expect(await hashBlob(server.url, 'up/big/image', layer)).toMatchObject({ status: 200, digest: layer, bytes: LAYER, complete: true });
  }
}

/**
 * Starts `airlock serve` under `nodeArgs`, pulls the layers cold through it, and returns the
 * growing factor of every heap limit V8 set meanwhile.
 */
async function heapFactorsDuringColdPulls(nodeArgs: string[]): Promise<number[]> {
  const server = await startPullThrough({ nodeArgs: ['--trace-gc-verbose', ...nodeArgs] });
  const before = server.stdout().length;
  await pullCold(server, image.layerDigests);
  const limits = server.stdout().slice(before).matchAll(/\[HeapController\] Limit: .*\((\d+\.\d)\)/g);
  return [...limits].map((m) => Number(m[1]));
}

/** The VmFlags of each `[heap]` mapping (glibc's malloc heap) of the process. */
function heapMappingFlags(pid: number): string[][] {
  const flags: string[][] = [];
  let inHeap = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inHeap = line.trimEnd().endsWith('[heap]');
    else if (inHeap && line.startsWith('VmFlags:')) flags.push(line.slice('VmFlags:'.length).trim().split(/\s+/));
  }
  return flags;
}

/** Pulls one layer cold through a server started one way or the other; its heap mappings' flags after. */
async function mallocHeapAfterColdPull(asExecutable: boolean, env?: Record<string, string>): Promise<string[][]> {
  const server = await startPullThrough({ asExecutable, env });
  await pullCold(server, image.layerDigests.slice(0, 1));
  return heapMappingFlags(server.child.pid!);
}

describe('heap pacing of a streaming server', () => {
  it(`\`airlock serve\` lets its heap grow ${1 + HEAP_GROWING_PERCENT / 100} × between full collections during cold pulls`, async () => {
    const factors = await heapFactorsDuringColdPulls([]);
    expect(factors.length).toBeGreaterThan(0);
    expect(new Set(factors)).toEqual(new Set([1 + HEAP_GROWING_PERCENT / 100]));
  }, 120_000);

  it("keeps the operator's own `node --heap-growing-percent=N`", async () => {
    const factors = await heapFactorsDuringColdPulls(['--heap-growing-percent=150']);
    expect(factors.length).toBeGreaterThan(0);
    expect(new Set(factors)).toEqual(new Set([2.5]));
    expect(paceHeapForStreaming(['--heap_growing_percent=0'])).toBe(false);
  }, 120_000);
});

/** The shell statements of dist/cli.js's launcher line before its `exec node "$0" "$@"`. */
function launcherSettings(): string {
  const line = readFileSync(CLI, 'utf8').split('\n')[1]!;
  expect(line.startsWith('//bin/true;')).toBe(true);
  return line.slice('//bin/true;'.length, line.lastIndexOf('; exec node'));
}

/** Reads `file` twice in 1 MiB chunks, as export and import do; the minor page faults of the second read. */
const READ_AGAIN = `
const { createReadStream } = require('node:fs');
(async () => {
  let faults = 0;
  for (let pass = 0; pass < 2; pass++) {
    const before = process.resourceUsage().minorPageFault;
    for await (const chunk of createReadStream(process.argv[1], { highWaterMark: 1024 * 1024 })) void chunk;
    faults = process.resourceUsage().minorPageFault - before;
  }
  console.log(faults);
})();
`;

describe('malloc tuned by the airlock executable', () => {
  it('reuses the memory of 1 MiB read buffers under the launcher\'s settings', () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-malloc-'));
    dirs.push(dir);
    const file = join(dir, 'blob');
    const size = 64 * 1024 * 1024;
    writeFileSync(file, Buffer.alloc(size, 7));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'GLIBC_TUNABLES'));
    const run = spawnSync('sh', ['-c', `${launcherSettings()}; exec "$0" -e "$1" "$2"`, process.execPath, READ_AGAIN, file], { env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    // Mapped anew, every page of every buffer faults: size / 4 KiB. Reused: a few hundred.
    expect(Number(run.stdout.trim())).toBeLessThan(size / 4096 / 10);
  });

  it('backs the heap of socket buffers with huge pages when started as `airlock`', async () => {
    const heaps = await mallocHeapAfterColdPull(true);
    expect(heaps.length).toBeGreaterThan(0);
    expect(heaps.some((flags) => flags.includes('hg'))).toBe(true);
  }, 60_000);

  it('leaves malloc as it is under a plain `node dist/cli.js` (the operator chooses)', async () => {
    const heaps = await mallocHeapAfterColdPull(false);
    expect(heaps.length).toBeGreaterThan(0);
    expect(heaps.some((flags) => flags.includes('hg'))).toBe(false);
  }, 60_000);

  it("keeps the operator's own GLIBC_TUNABLES when started as `airlock`", async () => {
    const heaps = await mallocHeapAfterColdPull(true, { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' });
    expect(heaps.length).toBeGreaterThan(0);
    expect(heaps.some((flags) => flags.includes('hg'))).toBe(false);
  }, 60_000);
});
