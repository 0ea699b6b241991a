import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import type { Registry as PromRegistry } from 'prom-client';
import type { Logger } from '../log.js';
import type { Stats } from '../metrics.js';
import type { Registry } from '../registry/registry.js';
import type { Authorizer } from '../auth/authorizer.js';
import type { GarbageCollector } from '../lifecycle/gc.js';
import { RegistryError } from '../registry/errors.js';
import { isValidName } from '../registry/names.js';
import type { AccessControl } from './access.js';
import { issueToken, TOKEN_PATH } from './auth.js';
import { send, sendError, sendJson } from './respond.js';
import { createV2Handler } from './v2.js';
import type { AuditTrail } from './audit-trail.js';
import { isMirrorSetFormat, MIRROR_SET_FORMATS, type MirrorSetFormat } from '../mirror/mirror-set-documents.js';
import { isValidMirrorHost } from '../mirror/mirror-sets.js';
import { registerMaintenanceApi, type MaintenanceDeps } from './maintenance-api.js';
import { mountGcApi } from './gc-api.js';

export interface AppDeps {
  registry: Registry;
  access: AccessControl;
  log: Logger;
  manifestLimit: number;
  stats: Stats;
  metrics: PromRegistry;
  /** Present when `auth:` is configured: serves the token endpoint. */
  authorizer?: Authorizer;
  /** Throws when the server cannot serve (database or storage unusable). */
  readiness: () => Promise<void>;
  /** Recent pushes, deletes and refusals, for the dashboard's Activity page. */
  audit?: AuditTrail;
  /** Adds the dashboard (/ui/) and its JSON endpoints to the routes. */
  dashboard?: (app: Hono<{ Bindings: HttpBindings }>) => void;
  /** GET /api/v1/mirrorsets: the document for clusters reaching this server at `host`. */
  mirrorSets?: (format: MirrorSetFormat, host: string) => Promise<string>;
  /** POST /api/v1/fsck and /api/v1/backup, when the server owns a storage directory. */
  maintenance?: Omit<MaintenanceDeps, 'access' | 'log'>;
  /** Serves POST /api/v1/gc. */
  gc?: GarbageCollector;
  /** With shared backends: refuses writes (503) while the database or the bucket is unreachable. */
  health?: { assertWritable(): void };
  /** With `blobs.s3.redirect`: a pre-signed URL a stored blob's GET is redirected to. */
  redirect?: (digest: string) => Promise<string>;
}

/** `{"origins":[{"repo":"quay.io/ocp/release","origin":"quay.io/ocp/release"}]}`, each name checked. */
function parseOrigins(body: unknown): { repo: string; origin: string }[] {
  const list = (body as { origins?: unknown } | undefined)?.origins;
  const valid = (o: unknown): o is { repo: string; origin: string } =>
    typeof o === 'object' && o !== null && typeof (o as { repo?: unknown }).repo === 'string' && isValidName((o as { repo: string }).repo) &&
    typeof (o as { origin?: unknown }).origin === 'string' && /^[A-Za-z0-9._:-]+(\/[A-Za-z0-9._-]+)*$/.test((o as { origin: string }).origin);
  if (!Array.isArray(list) || list.length === 0 || list.length > 10_000 || !list.every(valid)) {
    throw new RegistryError('UNSUPPORTED', 'expected {"origins":[{"repo":"<local repository>","origin":"<registry host>/<path>"}]}', undefined, 400);
  }
  return list;
}

