// One HTTP client per upstream registry: the pull side of the Distribution API (manifests, blobs,
// tags), with authentication, redirects and every failure turned into a typed UpstreamError.

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { Agent, request } from 'undici';
import type { UpstreamConfig } from '../config/schema.js';
import { UpstreamAuth, pullScope } from './auth.js';
import { UpstreamError, fromStatus, fromTransportError } from './errors.js';
import { contentLength, discard, errorDetail, headerValue, headerValues, readCapped, type ResponseData } from './http.js';
import type { Logger } from '../log.js';
import { credentialsForHost, parsePullSecret, PullSecretError, type Credentials, type PullSecret } from './pullsecret.js';
import { ReloadingFile, type ReloadingFileEvents } from './reloading-file.js';

export { UpstreamError, isUpstreamDown, type UpstreamErrorKind } from './errors.js';

/** What we accept for manifests, most capable first; sent as separate header values like containerd does. */
export const MANIFEST_ACCEPT: readonly string[] = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

/** Manifests are metadata; anything bigger than this is a mistake or an attack (distribution uses the same cap). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_TAGS_PAGE_BYTES = 32 * 1024 * 1024;
const MAX_TAG_PAGES = 10_000;
const MAX_REDIRECTS = 5;
/** Idle keep-alive sockets are kept this long: pulls come in bursts, and a TLS handshake per request is slow. */
const KEEP_ALIVE_MS = 30_000;
const SUPPORTED_DIGEST = /^(sha256|sha512):[a-f0-9]+$/;

export interface ManifestResult {
  digest: string;
  mediaType: string;
  size: number;
  /** The manifest bytes exactly as the upstream sent them (GET only). */
  body?: Buffer;
}

export interface BlobResult {
  /** From Content-Length; undefined when the upstream streams without one. */
  size: number | undefined;
  /**
   * Where the body starts in the blob: 0, or the offset asked for when the upstream honoured the
   * range (a server may ignore Range and send the whole blob with 200).
   */
  offset: number;
  /** The blob bytes as they arrive; transfer failures surface as UpstreamError 'error' events. */
  body: Readable;
  /** Stops the transfer and releases the connection. */
  abort(): void;
}

export interface UpstreamClientOptions {
  userAgent?: string;
  /** Clock for token expiry, injectable for tests. */
  now?: () => number;
  /** Where caFile/authFile reloads are reported. */
  log?: Pick<Logger, 'info' | 'warn'>;
}

interface Exchange {
  method: 'GET' | 'HEAD';
  url: URL;
  remoteRepo: string;
  /** What is being fetched, for messages: "manifest foo/bar:latest". */
  subject: string;
  accept?: readonly string[];
  /** A Range header value (bytes=N-), for resuming a blob transfer. */
  range?: string;
  followRedirects: boolean;
}

export class UpstreamClient {
  /** The upstream's configured URL, as it appears in messages. */
  readonly url: string;
  private readonly base: URL;
  private agent: Agent;
  /** The CA bundle the current agent trusts; a changed caFile gets a new agent (TLS options are per agent). */
  private agentCa: string | undefined;
  /** Agents replaced after a CA change, closing once their requests are over. */
  private readonly retiring = new Set<Promise<void>>();
  private readonly caFile: ReloadingFile<string> | undefined;
  private readonly pullSecret: ReloadingFile<PullSecret> | undefined;
  /** What checkFiles() saw last. */
  private checked: { ca: string | undefined; secret: PullSecret | undefined } | undefined;
  private readonly auth: UpstreamAuth;
  private readonly userAgent: string;

