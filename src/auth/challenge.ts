/**
 * The two ends of HTTP authentication (RFC 7235) as registries use it: the `WWW-Authenticate` challenge
 * airlock sends, and the `Authorization` header clients answer with.
 */

/** RFC 7230 quoted-string: backslash-escape '"' and '\'. */
function quoted(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/** Why a presented bearer token was not enough (RFC 6750 §3.1); clients use it to decide whether to re-fetch one. */
export type BearerError = 'invalid_token' | 'insufficient_scope';

/**
 * `Bearer realm="…",service="…",scope="…"`. The token spec puts several scopes in ONE scope parameter,
 * separated by spaces; the client then asks the realm for a token covering all of them.
 */
export function bearerChallenge(options: { realm: string; service: string; scopes?: string[]; error?: BearerError }): string {
  const params = [`realm=${quoted(options.realm)}`, `service=${quoted(options.service)}`];
  if (options.scopes && options.scopes.length > 0) params.push(`scope=${quoted(options.scopes.join(' '))}`);
  if (options.error) params.push(`error=${quoted(options.error)}`);
  return `Bearer ${params.join(',')}`;
}

export function basicChallenge(realm = 'airlock'): string {
  return `Basic realm=${quoted(realm)}`;
}

export type Credentials = { kind: 'basic'; user: string; password: string } | { kind: 'bearer'; token: string };

/** A malformed Authorization header. The message never repeats the header: it may carry a secret. */
export class AuthorizationHeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthorizationHeaderError';
  }
}

// RFC 7235 token68; base64 and JWTs both fit it.
const TOKEN68_RE = /^[A-Za-z0-9\-._~+/]+=*$/;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

/** Reads Basic or Bearer credentials; undefined when there is no header at all. */
export function parseAuthorizationHeader(header: string | undefined): Credentials | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  const match = /^\s*(\S+)(?:\s+(.*?))?\s*$/.exec(header);
  const scheme = match?.[1]?.toLowerCase();
  const value = match?.[2] ?? '';
  if (scheme === 'basic') return parseBasic(value);
  if (scheme === 'bearer') {
    if (!TOKEN68_RE.test(value)) throw new AuthorizationHeaderError('malformed Bearer credentials: expected "Bearer <token>"');
    return { kind: 'bearer', token: value };
  }
  throw new AuthorizationHeaderError('unsupported authorization scheme: use Basic or Bearer');
}

function parseBasic(value: string): Credentials {
  if (value === '' || !BASE64_RE.test(value)) {
    throw new AuthorizationHeaderError('malformed Basic credentials: expected "Basic base64(user:password)"');
  }
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) throw new AuthorizationHeaderError('malformed Basic credentials: the decoded value has no ":" between user and password');
  // The user name cannot contain ':', the password can: split at the first one.
  return { kind: 'basic', user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
