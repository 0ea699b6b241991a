import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Authorizer } from '../auth/authorizer.js';
import { ConfigError, parseConfig } from '../config/load.js';
import type { Config, ConfigInput } from '../config/schema.js';
import { AccessTracker } from '../lifecycle/access-tracker.js';
import { CacheEvictor, type EvictionBudget } from '../lifecycle/eviction.js';
import { checkFreeSpace } from '../lifecycle/free-space.js';
import { DEFAULT_GC_GRACE_MS, GarbageCollector, type GcResult } from '../lifecycle/gc.js';
import { recoverAfterCrash, removeStaleTemporaries } from '../lifecycle/recovery.js';
import { fsckBlobs } from '../lifecycle/fsck-blobs.js';
import { ReadBack } from '../lifecycle/read-back.js';
import { quarantineServedBlobs } from '../lifecycle/served-corruption.js';
import { acquireStorageLock, markStorageClean, storageUnclean } from '../lifecycle/storage-lock.js';
import { createLogger, type Logger } from '../log.js';
import { createPrometheusRegistry, Stats } from '../metrics.js';
import type { PullThroughCache } from '../proxy/pull-through.js';
import { selectUpstream } from '../proxy/routing.js';
import { ManifestCache } from '../registry/manifest-cache.js';
import { Registry } from '../registry/registry.js';
import { mirrorContent } from '../mirror/local-content.js';
import { airlockMirrorSetDocument } from '../mirror/mirror-set-documents.js';
import { openAccess } from './access.js';
import { createApp } from './app.js';
import { AuditTrail } from './audit-trail.js';
import { BackendHealth } from './backend-health.js';
import { startHashThreads } from '../storage/stream-hash.js';
import { openBackends } from './backends.js';
import { syncManifestCache } from '../cluster/manifest-sync.js';
import { listen } from './listen.js';

export interface RunningServer {
  url: string;
  port: number;
  config: Config;
  registry: Registry;
  log: Logger;
  /** Runs one cache eviction pass now (when cache.maxBytes or an upstream's maxBytes is set). */
  evictCache(): Promise<void>;
  /** The server's garbage collector (what POST /api/v1/gc and the schedule run). */
  gc: GarbageCollector;
  /** Graceful: in-flight requests finish, then the database closes. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Set when the input was already validated by loadConfig/parseConfig. */
  parsed?: boolean;
  /** Interval of the dashboard's history points; default one minute (tests use less). */
  historyStepMs?: number;
}

