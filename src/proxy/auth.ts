// Registry authentication as clients do it: try anonymously, and on 401 answer the WWW-Authenticate
// challenge — Basic with the configured credentials, or Bearer with a token from the realm's token
// service (Docker Hub, quay.io, ghcr.io, registry.redhat.io, OpenShift's registry all use Bearer).
// Tokens are cached per scope, and the challenge is remembered so later requests skip the 401 round trip.

import { request, type Dispatcher } from 'undici';
import { UpstreamError, fromStatus, fromTransportError } from './errors.js';
import { discard, errorDetail, readCapped } from './http.js';
import type { Credentials } from './pullsecret.js';
import { SingleFlight } from './singleflight.js';

export type Challenge = { scheme: 'basic' } | { scheme: 'bearer'; realm: string; service?: string };

/** Parses WWW-Authenticate; a Bearer challenge is preferred when both are offered. Undefined if neither. */
export function parseChallenge(headers: string[]): Challenge | undefined {
  let basic: Challenge | undefined;
  for (const header of headers) {
    const bearerAt = header.search(/\bbearer\s/i);
    if (bearerAt >= 0) {
      const params = parseParams(header.slice(bearerAt + 'bearer'.length));
      const realm = params.get('realm');
      if (realm !== undefined && realm !== '') {
        const service = params.get('service');
        return service === undefined ? { scheme: 'bearer', realm } : { scheme: 'bearer', realm, service };
      }
    }
    if (/(^|[\s,])basic(\s|$)/i.test(header)) basic = { scheme: 'basic' };
  }
  return basic;
}

/** auth-param list: key=value or key="quoted \"value\"", comma separated; the first of each key wins. */
function parseParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const m of text.matchAll(/([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))/g)) {
    const key = m[1]!.toLowerCase();
    const value = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
    if (!params.has(key)) params.set(key, value);
  }
  return params;
}

/** `repository:<name>:pull` — the only access a pull-through cache needs. */
export function pullScope(remoteRepo: string): string {
  return `repository:${remoteRepo}:pull`;
}

export interface UpstreamAuthOptions {
  /** The upstream's configured URL, for messages. */
  upstream: string;
  /** The credentials to offer now (a pull secret file may have been rotated since the last call). */
  credentials: () => Credentials | undefined;
  /** The dispatcher to use now (a changed caFile means a new one). */
  dispatcher: () => Dispatcher;
  /** Refuses URLs the upstream's settings do not allow (plain http without insecure). */
  assertAllowedUrl: (url: URL, subject: string) => void;
  userAgent: string;
  now?: () => number;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

/** Token lifetime when the token service does not say (the distribution token spec's default). */
const DEFAULT_TOKEN_SECONDS = 60;
const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;

export class UpstreamAuth {
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  /** Concurrent requests for the same scope share one token fetch. */
  private readonly tokenFetches = new SingleFlight<string, CachedToken>();
  private readonly now: () => number;
  private lastCredentials: Credentials | undefined;

  constructor(private readonly options: UpstreamAuthOptions) {
    this.now = options.now ?? Date.now;
    this.lastCredentials = options.credentials();
  }

  get hasCredentials(): boolean {
    return this.credentials() !== undefined;
  }

  /** The configured credentials; tokens obtained with earlier ones are dropped when they change. */
  private credentials(): Credentials | undefined {
    const current = this.options.credentials();
    if (current !== this.lastCredentials) {
      this.lastCredentials = current;
      this.tokens.clear();
    }
    return current;
  }

  /**
   * The Authorization header to send before any challenge, based on what the upstream asked for last
   * time; undefined means "try anonymously".
   */
  async authorizationFor(scope: string): Promise<string | undefined> {
    if (this.challenge === undefined) return undefined;
    if (this.challenge.scheme === 'basic') return this.basicHeader();
    return (await this.token(this.challenge, scope)).header;
  }

