import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import { isStorageFull, RegistryError } from '../registry/errors.js';
import { acceptsMediaType, MediaType } from '../registry/manifest.js';
import { assertDigest, assertDigestAlgorithm, assertName } from '../registry/names.js';
import type { CacheOutcome, Stats } from '../metrics.js';
import type { ChunkInfo, ManifestAnswer, Registry } from '../registry/registry.js';
import type { ManifestRecord } from '../storage/metadata.js';
import { openAccess, type AccessControl, type AccessNeed } from './access.js';
import type { AuditTrail } from './audit-trail.js';
import { unavailableError } from './backend-health.js';
import { parseContentRange, parseRangeHeader, type ByteRange } from './range.js';
import { send, sendError, sendJson, sendStream, type Headers } from './respond.js';
import { blobPath, manifestPath, matchV2Route, uploadPath, type V2Route } from './v2-routes.js';

const API_VERSION = { 'Docker-Distribution-API-Version': 'registry/2.0' };
const DEFAULT_PAGE = 1000;
const MAX_PAGE = 10_000;

export interface V2Deps {
  registry: Registry;
  access: AccessControl;
  log: Logger;
  manifestLimit: number;
  stats?: Stats;
  audit?: AuditTrail;
  /** With shared backends: refuses writes (503) while the database or the bucket is unreachable. */
  health?: { assertWritable(): void };
  /** With `blobs.s3.redirect`: a pre-signed URL a stored blob's GET is redirected to. */
  redirect?: (digest: string) => Promise<string>;
}

interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  query: URLSearchParams;
  isHead: boolean;
  /** The authenticated user, once a check passed (undefined = anonymous). */
  user?: string;
}

