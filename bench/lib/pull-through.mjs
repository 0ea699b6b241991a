// Workload 4: pull-through. A third registry, a plain distribution instance with its own temp
// storage, plays the shared upstream. In front of it, with empty caches:
//   - airlock with upstreams: [{ prefix: 'up', url: <upstream>, insecure: true }], so the local
//     repository up/upstream/app is the upstream's upstream/app;
//   - distribution in proxy mode (proxy: { remoteurl: <upstream> }), serving upstream/app as is.
// Each figure is airlock-through vs distribution-proxy, with the same request sent straight to the
// upstream ("direct") as the reference value.
//
//   1. cold manifest GET by tag (the first request for each tag), latency;
//   2. cold GET of the 256 MiB layer (first request, SHA-256 of the body checked), MB/s and seconds;
//   3. warm GET of the same layer, best of N, MB/s;
//   4. warm manifest GET by tag and HEAD by digest under autocannon at c=16.
// airlock's X-Cache header proves each cold request was a MISS and each warm one a HIT. After a
// cold blob fetch the bench waits until all three servers are idle: distribution's proxy stores
// its copy with a second upstream fetch in the background, which must not overlap the next timing.
// The three servers stay up until the bench's cleanup (their CPU then counts as the bench's own).
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BenchError, MANIFEST_ACCEPT } from './client.mjs';
import { eachServer, measured, median, settle } from './measure.mjs';
import { cpuSeconds } from './machine.mjs';
import { bytesOf, MiB, sha256 } from './data.mjs';
import { CHUNK, MT } from './seed.mjs';
import { startAirlock, startDistribution } from './servers.mjs';

const MB = 1e6;
/** The upstream's repository, and the prefix airlock maps onto the upstream. */
const UPSTREAM_REPO = 'upstream/app';
const PREFIX = 'up';
const PLAIN_REPO = 'plain/app';
const CONNECTIONS = 16;
/** Further cold 256 MiB layers fetched through each warm process; the median is the figure. */
const WARM_PROCESS_COLD = 5;
/**
 * Pairs of freshly started caches whose first large transfer is timed (the first pair is the one
 * the rest of the workload uses); the median is the figure. One fresh process's first transfer
 * moves by 0.3 s from run to run on a shared 2-core VM.
 */
const FRESH_PAIRS = 3;

/**
 * A pair of empty caches in front of `upstream`: airlock (prefix `up`) and distribution's proxy,
 * tagged with the name each reports under and the repository each serves the upstream's as.
 */
async function startCaches(ctx, base, upstream, suffix) {
  const airlock = ctx.track(
    await startAirlock({ root: join(base, `airlock${suffix}`), name: `airlock-through${suffix}`, config: { upstreams: [{ prefix: PREFIX, url: upstream.url, insecure: true }] } }),
  );
  const proxy = ctx.track(await startDistribution({ root: join(base, `distribution${suffix}`), name: `distribution-proxy${suffix}`, proxy: { remoteurl: upstream.url } }));
  return [Object.assign(airlock, { reportAs: 'airlock', repo: `${PREFIX}/${UPSTREAM_REPO}` }), Object.assign(proxy, { reportAs: 'distribution', repo: UPSTREAM_REPO })];
}

/** The two images of the main content set, under one repository with one tag each. */
function upstreamImages(content) {
  return [
    { tag: 'oci', label: 'OCI manifest', mediaType: MT.OCI_MANIFEST, blob: content.ociManifest },
    { tag: 'docker', label: 'Docker schema2', mediaType: MT.DOCKER_MANIFEST, blob: content.dockerManifest },
  ];
}

/**
 * The upstream's two images pushed into a plain repository of airlock-through: the cached 256 MiB
 * layer mounted from the proxied repository, the small blobs pushed.
 */
async function seedPlainCopy(airlock, content, images) {
  const c = airlock.client;
  await c.fetch('POST', `/v2/${PLAIN_REPO}/blobs/uploads/?mount=${content.layer256m.digest}&from=${PREFIX}/${UPSTREAM_REPO}`, { expect: [201] });
  for (const b of [content.ociConfig, content.layer1m, content.dockerConfig, content.layer64k]) await c.pushMonolithic(PLAIN_REPO, b.data, b.digest);
  for (const img of images) await c.putManifest(PLAIN_REPO, img.tag, img.mediaType, img.blob);
}

