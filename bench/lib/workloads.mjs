// The workloads. Each is { id, title, run(ctx) } and records figures through ctx.report; run.mjs
// runs them in list order against the same two seeded servers.
//
// ctx = {
//   servers,   // [airlock, distribution] ServerProcess objects (url, client, pid, rss sampler)
//   content,   // what seed.mjs pushed (digests, sizes, bytes of the small blobs)
//   opts,      // duration, maxRequests, warmup, downloads, pushRepeats
//   report,    // Report: add({ id, label, unit, better, server, value }), detail({...})
//   progress,  // (message) => void, to stderr
//   root,      // the run's temp directory (removed at the end)
//   track,     // (server) => server: registers an extra ServerProcess for cleanup
//   phases,    // [{ name, from, to }] in performance.now() ms: start, seed, verify, each workload
// }
//
// The pull-through workload lives in its own module (pull-through.mjs): it starts a third registry
// as the shared upstream and its own pair of caches in front of it (all through ctx.track).
import { createHash } from 'node:crypto';
import { cpuSeconds } from './machine.mjs';
import { BenchError, MANIFEST_ACCEPT } from './client.mjs';
import { bytesOf, MiB } from './data.mjs';
import { eachServer, measured, median } from './measure.mjs';
import { pullThrough } from './pull-through.mjs';
import { CHUNK, REPOS } from './seed.mjs';

const MB = 1e6; // throughput is reported in decimal megabytes per second

const manifestPulls = {
  id: 'manifests',
  title: 'manifest GET by tag / HEAD by digest',
  async run(ctx) {
    const { manifests } = ctx.content;
    const byDigest = new Map(manifests.map((m) => [m.blob.digest, m]));
    // The answer must be the manifest pushed, as its own media type, with its exact length.
    const check = (_status, h) => {
      const m = byDigest.get(h['docker-content-digest']);
      if (!m) return `Docker-Content-Digest ${h['docker-content-digest']} is not a seeded manifest`;
      if (h['content-type'] !== m.mediaType) return `Content-Type ${h['content-type']} for a ${m.mediaType}`;
      if (Number(h['content-length']) !== m.blob.size) return `Content-Length ${h['content-length']} for ${m.blob.size} bytes`;
      return undefined;
    };
    const headers = { accept: MANIFEST_ACCEPT };
    // Each connection alternates between the OCI and the Docker schema2 image.
    const ops = [
      { key: 'get-tag', label: 'manifest GET by tag', requests: manifests.map((m) => ({ method: 'GET', path: `/v2/${m.repo}/manifests/${m.tag}`, headers })) },
      { key: 'head-digest', label: 'manifest HEAD by digest', requests: manifests.map((m) => ({ method: 'HEAD', path: `/v2/${m.repo}/manifests/${m.blob.digest}`, headers })) },
    ];
    for (const op of ops) {
      for (const connections of [1, 16, 64]) {
        ctx.progress(`${op.label}, c=${connections}`);
        await eachServer(ctx, async (server) => {
          const r = await measured(ctx, server, { base: server.url, requests: op.requests, connections, check });
          const id = `manifest.${op.key}.c${connections}`;
          ctx.report.add({ id: `${id}.rps`, label: `${op.label}, c=${connections}`, unit: 'req/s', server: server.name, value: r.rps });
          ctx.report.add({ id: `${id}.p99`, label: `${op.label}, c=${connections}, p99`, unit: 'ms', better: 'lower', server: server.name, value: r.latencyMs.p99 });
          ctx.report.detail({ id, server: server.name, ...r });
        });
      }
    }
  },
};

