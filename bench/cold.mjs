#!/usr/bin/env node
// Cold pull-through of 256 MiB layers, airlock next to distribution's proxy, both fresh processes
// in front of the same distribution upstream: round 1 is each server's first large transfer, the
// later rounds are cold blobs in a warm process. Prints wall time and each server's user/system
// CPU and page faults per round, and the medians; the JSON of every round goes to stdout with --json.
//
//   npm run build && node bench/cold.mjs [--rounds N] [--fresh N] [--only airlock|distribution] [--compare DIR]
//   --fresh N repeats it all with N sets of freshly started contenders (the same upstream and layers,
//     each new cache empty) and prints the median first transfer: one fresh process's first transfer
//     swings by 0.3 s from run to run on a shared 2-core VM; the contender going first rotates
//   --compare DIR adds the airlock built in DIR (another checkout, e.g. the parent commit) as a contender
//   --compare-env 'K=V ...' runs the compared build with these variables added (DIR defaults to this checkout)
//   --compare-node-args '--flag ...' runs the compared build with these node/V8 flags
//   --tls serves the upstream over HTTPS (a CA and certificate from `airlock cert`), as registries
//     on the internet are: airlock trusts it by `caFile`, distribution's proxy by SSL_CERT_FILE
//   AIRLOCK_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" node bench/cold.mjs   (profile airlock)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { bytesOf, MiB, sha256 } from './lib/data.mjs';
import { AIRLOCK_CLI, startAirlock, startDistribution, stopAll } from './lib/servers.mjs';
import { Agent, setGlobalDispatcher } from 'undici';
import { median, rotate, settle } from './lib/measure.mjs';
import { count } from './lib/options.mjs';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '6' }, fresh: { type: 'string', default: '1' }, only: { type: 'string' }, json: { type: 'boolean', default: false }, compare: { type: 'string' }, 'compare-env': { type: 'string' }, 'compare-node-args': { type: 'string' }, tls: { type: 'boolean', default: false } },
});
const rounds = count('rounds', values.rounds);
const fresh = count('fresh', values.fresh);
const root = mkdtempSync(join(tmpdir(), 'airlock-cold-'));
const servers = [];

/** user and system CPU seconds of a process so far, and its minor page faults (memory touched first). */
function cpu(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100, faults: Number(f[7]) };
}

/** With --tls: the upstream's certificate, and how each contender trusts its CA. */
function upstreamTls() {
  const dir = join(root, 'tls');
  execFileSync(process.execPath, [AIRLOCK_CLI, 'cert', '--host', 'localhost', '--ip', '127.0.0.1', '--out', dir], { stdio: 'ignore' });
  const caFile = join(dir, 'ca.crt');
  // This process's own requests (seeding, the direct fetches) trust it too.
  setGlobalDispatcher(new Agent({ connect: { ca: readFileSync(caFile) } }));
  return { caFile, serve: { certificate: join(dir, 'server.crt'), key: join(dir, 'server.key') } };
}

/** The contenders of one repetition, freshly started with empty caches (named per repetition). */
async function startContenders(rep, upstreamConfig, tls) {
  const contenders = [];
  const dir = (name) => join(root, `${name}-${rep}`);
  if (values.only !== 'distribution') {
    const a = await startAirlock({ root: dir('airlock'), config: upstreamConfig, nodeArgs: (process.env.AIRLOCK_NODE_ARGS ?? '').split(' ').filter(Boolean) });
    servers.push(a);
    contenders.push({ name: 'airlock', server: a, path: (d) => `/v2/up/cold/app/blobs/${d}` });
  }
  if (values.compare || values['compare-env'] || values['compare-node-args']) {
    // Another build of airlock (a checkout's root, built), e.g. the parent commit: A/B in one run.
    const env = { ...process.env, ...Object.fromEntries((values['compare-env'] ?? '').split(' ').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) };
    const b = await startAirlock({ root: dir('compare'), name: 'airlock-compare', cli: join(resolve(values.compare ?? '.'), 'dist', 'cli.js'), nodeArgs: (values['compare-node-args'] ?? '').split(' ').filter(Boolean), env, config: upstreamConfig });
    servers.push(b);
    contenders.push({ name: 'compared', server: b, path: (d) => `/v2/up/cold/app/blobs/${d}` });
  }
  if (values.only !== 'airlock') {
    const env = tls ? { ...process.env, SSL_CERT_FILE: tls.caFile } : undefined;
    const d = await startDistribution({ root: dir('proxy'), name: 'distribution-proxy', proxy: { remoteurl: upstreamConfig.upstreams[0].url }, env });
    servers.push(d);
    contenders.push({ name: 'distribution', server: d, path: (dg) => `/v2/cold/app/blobs/${dg}` });
  }
  return contenders;
}