async function seedUpstream(upstream, content) {
  const c = upstream.client;
  const repo = UPSTREAM_REPO;
  for (const b of [content.ociConfig, content.layer1m, content.dockerConfig, content.layer64k]) await c.pushMonolithic(repo, b.data, b.digest);
  const big = content.layer256m.data;
  await c.pushChunked(
    repo,
    (function* () {
      for (let o = 0; o < big.length; o += CHUNK) yield big.subarray(o, Math.min(o + CHUNK, big.length));
    })(),
    content.layer256m.digest,
  );
  for (const img of upstreamImages(content)) await c.putManifest(repo, img.tag, img.mediaType, img.blob);
}

/** airlock must say MISS on a cold request and HIT on a warm one; distribution has no such header. */
function cacheProblem(server, headers, want) {
  if (server.reportAs !== 'airlock') return undefined;
  const got = headers['x-cache'];
  return got === want ? undefined : `X-Cache ${got} where ${want} was expected`;
}

function expectCache(server, headers, want, what) {
  const problem = cacheProblem(server, headers, want);
  if (problem) throw new BenchError(`${server.name}: ${what}: ${problem}`, { headers });
}

/** Records one figure: the direct value first, so the printed line carries it. */
function addFigure(ctx, fig, values) {
  for (const server of ['direct', 'airlock', 'distribution']) {
    if (values[server] !== undefined) ctx.report.add({ ...fig, server, value: values[server] });
  }
}

/** GET a manifest by tag, timed, checked against what the upstream was given. */
async function getManifest(server, img) {
  const started = performance.now();
  const res = await server.client.fetch('GET', `/v2/${server.repo}/manifests/${img.tag}`, { headers: { accept: MANIFEST_ACCEPT } });
  const ms = performance.now() - started;
  const h = res.headers;
  if (h['content-type'] !== img.mediaType || h['docker-content-digest'] !== img.blob.digest || !res.body.equals(img.blob.data)) {
    throw new BenchError(`${server.name}: GET ${server.repo}:${img.tag} did not return the upstream's manifest`, { headers: h, body: res.body.toString().slice(0, 500) });
  }
  return { ms, headers: h };
}

/** GET the 256 MiB layer whole; hashed when `hash` (the cold fetch must be proved correct). */
async function getLayer(server, layer, { hash }) {
  const r = await server.client.download(`/v2/${server.repo}/blobs/${layer.digest}`, { hash });
  if (r.bytes !== layer.size) throw new BenchError(`${server.name}: 256 MiB layer returned ${r.bytes} bytes`, { headers: r.headers });
  if (hash && r.digest !== layer.digest) throw new BenchError(`${server.name}: 256 MiB layer arrived with digest ${r.digest}, expected ${layer.digest}`, { headers: r.headers });
  return r;
}

