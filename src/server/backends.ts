// Where the metadata and the blob bytes live: the embedded default (SQLite in <storage>/airlock.db,
// blob files under <storage>), or the shared backends several replicas use (PostgreSQL from
// `database.url`, an S3-compatible bucket from `blobs.s3`), with the cluster coordination that
// sharing needs. Either may be shared alone (e.g. PostgreSQL with blobs on a shared filesystem).

import { join } from 'node:path';
import type { Cluster } from '../cluster/index.js';
import { redactUrl } from '../config/redact-url.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { FsBlobStore } from '../storage/blobstore.js';
import { SqliteMetadataStore, type MetadataStore } from '../storage/metadata.js';
import type { S3BlobStore } from '../storage/s3-blobstore.js';
import { ConfigError } from '../config/load.js';
import { KeyedLock } from '../registry/keyed-lock.js';

export interface Backends {
  meta: MetadataStore;
  /** Blob files under the storage directory, or null when blobs live in a bucket. */
  files: FsBlobStore | null;
  /** The bucket, when `blobs.s3` is set. */
  bucket: S3BlobStore | null;
  blobs: FsBlobStore | S3BlobStore;
  /** Set when the metadata is shared (PostgreSQL): other replicas write too. */
  cluster: Cluster | null;
  /**
   * The per-digest lock that uploads, mounts, fills, eviction and gc take around a blob's bytes and
   * rows: across replicas with a shared database (PostgreSQL advisory locks on connections of
   * their own), else within this process.
   */
  blobLocks: KeyedLock;
  /** One line for the start-up log, without secrets. */
  describe: { database: string; blobs: string };
  close(): Promise<void>;
}

export interface OpenBackendsOptions {
  /**
   * Where blobs bound for the bucket spool (pull-through fills, imports) — a directory of this
   * process alone, which its owner empties (a starting server its storage directory's; a command
   * running beside a server passes its own). Default: the storage directory.
   */
  spoolDir?: string;
}

export async function openBackends(config: Config, log: Logger, options: OpenBackendsOptions = {}): Promise<Backends> {
  const closers: (() => unknown)[] = [];
  const close = async () => {
    for (const c of closers.reverse()) await c();
  };
  try {
    let files: FsBlobStore | null = null;
    let bucket: S3BlobStore | null = null;
    if (config.blobs?.s3) {
      const { S3BlobStore } = await import('../storage/s3-blobstore.js');
      const s3 = config.blobs.s3;
      const spoolDir = options.spoolDir ?? config.storage;
      bucket = new S3BlobStore({ ...s3, spoolDir });
      const opened = bucket;
      closers.push(() => opened.close());
      await bucket.init();
      try {
        await bucket.ping();
      } catch (e) {
        throw new ConfigError(`blobs.s3: ${(e as Error).message}`);
      }
    } else {
      files = new FsBlobStore(config.storage);
      await files.init();
    }

    let meta: MetadataStore;
    let cluster: Cluster | null = null;
    if (config.database) {
      const [{ PostgresMetadataStore }, { Cluster }] = await Promise.all([import('../storage/postgres/store.js'), import('../cluster/index.js')]);
      try {
        const store = await PostgresMetadataStore.open(config.database.url);
        closers.push(() => store.close());
        meta = store;
        cluster = await Cluster.connect(config.database.url, { log, pool: store.pool });
        const opened = cluster;
        closers.push(() => opened.close());
      } catch (e) {
        throw new ConfigError(`database: cannot use ${redactUrl(config.database.url)}: ${(e as Error).message}`);
      }
    } else {
      const store = new SqliteMetadataStore(join(config.storage, 'airlock.db'));
      closers.push(() => store.close());
      meta = store;
    }
    let blobLocks = new KeyedLock();
    if (config.database) {
      const { ClusterKeyedLock } = await import('../cluster/digest-lock.js');
      const clusterLocks = new ClusterKeyedLock(config.database.url, { log });
      closers.push(() => clusterLocks.close());
      blobLocks = clusterLocks;
    }
    return {
      meta,
      files,
      bucket,
      blobs: (bucket ?? files)!,
      cluster,
      blobLocks,
      describe: {
        database: config.database ? redactUrl(config.database.url) : join(config.storage, 'airlock.db'),
        blobs: config.blobs?.s3
          ? `${config.blobs.s3.endpoint}/${config.blobs.s3.bucket}${config.blobs.s3.prefix ? `/${config.blobs.s3.prefix}` : ''}`
          : join(config.storage, 'blobs'),
      },
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