  /** Throws (plain Error) when the configuration cannot work: http without insecure, unreadable caFile or authFile. */
  constructor(
    readonly upstream: UpstreamConfig,
    options: UpstreamClientOptions = {},
  ) {
    this.url = upstream.url;
    // Keep a path prefix if the registry lives below one (some proxies do); API paths are appended to it.
    this.base = new URL(upstream.url.endsWith('/') ? upstream.url : `${upstream.url}/`);
    if (this.base.protocol === 'http:' && !upstream.insecure) {
      throw new Error(`upstream ${upstream.url} uses plain http; set insecure: true to allow it`);
    }
    this.userAgent = options.userAgent ?? 'airlock';
    // caFile and authFile are read again whenever they change: a renewed CA or a rotated pull secret
    // is picked up without a restart.
    const events = reloadEvents(upstream.url, options.log);
    this.caFile = upstream.caFile === undefined ? undefined : openCaFile(upstream, events);
    this.agentCa = this.caFile?.current();
    this.agent = this.newAgent(this.agentCa);
    const host = this.base.host;
    let credentials: () => Credentials | undefined = () => undefined;
    if (upstream.username !== undefined || upstream.password !== undefined) {
      const fixed = { username: upstream.username ?? '', password: upstream.password ?? '' };
      credentials = () => fixed;
    } else if (upstream.authFile !== undefined) {
      const secret = openPullSecret(upstream.authFile, events);
      this.pullSecret = secret;
      // Looked up once per version of the file, so the same credentials keep the same identity.
      let from = secret.current();
      let found = credentialsForHost(from, host);
      credentials = () => {
        const now = secret.current();
        if (now !== from) [from, found] = [now, credentialsForHost(now, host)];
        return found;
      };
    }
    this.auth = new UpstreamAuth({
      upstream: upstream.url,
      credentials,
      dispatcher: () => this.currentAgent(),
      assertAllowedUrl: (url, subject) => this.assertAllowedUrl(url, subject, undefined),
      userAgent: this.userAgent,
      ...(options.now === undefined ? {} : { now: options.now }),
    });
  }

  /**
   * Looks at caFile and authFile now; true when either changed since the last look (and the new
   * contents are in use). The caller may then retry an upstream it had given up on for a while:
   * the failures may have been ours (an old CA, a revoked password).
   */
  checkFiles(): boolean {
    const now = { ca: this.caFile?.current(), secret: this.pullSecret?.current() };
    const changed = this.checked !== undefined && (now.ca !== this.checked.ca || now.secret !== this.checked.secret);
    this.checked = now;
    return changed;
  }

  private newAgent(ca: string | undefined): Agent {
    const { upstream } = this;
    return new Agent({
      keepAliveTimeout: KEEP_ALIVE_MS,
      headersTimeout: upstream.timeout,
      // Time allowed between two body chunks, not for the whole body: large blobs may take long, stalls may not.
      bodyTimeout: upstream.timeout,
      connect: {
        timeout: upstream.timeout,
        rejectUnauthorized: !upstream.insecure,
        // Add to the system roots rather than replace them: blob redirects go to CDNs with public certificates.
        ...(ca === undefined ? {} : { ca: [...rootCertificates, ca] }),
      },
    });
  }

  /** The agent for the next request: a new one when caFile changed (transfers under way finish on the old one). */
  private currentAgent(): Agent {
    const ca = this.caFile?.current();
    if (ca !== this.agentCa) {
      const old = this.agent;
      this.agentCa = ca;
      this.agent = this.newAgent(ca);
      const closing = old.close().catch(() => undefined);
      this.retiring.add(closing);
      void closing.then(() => this.retiring.delete(closing));
    }
    return this.agent;
  }

