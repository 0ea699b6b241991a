// Crash safety: airlock runs as a child process and is SIGKILLed at seeded random moments while
// clients push images and pull blobs through it from an upstream (cache fills), or while it
// collects garbage (images deleted by their clients) as a client pushes. After each kill:
// fsck on the dead store finds nothing but temporaries (which the next start removes); after the
// restart, fsck finds it clean; and every push that was acknowledged, and every blob a client
// received whole, reads back byte for byte.
//
// AIRLOCK_CRASH_ITERATIONS (default 10) and AIRLOCK_CRASH_SEED repeat or extend a run;
// `npm run soak` runs many more iterations.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsckLocal } from '../../src/commands/fsck.js';
import { acquireStorageLock } from '../../src/lifecycle/storage-lock.js';
import { pushImage } from '../helpers/push.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { freePort, runCli, sleep, startCli, type CliProcess } from '../server/cli.js';

const ITERATIONS = Number(process.env.AIRLOCK_CRASH_ITERATIONS ?? 10);
const SEED = Number(process.env.AIRLOCK_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
/** What a crash may leave that the next start removes (or, for orphans, recovers). */
const CRASH_LEFTOVERS = new Set(['stale-temporary', 'orphan-file', 'dangling-upload']);

/** mulberry32: small, seedable, good enough to pick kill moments reproducibly. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface AckedPush {
  repo: string;
  mediaType: string;
  manifest: Buffer;
  blobs: string[];
}
interface AckedFill {
  repo: string;
  digest: string;
}
interface UpstreamImage {
  repo: string;
  layers: string[];
}

/** Forwards to the upstream, handing the body on in small slices, so fills last long enough to be cut. */
function throttlingProxy(target: string): Promise<{ url: string; server: Server }> {
  const to = new URL(target);
  const server = createServer((req, res) => {
    const up = request({ host: to.hostname, port: to.port, path: req.url, method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.on('data', (chunk: Buffer) => {
        res.write(chunk);
        ur.pause();
        setTimeout(() => ur.resume(), 3);
      });
      ur.on('end', () => res.end());
      ur.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server })));
}

describe('crash safety (SIGKILL during pushes, pull-through fills and garbage collection)', () => {
  let upstream: TestServer;
  let proxy: { url: string; server: Server };
  let dir: string;
  const upstreamImages: UpstreamImage[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-crash-'));
    upstream = await startTestServer();
    proxy = await throttlingProxy(upstream.url);
    // Enough for fresh fills in every iteration of a test run; a long soak re-reads cached ones later.
    for (let i = 0; i < Math.min(ITERATIONS * 2 + 4, 80); i++) {
      const image = await pushImage(upstream.url, `src/img${i}`, 'v1', { layers: 2, layerSize: 768 * 1024 });
      upstreamImages.push({ repo: `src/img${i}`, layers: image.layerDigests });
    }
  }, 300_000);

  afterAll(async () => {
    proxy?.server.close();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    'leaves a store fsck finds clean after restart, with every acknowledged push and fill intact',
    async () => {
      const rng = random(SEED);
      const storage = join(dir, 'storage');
      const port = await freePort();
      const config = join(dir, 'airlock.yaml');
      writeFileSync(
        config,
        JSON.stringify({
          listen: `127.0.0.1:${port}`,
          storage,
          log: { level: 'info' },
          storageMinFree: 0,
          upstreams: [{ prefix: 'cache', url: proxy.url, insecure: true }],
          // Collected only when asked (POST /api/v1/gc); a short grace so deleted images are garbage at once.
          gc: { schedule: '24h', grace: '1s' },
        }),
      );
      const pushes: AckedPush[] = [];
      const fills: AckedFill[] = [];
      const kills: Record<string, number> = { push: 0, fill: 0, mixed: 0, gc: 0 };
      let collections = 0;
      let deleted = 0;
      let leftovers = 0;
      let nextUpstream = 0;
      let verifiedPushes = 0;
      let verifiedFills = 0;

      const verify = async (url: string, ps: AckedPush[], fs: AckedFill[]) => {
        for (const p of ps) {
          const m = await fetch(`${url}/v2/${p.repo}/manifests/v1`, { headers: { accept: p.mediaType } });
          expect(m.status, `${p.repo}:v1 (seed ${SEED})`).toBe(200);
          expect(Buffer.from(await m.arrayBuffer()).equals(p.manifest), `${p.repo} manifest bytes (seed ${SEED})`).toBe(true);
          for (const digest of p.blobs) {
            const b = await fetch(`${url}/v2/${p.repo}/blobs/${digest}`);
            expect(b.status, `${p.repo}@${digest} (seed ${SEED})`).toBe(200);
            expect(sha256(Buffer.from(await b.arrayBuffer())), `${p.repo}@${digest} (seed ${SEED})`).toBe(digest);
          }
          verifiedPushes++;
        }
        for (const f of fs) {
          const b = await fetch(`${url}/v2/${f.repo}/blobs/${f.digest}`);
          expect(b.status, `${f.repo}@${f.digest} (seed ${SEED})`).toBe(200);
          expect(sha256(Buffer.from(await b.arrayBuffer()))).toBe(f.digest);
          verifiedFills++;
        }
      };

      // The restarted server checks its own store (what `airlock fsck` asks it to do).
      const expectCleanLive = async (url: string) => {
        const res = await fetch(`${url}/api/v1/fsck`, { method: 'POST', body: '{}' });
        const report = (await res.json()) as { problems: unknown[] };
        expect(res.status).toBe(200);
        expect(report.problems, `live fsck (seed ${SEED})`).toEqual([]);
      };

      let server: CliProcess | undefined;
      let verifiedUpTo = { pushes: 0, fills: 0 };
      try {
        for (let iteration = 0; iteration < ITERATIONS; iteration++) {
          server = await startCli(['--config', config]);
          await expectCleanLive(server.url);
          // What was acknowledged before the last kill reads back whole.
          await verify(server.url, pushes.slice(verifiedUpTo.pushes), fills.slice(verifiedUpTo.fills));
          verifiedUpTo = { pushes: pushes.length, fills: fills.length };

          const phase = (['push', 'fill', 'mixed', 'gc'] as const)[Math.floor(rng() * 4)]!;
          let stopped = false;
          const url = server.url;
          const pusher = async (worker: number) => {
            for (let n = 0; !stopped; n++) {
              const repo = `crash/i${iteration}/w${worker}/n${n}`;
              try {
                const image = await pushImage(url, repo, 'v1', { layers: 2, layerSize: 32 * 1024 + Math.floor(rng() * 1024 * 1024) });
                pushes.push({ repo, mediaType: image.mediaType, manifest: image.manifest, blobs: [...image.blobs.keys()] });
              } catch {
                return; // the server is gone: this push was never acknowledged
              }
            }
          };
          const filler = async () => {
            while (!stopped) {
              const source = upstreamImages[nextUpstream++ % upstreamImages.length]!;
              const repo = `cache/${source.repo}`;
              for (const digest of source.layers) {
                try {
                  const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
                  const body = Buffer.from(await res.arrayBuffer());
                  if (res.status === 200 && sha256(body) === digest) fills.push({ repo, digest });
                } catch {
                  return;
                }
              }
            }
          };
          // Garbage for the collector: some acknowledged images are deleted by their clients (they
          // are no longer expected back), then collections run back to back while a client pushes.
          const collector = async () => {
            for (let k = 0; k < 4 && pushes.length > 0; k++) {
              const index = Math.floor(rng() * pushes.length);
              const victim = pushes.splice(index, 1)[0]!;
              if (index < verifiedUpTo.pushes) verifiedUpTo.pushes--;
              const digest = sha256(victim.manifest);
              const res = await fetch(`${url}/v2/${victim.repo}/manifests/${digest}`, { method: 'DELETE' }).catch(() => undefined);
              if (res?.status !== 202) {
                pushes.push(victim); // not deleted (the server is gone): still expected intact
                return;
              }
              deleted++;
            }
            while (!stopped) {
              const res = await fetch(`${url}/api/v1/gc`, { method: 'POST', body: '{}' }).catch(() => undefined);
              if (res?.status !== 200) return;
              await res.arrayBuffer();
              collections++;
            }
          };
          const workers: Promise<void>[] = [];
          if (phase === 'gc') workers.push(collector(), pusher(0));
          if (phase === 'push' || phase === 'mixed') workers.push(pusher(0), pusher(1));
          if (phase === 'fill' || phase === 'mixed') workers.push(filler(), filler());
          await sleep(400 + Math.floor(rng() * 2600));
          server.child.kill('SIGKILL');
          await server.exited;
          stopped = true;
          await Promise.all(workers);
          kills[phase]!++;

          // The dead store: nothing wrong but what a crash leaves for the next start to remove.
          // (In this process, as `airlock fsck` on a stopped store runs: under the lock it takes over.)
          const lock = acquireStorageLock(storage, 'fsck');
          const report = await fsckLocal(storage, false, { write: () => true }).finally(() => lock.release());
          const unexpected = report.problems.filter((p) => !CRASH_LEFTOVERS.has(p.kind) || (p.kind === 'orphan-file' && !/no row records it/.test(p.detail)));
          expect(unexpected, `after kill ${iteration + 1} (seed ${SEED})`).toEqual([]);
          leftovers += report.problems.length;
        }

        server = await startCli(['--config', config]);
        const check = await runCli(['fsck', '--config', config, '--json'], { timeoutMs: 60_000 });
        expect(check.code, `fsck after the last restart (seed ${SEED}):\n${check.stdout}${check.stderr}`).toBe(0);
        expect((JSON.parse(check.stdout) as { problems: unknown[] }).problems).toEqual([]);
        verifiedPushes = 0;
        verifiedFills = 0;
        await verify(server.url, pushes, fills);
      } finally {
        await server?.kill();
      }
      const killCount = kills.push! + kills.fill! + kills.mixed! + kills.gc!;
      console.log(
        `crash test (seed ${SEED}): ${killCount} kills (${kills.push} during pushes, ${kills.fill} during fills, ${kills.mixed} during both, ` +
          `${kills.gc} during garbage collection: ${collections} collections finished, ${deleted} images deleted for them); ` +
          `${verifiedPushes} acknowledged pushes and ${verifiedFills} received fills re-verified byte for byte; ` +
          `${leftovers} crash leftovers found by fsck and removed at restart`,
      );
      expect(killCount).toBe(ITERATIONS);
      expect(verifiedPushes + verifiedFills).toBeGreaterThan(0);
    },
    60_000 + ITERATIONS * 20_000,
  );
});