/** Starts airlock from a config object (the same shape as the YAML file). */
export async function startServer(input: ConfigInput | Config = {}, options: StartOptions = {}): Promise<RunningServer> {
  const config = options.parsed ? (input as Config) : parseConfig(input);
  const log = options.logger ?? createLogger(config.log.level);
  // Everything opened so far, closed in reverse order on shutdown or when starting fails midway.
  const closers: (() => void | Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close();
  };

  try {
    mkdirSync(config.storage, { recursive: true });
    // One owner per storage directory; released last, after the database has closed.
    const lock = acquireStorageLock(config.storage, 'serve');
    closers.push(() => lock.release());
    // Pull-through fills bound for a bucket spool here, on this replica only: whatever a previous
    // run left there died with it. (Upload sessions live in the bucket.)
    if (config.blobs?.s3) await rm(join(config.storage, 'uploads'), { recursive: true, force: true });
    const backends = await openBackends(config, log);
    closers.push(() => backends.close());
    // Blob bodies are hashed on a thread of their own; started now, not by the first push.
    startHashThreads();
    const { meta, blobs, files, bucket, cluster, blobLocks } = backends;
    // Nothing writes yet: whatever a previous run left half-done can be told from what it finished.
    // With a shared database other replicas write all along, so what looks unfinished may be
    // theirs: their upload sessions expire on the leader, orphan files are fsck's and gc's.
    if (!cluster) await removeStaleTemporaries(config.storage, meta, blobs, log);
    const unclean = storageUnclean(config.storage);
    if (unclean) {
      if (files && !cluster) await recoverAfterCrash(config.storage, meta, files, log, unclean);
      markStorageClean(config.storage);
    }
    const stats = await Stats.open(meta, config.upstreams, undefined, { shared: cluster !== null });
    closers.push(() => stats.close());
    // Probes of the shared backends: writes stop with a clear 503 while one does not answer.
    const health = new BackendHealth(
      [
        ...(cluster ? [{ name: 'database', check: () => meta.ping() }] : []),
        ...(bucket ? [{ name: 'object store', check: () => bucket.ping() }] : []),
      ],
      log,
    );
    closers.push(() => health.close());
    const tracker = new AccessTracker(meta);
    closers.push(() => tracker.close());
    const audit = new AuditTrail(meta);
    closers.push(() => audit.close());

    if (files) files.onCorrupt = quarantineServedBlobs({ storage: config.storage, meta, blobs: files, blobLocks, log });
    const manifests = new ManifestCache();
    if (cluster) {
      // Every manifest read goes to PostgreSQL: what another replica pushed, moved or deleted is
      // seen at once. The feed still tells the others about changes (and clears after a resync).
      manifests.contentCached = false;
      const synced = syncManifestCache(cluster.feed, manifests, log);
      closers.push(() => synced.stop());
    }
    let proxy: PullThroughCache | undefined;
    if (config.upstreams.length) {
      // Loaded only when used, like the auth modules below: a plain mirror carries neither.
      const { PullThroughCache } = await import('../proxy/pull-through.js');
      try {
        proxy = new PullThroughCache(config.upstreams, meta, blobs, stats, log, blobLocks, manifests, cluster?.leases);
      } catch (e) {
        throw new ConfigError(`invalid upstream configuration: ${(e as Error).message}`);
      }
      const opened = proxy;
      closers.push(() => opened.close());
      // Fills bypass the page cache: each stored blob is read back for the clients that follow.
      if (files) {
        const readBack = new ReadBack(files, log);
        proxy.onFilled = (digest) => readBack.add(digest);
        closers.push(() => readBack.close());
      }
    }
    const registry = new Registry(
      meta,
      blobs,
      log,
      { manifestLimit: config.limits.manifestBytes, uploadTTL: config.uploads.ttl, uploadsPerOwner: config.limits.uploadSessionsPerUser },
      proxy,
      { blobLocks, manifests, onServed: tracker.touch },
    );

    let authorizer: Authorizer | undefined;
    let access = openAccess;
    if (config.auth) {
      const [{ Authorizer }, { createAuthAccess }] = await Promise.all([import('../auth/authorizer.js'), import('./auth.js')]);
      authorizer = new Authorizer(config.auth, config.storage, log);
      try {
        await authorizer.ready();
      } catch (e) {
        throw new ConfigError(`auth: ${(e as Error).message}`);
      }
      access = createAuthAccess(authorizer, log, { realm: config.auth.realm, tls: Boolean(config.tls), audit });
    }

    const gc = new GarbageCollector({
      meta,
      blobs,
      blobLocks,
      log,
      manifests,
      graceMs: config.gc?.grace ?? DEFAULT_GC_GRACE_MS,
      isFilling: (digest) => proxy?.isFilling(digest) ?? false,
      access: tracker,
      onCollected: (result: GcResult) => stats.collected(result),
    });

    closers.push(() => gc.stop());
    // The dashboard: its history sampler and release classifier run in the background.
    const [{ mountDashboard }, { HistorySampler }, { ReleaseClassifier }] = await Promise.all([
      import('../ui/dashboard.js'),
      import('../ui/history.js'),
      import('../ui/releases.js'),
    ]);
    const history = new HistorySampler(meta, stats, options.historyStepMs);
    closers.push(() => history.close());
    const classifier = new ReleaseClassifier(meta, blobs);
    closers.push(() => classifier.close());
    const { CompletenessChecks } = await import('../ui/completeness.js');
    const completeness = new CompletenessChecks(
      mirrorContent(meta, blobs),
      config.upstreams,
      () => meta.listOrigins(),
      log,
    );
    // A check still reading layers finishes before the database closes.
    closers.push(() => completeness.idle());
    const dashboardAccess = access;
    const dashboardAuthorizer = authorizer;

    const app = createApp({
      gc,
      registry,
      access,
      authorizer,
      log,
      manifestLimit: config.limits.manifestBytes,
      stats,
      metrics: createPrometheusRegistry(stats),
      audit,
      dashboard: (app) =>
        mountDashboard(app, {
          config,
          meta,
          registry,
          stats,
          access: dashboardAccess,
          authorizer: dashboardAuthorizer,
          log,
          history,
          audit,
          classifier,
          upstreamCircuits: () => proxy?.upstreamHealth() ?? [],
          mirrorSets: async (format, host) => airlockMirrorSetDocument(format, config.upstreams, await meta.listOrigins(), { host, insecure: !config.tls }),
          completeness,
        }),
      mirrorSets: async (format, host) => airlockMirrorSetDocument(format, config.upstreams, await meta.listOrigins(), { host, insecure: !config.tls }),
      readiness: async () => {
        await health.checkNow();
        const problem = health.problem();
        if (problem) throw new Error(problem);
        if (!cluster) await meta.ping();
        checkFreeSpace(config.storage, config.storageMinFree);
      },
      // fsck and backup of a store this server alone holds (a shared database's is checked by
      // airlock fsck beside the replicas); backup copies files only.
      maintenance: !cluster
        ? {
            storage: config.storage,
            meta,
            files: files ?? undefined,
            fsckBlobs: fsckBlobs(config.storage, blobs),
            blobLocks,
            isFilling: (digest) => proxy?.isFilling(digest) ?? false,
            invalidateManifests: (repo) => manifests.invalidate(repo),
          }
        : undefined,
      health: cluster || bucket ? health : undefined,
      redirect: bucket?.redirect ? (digest) => bucket.presignedUrl(digest) : undefined,
    });
    const listening = await listen(app, config, log);
    closers.push(() => listening.close());
    // On shutdown a collection under way (scheduled or asked over HTTP) ends after its current
    // batch, before in-flight requests are waited for.
    closers.push(() => void gc.stop());
    // Commands pointed at this storage (gc, fsck, backup, import) find the server here and ask it.
    lock.update({ url: listening.url });
    if (proxy) {
      const { warmUpHttpClient } = await import('../proxy/client.js');
      await warmUpHttpClient(listening.url);
    }

    // Abandoned uploads are swept at start and then periodically.
    const sweepEvery = Math.min(Math.max(config.uploads.ttl / 4, 1000), 10 * 60_000);
    // With replicas, the periodic jobs run on one of them at a time (the leader of each role).
    const asLeader = async (role: string, job: () => Promise<unknown>): Promise<void> => {
      if (cluster) await cluster.leader.runIfLeader(role, job);
      else await job();
    };
    const sweep = () =>
      asLeader('upload-expiry', async () => {
        await registry.expireUploads();
        // Multipart uploads a replica began and never completed or aborted (it died committing).
        if (bucket) await bucket.abortStaleMultipartUploads(config.uploads.ttl);
        if (cluster) await cluster.leases.sweepExpired();
      }).catch((err) => log.error({ err }, 'upload expiry failed'));
    void sweep();
    const sweeper = setInterval(sweep, sweepEvery);
    sweeper.unref();
    closers.push(() => clearInterval(sweeper));

    const budgets: EvictionBudget[] = [
      ...(config.cache.maxBytes === undefined ? [] : [{ maxBytes: config.cache.maxBytes }]),
      ...config.upstreams.flatMap((u) => (u.maxBytes === undefined ? [] : [{ prefix: u.prefix, maxBytes: u.maxBytes }])),
    ];
    const evictor =
      budgets.length === 0
        ? undefined
        : new CacheEvictor(
            budgets,
            meta,
            registry,
            tracker,
            log,
            (count, bytes, manifestCount) => stats.evicted(count, bytes, manifestCount),
            (repo) => selectUpstream(config.upstreams, repo)?.upstream.prefix,
          );
    const evict = async () => {
      const run = evictor;
      if (run) await asLeader('eviction', () => run.run()).catch((err) => log.error({ err }, 'cache eviction failed'));
    };
    if (evictor) {
      void evict();
      // setInterval takes at most 2^31-1 ms (about 24 days); longer would fire at once.
      const evictTimer = setInterval(evict, Math.min(config.cache.evictEvery, 2 ** 31 - 1));
      evictTimer.unref();
      closers.push(() => clearInterval(evictTimer));
    }

    // Scheduled garbage collection: the first run one period after start, like every later one.
    if (config.gc) {
      const { schedule, untaggedOlderThan } = config.gc;
      const collect = () => void asLeader('gc', () => gc.run({ untaggedOlderThan })).catch((err) => log.error({ err }, 'scheduled garbage collection failed'));
      const gcTimer = setInterval(collect, schedule);
      gcTimer.unref();
      closers.push(() => clearInterval(gcTimer));
    }

    log.info(
      { url: listening.url, storage: config.storage, tls: Boolean(config.tls), database: backends.describe.database, blobs: backends.describe.blobs },
      'airlock listening',
    );

    let closed: Promise<void> | undefined;
    return {
      url: listening.url,
      port: listening.port,
      config,
      registry,
      log,
      evictCache: evict,
      gc,
      close() {
        closed ??= closeAll().then(() => {
          log.info('airlock stopped');
          log.flush();
        });
        return closed;
      },
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