  /**
   * Answers a 401: remembers the challenge and returns the header to retry with, or undefined when
   * there is nothing new to try (no usable challenge, or Basic credentials that were already refused).
   */
  async answerChallenge(wwwAuthenticate: string[], scope: string, refused: string | undefined): Promise<string | undefined> {
    const challenge = parseChallenge(wwwAuthenticate);
    if (challenge === undefined) return undefined;
    this.challenge = challenge;
    if (challenge.scheme === 'basic') {
      const basic = this.basicHeader();
      return basic === refused ? undefined : basic;
    }
    // Drop the cached token only if it is the one just refused (revoked, or expired early). A 401 to an
    // anonymous request that raced with another request's token fetch must not throw that token away.
    if (refused !== undefined && this.tokens.get(scope)?.header === refused) this.tokens.delete(scope);
    return (await this.token(challenge, scope)).header;
  }

  private basicHeader(): string | undefined {
    const c = this.credentials();
    return c === undefined ? undefined : `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  }

  private async token(challenge: Challenge & { scheme: 'bearer' }, scope: string): Promise<CachedToken> {
    const cached = this.tokens.get(scope);
    if (cached !== undefined && this.now() < cached.expiresAt) return cached;
    const token = await this.tokenFetches.do(scope, () => this.fetchToken(challenge, scope));
    this.tokens.set(scope, token);
    return token;
  }

  /** GET <realm>?service=…&scope=… (Docker token authentication spec), with Basic credentials when configured. */
  private async fetchToken(challenge: Challenge & { scheme: 'bearer' }, scope: string): Promise<CachedToken> {
    const { upstream } = this.options;
    const url = new URL(challenge.realm);
    if (challenge.service !== undefined) url.searchParams.set('service', challenge.service);
    url.searchParams.set('scope', scope);
    const subject = `a ${scope} token from ${url.origin}${url.pathname}`;
    this.options.assertAllowedUrl(url, subject);

    const headers: Record<string, string> = { 'user-agent': this.options.userAgent, accept: 'application/json' };
    const basic = this.basicHeader();
    if (basic !== undefined) headers.authorization = basic;
    const details = { upstream };

    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { dispatcher: this.options.dispatcher(), method: 'GET', headers });
    } catch (e) {
      throw fromTransportError(e, subject, details);
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      await discard(res);
      const message = basic
        ? `credentials were rejected by ${url.origin} (token service for ${upstream}, ${res.statusCode})`
        : `${url.origin} refused an anonymous token for ${scope} (${res.statusCode}); configure username/password or authFile for ${upstream}`;
      const brief = basic
        ? `token service refused our credentials (${res.statusCode})`
        : `token service refused anonymous access (${res.statusCode}), set credentials`;
      throw new UpstreamError('unauthorized', message, { ...details, status: res.statusCode, brief });
    }
    if (res.statusCode < 200 || res.statusCode > 299) {
      const retryAfter = res.headers['retry-after'];
      throw fromStatus(res.statusCode, subject, {
        ...details,
        retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
        detail: await errorDetail(res),
      });
    }

    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      const body = await readCapped(res.body, MAX_TOKEN_RESPONSE_BYTES, () => new Error('token response too large'));
      doc = JSON.parse(body.toString('utf8')) as typeof doc;
    } catch (e) {
      throw new UpstreamError('invalid', `upstream ${upstream}: unusable answer fetching ${subject} (${(e as Error).message})`, {
        ...details,
        cause: e,
      });
    }
    // "token" per the distribution spec; "access_token" is the OAuth2 spelling some services use.
    const token = typeof doc.token === 'string' && doc.token !== '' ? doc.token : doc.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new UpstreamError('invalid', `upstream ${upstream}: no token in the answer fetching ${subject}`, details);
    }
    const seconds = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS;
    // Stop using a token a little before it expires, so it does not lapse between our check and its use.
    const marginMs = Math.min(10_000, seconds * 100);
    return { header: `Bearer ${token}`, expiresAt: this.now() + seconds * 1000 - marginMs };
  }
}
