import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import type { Registry as PromRegistry } from 'prom-client';
import type { Logger } from '../log.js';
import type { Stats } from '../metrics.js';
import type { Registry } from '../registry/registry.js';
import type { Authorizer } from '../auth/authorizer.js';
import { RegistryError } from '../registry/errors.js';
import type { AccessControl } from './access.js';
import { issueToken, TOKEN_PATH } from './auth.js';
import { sendError, sendJson } from './respond.js';
import { createV2Handler } from './v2.js';
import type { AuditTrail } from './audit-trail.js';

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
  readiness: () => void;
  /** Recent pushes, deletes and refusals, for the dashboard's Activity page. */
  audit?: AuditTrail;
  /** Adds the dashboard (/ui/) and its JSON endpoints to the routes. */
  dashboard?: (app: Hono<{ Bindings: HttpBindings }>) => void;
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
  app.get('/readyz', (c) => {
    try {
      deps.readiness();
      return c.json({ status: 'ready' });
    } catch (err) {
      deps.log.warn({ err }, 'readiness check failed');
      return c.json({ status: 'not ready', reason: (err as Error).message }, 503);
    }
  });
  app.get('/api/v1/stats', (c) => c.json(deps.stats.snapshot()));
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
