import type { IncomingMessage } from 'node:http';
import type { Authorizer, AccessNeed as AuthNeed } from '../auth/authorizer.js';
import type { Logger } from '../log.js';
import { RegistryError } from '../registry/errors.js';
import type { AccessControl, AccessNeed, Principal } from './access.js';

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

/** `auth:` configured: every request is checked against the rules, and refusals are audited. */
export function createAuthAccess(authorizer: Authorizer, log: Logger, options: { realm?: string; tls: boolean }): AccessControl {
  return {
    async check(req: IncomingMessage, needs: AccessNeed[]): Promise<Principal> {
      const remote = req.socket.remoteAddress ?? 'unknown';
      try {
        return await authorizer.authorize(req.headers.authorization, toAuthNeeds(needs), realmOf(req, options.realm, options.tls), remote);
      } catch (e) {
        // A first anonymous request is how every client discovers the challenge: not worth an audit line.
        if (e instanceof RegistryError && !(e.code === 'UNAUTHORIZED' && req.headers.authorization === undefined)) {
          log.warn(
            {
              audit: 'denied',
              code: e.code,
              method: req.method,
              path: req.url?.split('?', 1)[0],
              needs: needs.map((n) => `${n.resource.type}:${n.resource.name}:${n.actions.join(',')}`),
              remote,
            },
            'request refused',
          );
        }
        throw e;
      }
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