  /**
   * Fetches (GET) or checks (HEAD) a manifest by tag or digest. GET returns the body byte-exact and
   * verified: against the reference when it is a digest, and against Docker-Content-Digest when sent.
   */
  async getManifest(remoteRepo: string, reference: string, options: { method?: 'GET' | 'HEAD' } = {}): Promise<ManifestResult> {
    const method = options.method ?? 'GET';
    const byDigest = reference.includes(':');
    const subject = `manifest ${remoteRepo}${byDigest ? '@' : ':'}${reference}`;
    if (byDigest) this.assertSupportedDigest(reference, remoteRepo, subject);
    const res = await this.send({
      method,
      url: this.apiUrl(remoteRepo, 'manifests', reference),
      remoteRepo,
      subject,
      accept: MANIFEST_ACCEPT,
      followRedirects: true,
    });
    const details = { upstream: this.url, repository: remoteRepo };
    const announced = headerValue(res, 'docker-content-digest')?.trim();
    const contentType = mediaTypeOf(headerValue(res, 'content-type'));

    if (method === 'HEAD') {
      await discard(res);
      const digest = byDigest ? reference : announced;
      const size = contentLength(res);
      if (byDigest && announced !== undefined && announced !== reference) {
        throw new UpstreamError('digest-mismatch', `upstream ${this.url} answered ${subject} with digest ${announced}`, details);
      }
      // Without a digest, a manifest media type and a size a HEAD answer is useless to a client, so
      // fetch the manifest and compute them; manifests are small.
      if (digest === undefined || size === undefined || isGenericType(contentType)) {
        const full = await this.getManifest(remoteRepo, reference, { method: 'GET' });
        return { digest: full.digest, mediaType: full.mediaType, size: full.size };
      }
      return { digest, mediaType: contentType, size };
    }

    const announcedSize = contentLength(res);
    const tooLarge = () =>
      new UpstreamError('invalid', `upstream ${this.url}: ${subject} is larger than ${MAX_MANIFEST_BYTES} bytes`, details);
    if (announcedSize !== undefined && announcedSize > MAX_MANIFEST_BYTES) {
      await discard(res);
      throw tooLarge();
    }
    let body: Buffer;
    try {
      body = await readCapped(res.body, MAX_MANIFEST_BYTES, tooLarge);
    } catch (e) {
      throw fromTransportError(e, subject, details);
    }

    const expected = byDigest ? reference : announced;
    const algorithm = expected !== undefined && SUPPORTED_DIGEST.test(expected) ? expected.split(':')[0]! : 'sha256';
    const digest = `${algorithm}:${createHash(algorithm).update(body).digest('hex')}`;
    if (expected !== undefined && digest !== expected) {
      const claimed = byDigest ? 'requested' : 'announced (Docker-Content-Digest)';
      throw new UpstreamError(
        'digest-mismatch',
        `upstream ${this.url} sent ${subject} whose content hashes to ${digest}, not the ${claimed} ${expected}`,
        details,
      );
    }
    return { digest, mediaType: isGenericType(contentType) ? mediaTypeFromBody(body, contentType) : contentType, size: body.length, body };
  }

  /**
   * Streams a blob, or its bytes from `from` on. Redirects (to S3, a CDN…) are followed without our
   * Authorization header. The bytes are not verified here: whoever stores them hashes them anyway, and
   * must discard them on mismatch.
   */
  async getBlob(remoteRepo: string, digest: string, from = 0): Promise<BlobResult> {
    const subject = `blob ${remoteRepo}@${digest}`;
    this.assertSupportedDigest(digest, remoteRepo, subject);
    const res = await this.send({
      method: 'GET',
      url: this.apiUrl(remoteRepo, 'blobs', digest),
      remoteRepo,
      subject,
      range: from > 0 ? `bytes=${from}-` : undefined,
      followRedirects: true,
    });
    const details = { upstream: this.url, repository: remoteRepo };
    const offset = res.statusCode === 206 ? rangeStart(headerValue(res, 'content-range')) : 0;
    if (offset === undefined || (res.statusCode === 206 && offset !== from)) {
      await discard(res);
      throw new UpstreamError('invalid', `upstream ${this.url} answered a range request for ${subject} with an unusable Content-Range`, details);
    }
    const body = relayWithUpstreamErrors(res.body, (e) => fromTransportError(e, subject, details));
    return { size: contentLength(res), offset, body, abort: () => body.destroy() };
  }

  /** Checks that a blob exists upstream and returns its size. */
  async headBlob(remoteRepo: string, digest: string): Promise<{ size: number }> {
    const subject = `blob ${remoteRepo}@${digest}`;
    this.assertSupportedDigest(digest, remoteRepo, subject);
    // Redirects are followed with HEAD too: distribution signs storage URLs for the method it was asked.
    const res = await this.send({
      method: 'HEAD',
      url: this.apiUrl(remoteRepo, 'blobs', digest),
      remoteRepo,
      subject,
      followRedirects: true,
    });
    await discard(res);
    const size = contentLength(res);
    if (size === undefined) {
      throw new UpstreamError('invalid', `upstream ${this.url} sent no Content-Length for ${subject}`, {
        upstream: this.url,
        repository: remoteRepo,
      });
    }
    return { size };
  }

