import type { IncomingMessage } from 'node:http';
import type { Authorizer, AccessNeed as AuthNeed } from '../auth/authorizer.js';
import { parseAuthorizationHeader } from '../auth/challenge.js';
import type { Logger } from '../log.js';
import { RegistryError } from '../registry/errors.js';
import type { AccessControl, AccessNeed, Principal } from './access.js';
import type { AuditTrail } from './audit-trail.js';

export const TOKEN_PATH = '/auth/token';

/** The token endpoint's URL as clients reach it, for the Bearer challenge's realm. */
function realmOf(req: IncomingMessage, configured: string | undefined, tls: boolean): string {
  if (configured) return configured;
  const forwardedProto = req.headers['x-forwarded-proto'];
  const proto = typeof forwardedProto === 'string' ? forwardedProto.split(',')[0]!.trim() : tls ? 'https' : 'http';
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  return `${proto}://${host}${TOKEN_PATH}`;
}

function toAuthNeeds(needs: AccessNeed[]): AuthNeed[] {
  return needs.map((need) =>
    need.resource.type === 'registry'
      ? { resource: need.resource, actions: ['catalog'] }
      : { resource: need.resource, actions: need.actions.flatMap((a) => (a === '*' ? (['pull', 'push', 'delete'] as const) : [a])) },
  );
}

/** Who a refused request claimed to be: the refused user, the Basic user name, or how it came. */
function claimedUser(error: RegistryError, header: string | undefined): string {
  const refused = (error.detail as { user?: unknown } | undefined)?.user;
  if (typeof refused === 'string') return refused;
  try {
    const credentials = parseAuthorizationHeader(header);
    if (credentials?.kind === 'basic') return credentials.user;
    return credentials ? '(bearer token)' : '(anonymous)';
  } catch {
    return '(malformed credentials)';
  }
}

/** The digest a refused request addressed, if any: in its path (blobs, manifests by digest) or ?digest= / ?mount=. */
function digestOf(url: string | undefined): string | undefined {
  const q = (url ?? '').indexOf('?');
  const path = q === -1 ? (url ?? '') : url!.slice(0, q);
  const last = path.slice(path.lastIndexOf('/') + 1);
  const query = new URLSearchParams(q === -1 ? '' : url!.slice(q + 1));
  const digest = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(last) ? last : (query.get('digest') ?? query.get('mount') ?? undefined);
  return digest?.slice(0, 200);
}

/** `auth:` configured: every request is checked against the rules, and refusals are audited. */
export function createAuthAccess(authorizer: Authorizer, log: Logger, options: { realm?: string; tls: boolean; audit?: AuditTrail }): AccessControl {
  return {
    async check(req: IncomingMessage, needs: AccessNeed[]): Promise<Principal> {
      const remote = req.socket.remoteAddress ?? 'unknown';
      try {
        return await authorizer.authorize(req.headers.authorization, toAuthNeeds(needs), realmOf(req, options.realm, options.tls), remote);
      } catch (e) {
        // Every refusal is audited, anonymous ones included. Only the anonymous version check
        // (GET /v2/ without credentials, no needs) is left out: it always gets the challenge, by
        // design, and is how every client discovers where to log in.
        const loginProbe = needs.length === 0 && req.headers.authorization === undefined;
        if (e instanceof RegistryError && !loginProbe) {
          log.warn(
            {
              audit: 'denied',
              code: e.code,
              user: claimedUser(e, req.headers.authorization),
              repo: needs.find((n) => n.resource.type === 'repository')?.resource.name,
              digest: digestOf(req.url),
              method: req.method,
              path: req.url?.split('?', 1)[0],
              needs: needs.map((n) => `${n.resource.type}:${n.resource.name}:${n.actions.join(',')}`),
              remote,
            },
            'request refused',
          );
          options.audit?.record({
            action: 'denied',
            code: e.code,
            user: claimedUser(e, req.headers.authorization),
            repo: needs.find((n) => n.resource.type === 'repository')?.resource.name ?? null,
            digest: digestOf(req.url) ?? null,
            remote,
          });
        }
        throw e;
      }
    },
    allows(user: string | undefined, need: AccessNeed): boolean {
      return authorizer.permits(user, toAuthNeeds([need]));
    },
  };
}

/** GET /auth/token: the Docker Registry token endpoint. */
export async function issueToken(authorizer: Authorizer, req: IncomingMessage, query: URLSearchParams): Promise<unknown> {
  return authorizer.issueToken({
    authorizationHeader: req.headers.authorization,
    service: query.get('service') ?? undefined,
    scopes: query.getAll('scope'),
    remoteAddress: req.socket.remoteAddress ?? 'unknown',
  });
}
