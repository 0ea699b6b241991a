// POST /api/v1/fsck and /api/v1/backup: the maintenance commands run inside the server that holds
// the storage, so that they see (and lock against) what its clients are doing. `airlock fsck` and
// `airlock backup` pointed at a served storage come here. Under `auth:`, only users allowed
// `delete` on `**` may ask.

import { isAbsolute } from 'node:path';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Context, Hono } from 'hono';
import { backupStore, BackupTargetError, BUCKET_BACKUP_ADVICE } from '../lifecycle/backup.js';
import { fsck, problemsRemaining } from '../lifecycle/fsck.js';
import type { FsckBlobs } from '../lifecycle/fsck-blobs.js';
import type { Logger } from '../log.js';
import { RegistryError } from '../registry/errors.js';
import type { KeyedLock } from '../registry/keyed-lock.js';
import type { FsBlobStore } from '../storage/blobstore.js';
import type { MetadataStore } from '../storage/metadata.js';
import type { AccessControl, AccessNeed } from './access.js';
import { sendError } from './respond.js';

export interface MaintenanceDeps {
  storage: string;
  meta: MetadataStore;
  /** The blob files, for backup; undefined when blobs are in a bucket (backup then refuses). */
  files: FsBlobStore | undefined;
  /** The blobs as fsck checks them: files or bucket objects. */
  fsckBlobs: FsckBlobs;
  blobLocks: KeyedLock;
  isFilling: (digest: string) => boolean;
  /** Drops a repository's manifests from memory after a repair changed its rows. */
  invalidateManifests: (repo: string) => void;
  access: AccessControl;
  log: Logger;
}

/** What maintenance needs: deleting anywhere is the strongest right, and repairs delete. */
export const MAINTENANCE_NEED: AccessNeed = { resource: { type: 'repository', name: '**' }, actions: ['delete'] };

type Ctx = Context<{ Bindings: HttpBindings }>;

export function registerMaintenanceApi(app: Hono<{ Bindings: HttpBindings }>, deps: MaintenanceDeps): void {
  // One maintenance task at a time: two repairs racing each other help nobody.
  let busy: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(task: () => Promise<T>): Promise<T> => {
    const run = busy.then(task, task);
    busy = run.catch(() => undefined);
    return run;
  };
  const withBlobLock = <T>(digest: string, fn: () => Promise<T>) => deps.blobLocks.run(digest, fn);

  const handle = (name: string, work: (body: Record<string, unknown>) => Promise<unknown>) => async (c: Ctx) => {
    const { incoming: req, outgoing: res } = c.env;
    try {
      const principal = await deps.access.check(req, [MAINTENANCE_NEED]);
      const body = await readJson(c);
      deps.log.info({ audit: name, user: principal.user ?? '(anonymous)', remote: req.socket.remoteAddress }, `${name} requested`);
      return c.json(await exclusive(() => work(body)) as object);
    } catch (e) {
      if (!(e instanceof RegistryError)) deps.log.error({ err: e }, `${name} failed`);
      sendError(res, e);
      return RESPONSE_ALREADY_SENT;
    }
  };

  app.post(
    '/api/v1/fsck',
    handle('fsck', async (body) => {
      const repair = body.repair === true;
      const report = await fsck(
        {
          name: deps.storage,
          storage: deps.storage,
          meta: deps.meta,
          blobs: deps.fsckBlobs,
          withBlobLock,
          unlessFilling: async (digest, fn) => (deps.isFilling(digest) ? undefined : fn()),
          live: true,
          manifestRemoved: deps.invalidateManifests,
        },
        { repair },
      );
      deps.log.info({ problems: report.problems.length, remaining: problemsRemaining(report), repair, seconds: report.seconds }, 'fsck finished');
      return report;
    }),
  );

  app.post(
    '/api/v1/backup',
    handle('backup', async (body) => {
      const dir = body.dir;
      if (typeof dir !== 'string' || !isAbsolute(dir)) {
        throw new RegistryError('UNSUPPORTED', 'give {"dir": "/absolute/path"}: where to write the backup, on this machine', undefined, 400);
      }
      const files = deps.files;
      if (!files) {
        throw new RegistryError('UNSUPPORTED', `backup copies blob files; this server keeps its blobs in a bucket: back up ${BUCKET_BACKUP_ADVICE}`, undefined, 400);
      }
      try {
        const report = await backupStore({ storage: deps.storage, meta: deps.meta, blobs: files, withBlobLock }, dir);
        deps.log.info({ dir, blobs: report.blobs, bytes: report.bytes, seconds: report.seconds }, 'backup finished');
        return report;
      } catch (e) {
        if (e instanceof BackupTargetError) throw new RegistryError('UNSUPPORTED', e.message, undefined, 400);
        throw e;
      }
    }),
  );
}

async function readJson(c: Ctx): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.trim() === '') return {};
  try {
    const value = JSON.parse(text) as unknown;
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    /* fall through */
  }
  throw new RegistryError('UNSUPPORTED', 'the request body must be a JSON object', undefined, 400);
}
