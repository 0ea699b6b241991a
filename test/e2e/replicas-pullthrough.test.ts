/**
 * The pull-through cache across two replicas on one PostgreSQL and one S3 bucket: a cold blob is
 * transferred from the upstream once for the whole cluster, however many clients on however many
 * replicas ask for it at once; and when the replica filling it dies, another takes over.
 *
 * The upstream is Debian's docker-registry behind a counting (and, on request, throttling) proxy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage } from '../helpers/push.js';
import { closeAll, replicaConfig, scratchDir, startBackends, startReplicaProcess, startReplicas, type Backends, type ReplicaProcess } from '../helpers/replicas.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { eventually, hashBlob, stats, startUpstreamProxy, type StatsDoc, type UpstreamProxy } from '../pullthrough/support.js';

let backends: Backends;
let registry: Distribution;
let proxy: UpstreamProxy;
const scratch = scratchDir('pullthrough');

beforeAll(async () => {
  [backends, registry] = await Promise.all([startBackends(), startDistribution()]);
  proxy = await startUpstreamProxy(registry.url);
}, 120_000);

afterAll(async () => {
  await proxy?.close();
  await registry?.stop();
  await backends?.stop();
  scratch.remove();
});

const upstreams = () => [{ prefix: 'up', url: proxy.url, insecure: true }];

describe('20 concurrent cold GETs of a 16 MiB blob split across two replicas', () => {
  const SIZE = 16 * 1024 * 1024;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    [a, b] = await startReplicas(await backends.sharedStore(), { upstreams: upstreams() });
  }, 60_000);
  afterAll(async () => {
    await closeAll([a, b]);
  });

  it('every client gets the right bytes, the upstream saw one blob GET, and the stats agree on both', async () => {
    const image = await pushImage(registry.url, 'cold/big', 'v1', { layerSize: SIZE });
    const layer = image.layerDigests[0]!;
    image.blobs.clear();
    proxy.reset();
    // The upstream answers after a short pause, so that every client arrives while the fill is pending.
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`) ? { kind: 'delay', ms: 300 } : undefined);
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => hashBlob((i % 2 ? b : a).url, 'up/cold/big', layer)));
      for (const [i, r] of results.entries()) {
        expect(r, `client ${i} on ${i % 2 ? 'B' : 'A'}`).toMatchObject({ status: 200, digest: layer, bytes: SIZE, complete: true });
      }
      expect(proxy.count('GET', `/blobs/${layer}`)).toBe(1);
    } finally {
      proxy.fault = undefined;
    }

    // Afterwards both serve it from the shared store, still without the upstream.
    for (const side of [a, b]) expect(await hashBlob(side.url, 'up/cold/big', layer)).toMatchObject({ status: 200, digest: layer, complete: true });
    expect(proxy.count('GET', `/blobs/${layer}`)).toBe(1);

    // Cluster-wide stats: both replicas report the same figures (each flushes its counters).
    const comparable = (s: StatsDoc) => ({
      cache: s.cache,
      storage: s.storage,
      upstreams: s.upstreams.map(({ prefix, hits, misses, errors, bytesFromUpstream }) => ({ prefix, hits, misses, errors, bytesFromUpstream })),
    });
    await eventually(async () => {
      const [sa, sb] = await Promise.all([stats(a.url), stats(b.url)]);
      expect(comparable(sb)).toEqual(comparable(sa));
      // One transfer from the upstream for the whole cluster; 22 answers served in all.
      expect(sa.cache.bytesFromUpstream).toBe(SIZE);
      expect(sa.upstreams[0]!.bytesFromUpstream).toBe(SIZE);
      expect(sa.cache.hits + sa.cache.misses).toBe(22);
    }, 30_000);
  });
});

describe('a replica killed (SIGKILL) mid-fill', () => {
  const SIZE = 8 * 1024 * 1024;
  let a: ReplicaProcess;
  let b: TestServer;

  beforeAll(async () => {
    const store = await backends.sharedStore();
    a = await startReplicaProcess(store, scratch.path, { upstreams: upstreams() });
    b = await startTestServer(replicaConfig(store, { upstreams: upstreams() }));
  }, 60_000);
  afterAll(async () => {
    await a?.kill();
    await closeAll([b]);
  });

  it("leaves the other to finish: a client on B waiting for the same blob gets it whole after A's lease expires", async () => {
    const image = await pushImage(registry.url, 'killed/fill', 'v1', { layerSize: SIZE });
    const layer = image.layerDigests[0]!;
    image.blobs.clear();
    const blobPath = `/blobs/${layer}`;
    proxy.reset();
    // A slow upstream: the fill takes about 16 s at 512 KiB/s, long enough to kill its replica mid-way.
    proxy.fault = (r) => (r.method === 'GET' && r.path.endsWith(blobPath) ? { kind: 'slow', bytesPerSecond: 512 * 1024 } : undefined);
    try {
      const onA = hashBlob(a.url, 'up/killed/fill', layer).catch((e: Error) => ({ error: e.message }));
      await eventually(() => expect(proxy.count('GET', blobPath)).toBe(1), 15_000);
      await new Promise((r) => setTimeout(r, 500));

      // B's client asks while A fills: B waits for A's fill instead of starting its own.
      const onB = hashBlob(b.url, 'up/killed/fill', layer);
      await new Promise((r) => setTimeout(r, 1500));
      expect(proxy.count('GET', blobPath)).toBe(1);

      a.child.kill('SIGKILL');
      expect((await a.exited).signal).toBe('SIGKILL');
      // The rest of the upstream's answers at full speed: the test waits for the lease, not the link.
      proxy.fault = undefined;

      const got = await onB;
      expect(got).toMatchObject({ status: 200, digest: layer, bytes: SIZE, complete: true });
      // A's client was cut off with its replica.
      const cut = await onA;
      expect('error' in cut || !cut.complete || cut.bytes < SIZE).toBe(true);
      // B took over with a transfer of its own.
      expect(proxy.count('GET', blobPath)).toBe(2);
      // And the blob stays in the shared store: served again without the upstream.
      expect(await hashBlob(b.url, 'up/killed/fill', layer)).toMatchObject({ status: 200, digest: layer, bytes: SIZE, complete: true });
      expect(proxy.count('GET', blobPath)).toBe(2);
    } finally {
      proxy.fault = undefined;
    }
  }, 120_000);
});
