// Every way talking to an upstream registry can fail, as one typed error. The registry core decides
// from `kind` alone whether to serve stale content, report a 404, or surface a 502/503/429.

export type UpstreamErrorKind =
  | 'unreachable' // connection refused, DNS failure, reset, TLS handshake failure
  | 'timeout' // connect, response headers or body stalled past upstream.timeout
  | 'server' // 5xx
  | 'ratelimited' // 429
  | 'unauthorized' // 401/403 after trying the credentials we have (or having none)
  | 'notfound' // 404
  | 'digest-mismatch' // content does not hash to the digest it was asked for / announced with
  | 'invalid'; // anything else: unexpected status, malformed answer, oversized manifest

export interface UpstreamErrorDetails {
  /** The upstream's configured URL. */
  upstream: string;
  /** The upstream repository involved, when there is one. */
  repository?: string;
  /** HTTP status when the upstream answered. */
  status?: number;
  /** From a 429's Retry-After: how long the upstream asked us to wait. */
  retryAfterMs?: number;
  cause?: unknown;
  /**
   * The cause in a few fixed words ("TLS verification failed, set caFile", "answered 500"): what a
   * client is told in the HTTP status line. Only words chosen here, never text from the upstream.
   */
  brief?: string;
}

export class UpstreamError extends Error {
  readonly upstream: string;
  readonly repository: string | undefined;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  readonly brief: string;

  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    details: UpstreamErrorDetails,
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'UpstreamError';
    this.upstream = details.upstream;
    this.repository = details.repository;
    this.status = details.status;
    this.retryAfterMs = details.retryAfterMs;
    this.brief = details.brief ?? BRIEF_BY_KIND[kind];
  }
}

const BRIEF_BY_KIND: Record<UpstreamErrorKind, string> = {
  unreachable: 'unreachable',
  timeout: 'timed out',
  server: 'failed',
  ratelimited: 'rate limited',
  unauthorized: 'refused our credentials',
  notfound: 'not found',
  'digest-mismatch': 'sent content not matching its digest',
  invalid: 'unusable answer',
};

/**
 * What the status line of an answer failed by this upstream error says, e.g.
 * "upstream quay.io: TLS verification failed, set caFile". containers/image (skopeo, CRI-O, podman)
 * ignores the body of a 5xx but prints the status line, so this is what a node's pull event shows.
 * Made of the upstream's host name (never credentials in its URL) and the brief's fixed words.
 */
export function upstreamReason(e: UpstreamError): string {
  let host: string;
  try {
    host = new URL(e.upstream).host;
  } catch {
    host = 'upstream';
  }
  return `upstream ${host}: ${e.brief}`;
}

const DOWN_KINDS: ReadonlySet<UpstreamErrorKind> = new Set(['unreachable', 'timeout', 'server', 'ratelimited']);

/**
 * True when the failure says "the upstream cannot serve right now" rather than "the upstream said no":
 * these are the failures where serving stale cached content is right and the circuit breaker counts.
 */
export function isUpstreamDown(err: unknown): boolean {
  return err instanceof UpstreamError && DOWN_KINDS.has(err.kind);
}

/** Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3); returns milliseconds from now. */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

/** Node/undici network error codes, with the words a person reading the log would use. */
const UNREACHABLE_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed while sending',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'DNS lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_SOCKET: 'connection closed unexpectedly',
  UND_ERR_CLOSED: 'connection closed',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'response ended before its announced length',
};

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  // Node wraps some connect failures (e.g. several addresses tried) in AggregateError.
  const inner = (err as { errors?: unknown[] } | null)?.errors?.[0];
  return inner === undefined ? undefined : errorCode(inner);
}

/** TLS verification failures carry OpenSSL-style codes; the fix is caFile or insecure, so say so. */
function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS|ERR_SSL/.test(code);
}

/**
 * Turns a thrown network/transport error into an UpstreamError. `subject` names what was being fetched
 * ("manifest foo/bar:latest") so the message stands on its own in a log line.
 */
export function fromTransportError(err: unknown, subject: string, details: UpstreamErrorDetails): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const code = errorCode(err);
  const where = `upstream ${details.upstream}`;
  if (code !== undefined && TIMEOUT_CODES.has(code)) {
    return new UpstreamError('timeout', `${where} timed out (${code}) for ${subject}`, { ...details, cause: err, brief: 'timed out' });
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    // Trusted, but issued for other names: another CA would not help, the URL or the certificate must change.
    const host = (err as { host?: unknown }).host ?? hostOf(details.upstream);
    return new UpstreamError(
      'unreachable',
      `${where}: TLS verification failed (${code}): its certificate does not name ${String(host)}, for ${subject}; use a url with a name the certificate lists, or reissue the certificate`,
      { ...details, cause: err },
    );
  }
  if (isTlsFailure(code)) {
    return new UpstreamError(
      'unreachable',
      `${where}: TLS verification failed (${code}) for ${subject}; set caFile to trust its CA, or insecure: true`,
      { ...details, cause: err, brief: 'TLS verification failed, set caFile' },
    );
  }
  const message = err instanceof Error ? err.message : String(err);
  // System errno codes (E...) are network trouble; anything else is a bug or a bad argument, and
  // calling it "unreachable" would send people looking at the network for nothing.
  if (code === undefined || !(code in UNREACHABLE_REASONS || /^E[A-Z]+$/.test(code))) {
    return new UpstreamError('invalid', `${where}: request failed (${message}) for ${subject}`, { ...details, cause: err, brief: 'request failed' });
  }
  const reason = UNREACHABLE_REASONS[code] ?? message;
  return new UpstreamError('unreachable', `${where} is unreachable (${reason}, ${code}) for ${subject}`, {
    ...details,
    cause: err,
    brief: `unreachable, ${UNREACHABLE_REASONS[code] ?? code}`,
  });
}

/**
 * Turns an unwanted HTTP status into an UpstreamError. `detail` is the registry's own explanation
 * when it sent one (e.g. Docker Hub's pull-rate-limit text), worth passing on verbatim.
 * A registry's own 401/403 is answered in client.ts (the message depends on which credentials were
 * tried); one reaching here came from elsewhere (e.g. an expired storage URL after a redirect): 'invalid'.
 */
export function fromStatus(
  status: number,
  subject: string,
  details: UpstreamErrorDetails & { retryAfter?: string; detail?: string },
): UpstreamError {
  const where = `upstream ${details.upstream}`;
  const why = details.detail ? `: ${details.detail}` : '';
  const base = { upstream: details.upstream, repository: details.repository, status };
  if (status === 404) return new UpstreamError('notfound', `${where} has no ${subject} (404${why})`, base);
  if (status === 429) {
    const retryAfterMs = parseRetryAfter(details.retryAfter);
    const wait = retryAfterMs === undefined ? '' : `; retry after ${Math.ceil(retryAfterMs / 1000)}s`;
    return new UpstreamError('ratelimited', `${where} is rate limiting (429) ${subject}${wait}${why}`, { ...base, retryAfterMs });
  }
  if (status >= 500) return new UpstreamError('server', `${where} failed (${status}) serving ${subject}${why}`, { ...base, brief: `answered ${status}` });
  return new UpstreamError('invalid', `${where} answered an unexpected ${status} for ${subject}${why}`, { ...base, brief: `answered an unexpected ${status}` });
}

function hostOf(url: string): string {
  try {
    return new URL(url).hostname;
  } catch {
    return url;
  }
}
