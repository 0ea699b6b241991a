import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

/** A zod type for a value written with units ("10m", "200GiB") or as a plain number. */
function withUnits(parse: (v: string | number) => number) {
  return z.union([z.string(), z.number().nonnegative()]).transform((v, ctx) => {
    try {
      return parse(v);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
      return z.NEVER;
    }
  });
}

/** "10m"-style durations (or seconds as a number), in milliseconds. */
const duration = withUnits(parseDuration);
/** "200GiB"-style sizes (or bytes as a number), in bytes. */
const size = withUnits(parseSize);

const hostPort = z
  .string()
  .refine(
    (v) => /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]*):\d{1,5}$/.test(v) && Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535,
    'must be HOST:PORT with a port of 0..65535, e.g. 0.0.0.0:5000 or [::]:5000',
  );

const action = z.enum(['pull', 'push', 'delete']);

const upstream = z
  .object({
    /** Local repository path prefix, matched on whole path components; "" catches everything. */
    prefix: z.string().regex(/^$|^[a-z0-9._-]+(\/[a-z0-9._-]+)*$/, 'must be a repository path prefix like quay.io or ocp4/openshift4'),
    url: z.string().url().refine((u) => /^https?:\/\//.test(u), 'must start with http:// or https://'),
    /** Prepended to the rest of the local repository name to form the upstream repository. */
    remotePrefix: z.string().default(''),
    username: z.string().optional(),
    password: z.string().optional(),
    /** Pull-secret / docker config.json style file: {"auths":{"host":{"auth":"base64(user:pass)"}}}. */
    authFile: z.string().optional(),
    tagTTL: duration.default('10m'),
    offline: z.boolean().default(false),
    insecure: z.boolean().default(false),
    caFile: z.string().optional(),
    timeout: duration.default('30s'),
    /** Eviction budget for what this upstream's repositories cache, besides cache.maxBytes. */
    maxBytes: size.optional(),
  })
  .strict()
  .superRefine((u, ctx) => {
    if (u.url.startsWith('http://') && !u.insecure) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['insecure'], message: `upstream ${u.url} is plain http: set insecure: true to allow it` });
    }
    if ((u.username === undefined) !== (u.password === undefined)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['password'], message: 'username and password go together' });
    }
    if (u.authFile !== undefined && u.username !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['authFile'], message: 'use either authFile or username/password, not both' });
    }
  });

/**
 * database.url: PostgreSQL shared by every replica. Checked here so a typo fails at start with the
 * key's path, not as a connection error later; messages never quote the URL (it holds a password).
 */
const postgresUrl = z.string().superRefine((v, ctx) => {
  const example = 'postgres://USER:PASSWORD@HOST:5432/DATABASE';
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be a PostgreSQL URL like ${example}` });
    return;
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must start with postgres:// or postgresql:// (got ${url.protocol}//), e.g. ${example}` });
  } else if (!url.hostname) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `names no host, e.g. ${example}` });
  } else if (url.pathname.length <= 1) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `names no database, e.g. ${example}` });
  }
});

/** Why S3 would refuse this bucket name, or undefined (the AWS rules, which radosgw and MinIO share). */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 63) return `must be 3 to 63 characters long (is ${name.length})`;
  if (!/^[a-z0-9.-]+$/.test(name)) return 'may hold only lowercase letters, digits, dots and hyphens';
  if (!/^[a-z0-9].*[a-z0-9]$/.test(name)) return 'must begin and end with a letter or digit';
  if (name.includes('..')) return 'must not hold two dots in a row';
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return 'must not look like an IP address';
  if (name.startsWith('xn--') || name.endsWith('-s3alias') || name.endsWith('--ol-s3')) return 'uses a prefix or suffix S3 reserves (xn--, -s3alias, --ol-s3)';
  return undefined;
}