const smallBlobPulls = {
  id: 'blob-1m',
  title: 'blob GET, 1 MiB layer, c=16',
  async run(ctx) {
    const layer = ctx.content.layer1m;
    const check = (_status, h) => {
      if (h['docker-content-digest'] !== layer.digest) return `Docker-Content-Digest ${h['docker-content-digest']}`;
      if (Number(h['content-length']) !== layer.size) return `Content-Length ${h['content-length']}`;
      return undefined;
    };
    const connections = 16;
    ctx.progress(`blob GET 1 MiB, c=${connections}`);
    await eachServer(ctx, async (server) => {
      const r = await measured(ctx, server, {
        base: server.url,
        requests: [{ method: 'GET', path: `/v2/${REPOS.oci}/blobs/${layer.digest}` }],
        connections,
        check,
        minBytes: layer.size, // every response must have carried the whole body
      });
      ctx.report.add({ id: 'blob1m.c16.rps', label: `blob GET 1 MiB, c=${connections}`, unit: 'req/s', server: server.name, value: r.rps });
      ctx.report.add({ id: 'blob1m.c16.mbps', label: `blob GET 1 MiB, c=${connections}, throughput`, unit: 'MB/s', server: server.name, value: (r.requests * layer.size) / r.seconds / MB });
      ctx.report.detail({ id: 'blob1m.c16', server: server.name, ...r });
    });
  },
};

const largeBlobDownload = {
  id: 'blob-256m',
  title: 'blob GET, 256 MiB layer downloaded whole (best of N)',
  async run(ctx) {
    const layer = ctx.content.layer256m;
    ctx.progress(`blob GET 256 MiB whole, best of ${ctx.opts.downloads}`);
    await eachServer(ctx, async (server) => {
      const runs = [];
      const serverCpuSeconds = [];
      for (let i = 0; i < ctx.opts.downloads; i++) {
        const cpu = cpuSeconds(server.pid);
        const r = await server.client.download(`/v2/${REPOS.oci}/blobs/${layer.digest}`);
        serverCpuSeconds.push(Number((cpuSeconds(server.pid) - cpu).toFixed(2)));
        if (r.bytes !== layer.size) throw new BenchError(`${server.name}: 256 MiB download returned ${r.bytes} bytes`, { headers: r.headers });
        runs.push(r.seconds);
      }
      const best = Math.min(...runs);
      ctx.report.add({ id: 'blob256m.mbps', label: 'blob GET 256 MiB whole, best', unit: 'MB/s', server: server.name, value: layer.size / best / MB });
      ctx.report.detail({ id: 'blob256m', server: server.name, seconds: runs, serverCpuSeconds });
    });
  },
};

const pushes = {
  id: 'push',
  title: 'push a 256 MiB blob: monolithic and chunked (median of N alternating runs, and best)',
  async run(ctx) {
    const size = 256 * MiB;
    for (const mode of ['monolithic', 'chunked']) {
      ctx.progress(`push 256 MiB ${mode}, ${ctx.opts.pushRepeats} alternating runs`);
      const times = new Map(ctx.servers.map((s) => [s.name, []]));
      const cpu = new Map(ctx.servers.map((s) => [s.name, []]));
      for (let rep = 0; rep < ctx.opts.pushRepeats; rep++) {
        // Fresh content each time, so no server can skip work for a blob it already has; the
        // digest is computed before the clock starts, as a real client knows it up front.
        const data = bytesOf(`push-${mode}-${rep}-${Date.now()}`, size);
        const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
        await eachServer(ctx, async (server) => {
          const c = server.client;
          const serverCpu = cpuSeconds(server.pid);
          const started = performance.now();
          if (mode === 'monolithic') {
            await c.pushMonolithic(REPOS.push, data, digest);
          } else {
            const chunks = (function* () {
              for (let o = 0; o < size; o += CHUNK) yield data.subarray(o, o + CHUNK);
            })();
            await c.pushChunked(REPOS.push, chunks, digest);
          }
          const seconds = (performance.now() - started) / 1000;
          cpu.get(server.name).push(Number((cpuSeconds(server.pid) - serverCpu).toFixed(2)));
          const head = await c.fetch('HEAD', `/v2/${REPOS.push}/blobs/${digest}`);
          if (Number(head.headers['content-length']) !== size || head.headers['docker-content-digest'] !== digest) {
            throw new BenchError(`${server.name}: pushed blob ${digest} reads back wrong`, { headers: head.headers });
          }
          times.get(server.name).push(seconds);
        });
      }
      for (const server of ctx.servers) {
        const runs = times.get(server.name);
        const label = `push 256 MiB ${mode}${mode === 'chunked' ? ' (8 MiB PATCHes)' : ' (POST + PUT)'}`;
        // The median is the figure: one push lasts about a second and lands on either side of the
        // other server's by chance (page cache, writeback); the best is kept for comparison.
        ctx.report.add({ id: `push.${mode}.median.mbps`, label: `${label}, median of ${runs.length}`, unit: 'MB/s', server: server.name, value: size / median(runs) / MB });
        ctx.report.add({ id: `push.${mode}.mbps`, label: `${label}, best`, unit: 'MB/s', server: server.name, value: size / Math.min(...runs) / MB });
        ctx.report.detail({ id: `push.${mode}`, server: server.name, seconds: runs, serverCpuSeconds: cpu.get(server.name) });
      }
    }
  },
};

