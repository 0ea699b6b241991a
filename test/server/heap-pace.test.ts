// The heap's growth between full garbage collections (src/heap-pace.ts), seen from the outside:
// `airlock serve` started with V8's --trace-gc-verbose prints the factor of every new heap limit
// ("[HeapController] Limit: old size: … KB, new limit: … KB (3.5)"). A cold pull-through makes
// the server collect; every limit set meanwhile must use the factor, or the operator's own.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEAP_GROWING_PERCENT, paceHeapForStreaming } from '../../src/heap-pace.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { hashBlob } from '../pullthrough/support.js';
import { startCli, type CliProcess } from './cli.js';

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

/**
 * Starts `airlock serve` under `nodeArgs`, pulls the layers cold through it, and returns the
 * growing factor of every heap limit V8 set meanwhile.
 */
async function heapFactorsDuringColdPulls(nodeArgs: string[]): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-heap-'));
  dirs.push(dir);
  const config = join(dir, 'airlock.yaml');
  writeFileSync(config, JSON.stringify({ storage: join(dir, 'storage'), upstreams: [{ prefix: 'up', url: registry.url, insecure: true }] }));
  const server = await startCli(['--config', config, '--listen', '127.0.0.1:0'], { nodeArgs: ['--trace-gc-verbose', ...nodeArgs] });
  servers.push(server);
  const before = server.stdout().length;
  for (const layer of image.layerDigests) {
    expect(await hashBlob(server.url, 'up/big/image', layer)).toMatchObject({ status: 200, digest: layer, bytes: LAYER, complete: true });
  }
  const limits = server.stdout().slice(before).matchAll(/\[HeapController\] Limit: .*\((\d+\.\d)\)/g);
  return [...limits].map((m) => Number(m[1]));
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