/** The routes table: every endpoint the server answers, in one place. */
export function createApp(deps: AppDeps): Hono<{ Bindings: HttpBindings }> {
  const app = new Hono<{ Bindings: HttpBindings }>();
  const v2 = createV2Handler(deps);
  const handleV2 = async (c: { env: { incoming: IncomingMessage; outgoing: ServerResponse } }) => {
    await v2(c.env.incoming, c.env.outgoing);
    return RESPONSE_ALREADY_SENT;
  };

  app.all('/v2', handleV2);
  app.all('/v2/*', handleV2);

  const authorizer = deps.authorizer;
  if (authorizer) {
    app.get(TOKEN_PATH, async (c) => {
      const { incoming: req, outgoing: res } = c.env;
      const url = new URL(req.url ?? '/', 'http://airlock');
      try {
        const token = await issueToken(authorizer, req, url.searchParams);
        sendJson(res, 200, { 'Cache-Control': 'no-store' }, token);
      } catch (e) {
        if (!(e instanceof RegistryError)) deps.log.error({ err: e }, 'token request failed');
        sendError(res, e);
      }
      return RESPONSE_ALREADY_SENT;
    });
  }

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    try {
      await deps.readiness();
      return c.json({ status: 'ready' });
    } catch (err) {
      deps.log.warn({ err }, 'readiness check failed');
      return c.json({ status: 'not ready', reason: (err as Error).message }, 503);
    }
  });
  app.get('/api/v1/stats', async (c) => c.json(await deps.stats.snapshot()));
  const mirrorSets = deps.mirrorSets;
  if (mirrorSets) {
    app.get('/api/v1/mirrorsets', async (c) => {
      const { incoming: req, outgoing: res } = c.env;
      try {
        // The documents name every mirrored repository: as much as the catalog listing shows.
        await deps.access.check(req, [{ resource: { type: 'registry', name: 'catalog' }, actions: ['*'] }]);
        const url = new URL(req.url ?? '/', 'http://airlock');
        const host = url.searchParams.get('host') ?? req.headers.host ?? '';
        const format = url.searchParams.get('format') ?? 'idms';
        const bad = (message: string) => sendJson(res, 400, {}, { errors: [{ code: 'INVALID_PARAMETER', message, detail: null }] });
        if (!isValidMirrorHost(host)) bad(`host must be HOST or HOST:PORT as clusters reach this registry, e.g. ?host=mirror.example.com:5000`);
        else if (!isMirrorSetFormat(format)) bad(`format must be one of ${MIRROR_SET_FORMATS.join(', ')}`);
        else {
          const type = format === 'registries.conf' ? 'application/toml; charset=utf-8' : 'application/yaml; charset=utf-8';
          send(res, 200, { 'Content-Type': type, 'Cache-Control': 'no-store' }, await mirrorSets(format, host));
        }
      } catch (e) {
        if (!(e instanceof RegistryError)) deps.log.error({ err: e }, 'mirror sets request failed');
        sendError(res, e);
      }
      return RESPONSE_ALREADY_SENT;
    });
  }
  // Air-gap import/sync through a running server records where each repository comes from.
  app.put('/api/v1/origins', async (c) => {
    const { incoming: req, outgoing: res } = c.env;
    try {
      const origins = parseOrigins(await c.req.json().catch(() => undefined));
      await deps.access.check(
        req,
        origins.map((o) => ({ resource: { type: 'repository', name: o.repo }, actions: ['push'] })),
      );
      for (const o of origins) await deps.registry.meta.setOrigin(o.repo, o.origin);
      sendJson(res, 200, {}, { recorded: origins.length });
    } catch (e) {
      if (!(e instanceof RegistryError)) deps.log.error({ err: e }, 'recording origins failed');
      sendError(res, e);
    }
    return RESPONSE_ALREADY_SENT;
  });
  if (deps.maintenance) registerMaintenanceApi(app, { ...deps.maintenance, access: deps.access, log: deps.log });
  if (deps.gc) mountGcApi(app, { gc: deps.gc, access: deps.access, log: deps.log });
  app.get('/metrics', async (c) => c.body(await deps.metrics.metrics(), 200, { 'Content-Type': deps.metrics.contentType }));
  deps.dashboard?.(app);

  app.notFound((c) => {
    // Routing sees the WHATWG-normalised URL ("/v2/../x" and "/v2/%2e%2e/x" become "/x"); a raw /v2 path
    // still belongs to the v2 handler, which judges the path as sent (NAME_INVALID and friends).
    if (/^\/v2(\/|$|\?)/.test(c.env.incoming.url ?? '')) return handleV2(c);
    return c.json({ errors: [{ code: 'NOT_FOUND', message: `no endpoint at ${c.req.path}`, detail: null }] }, 404);
  });
  app.onError((err, c) => {
    deps.log.error({ err }, 'request failed');
    return c.json({ errors: [{ code: 'UNKNOWN', message: 'internal error; see the server log', detail: null }] }, 500);
  });
  return app;
}