export const pullThrough = {
  id: 'pull-through',
  title: 'pull-through: airlock and distribution (proxy mode) in front of the same upstream',
  async run(ctx) {
    const base = join(ctx.root, 'pull-through');
    const { content } = ctx;
    const layer = content.layer256m;
    const images = upstreamImages(content);

    const upstream = ctx.track(await startDistribution({ root: join(base, 'upstream'), name: 'upstream' }));
    Object.assign(upstream, { reportAs: 'direct', repo: UPSTREAM_REPO });
    ctx.progress(`upstream (distribution) pid ${upstream.pid} at ${upstream.url}: seeding ${UPSTREAM_REPO}`);
    await seedUpstream(upstream, content);
    // More 256 MiB layers, each fetched cold once through each server after its first transfer.
    const coldLayers = [];
    for (let i = 0; i < (ctx.opts.quick ? 1 : WARM_PROCESS_COLD); i++) {
      const data = bytesOf(`pull-through-cold-${i}`, 256 * MiB);
      const digest = sha256(data);
      await upstream.client.pushMonolithic(UPSTREAM_REPO, data, digest);
      coldLayers.push({ digest, size: data.length });
    }

    const [airlock, proxy] = await startCaches(ctx, base, upstream, '');
    ctx.progress(`airlock-through pid ${airlock.pid} at ${airlock.url}; distribution-proxy pid ${proxy.pid} at ${proxy.url}`);

    const pair = { ...ctx, servers: [airlock, proxy] };
    const trio = { ...ctx, servers: [airlock, proxy, upstream] };

    // 1. Cold manifests: the first request for each tag. The direct GET is taken before, between
    // and after the two cold ones (so the upstream is in the same state for both); its median is
    // the reference.
    for (const img of images) {
      ctx.progress(`cold manifest GET by tag (${img.label}), first request`);
      const cold = {};
      const direct = [(await getManifest(upstream, img)).ms];
      await eachServer(pair, async (server) => {
        const upstreamCpu = cpuSeconds(upstream.pid);
        const r = await getManifest(server, img);
        expectCache(server, r.headers, 'MISS', `first GET ${server.repo}:${img.tag}`);
        cold[server.reportAs] = r.ms;
        ctx.report.detail({ id: `pullthrough.manifest.cold.${img.tag}`, server: server.reportAs, ms: r.ms, xCache: r.headers['x-cache'], upstreamCpuSeconds: cpuSeconds(upstream.pid) - upstreamCpu });
        direct.push((await getManifest(upstream, img)).ms);
      });
      ctx.report.detail({ id: `pullthrough.manifest.cold.${img.tag}`, server: 'direct', ms: direct });
      addFigure(ctx, { id: `pullthrough.manifest.cold.${img.tag}.ms`, label: `pull-through manifest GET by tag, cold, ${img.label}`, unit: 'ms', better: 'lower' }, { direct: median(direct), ...cold });
    }

    // 2. Cold 256 MiB layer: the first request to each cache, body hashed by the bench (so are
    // the direct fetches, to keep the comparison even). Direct before, between and after; median.
    ctx.progress('cold blob GET 256 MiB (first request, SHA-256 checked)');
    const cold = {};
    const directRuns = [(await getLayer(upstream, layer, { hash: true })).seconds];
    await eachServer(pair, async (server) => {
      const upstreamCpu = cpuSeconds(upstream.pid);
      const serverCpu = cpuSeconds(server.pid);
      const r = await getLayer(server, layer, { hash: true });
      expectCache(server, r.headers, 'MISS', 'first GET of the 256 MiB layer');
      cold[server.reportAs] = r.seconds;
      ctx.report.detail({
        id: 'pullthrough.blob256m.cold',
        server: server.reportAs,
        seconds: r.seconds,
        xCache: r.headers['x-cache'],
        serverCpuSeconds: cpuSeconds(server.pid) - serverCpu,
        upstreamCpuSeconds: cpuSeconds(upstream.pid) - upstreamCpu,
      });
      // distribution-proxy goes on storing its copy after the client's is sent; let it finish
      // before anything else is timed.
      ctx.report.detail({ id: 'pullthrough.blob256m.cold.settle', server: server.reportAs, ms: await settle([upstream, airlock, proxy]) });
      directRuns.push((await getLayer(upstream, layer, { hash: true })).seconds);
    });
    ctx.report.detail({ id: 'pullthrough.blob256m.cold', server: 'direct', seconds: directRuns });

    // 2a. The same first transfer through more pairs of freshly started caches (none with
    // --quick), each pair stopped and removed once measured; the figure is the median of all pairs.
    const firsts = { airlock: [cold.airlock], distribution: [cold.distribution] };
    for (let i = 1; i < (ctx.opts.quick ? 1 : FRESH_PAIRS); i++) {
      const fresh = await startCaches(ctx, base, upstream, `-fresh-${i}`);
      ctx.progress(`cold blob GET 256 MiB, first request, fresh pair ${i + 1} of ${FRESH_PAIRS}`);
      try {
        await settle([upstream, ...fresh]);
        await eachServer({ ...ctx, servers: fresh }, async (server) => {
          const r = await getLayer(server, layer, { hash: true });
          expectCache(server, r.headers, 'MISS', `first GET of the 256 MiB layer (fresh pair ${i + 1})`);
          firsts[server.reportAs].push(r.seconds);
          ctx.report.detail({ id: 'pullthrough.blob256m.cold.freshPair', pair: i + 1, server: server.reportAs, seconds: r.seconds, xCache: r.headers['x-cache'] });
          await settle([upstream, ...fresh]);
        });
      } finally {
        await Promise.all(fresh.map((server) => server.stop()));
        for (const server of fresh) rmSync(server.root, { recursive: true, force: true });
      }
    }
    const coldSeconds = { direct: median(directRuns), airlock: median(firsts.airlock), distribution: median(firsts.distribution) };
    const mbps = (seconds) => layer.size / seconds / MB;
    const pairs = firsts.airlock.length;
    const freshLabel = pairs > 1 ? `median of ${pairs} fresh pairs` : 'one fresh pair';
    addFigure(ctx, { id: 'pullthrough.blob256m.cold.mbps', label: `pull-through blob GET 256 MiB, cold (${freshLabel})`, unit: 'MB/s' }, Object.fromEntries(Object.entries(coldSeconds).map(([k, v]) => [k, mbps(v)])));
    addFigure(ctx, { id: 'pullthrough.blob256m.cold.seconds', label: `pull-through blob GET 256 MiB, cold, fresh process (its first large transfer), ${freshLabel}, time`, unit: 's', better: 'lower' }, coldSeconds);

    // 2b. Cold 256 MiB layers in a warm process: each server's first large transfer is behind it;
    // one new layer per round, the servers alternating, hashed by the bench; the median of each.
    ctx.progress(`cold blob GET 256 MiB in a warm process, ${coldLayers.length} new layers, median`);
    const warmCold = { airlock: [], distribution: [] };
    const warmColdCpu = { airlock: [], distribution: [] };
    for (const cl of coldLayers) {
      await eachServer(pair, async (server) => {
        const serverCpu = cpuSeconds(server.pid);
        const r = await getLayer(server, cl, { hash: true });
        expectCache(server, r.headers, 'MISS', 'first GET of a further 256 MiB layer');
        warmCold[server.reportAs].push(r.seconds);
        await settle([upstream, airlock, proxy]);
        // The whole fill: distribution's second upstream fetch and both caches' files included.
        warmColdCpu[server.reportAs].push(Math.round((cpuSeconds(server.pid) - serverCpu) * 100) / 100);
      });
    }
    for (const server of ['airlock', 'distribution']) {
      ctx.report.detail({ id: 'pullthrough.blob256m.coldWarmProcess', server, seconds: warmCold[server], serverCpuSecondsSettled: warmColdCpu[server] });
    }
    addFigure(
      ctx,
      { id: 'pullthrough.blob256m.coldWarmProcess.seconds', label: `pull-through blob GET 256 MiB, cold, warm process, median of ${coldLayers.length}`, unit: 's', better: 'lower' },
      { airlock: median(warmCold.airlock), distribution: median(warmCold.distribution) },
    );

    // 3. Warm 256 MiB layer: best of N, counted but not hashed, exactly like the plain blob-256m
    // workload, so the figures compare with it.
    // The upstream's CPU time per download shows that each one was served from the cache.
    const settledMs = await settle([upstream, airlock, proxy]);
    ctx.progress(`warm blob GET 256 MiB, best of ${ctx.opts.downloads} (servers idle after ${Math.round(settledMs)} ms)`);
    const warm = {};
    await eachServer(trio, async (server) => {
      const runs = [];
      const upstreamCpu = [];
      for (let i = 0; i < ctx.opts.downloads; i++) {
        const before = cpuSeconds(upstream.pid);
        const r = await getLayer(server, layer, { hash: false });
        expectCache(server, r.headers, 'HIT', 'GET of the cached 256 MiB layer');
        runs.push(r.seconds);
        upstreamCpu.push(Math.round((cpuSeconds(upstream.pid) - before) * 100) / 100);
      }
      warm[server.reportAs] = mbps(Math.min(...runs));
      ctx.report.detail({ id: 'pullthrough.blob256m.warm', server: server.reportAs, seconds: runs, upstreamCpuSeconds: upstreamCpu, settledMs });
    });
    addFigure(ctx, { id: 'pullthrough.blob256m.warm.mbps', label: 'pull-through blob GET 256 MiB, warm, best', unit: 'MB/s' }, warm);

    // 4. Warm manifests under load: every answer checked, and airlock's must all be HITs.
    const byDigest = new Map(images.map((img) => [img.blob.digest, img]));
    const checkFor = (server) => (_status, h) => {
      const img = byDigest.get(h['docker-content-digest']);
      if (!img) return `Docker-Content-Digest ${h['docker-content-digest']} is not an upstream manifest`;
      if (h['content-type'] !== img.mediaType) return `Content-Type ${h['content-type']} for a ${img.mediaType}`;
      if (Number(h['content-length']) !== img.blob.size) return `Content-Length ${h['content-length']} for ${img.blob.size} bytes`;
      return cacheProblem(server, h, 'HIT');
    };
    const headers = { accept: MANIFEST_ACCEPT };
    const ops = [
      { key: 'get-tag', label: 'pull-through manifest GET by tag, warm', requests: (s) => images.map((img) => ({ method: 'GET', path: `/v2/${s.repo}/manifests/${img.tag}`, headers })) },
      { key: 'head-digest', label: 'pull-through manifest HEAD by digest, warm', requests: (s) => images.map((img) => ({ method: 'HEAD', path: `/v2/${s.repo}/manifests/${img.blob.digest}`, headers })) },
    ];
    for (const op of ops) {
      ctx.progress(`${op.label}, c=${CONNECTIONS}`);
      const rps = {};
      const p99 = {};
      await eachServer(trio, async (server) => {
        const also = server === upstream ? {} : { upstream: upstream.pid };
        const r = await measured(ctx, server, { base: server.url, requests: op.requests(server), connections: CONNECTIONS, check: checkFor(server) }, also);
        rps[server.reportAs] = r.rps;
        p99[server.reportAs] = r.latencyMs.p99;
        ctx.report.detail({ id: `pullthrough.manifest.${op.key}.c${CONNECTIONS}`, server: server.reportAs, ...r });
      });
      const id = `pullthrough.manifest.${op.key}.c${CONNECTIONS}`;
      addFigure(ctx, { id: `${id}.rps`, label: `${op.label}, c=${CONNECTIONS}`, unit: 'req/s' }, rps);
      addFigure(ctx, { id: `${id}.p99`, label: `${op.label}, c=${CONNECTIONS}, p99`, unit: 'ms', better: 'lower' }, p99);
    }

    // 5. "Warm pull-through at least the plain-registry figures", compared within one process: the
    // plain figures come from another airlock process with another history (JIT, heap), and the
    // first load run of a fresh process is measurably slower (warm-up). The same images are pushed
    // to a plain repository of airlock-through, then plain and pull-through runs alternate, twice
    // each; the best of each is reported.
    await seedPlainCopy(airlock, content, images);
    // The same process under another name and repository: measured() needs its pid, the requests its repo.
    const plain = { name: 'airlock-through (plain repository)', pid: airlock.pid, url: airlock.url, repo: PLAIN_REPO };
    const seeded = (_status, h) => (byDigest.has(h['docker-content-digest']) ? undefined : `Docker-Content-Digest ${h['docker-content-digest']} is not a seeded manifest`);
    for (const op of ops) {
      ctx.progress(`${op.label.replace('pull-through ', '')}, c=${CONNECTIONS}: plain and pull-through repositories of one airlock process, alternating`);
      const runs = { plain: [], pullThrough: [] };
      for (let round = 0; round < 2; round++) {
        for (const [key, server, check] of [['plain', plain, seeded], ['pullThrough', airlock, checkFor(airlock)]]) {
          const r = await measured(ctx, server, { base: airlock.url, requests: op.requests(server), connections: CONNECTIONS, check });
          runs[key].push({ rps: r.rps, p99: r.latencyMs.p99, serverCpuMsPerRequest: r.serverCpuMsPerRequest });
        }
      }
      const best = (xs) => Math.max(...xs.map((x) => x.rps));
      ctx.report.detail({ id: `pullthrough.manifest.${op.key}.c${CONNECTIONS}.sameProcess`, server: 'airlock', runs });
      const label = `${op.label.replace('pull-through ', '')}, c=${CONNECTIONS}, one airlock process, best of 2`;
      ctx.report.add({ id: `pullthrough.manifest.${op.key}.c${CONNECTIONS}.sameProcess.pullThrough.rps`, label: `${label}: pull-through repo`, unit: 'req/s', server: 'airlock', value: best(runs.pullThrough) });
      ctx.report.add({ id: `pullthrough.manifest.${op.key}.c${CONNECTIONS}.sameProcess.plain.rps`, label: `${label}: plain repo`, unit: 'req/s', server: 'airlock', value: best(runs.plain) });
      ctx.progress(`  pull-through ${Math.round(best(runs.pullThrough))} req/s, plain ${Math.round(best(runs.plain))} req/s: ${(best(runs.pullThrough) / best(runs.plain)).toFixed(2)}`);
    }

    // airlock's own account of what happened (hits, misses, bytes from upstream), for the JSON.
    const stats = await airlock.client.fetch('GET', '/api/v1/stats');
    ctx.report.detail({ id: 'pullthrough.airlockStats', server: 'airlock', stats: JSON.parse(stats.body.toString()) });
  },
};