/** The /v2/ API: parses HTTP, checks access, calls the registry, writes HTTP. */
export function createV2Handler(deps: V2Deps) {
  const { registry, access } = deps;

  return async function handleV2(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const r: Request = {
      req,
      res,
      method: req.method ?? 'GET',
      path: q === -1 ? url : url.slice(0, q),
      query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1)),
      isHead: req.method === 'HEAD',
    };
    try {
      const route = matchV2Route(r.path);
      if (!route) throw new RegistryError('NAME_UNKNOWN', `no registry endpoint at ${r.path.slice(0, 200)}`, undefined, 404);
      if ('name' in route) {
        assertName(route.name);
        route.name = registry.localName(route.name, namespace(r));
      }
      if (deps.health && r.method !== 'GET' && r.method !== 'HEAD') deps.health.assertWritable();
      await dispatch(route, r);
    } catch (caught) {
      // A backend that stopped answering is the client's "retry later", not an internal error.
      const err = unavailableError(caught) ?? caught;
      if (isStorageFull(err)) deps.log.error({ err: (err as Error).message, method: r.method, path: r.path }, 'storage is full');
      else if (!(err instanceof RegistryError)) deps.log.error({ err, method: r.method, path: r.path }, 'request failed');
      if (!req.complete) {
        // Answering before the body was read: discard the rest and close the connection after
        // the answer, rather than leave it busy with a body nobody reads.
        res.setHeader('Connection', 'close');
        req.resume();
      }
      sendError(res, err, r.isHead);
    }
  };

  async function dispatch(route: V2Route, r: Request): Promise<void> {
    switch (route.kind) {
      case 'base':
        allow(r, ['GET', 'HEAD']);
        await access.check(r.req, []);
        return sendJson(r.res, 200, { ...API_VERSION }, {}, r.isHead);
      case 'catalog':
        allow(r, ['GET']);
        await access.check(r.req, [{ resource: { type: 'registry', name: 'catalog' }, actions: ['*'] }]);
        return catalog(r);
      case 'tags':
        allow(r, ['GET']);
        await need(r, route.name, 'pull');
        return tags(r, route.name);
      case 'manifest':
        allow(r, ['GET', 'HEAD', 'PUT', 'DELETE']);
        if (r.method === 'PUT') {
          await need(r, route.name, 'push');
          return putManifest(r, route.name, route.reference);
        }
        if (r.method === 'DELETE') {
          await need(r, route.name, 'delete');
          await registry.deleteManifest(route.name, route.reference);
          audit(r, 'delete', route.name, route.reference);
          return send(r.res, 202, { ...API_VERSION, 'Content-Length': 0 });
        }
        await need(r, route.name, 'pull');
        return getManifest(r, route.name, route.reference);
      case 'blob':
        allow(r, ['GET', 'HEAD', 'DELETE']);
        if (r.method === 'DELETE') {
          await need(r, route.name, 'delete');
          await registry.deleteBlob(route.name, route.digest);
          audit(r, 'delete', route.name, route.digest);
          return send(r.res, 202, { ...API_VERSION, 'Content-Length': 0 });
        }
        await need(r, route.name, 'pull');
        return getBlob(r, route.name, route.digest);
      case 'uploads':
        allow(r, ['POST']);
        return startUpload(r, route.name);
      case 'upload':
        allow(r, ['GET', 'PATCH', 'PUT', 'DELETE']);
        await need(r, route.name, 'push');
        return upload(r, route.name, route.id);
      case 'referrers':
        allow(r, ['GET']);
        await need(r, route.name, 'pull');
        return referrers(r, route.name, route.digest);
    }
  }

  async function need(r: Request, name: string, ...actions: AccessNeed['actions']): Promise<void> {
    const principal = await access.check(r.req, [{ resource: { type: 'repository', name }, actions }]);
    r.user = principal.user;
  }

  /** One line per change of content, for whoever must later answer "who pushed or deleted this". */
  function audit(r: Request, action: 'push' | 'mount' | 'delete', repo: string, digest: string, tag?: string, from?: string): void {
    deps.log.info(
      { audit: action, user: r.user ?? '(anonymous)', repo, digest, ...(tag ? { tag } : {}), ...(from ? { from } : {}), remote: r.req.socket.remoteAddress },
      `${action} ${repo}@${digest}`,
    );
    deps.audit?.record({ action, user: r.user ?? '(anonymous)', repo, digest, tag: tag ?? null, remote: r.req.socket.remoteAddress ?? null });
  }

  // ---- manifests -----------------------------------------------------------------------------

  async function getManifest(r: Request, name: string, reference: string): Promise<void> {
    const m = await registry.findManifest(name, reference, r.isHead, namespace(r));
    const accept = r.req.headers.accept;
    if (!acceptsMediaType(accept, m.mediaType)) {
      throw new RegistryError(
        'MANIFEST_UNKNOWN',
        `manifest ${reference} is a ${m.mediaType}, which the request's Accept header does not list`,
        { mediaType: m.mediaType },
      );
    }
    send(r.res, 200, manifestHeaders(m), m.content, r.isHead);
  }

  async function putManifest(r: Request, name: string, reference: string): Promise<void> {
    const body = await readBody(r.req, deps.manifestLimit);
    // A push by digest may name tags to set with it: ?tag=a&tag=b (answered in OCI-Tag).
    const tagParams = r.query.getAll('tag');
    const { digest, subject, tags } = await registry.putManifest(name, reference, body, r.req.headers['content-type'], tagParams);
    if (tags.length === 0) audit(r, 'push', name, digest);
    for (const tag of tags) audit(r, 'push', name, digest, tag);
    const headers: Headers = {
      ...API_VERSION,
      Location: manifestPath(name, digest),
      'Docker-Content-Digest': digest,
      'Content-Length': 0,
    };
    if (subject) headers['OCI-Subject'] = subject;
    // One field listing every tag set (RFC 9110 list syntax; a tag holds no comma).
    if (tagParams.length > 0) headers['OCI-Tag'] = tags.join(', ');
    send(r.res, 201, headers);
  }

  // ---- blobs ---------------------------------------------------------------------------------

  async function getBlob(r: Request, name: string, digest: string): Promise<void> {
    const blob = await registry.findBlob(name, digest, r.isHead, namespace(r));
    const headers: Headers = {
      ...API_VERSION,
      'Docker-Content-Digest': digest,
      ETag: `"${digest}"`,
      'Cache-Control': 'max-age=31536000',
      'Content-Type': 'application/octet-stream',
      ...cacheHeader(blob.outcome),
    };
    const { size } = blob;
    // A stored blob's bytes come straight from the object store; pull-through transfers still
    // stream through here (the bucket does not have them yet).
    if (deps.redirect && !r.isHead && size !== undefined && blob.outcome !== 'miss') {
      return send(r.res, 307, { ...API_VERSION, 'Docker-Content-Digest': digest, Location: await deps.redirect(digest), 'Content-Length': 0 });
    }
    if (size === undefined) {
      // An upstream streaming without a length: pass it on whole, chunked.
      if (r.isHead || !blob.open) return send(r.res, 200, headers, undefined);
      return sendStream(r.res, 200, headers, await blob.open());
    }
    headers['Accept-Ranges'] = 'bytes';
    const ranges = parseRangeHeader(r.req.headers.range, size);
    const served = (length: number) => {
      if (blob.outcome === 'hit' || blob.outcome === 'stale') deps.stats?.bytesFromCache(length);
    };
    if (!ranges) {
      headers['Content-Length'] = size;
      if (r.isHead || !blob.open) return send(r.res, 200, headers, undefined);
      served(size);
      return sendStream(r.res, 200, headers, await blob.open());
    }
    if (ranges.length === 1) {
      const [range] = ranges as [ByteRange];
      headers['Content-Length'] = range.end - range.start + 1;
      headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
      if (r.isHead || !blob.open) return send(r.res, 206, headers, undefined);
      served(range.end - range.start + 1);
      return sendStream(r.res, 206, headers, await blob.open(range));
    }
    const multipart = multipartByteranges(ranges, size);
    headers['Content-Type'] = multipart.contentType;
    headers['Content-Length'] = multipart.length;
    if (r.isHead || !blob.open) return send(r.res, 206, headers, undefined);
    const open = blob.open;
    served(multipart.length);
    const parts = await Promise.all(ranges.map((range) => open(range)));
    return sendStream(r.res, 206, headers, multipart.body(parts));
  }

  // ---- uploads -------------------------------------------------------------------------------

  async function startUpload(r: Request, name: string): Promise<void> {
    const mount = r.query.get('mount');
    const from = r.query.get('from') ?? undefined;
    const digest = r.query.get('digest');
    if (mount !== null) {
      assertDigest(mount);
      if (from !== undefined) assertName(from);
      // Mounting reveals the source's content, so it takes pull there too. One check for both, so
      // that a refusal's challenge names every scope the client's token must cover.
      const needs: AccessNeed[] = [{ resource: { type: 'repository', name }, actions: ['push'] }];
      if (from !== undefined) needs.push({ resource: { type: 'repository', name: from }, actions: ['pull'] });
      r.user = (await access.check(r.req, needs)).user;
      // Without from=, the blob could come out of any repository: only one the client may pull
      // counts (any, when nothing is access-controlled).
      const user = r.user;
      const mayPullFrom =
        from !== undefined || access === openAccess
          ? undefined
          : (source: string) => access.allows(user, { resource: { type: 'repository', name: source }, actions: ['pull'] });
      const source = await registry.mountBlob(name, mount, from, mayPullFrom);
      if (source !== undefined) {
        audit(r, 'mount', name, mount, undefined, source || undefined);
        return sendCreatedBlob(r, name, mount);
      }
      // Not mountable: the spec says to fall back to an ordinary upload session.
    } else {
      await need(r, name, 'push');
    }
    if (digest !== null) {
      assertDigest(digest);
      const id = await registry.startUpload(name, uploadOwner(r));
      try {
        await registry.completeUpload(name, id, digest, chunkOf(r));
      } catch (e) {
        await registry.cancelUpload(name, id).catch(() => undefined);
        throw e;
      }
      audit(r, 'push', name, digest);
      return sendCreatedBlob(r, name, digest);
    }
    // The algorithm the client will commit with (it SHOULD say so for one other than sha256): hashed
    // as the bytes arrive, and an algorithm airlock cannot verify is refused before any are sent.
    const algorithmParam = r.query.get('digest-algorithm');
    const algorithm = algorithmParam === null ? undefined : assertDigestAlgorithm(algorithmParam);
    const id = await registry.startUpload(name, uploadOwner(r), algorithm);
    // Chunks smaller than the store's minimum still work, at a cost; the spec's hint lets clients
    // that chunk uploads (oras, the conformance suite) size them so they cost nothing extra.
    const minChunk = registry.blobs.minChunkBytes;
    const hint: Headers = minChunk === undefined ? {} : { 'OCI-Chunk-Min-Length': String(minChunk) };
    send(r.res, 202, { ...API_VERSION, ...uploadHeaders(name, id, 0), ...hint, 'Content-Length': 0 });
  }

  async function upload(r: Request, name: string, id: string): Promise<void> {
    // A 416 (chunk out of order, malformed Content-Range) tells the client where the upload stands,
    // so it can resume from there; an unknown session is a 404 instead.
    const resumable = async (e: unknown): Promise<never> => {
      if (e instanceof RegistryError && e.status === 416) e.withHeaders(uploadHeaders(name, id, await registry.uploadStatus(name, id)));
      throw e;
    };
    switch (r.method) {
      case 'GET': {
        const size = await registry.uploadStatus(name, id);
        return send(r.res, 204, { ...API_VERSION, ...uploadHeaders(name, id, size), 'Content-Length': 0 });
      }
      case 'PATCH': {
        const size = await Promise.resolve()
          .then(() => registry.appendChunk(name, id, chunkOf(r)))
          .catch(resumable);
        return send(r.res, 202, { ...API_VERSION, ...uploadHeaders(name, id, size), 'Content-Length': 0 });
      }
      case 'PUT': {
        const digest = r.query.get('digest');
        if (digest === null) throw new RegistryError('DIGEST_INVALID', 'completing an upload needs ?digest=<digest of the whole blob>');
        await Promise.resolve()
          .then(() => registry.completeUpload(name, id, digest, hasBody(r.req) ? chunkOf(r) : undefined))
          .catch(resumable);
        audit(r, 'push', name, digest);
        return sendCreatedBlob(r, name, digest);
      }
      case 'DELETE':
        await registry.cancelUpload(name, id);
        return send(r.res, 204, { ...API_VERSION, 'Content-Length': 0 });
    }
  }

  function sendCreatedBlob(r: Request, name: string, digest: string): void {
    send(r.res, 201, { ...API_VERSION, Location: blobPath(name, digest), 'Docker-Content-Digest': digest, 'Content-Length': 0 });
  }

  // ---- listings ------------------------------------------------------------------------------

  async function catalog(r: Request): Promise<void> {
    const { limit, last } = pagination(r.query);
    const page = await registry.catalog(limit, last);
    const headers: Headers = { ...API_VERSION };
    if (page.more) headers.Link = nextLink('/v2/_catalog', limit, page.items.at(-1)!);
    sendJson(r.res, 200, headers, { repositories: page.items });
  }

  async function tags(r: Request, name: string): Promise<void> {
    const { limit, last } = pagination(r.query);
    const page = await registry.listTags(name, limit, last, namespace(r));
    const headers: Headers = { ...API_VERSION };
    if (page.more) headers.Link = nextLink(`/v2/${name}/tags/list`, limit, page.items.at(-1)!);
    sendJson(r.res, 200, headers, { name, tags: page.items });
  }

  async function referrers(r: Request, name: string, digest: string): Promise<void> {
    const artifactType = r.query.get('artifactType') ?? undefined;
    const found = await registry.referrers(name, digest, artifactType);
    const headers: Headers = { ...API_VERSION, 'Content-Type': MediaType.OCI_INDEX };
    if (artifactType !== undefined) headers['OCI-Filters-Applied'] = 'artifactType';
    const index = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: found.map(referrerDescriptor) };
    send(r.res, 200, headers, JSON.stringify(index));
  }
}

