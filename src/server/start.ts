import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, parseConfig } from '../config/load.js';
import type { Config, ConfigInput } from '../config/schema.js';
import { createLogger, type Logger } from '../log.js';
import { createPrometheusRegistry, Stats } from '../metrics.js';
import { PullThroughCache } from '../proxy/pull-through.js';
import { Registry } from '../registry/registry.js';
import { FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore } from '../storage/metadata.js';
import { Authorizer } from '../auth/authorizer.js';
import { openAccess } from './access.js';
import { createAuthAccess } from './auth.js';
import { createApp } from './app.js';
import { listen } from './listen.js';

export interface RunningServer {
  url: string;
  port: number;
  config: Config;
  registry: Registry;
  log: Logger;
  /** Graceful: in-flight requests finish, then the database closes. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Set when the input was already validated by loadConfig/parseConfig. */
  parsed?: boolean;
}

/** Starts airlock from a config object (the same shape as the YAML file). */
export async function startServer(input: ConfigInput | Config = {}, options: StartOptions = {}): Promise<RunningServer> {
  const config = options.parsed ? (input as Config) : parseConfig(input);
  const log = options.logger ?? createLogger(config.log.level);

  mkdirSync(config.storage, { recursive: true });
  const blobs = new FsBlobStore(config.storage);
  await blobs.init();
  const meta = new SqliteMetadataStore(join(config.storage, 'airlock.db'));
  const stats = new Stats(meta, config.upstreams);
  let proxy: PullThroughCache | undefined;
  try {
    proxy = config.upstreams.length ? new PullThroughCache(config.upstreams, meta, blobs, stats, log) : undefined;
  } catch (e) {
    stats.close();
    meta.close();
    throw new ConfigError(`invalid upstream configuration: ${(e as Error).message}`);
  }
  const registry = new Registry(meta, blobs, log, {
      manifestLimit: config.limits.manifestBytes,
      uploadTTL: config.uploads.ttl,
      uploadsPerOwner: config.limits.uploadSessionsPerUser,
    }, proxy);

  let authorizer: Authorizer | undefined;
  if (config.auth) {
    authorizer = new Authorizer(config.auth, config.storage, log);
    try {
      await authorizer.ready();
    } catch (e) {
      await proxy?.close();
      stats.close();
      meta.close();
      throw new ConfigError(`auth: ${(e as Error).message}`);
    }
  }
  const access = authorizer ? createAuthAccess(authorizer, log, { realm: config.auth?.realm, tls: Boolean(config.tls) }) : openAccess;

  const app = createApp({
    registry,
    access,
    authorizer,
    log,
    manifestLimit: config.limits.manifestBytes,
    stats,
    metrics: createPrometheusRegistry(stats),
    readiness: () => {
      meta.totals();
    },
  });

  let listening;
  try {
    listening = await listen(app, config, log);
  } catch (e) {
    await proxy?.close();
    stats.close();
    meta.close();
    throw e;
  }

  // Abandoned uploads are swept at start and then periodically.
  const sweepEvery = Math.min(Math.max(config.uploads.ttl / 4, 1000), 10 * 60_000);
  const sweep = () => registry.expireUploads().catch((err) => log.error({ err }, 'upload expiry failed'));
  void sweep();
  const sweeper = setInterval(sweep, sweepEvery);
  sweeper.unref();

  log.info({ url: listening.url, storage: config.storage, tls: Boolean(config.tls) }, 'airlock listening');

  let closed: Promise<void> | undefined;
  return {
    url: listening.url,
    port: listening.port,
    config,
    registry,
    log,
    close() {
      closed ??= (async () => {
        clearInterval(sweeper);
        await listening.close();
        await proxy?.close();
        stats.close();
        meta.close();
        log.info('airlock stopped');
        log.flush();
      })();
      return closed;
    },
  };
}
