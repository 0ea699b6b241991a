#!/usr/bin/env node
// How close to a direct upstream fetch can any Node.js process in the middle get on this machine?
// Fetches a 256 MiB blob from a distribution upstream directly, then through:
//   passthrough   bench/lib/passthrough.mjs: undici to the client, chunk by chunk, nothing else;
//   +sha256       the same, hashing every chunk (what verifying a cache fill costs at the least);
//   airlock       a cold airlock pull-through fill (a fresh blob each round): hashes, streams to
//                 the client and writes the cache file.
// Each round measures direct and the three in turn; the client hashes every body (as the main
// bench's cold fetch does). Prints per-round seconds and the medians, as ratios to direct.
//
//   npm run build && node bench/floor.mjs [--rounds N]     (default 5; about a minute)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RegistryClient } from './lib/client.mjs';
import { bytesOf, MiB, sha256 } from './lib/data.mjs';
import { freePort, PROJECT_ROOT, startAirlock, startDistribution, stopAll } from './lib/servers.mjs';
import { median } from './lib/measure.mjs';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' } } });
const rounds = Number(values.rounds);
const root = mkdtempSync(join(tmpdir(), 'airlock-floor-'));
const children = [];
const servers = [];

async function passthrough(upstreamUrl, mode) {
  const port = await freePort();
  const child = spawn(process.execPath, [join(PROJECT_ROOT, 'bench/lib/passthrough.mjs'), upstreamUrl, String(port), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await once(child.stdout, 'data');
  return new RegistryClient(`passthrough-${mode}`, `http://127.0.0.1:${port}`);
}


try {
  const upstream = await startDistribution({ root: join(root, 'upstream'), name: 'upstream' });
  servers.push(upstream);
  // One blob for direct and the pass-throughs (nothing is cached there), one per round for airlock.
  const blobs = [];
  for (let i = 0; i <= rounds; i++) {
    const data = bytesOf(`floor-${i}`, 256 * MiB);
    const digest = sha256(data);
    await upstream.client.pushMonolithic('floor/app', data, digest);
    blobs.push(digest);
  }
  const airlock = await startAirlock({ root: join(root, 'airlock'), config: { upstreams: [{ prefix: 'up', url: upstream.url, insecure: true }] } });
  servers.push(airlock);
  const through = { passthrough: await passthrough(upstream.url, 'plain'), '+sha256': await passthrough(upstream.url, 'hash') };

  const seconds = { direct: [], passthrough: [], '+sha256': [], airlock: [] };
  const fetch = async (name, client, path, digest) => {
    const r = await client.download(path, { hash: true });
    if (r.digest !== digest) throw new Error(`${name}: the body hashes to ${r.digest}, not ${digest}`);
    seconds[name].push(r.seconds);
  };
  for (let round = 1; round <= rounds; round++) {
    const shared = blobs[0];
    await fetch('direct', upstream.client, `/v2/floor/app/blobs/${shared}`, shared);
    for (const [name, client] of Object.entries(through)) await fetch(name, client, `/v2/floor/app/blobs/${shared}`, shared);
    await fetch('airlock', airlock.client, `/v2/up/floor/app/blobs/${blobs[round]}`, blobs[round]);
    process.stderr.write(`round ${round}: ${Object.entries(seconds).map(([k, v]) => `${k} ${v.at(-1).toFixed(3)} s`).join(', ')}\n`);
    // Let airlock finish writing its copy before the next round is timed.
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  const direct = median(seconds.direct);
  for (const [name, xs] of Object.entries(seconds)) {
    console.log(`${name.padEnd(12)} median ${median(xs).toFixed(3)} s   ${(median(xs) / direct).toFixed(2)} x direct`);
  }
} finally {
  for (const child of children) child.kill();
  await stopAll(servers);
  rmSync(root, { recursive: true, force: true });
}