/** Every round's cold fetch through each contender, timed, with each one's CPU and page faults. */
async function measureRounds(contenders, upstream, blobs) {
  const results = Object.fromEntries(contenders.map((c) => [c.name, []]));
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    // The round's blob straight from the upstream first, as bench/run.mjs's direct fetch does: the
    // contender going first would otherwise also pay for this client's first large download (its
    // own code not yet optimized) and for the upstream's first read of the blob.
    await upstream.client.download(`/v2/cold/app/blobs/${blobs[round]}`, { hash: true });
    for (const c of order) {
      await settle(servers);
      const before = cpu(c.server.pid);
      const up = cpu(upstream.pid);
      const r = await c.server.client.download(c.path(blobs[round]), { hash: true });
      if (r.digest !== blobs[round]) throw new Error(`${c.name}: body hashes to ${r.digest}`);
      const after = cpu(c.server.pid);
      const upAfter = cpu(upstream.pid);
      // The whole fill's CPU: it goes on (cache file, fsync) after the client has its bytes.
      await settle(servers);
      const settled = cpu(c.server.pid);
      results[c.name].push({
        seconds: r.seconds,
        user: after.user - before.user,
        sys: after.sys - before.sys,
        totalCpu: settled.user + settled.sys - before.user - before.sys,
        upstreamCpu: upAfter.user + upAfter.sys - up.user - up.sys,
        faults: settled.faults - before.faults,
      });
    }
    process.stderr.write(`round ${round + 1}: ${contenders.map((c) => { const x = results[c.name].at(-1); return `${c.name} ${x.seconds.toFixed(3)} s (cpu ${x.user.toFixed(2)}u+${x.sys.toFixed(2)}s, settled ${x.totalCpu.toFixed(2)}, ${x.faults} faults, upstream ${x.upstreamCpu.toFixed(2)})`; }).join('; ')}\n`);
  }
  return results;
}

try {
  const tls = values.tls ? upstreamTls() : undefined;
  const upstream = await startDistribution({ root: join(root, 'upstream'), name: 'upstream', tls: tls?.serve });
  const upstreamConfig = { upstreams: [{ prefix: 'up', url: upstream.url, ...(tls ? { caFile: tls.caFile } : { insecure: true }) }] };
  servers.push(upstream);
  const blobs = [];
  for (let i = 0; i < rounds; i++) {
    const data = bytesOf(`cold-${i}`, 256 * MiB);
    const digest = sha256(data);
    await upstream.client.pushMonolithic('cold/app', data, digest);
    blobs.push(digest);
  }
  // One set of fresh contenders per repetition (--fresh N), all in front of the same upstream and
  // its layers: each new server's cache is empty, so the same layers are cold for it again.
  const repetitions = [];
  for (let rep = 0; rep < fresh; rep++) {
    const contenders = await startContenders(rep, upstreamConfig, tls);
    try {
      // Each repetition lets another contender go first in round 1 (the first transfer is the
      // figure --fresh is for, and the one going first meets a machine that was idle longer).
      const results = await measureRounds(rotate(contenders, rep), upstream, blobs);
      await settle(servers);
      const upstreamBytes = {};
      for (const c of contenders) {
        if (c.name === 'distribution') continue;
        // airlock counts what it took from the upstream: above 1x, fills fetched part of a layer
        // again (the disk fell too far behind the client: the rest comes by a range request).
        const stats = JSON.parse((await c.server.client.fetch('GET', '/api/v1/stats')).body.toString());
        upstreamBytes[c.name] = stats.cache.bytesFromUpstream / (rounds * 256 * MiB);
      }
      repetitions.push({ results, upstreamBytes });
    } finally {
      await stopAll(contenders.map((c) => c.server));
      for (const c of contenders) {
        servers.splice(servers.indexOf(c.server), 1);
        rmSync(c.server.root, { recursive: true, force: true });
      }
    }
  }
  for (const name of Object.keys(repetitions[0].results)) {
    const firsts = repetitions.map((r) => r.results[name][0].seconds);
    const rest = repetitions.flatMap((r) => r.results[name].slice(1));
    const shares = repetitions.map((r) => r.upstreamBytes[name]).filter((x) => x !== undefined);
    const upstreamBytes = shares.length === 0 ? '' : `, upstream bytes ${Math.max(...shares).toFixed(2)}x the layers`;
    const first = fresh > 1 ? `first (median of ${fresh} fresh processes: ${firsts.map((x) => x.toFixed(3)).join(' ')}) ${median(firsts).toFixed(3)} s` : `first ${firsts[0].toFixed(3)} s`;
    const warm = rest.length > 0 ? `; warm-process median ${median(rest.map((x) => x.seconds)).toFixed(3)} s, cpu during ${median(rest.map((x) => x.user)).toFixed(2)}u+${median(rest.map((x) => x.sys)).toFixed(2)}s, settled ${median(rest.map((x) => x.totalCpu)).toFixed(2)} s` : '';
    console.log(`${name.padEnd(13)} ${first}${warm}${upstreamBytes}`);
  }
  if (values.json) console.log(JSON.stringify(fresh > 1 ? repetitions.map((r) => r.results) : repetitions[0].results));
} finally {
  await stopAll(servers);
  rmSync(root, { recursive: true, force: true });
}