  /**
   * Lists every tag of a repository, following `Link: <…>; rel="next"` pagination. `pageSize` asks for
   * pages of that many tags (`?n=`); without it the upstream picks (many return everything at once).
   */
  async listTags(remoteRepo: string, options: { pageSize?: number } = {}): Promise<string[]> {
    const subject = `tags of ${remoteRepo}`;
    const details = { upstream: this.url, repository: remoteRepo };
    let url: URL | undefined = this.apiUrl(remoteRepo, 'tags', 'list');
    if (options.pageSize !== undefined) url.searchParams.set('n', String(options.pageSize));
    const seen = new Set<string>();
    const tags: string[] = [];
    while (url !== undefined) {
      if (seen.has(url.href) || seen.size >= MAX_TAG_PAGES) {
        throw new UpstreamError('invalid', `upstream ${this.url}: tag pagination for ${remoteRepo} does not end`, details);
      }
      seen.add(url.href);
      const res = await this.send({ method: 'GET', url, remoteRepo, subject, followRedirects: true });
      const next = nextPageUrl(headerValues(res, 'link'), url);
      let body: Buffer;
      try {
        const tooLarge = () => new UpstreamError('invalid', `upstream ${this.url}: a tag list page for ${remoteRepo} exceeds ${MAX_TAGS_PAGE_BYTES} bytes`, details);
        body = await readCapped(res.body, MAX_TAGS_PAGE_BYTES, tooLarge);
      } catch (e) {
        throw fromTransportError(e, subject, details);
      }
      let page: { tags?: unknown };
      try {
        page = JSON.parse(body.toString('utf8')) as typeof page;
      } catch (e) {
        throw new UpstreamError('invalid', `upstream ${this.url}: tag list for ${remoteRepo} is not JSON (${(e as Error).message})`, details);
      }
      // distribution answers "tags": null for a repository whose tags were all deleted.
      if (page.tags !== null && page.tags !== undefined) {
        if (!Array.isArray(page.tags) || !page.tags.every((t) => typeof t === 'string')) {
          throw new UpstreamError('invalid', `upstream ${this.url}: tag list for ${remoteRepo} is not a list of strings`, details);
        }
        tags.push(...(page.tags as string[]));
      }
      url = next;
    }
    return tags;
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    await Promise.all([this.agent.close(), ...this.retiring]);
  }

  private apiUrl(remoteRepo: string, ...parts: string[]): URL {
    return new URL(`v2/${remoteRepo}/${parts.join('/')}`, this.base);
  }

  private assertSupportedDigest(digest: string, remoteRepo: string, subject: string): void {
    if (!SUPPORTED_DIGEST.test(digest)) {
      throw new UpstreamError('invalid', `cannot verify ${subject} from upstream ${this.url}: only sha256 and sha512 digests are supported`, {
        upstream: this.url,
        repository: remoteRepo,
      });
    }
  }

  private assertAllowedUrl(url: URL, subject: string, remoteRepo: string | undefined): void {
    if (this.upstream.offline) {
      throw new UpstreamError('unreachable', `upstream ${this.url} is configured offline; not fetching ${subject}`, {
        upstream: this.url,
        repository: remoteRepo,
        brief: 'configured offline',
      });
    }
    if (url.protocol === 'https:' || (url.protocol === 'http:' && this.upstream.insecure)) return;
    throw new UpstreamError('invalid', `upstream ${this.url}: refusing ${url.protocol}//${url.host} for ${subject} (set insecure: true to allow plain http)`, {
      upstream: this.url,
      repository: remoteRepo,
    });
  }

  /**
   * Sends a request with authentication: anonymously (or with what the last challenge taught), then,
   * on 401, once more answering the challenge. Returns a 2xx response; everything else throws.
   */
  private async send(exchange: Exchange): Promise<ResponseData> {
    const scope = pullScope(exchange.remoteRepo);
    const details = { upstream: this.url, repository: exchange.remoteRepo };
    this.assertAllowedUrl(exchange.url, exchange.subject, exchange.remoteRepo);

    const first = await this.auth.authorizationFor(scope);
    let res = await this.exchange(exchange, first);
    let sent = first;
    if (res.response.statusCode === 401 && res.sameOrigin) {
      const challenge = headerValues(res.response, 'www-authenticate');
      await discard(res.response);
      const retry = await this.auth.answerChallenge(challenge, scope, first);
      if (retry === undefined) throw this.unauthorized(exchange, 401, first);
      res = await this.exchange(exchange, retry);
      sent = retry;
    }

    const { response } = res;
    const status = response.statusCode;
    if (status >= 200 && status <= 299) return response;
    if ((status === 401 || status === 403) && res.sameOrigin) {
      await discard(response);
      throw this.unauthorized(exchange, status, sent);
    }
    const detail = exchange.method === 'HEAD' ? undefined : await errorDetail(response);
    if (exchange.method === 'HEAD') await discard(response);
    const answeredBy = res.sameOrigin ? exchange.subject : `${exchange.subject} (redirected to ${res.url.origin})`;
    throw fromStatus(status, answeredBy, { ...details, retryAfter: headerValue(response, 'retry-after'), detail });
  }