// ---- helpers ---------------------------------------------------------------------------------

function allow(r: Request, methods: string[]): void {
  if (!methods.includes(r.method)) {
    throw new RegistryError('UNSUPPORTED', `${r.method} is not supported on ${r.path.slice(0, 200)}`).withHeaders({
      Allow: methods.join(', '),
    });
  }
}

/** containerd's ?ns=<registry> query: which registry the client meant. */
function namespace(r: Request): string | undefined {
  return r.query.get('ns') || undefined;
}

/** Whose quota an upload session counts against: the user, or an anonymous client's address. */
function uploadOwner(r: Request): string {
  return r.user ?? `anonymous@${r.req.socket.remoteAddress ?? 'unknown'}`;
}

function manifestHeaders(m: ManifestAnswer): Headers {
  // Built as one literal: this runs for every manifest request, the hottest path there is.
  const headers: Headers = {
    'Docker-Distribution-API-Version': 'registry/2.0',
    'Content-Type': m.mediaType,
    'Content-Length': m.size,
    'Docker-Content-Digest': m.digest,
    ETag: `"${m.digest}"`,
  };
  if (m.outcome) headers['X-Cache'] = X_CACHE[m.outcome];
  return headers;
}

/** Tells clients (and operators with curl) how a proxied answer was served. */
const X_CACHE: Record<CacheOutcome, string> = { hit: 'HIT', miss: 'MISS', stale: 'STALE' };