const streamMemory = {
  id: 'stream-rss',
  title: 'server RSS while streaming a 1 GiB blob',
  async run(ctx) {
    const big = ctx.content.big;
    ctx.progress('RSS while streaming 1 GiB');
    await eachServer(ctx, async (server) => {
      server.rss.sample();
      const before = server.rss.samples.at(-1)[1];
      const from = performance.now();
      const r = await server.client.download(`/v2/${REPOS.big}/blobs/${big.digest}`);
      server.rss.sample();
      const w = server.rss.window(from, performance.now());
      if (r.bytes !== big.size) throw new BenchError(`${server.name}: 1 GiB download returned ${r.bytes} bytes`, { headers: r.headers });
      if (w.count < 3) ctx.progress(`  note: only ${w.count} RSS samples during the stream (${r.seconds.toFixed(2)} s)`);
      const add = (id, label, value) => ctx.report.add({ id, label, unit: 'MiB', better: 'lower', server: server.name, value });
      add('stream1g.rss.before', 'RSS before streaming 1 GiB', before / 1024);
      add('stream1g.rss.min', 'RSS while streaming 1 GiB, min', w.min / 1024);
      add('stream1g.rss.max', 'RSS while streaming 1 GiB, max', w.max / 1024);
      // The stream's speed is kept out of the figures: the blob was written a minute or more
      // earlier and may have left the page cache, so it measures the disk as much as the server.
      ctx.report.detail({ id: 'stream1g', server: server.name, seconds: r.seconds, mbps: big.size / r.seconds / MB, rssSamples: w.count, rssBeforeKiB: before, rssMinKiB: w.min, rssMaxKiB: w.max });
    });
  },
};

/** Last on purpose: peak resident memory over everything above (seeding included), and when. */
const peakMemory = {
  id: 'peak-rss',
  title: 'peak RSS of each server process over the whole run',
  async run(ctx) {
    for (const server of ctx.servers) {
      server.rss.sample();
      const all = server.rss.window();
      ctx.report.add({ id: 'rss.peak.sampled', label: 'peak RSS, whole run (100 ms samples)', unit: 'MiB', better: 'lower', server: server.name, value: all.max / 1024 });
      ctx.report.add({ id: 'rss.peak.hwm', label: 'peak RSS, whole run (kernel VmHWM)', unit: 'MiB', better: 'lower', server: server.name, value: server.rss.hwm / 1024 });
      const during = ctx.phases?.find((p) => all.maxAt >= p.from && all.maxAt < p.to)?.name;
      ctx.report.detail({ id: 'rss', server: server.name, samples: all.count, peakKiB: all.max, peakDuring: during, minKiB: all.min, hwmKiB: server.rss.hwm });
    }
  },
};

export const workloads = [manifestPulls, smallBlobPulls, largeBlobDownload, pushes, streamMemory, pullThrough, peakMemory];