  private unauthorized(exchange: Exchange, status: number, sent: string | undefined): UpstreamError {
    // Whether we had something to offer decides the advice: fix the credentials, or configure some.
    const offeredCredentials = this.auth.hasCredentials && sent !== undefined;
    const message = offeredCredentials
      ? `credentials were rejected by ${this.url} (${status}) for ${exchange.subject}`
      : `${this.url} refused anonymous access (${status}) to ${exchange.subject}; configure username/password or authFile for this upstream`;
    const brief = offeredCredentials ? `refused our credentials (${status})` : `refused anonymous access (${status}), set credentials`;
    return new UpstreamError('unauthorized', message, { upstream: this.url, repository: exchange.remoteRepo, status, brief });
  }

  /**
   * One request, following redirects by hand: undici would forward our headers as they are, but the
   * Authorization header must stay with the registry — once a redirect leaves its origin (to S3, a CDN)
   * it is not sent again, even if a later hop comes back.
   */
  private async exchange(exchange: Exchange, authorization: string | undefined): Promise<{ response: ResponseData; url: URL; sameOrigin: boolean }> {
    const details = { upstream: this.url, repository: exchange.remoteRepo };
    let url = exchange.url;
    let sameOrigin = url.origin === this.base.origin;
    for (let hops = 0; ; hops += 1) {
      const headers: Record<string, string | string[]> = { 'user-agent': this.userAgent };
      if (exchange.accept !== undefined) headers.accept = [...exchange.accept];
      if (exchange.range !== undefined) headers.range = exchange.range;
      if (authorization !== undefined && sameOrigin) headers.authorization = authorization;
      let response: ResponseData;
      try {
        response = await request(url, { dispatcher: this.currentAgent(), method: exchange.method, headers });
      } catch (e) {
        throw fromTransportError(e, exchange.subject, details);
      }
      const location = headerValue(response, 'location');
      if (!exchange.followRedirects || !isRedirect(response.statusCode) || location === undefined) {
        return { response, url, sameOrigin };
      }
      await discard(response);
      if (hops >= MAX_REDIRECTS) {
        throw new UpstreamError('invalid', `upstream ${this.url}: more than ${MAX_REDIRECTS} redirects for ${exchange.subject}`, details);
      }
      url = new URL(location, url);
      this.assertAllowedUrl(url, exchange.subject, exchange.remoteRepo);
      sameOrigin = sameOrigin && url.origin === this.base.origin;
    }
  }
}

/**
 * undici compiles its HTTP parser (WebAssembly) at its first connection, which cost the first
 * pull-through request ~25 ms (measured); one request to our own listener at start-up pays it then.
 * Best effort: a failure only means the first upstream request pays instead.
 */
export async function warmUpHttpClient(ownUrl: string): Promise<void> {
  // Our own certificate may be one no CA vouches for; nothing is trusted from this answer.
  const agent = new Agent({ headersTimeout: 2000, bodyTimeout: 2000, connect: { timeout: 2000, rejectUnauthorized: false } });
  try {
    const res = await request(new URL('/healthz', ownUrl), { dispatcher: agent });
    await res.body.dump();
  } catch {
    // Nothing depends on it.
  } finally {
    await agent.close().catch(() => undefined);
  }
}

function openCaFile(upstream: UpstreamConfig, events: ReloadingFileEvents): ReloadingFile<string> {
  const checkPem = (text: string) => {
    if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new Error('holds no PEM certificate');
    return text;
  };
  try {
    return new ReloadingFile(upstream.caFile!, checkPem, events);
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new Error(`upstream ${upstream.url}: caFile ${upstream.caFile} cannot be read (${reason})`);
  }
}