function cacheHeader(outcome: CacheOutcome | undefined): Headers {
  return outcome ? { 'X-Cache': X_CACHE[outcome] } : {};
}

function uploadHeaders(name: string, id: string, size: number): Record<string, string> {
  // oc parses "0-<last>" without a unit; an empty upload is reported as 0-0 as distribution does.
  return { Location: uploadPath(name, id), Range: `0-${Math.max(size - 1, 0)}`, 'Docker-Upload-UUID': id };
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

function chunkOf(r: Request): ChunkInfo {
  const length = r.req.headers['content-length'];
  return {
    body: r.req,
    contentLength: length === undefined ? undefined : Number(length),
    range: parseContentRange(r.req.headers['content-range']),
  };
}

function pagination(query: URLSearchParams): { limit: number; last?: string } {
  const n = query.get('n');
  let limit = DEFAULT_PAGE;
  if (n !== null) {
    if (!/^\d+$/.test(n)) throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be a non-negative integer, not "${n.slice(0, 50)}"`);
    limit = Math.min(Number(n), MAX_PAGE);
  }
  return { limit, last: query.get('last') ?? undefined };
}

function nextLink(path: string, limit: number, last: string): string {
  return `<${path}?n=${limit}&last=${encodeURIComponent(last)}>; rel="next"`;
}

function referrerDescriptor(m: ManifestRecord) {
  const descriptor: Record<string, unknown> = { mediaType: m.mediaType, digest: m.digest, size: m.size };
  if (m.artifactType) descriptor.artifactType = m.artifactType;
  if (m.annotations) descriptor.annotations = JSON.parse(m.annotations);
  return descriptor;
}

/** Reads a small request body whole (manifests), refusing more than `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  const tooLarge = () =>
    new RegistryError('MANIFEST_INVALID', `manifest is larger than the limit of ${limit} bytes`, undefined, 413).withHeaders({ Connection: 'close' });
  if (declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** A multipart/byteranges body over several file ranges, with its exact length known up front. */
function multipartByteranges(ranges: ByteRange[], size: number) {
  const boundary = `airlock-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const heads = ranges.map(
    (r, i) =>
      Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`),
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const length = heads.reduce((n, h, i) => n + h.length + ranges[i]!.end - ranges[i]!.start + 1, tail.length);
  return {
    contentType: `multipart/byteranges; boundary=${boundary}`,
    length,
    body(parts: Readable[]): Readable {
      return Readable.from(
        (async function* () {
          try {
            for (let i = 0; i < parts.length; i++) {
              yield heads[i]!;
              yield* parts[i]!;
            }
            yield tail;
          } finally {
            // A client that leaves early must not leave the parts not yet sent holding their files open.
            for (const part of parts) part.destroy();
          }
        })(),
      );
    },
  };
}
