// Helpers shared by the benches: waiting for servers to go quiet, taking turns between the compared
// servers, medians, and one measured load run (warm-up discarded, CPU time of server and generator
// kept with the result).
import { setTimeout as sleep } from 'node:timers/promises';
import { load } from './load.mjs';
import { cpuSeconds } from './machine.mjs';

/**
 * Waits until none of `servers` has used CPU for `quietMs` (at most `maxMs`): distribution's proxy
 * stores a blob with a second upstream fetch in the background after the client's copy is sent,
 * and a "warm" download must not race it. Returns the milliseconds waited.
 */
export async function settle(servers, quietMs = 500, maxMs = 20_000) {
  const started = performance.now();
  const cpu = () => servers.map((s) => cpuSeconds(s.pid)).join();
  let last = cpu();
  let since = performance.now();
  while (performance.now() - since < quietMs && performance.now() - started < maxMs) {
    await sleep(100);
    const now = cpu();
    if (now !== last) [last, since] = [now, performance.now()];
  }
  return performance.now() - started;
}

/** `xs` turned left by `n` places: who goes first, rotated from one repetition to the next. */
export const rotate = (xs, n) => xs.map((_, i) => xs[(i + n) % xs.length]);

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * Runs `fn(server)` for each of `ctx.servers`, alternating which goes first from one call to the
 * next so that neither always runs on a "warmer" or "colder" machine.
 */
let turn = 0;
export async function eachServer(ctx, fn) {
  const order = turn++ % 2 === 0 ? ctx.servers : [...ctx.servers].reverse();
  for (const server of order) {
    ctx.progress(`  ${server.name}`);
    await fn(server);
    server.assertAlive();
  }
}

/**
 * A discarded short run first (JIT, caches, connection setup), then the measured run. The CPU
 * time the server and the load generator used is kept with the result: on a 2-core machine both
 * compete for the same cores, and CPU per request shows whether a figure is the server's limit
 * or the generator's. `alsoPids` adds processes whose CPU is recorded too (e.g. an upstream).
 */
export async function measured(ctx, server, spec, alsoPids = {}) {
  if (ctx.opts.warmup > 0) await load({ ...spec, duration: ctx.opts.warmup, maxRequests: Math.ceil(ctx.opts.maxRequests / 10) });
  const serverCpu = cpuSeconds(server.pid);
  const benchCpu = cpuSeconds(process.pid);
  const others = Object.fromEntries(Object.entries(alsoPids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  const r = await load({ ...spec, duration: ctx.opts.duration, maxRequests: ctx.opts.maxRequests });
  r.serverCpuSeconds = cpuSeconds(server.pid) - serverCpu;
  r.benchCpuSeconds = cpuSeconds(process.pid) - benchCpu;
  r.serverCpuMsPerRequest = (r.serverCpuSeconds * 1000) / r.requests;
  for (const [name, before] of Object.entries(others)) r[`${name}CpuSeconds`] = cpuSeconds(alsoPids[name]) - before;
  return r;
}