function openPullSecret(path: string, events: ReloadingFileEvents): ReloadingFile<PullSecret> {
  try {
    return new ReloadingFile(path, (text) => parsePullSecret(text, path), events);
  } catch (e) {
    if (e instanceof PullSecretError) throw e;
    throw new PullSecretError(path, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Log lines for caFile/authFile changes: which upstream, which file, never the contents. */
function reloadEvents(upstream: string, log: UpstreamClientOptions['log']): ReloadingFileEvents {
  return {
    reloaded: (file) => log?.info({ upstream, file }, 'upstream credentials or CA file changed: now in use'),
    refused: (file, reason) => log?.warn({ upstream, file, reason }, 'upstream credentials or CA file changed but cannot be used; keeping the previous one'),
  };
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** "application/vnd.oci.image.manifest.v1+json; charset=utf-8" → the bare media type. */
function mediaTypeOf(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Types some servers (static file hosts, old proxies) send instead of the manifest's own media type. */
function isGenericType(mediaType: string): boolean {
  return mediaType === '' || mediaType === 'application/json' || mediaType === 'text/plain' || mediaType === 'application/octet-stream';
}

/** The manifest's own "mediaType" field, or what its shape says it is (the field is optional in OCI). */
function mediaTypeFromBody(body: Buffer, fallback: string): string {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { mediaType?: unknown; manifests?: unknown; config?: unknown };
    if (typeof doc.mediaType === 'string' && doc.mediaType !== '') return doc.mediaType;
    if (Array.isArray(doc.manifests)) return 'application/vnd.oci.image.index.v1+json';
    if (typeof doc.config === 'object' && doc.config !== null) return 'application/vnd.oci.image.manifest.v1+json';
  } catch {
    // Not JSON: leave the judgement to the registry's manifest validation.
  }
  return fallback;
}

/** The URL of the `rel="next"` link, resolved against the page it came from. */
function nextPageUrl(linkHeaders: string[], current: URL): URL | undefined {
  for (const header of linkHeaders) {
    for (const m of header.matchAll(/<([^>]*)>([^<]*)/g)) {
      if (/;\s*rel\s*=\s*"?next"?/i.test(m[2] ?? '')) return new URL(m[1]!, current);
    }
  }
  return undefined;
}

/** The first byte of a `Content-Range: bytes first-last/total` answer. */
function rangeStart(contentRange: string | undefined): number | undefined {
  const m = /^bytes\s+(\d+)-\d+\/(\d+|\*)$/i.exec(contentRange?.trim() ?? '');
  return m ? Number(m[1]) : undefined;
}

/** What a blob relay buffers: a fast upstream is not paused every 16 KiB (the stream default). */
const RELAY_BUFFER = 1024 * 1024;

/**
 * Passes a body through while turning transport errors into UpstreamError, so a consumer of the stream
 * sees the same typed failures as a caller of the methods; destroying the result cancels the transfer.
 */
function relayWithUpstreamErrors(source: Readable, toUpstreamError: (e: unknown) => UpstreamError): Readable {
  const relay = new UpstreamBody(source, toUpstreamError);
  // The consumer attaches its listeners only once it is ready (the cache file created): a failure
  // before that must not be an unhandled 'error' event, which would bring the process down. It stays
  // in relay.errored, where the consumer finds it (a destroyed stream is checked before waiting).
  relay.on('error', () => undefined);
  return relay;
}

/**
 * The relay itself: the source's chunks pushed on as they come, the source paused while the relay's
 * buffer is full. A readable side only: a PassThrough (source.pipe(relay)) also runs every chunk
 * through a writable side's state, callbacks and ticks, which showed in profiles of cold pulls as
 * a sizeable share of the event loop's JavaScript (4,096 chunks per 256 MiB layer).
 */
class UpstreamBody extends Readable {
  constructor(
    private readonly source: Readable,
    toUpstreamError: (e: unknown) => UpstreamError,
  ) {
    super({ highWaterMark: RELAY_BUFFER });
    source.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) source.pause();
    });
    source.on('end', () => this.push(null));
    source.on('error', (e) => this.destroy(toUpstreamError(e)));
    // Closed without 'end' or 'error' (destroyed under it): the consumer must not wait forever.
    source.on('close', () => {
      if (!source.readableEnded && !this.destroyed) this.destroy(toUpstreamError(new Error('the upstream response closed before its end')));
    });
  }

  override _read(): void {
    if (this.source.isPaused()) this.source.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.source.destroyed) this.source.destroy();
    callback(error);
  }
}
