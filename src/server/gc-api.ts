import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Hono } from 'hono';
import { z } from 'zod';
import { parseDuration } from '../config/units.js';
import type { GarbageCollector } from '../lifecycle/gc.js';
import type { Logger } from '../log.js';
import { RegistryError } from '../registry/errors.js';
import type { AccessControl } from './access.js';
import { sendError, sendJson } from './respond.js';

export interface GcApiDeps {
  gc: GarbageCollector;
  access: AccessControl;
  log: Logger;
}

/** {"dryRun": true, "untaggedOlderThan": "720h"} — the flags of `airlock gc`. */
const gcRequest = z
  .object({
    dryRun: z.boolean().default(false),
    untaggedOlderThan: z.union([z.string(), z.number().nonnegative()]).nullish(),
  })
  .strict();

/**
 * POST /api/v1/gc: `airlock gc` run inside the server that holds the storage (the command asks
 * here when it finds the storage locked by a serving process). Under `auth:`, only for users
 * allowed to delete everywhere. Answers with the collection's result once it has finished.
 */
export function mountGcApi(app: Hono<{ Bindings: HttpBindings }>, deps: GcApiDeps): void {
  app.post('/api/v1/gc', async (c) => {
    const { incoming: req, outgoing: res } = c.env;
    try {
      await deps.access.check(req, [{ resource: { type: 'repository', name: '**' }, actions: ['delete'] }]);
      const request = parseRequest(await c.req.text());
      const result = await deps.gc.run(request);
      sendJson(res, 200, { 'Cache-Control': 'no-store' }, result);
    } catch (e) {
      if (!(e instanceof RegistryError)) deps.log.error({ err: e }, 'garbage collection failed');
      sendError(res, e instanceof RegistryError ? e : new RegistryError('UNKNOWN', `garbage collection failed: ${(e as Error).message}`, undefined, 500));
    }
    return RESPONSE_ALREADY_SENT;
  });
}

function parseRequest(text: string): { dryRun: boolean; untaggedOlderThan?: number } {
  let json: unknown = {};
  try {
    if (text.trim() !== '') json = JSON.parse(text);
  } catch {
    throw new RegistryError('UNSUPPORTED', 'the body must be JSON like {"dryRun":true,"untaggedOlderThan":"720h"}', undefined, 400);
  }
  const parsed = gcRequest.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RegistryError('UNSUPPORTED', `${issue.path.join('.') || 'body'}: ${issue.message}`, undefined, 400);
  }
  const { dryRun, untaggedOlderThan } = parsed.data;
  if (untaggedOlderThan === undefined || untaggedOlderThan === null) return { dryRun };
  try {
    return { dryRun, untaggedOlderThan: parseDuration(untaggedOlderThan) };
  } catch (e) {
    throw new RegistryError('UNSUPPORTED', `untaggedOlderThan: ${(e as Error).message}`, undefined, 400);
  }
}
