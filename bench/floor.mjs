#!/usr/bin/env node
// How close to a direct upstream fetch can any Node.js process in the middle get on this machine?
// Fetches a 256 MiB blob from a distribution upstream directly, then through:
//   passthrough   bench/lib/passthrough.mjs: undici to the client, chunk by chunk, nothing else;
//   +sha256       the same, hashing every chunk (what verifying a cache fill costs at the least);
//   airlock       a cold airlock pull-through fill (a fresh blob each round): hashes, streams to
//                 the client and writes the cache file;
//   distribution  a cold fetch through distribution's proxy (the same fresh blob), for scale.
// Each round measures direct and the four in turn; the client hashes every body (as the main
// bench's cold fetch does). Prints per-round seconds and the medians, as ratios to direct and to
// distribution's proxy.
//
//   npm run build && node bench/floor.mjs [--rounds N] [--fresh]     (default 5; about a minute)
//   --fresh starts every process in the middle anew for each round, so each fetch through it is its
//     first large transfer (the main bench's fresh-process figure): the floor for that figure. The
//     order of the four rotates from round to round.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RegistryClient } from './lib/client.mjs';
import { bytesOf, MiB, sha256 } from './lib/data.mjs';
import { freePort, launcherSettings, PROJECT_ROOT, startAirlock, startDistribution, stopAll } from './lib/servers.mjs';
import { median, rotate, settle } from './lib/measure.mjs';
import { count } from './lib/options.mjs';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, fresh: { type: 'boolean', default: false } } });
const rounds = count('rounds', values.rounds);
const root = mkdtempSync(join(tmpdir(), 'airlock-floor-'));
const children = [];
const servers = [];

async function passthrough(upstreamUrl, mode) {
  const port = await freePort();
  // Under airlock's launcher settings (glibc's malloc tuning), as airlock runs: the same runtime.
  const node = [process.execPath, join(PROJECT_ROOT, 'bench/lib/passthrough.mjs'), upstreamUrl, String(port), mode];
  const child = spawn('sh', ['-c', `${launcherSettings()}; exec "$0" "$@"`, ...node], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await once(child.stdout, 'data');
  return { client: new RegistryClient(`passthrough-${mode}`, `http://127.0.0.1:${port}`), stop: () => child.kill() };
}

/** The four processes in the middle, started anew (`n` names their directories), in the order fetched. */
async function startMiddle(upstreamUrl, n) {
  const airlock = await startAirlock({ root: join(root, `airlock-${n}`), config: { upstreams: [{ prefix: 'up', url: upstreamUrl, insecure: true }] } });
  const proxy = await startDistribution({ root: join(root, `proxy-${n}`), name: 'distribution-proxy', proxy: { remoteurl: upstreamUrl } });
  servers.push(airlock, proxy);
  const plain = await passthrough(upstreamUrl, 'plain');
  const hashing = await passthrough(upstreamUrl, 'hash');
  const stopServer = async (s) => {
    await stopAll([s]);
    servers.splice(servers.indexOf(s), 1);
  };
  return [
    { name: 'passthrough', client: plain.client, path: (d) => `/v2/floor/app/blobs/${d}`, stop: plain.stop },
    { name: '+sha256', client: hashing.client, path: (d) => `/v2/floor/app/blobs/${d}`, stop: hashing.stop },
    { name: 'airlock', client: airlock.client, path: (d) => `/v2/up/floor/app/blobs/${d}`, stop: () => stopServer(airlock) },
    { name: 'distribution', client: proxy.client, path: (d) => `/v2/floor/app/blobs/${d}`, stop: () => stopServer(proxy) },
  ];
}

try {
  const upstream = await startDistribution({ root: join(root, 'upstream'), name: 'upstream' });
  servers.push(upstream);
  // One blob for direct and the pass-throughs (nothing is cached there), one per round for the caches.
  const blobs = [];
  for (let i = 0; i <= rounds; i++) {
    const data = bytesOf(`floor-${i}`, 256 * MiB);
    const digest = sha256(data);
    await upstream.client.pushMonolithic('floor/app', data, digest);
    blobs.push(digest);
  }
  let middle = values.fresh ? undefined : await startMiddle(upstream.url, 0);
  const seconds = { direct: [], passthrough: [], '+sha256': [], airlock: [], distribution: [] };
  const fetch = async (name, client, path, digest) => {
    const r = await client.download(path, { hash: true });
    if (r.digest !== digest) throw new Error(`${name}: the body hashes to ${r.digest}, not ${digest}`);
    seconds[name].push(r.seconds);
  };
  for (let round = 1; round <= rounds; round++) {
    if (values.fresh) {
      for (const m of middle ?? []) await m.stop();
      middle = await startMiddle(upstream.url, round);
    }
    // The pass-throughs cache nothing: they share one blob; the caches get a new one each round.
    const shared = blobs[0];
    await fetch('direct', upstream.client, `/v2/floor/app/blobs/${shared}`, shared);
    const order = values.fresh ? rotate(middle, round) : middle;
    for (const m of order) {
      const digest = m.name === 'airlock' || m.name === 'distribution' ? blobs[round] : shared;
      await fetch(m.name, m.client, m.path(digest), digest);
      // A cache goes on storing its copy (distribution's proxy fetches it again) after the client
      // has its bytes: the next fetch is timed once every server is quiet.
      if (digest !== shared) await settle(servers);
    }
    process.stderr.write(`round ${round}: ${Object.entries(seconds).map(([k, v]) => `${k} ${v.at(-1).toFixed(3)} s`).join(', ')}\n`);
  }
  const direct = median(seconds.direct);
  const proxy = median(seconds.distribution);
  for (const [name, xs] of Object.entries(seconds)) {
    console.log(`${name.padEnd(12)} median ${median(xs).toFixed(3)} s   ${(median(xs) / direct).toFixed(2)} x direct   ${(median(xs) / proxy).toFixed(2)} x distribution's proxy`);
  }
} finally {
  for (const child of children) child.kill();
  await stopAll(servers);
  rmSync(root, { recursive: true, force: true });
}
