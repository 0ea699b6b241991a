#!/usr/bin/env node
// Where a cold pull-through's CPU goes, by thread: airlock in front of a distribution upstream,
// N cold 256 MiB layers pulled one after another (each hashed by the client, then 1.5 s to
// settle), and the CPU seconds of each of airlock's threads per fill, read from
// /proc/<pid>/task/<tid>/stat. The event loop is the process's own thread; of the others, the
// busiest is the hashing thread, the next four V8's helpers (garbage collection, compilation).
// The first fill (a fresh process) is printed apart; the average leaves it out.
//
//   npm run build && node bench/fill-threads.mjs [--fills N] ['--node-args=--flag ...']
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { bytesOf, MiB, sha256 } from './lib/data.mjs';
import { threadCpuSeconds } from './lib/machine.mjs';
import { readMemory, startAirlock, startDistribution, stopAll } from './lib/servers.mjs';

const { values } = parseArgs({ options: { fills: { type: 'string', default: '5' }, 'node-args': { type: 'string', default: '' } } });
const fills = Number(values.fills);
const nodeArgs = values['node-args'].split(' ').filter(Boolean);

/** CPU seconds (user + system) of every thread of `pid`, by thread id. */
function threadCpu(pid) {
  return new Map(readdirSync(`/proc/${pid}/task`).map((tid) => [tid, threadCpuSeconds(pid, tid)]));
}

/** "main=0.41 0.19 0.03 …": the event loop, then the other threads busiest first (≥ 0.01 s). */
function describe(pid, perThread) {
  const main = perThread.get(String(pid)) ?? 0;
  const others = [...perThread].filter(([tid, s]) => tid !== String(pid) && s >= 0.01).map(([, s]) => s).sort((a, b) => b - a);
  return `event loop ${main.toFixed(2)} s; others ${others.map((s) => s.toFixed(2)).join(' ')}`;
}

const root = mkdtempSync(join(tmpdir(), 'airlock-fill-threads-'));
const servers = [];
try {
  const upstream = await startDistribution({ root: join(root, 'upstream'), name: 'upstream' });
  servers.push(upstream);
  const layers = [];
  for (let i = 0; i < fills; i++) {
    const data = bytesOf(`fill-threads-${i}`, 256 * MiB);
    const digest = sha256(data);
    await upstream.client.pushMonolithic('cold/app', data, digest);
    layers.push(digest);
  }
  const airlock = await startAirlock({ root: join(root, 'airlock'), config: { upstreams: [{ prefix: 'up', url: upstream.url, insecure: true }] }, nodeArgs });
  servers.push(airlock);
  const total = new Map();
  for (const [i, digest] of layers.entries()) {
    const before = threadCpu(airlock.pid);
    const r = await airlock.client.download(`/v2/up/cold/app/blobs/${digest}`, { hash: true });
    if (r.digest !== digest) throw new Error(`fill ${i}: got ${r.digest}, want ${digest}`);
    await sleep(1500);
    const spent = new Map([...threadCpu(airlock.pid)].map(([tid, s]) => [tid, s - (before.get(tid) ?? 0)]));
    console.log(`fill ${i}${i === 0 ? ' (fresh process)' : ''}: ${r.seconds.toFixed(3)} s; ${describe(airlock.pid, spent)}`);
    if (i > 0) for (const [tid, s] of spent) total.set(tid, (total.get(tid) ?? 0) + s);
  }
  if (fills > 1) {
    const average = new Map([...total].map(([tid, s]) => [tid, s / (fills - 1)]));
    console.log(`average of fills 1–${fills - 1}: ${describe(airlock.pid, average)}; peak RSS ${Math.round(readMemory(airlock.pid).hwm / 1024)} MiB`);
  }
} finally {
  await stopAll(servers);
  rmSync(root, { recursive: true, force: true });
}