/** blobs.s3: an S3-compatible object store shared by every replica. */
const s3Blobs = z
  .object({
    endpoint: z
      .string()
      .refine((v) => /^https?:\/\/[^/\s]+/.test(v) && URL.canParse(v), 'must be an http:// or https:// URL, e.g. https://s3.example:443'),
    bucket: z.string().superRefine((v, ctx) => {
      const problem = bucketNameProblem(v);
      if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `bucket name "${v}" ${problem}` });
    }),
    region: z.string().min(1).default('us-east-1'),
    /** Key prefix inside the bucket: blobs live under <prefix>/blobs/sha256/<xx>/<hex>. */
    prefix: z
      .string()
      .regex(/^$|^[^/](.*[^/])?$/, 'must not begin or end with "/", e.g. airlock or team/airlock (or "" for none)')
      .default(''),
    /** Path-style addressing (https://host/bucket/key): what radosgw and MinIO expect by default. */
    forcePathStyle: z.boolean().default(true),
    /** Absent: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment. */
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    /** PEM bundle to trust for an https endpoint with a private CA. */
    caFile: z.string().min(1).optional(),
    /** Blob GETs answer 307 to a pre-signed URL, so the bytes bypass the replicas. */
    redirect: z.boolean().default(false),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.accessKeyId !== undefined && s.secretAccessKey === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['secretAccessKey'], message: 'accessKeyId is set but secretAccessKey is not: set both (or neither, to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)' });
    }
    if (s.secretAccessKey !== undefined && s.accessKeyId === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['accessKeyId'], message: 'secretAccessKey is set but accessKeyId is not: set both (or neither, to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)' });
    }
    if (s.caFile !== undefined && s.endpoint.startsWith('http://')) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['caFile'], message: 'caFile applies to an https:// endpoint; this one is plain http' });
    }
  });

export const configSchema = z
  .object({
    listen: hostPort.default('0.0.0.0:5000'),
    storage: z.string().min(1).default('./storage'),
    /** /readyz reports not ready when the storage volume has less free space than this (0: never). */
    storageMinFree: size.default('1GiB'),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({}),
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
    auth: z
      .object({
        htpasswd: z.string().min(1),
        anonymous: z.array(action).default([]),
        rules: z
          .array(
            z
              .object({
                users: z.array(z.string().min(1)).min(1),
                repos: z.array(z.string().min(1)).min(1),
                actions: z.array(z.enum(['pull', 'push', 'delete', 'catalog', '*'])).min(1),
              })
              .strict(),
          )
          .default([]),
        /** Lifetime of issued bearer tokens. */
        tokenTTL: duration.default('5m'),
        /** Public URL of the token endpoint when behind a proxy; default derived from the request. */
        realm: z.string().url().optional(),
      })
      .strict()
      .optional(),
    upstreams: z.array(upstream).default([]),
    cache: z
      .object({
        /** Budget for content fetched from upstreams; absent = no eviction. */
        maxBytes: size.optional(),
        /** How often the budget is checked (and cached content evicted down to 90% of it). */
        evictEvery: duration.refine((ms) => ms > 0, 'must be a positive duration, e.g. 1m').default('1m'),
      })
      .strict()
      .default({}),
    /** Online garbage collection; absent: only `airlock gc` (or POST /api/v1/gc) collects. */
    gc: z
      .object({
        /** How often the server collects, e.g. 24h. */
        schedule: duration.refine((ms) => ms >= 1000, 'must be at least 1s'),
        /** Anything linked, uploaded or pushed more recently than this is kept whatever refers to it. */
        grace: duration.default('1h'),
        /** Scheduled runs also remove untagged manifests older than this (default: keep them). */
        untaggedOlderThan: duration.optional(),
      })
      .strict()
      .optional(),
    uploads: z
      .object({
        /** An upload session untouched for this long is removed with its bytes. */
        ttl: duration.default('24h'),
      })
      .strict()
      .default({}),
    limits: z
      .object({
        /** Largest manifest accepted on push. */
        manifestBytes: size.default('4MiB'),
        /** Time allowed to send the request headers. */
        headersTimeout: duration.default('30s'),
        /** A connection with no traffic for this long is closed (bodies included). */
        idleTimeout: duration.default('2m'),
        /** Upload sessions one user (or one anonymous address) may have open at once. */
        uploadSessionsPerUser: z.number().int().positive().default(100),
      })
      .strict()
      .default({}),
    /** Metadata in a PostgreSQL shared by every replica; absent: SQLite in <storage>/airlock.db. */
    database: z.object({ url: postgresUrl }).strict().optional(),
    /** Blobs in an S3-compatible object store shared by every replica; absent: files under <storage>. */
    blobs: z.object({ s3: s3Blobs }).strict().optional(),
  })
  .strict();

/** The config as written (YAML/object), before defaults. */
export type ConfigInput = z.input<typeof configSchema>;
/** The config with every default applied and every unit converted. */
export type Config = z.output<typeof configSchema>;
export type UpstreamConfig = Config['upstreams'][number];
export type AuthConfig = NonNullable<Config['auth']>;
export type DatabaseConfig = NonNullable<Config['database']>;
export type S3BlobsConfig = NonNullable<Config['blobs']>['s3'];
