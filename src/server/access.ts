import type { IncomingMessage } from 'node:http';

export type RepositoryAction = 'pull' | 'push' | 'delete';

/** What a request needs to be allowed to do. */
export interface AccessNeed {
  resource: { type: 'repository'; name: string } | { type: 'registry'; name: 'catalog' };
  actions: (RepositoryAction | '*')[];
}

export interface Principal {
  /** Undefined for anonymous requests. */
  user?: string;
}

/**
 * Decides whether a request may proceed; throws a RegistryError (UNAUTHORIZED with a challenge,
 * DENIED, TOOMANYREQUESTS) when it may not. `needs` empty = "may talk to the registry at all".
 */
export interface AccessControl {
  check(req: IncomingMessage, needs: AccessNeed[]): Promise<Principal>;
  /**
   * Whether the rules let an already identified principal (from check) do `need`, without refusing
   * or auditing anything: for choosing among repositories (a mount without from=).
   */
  allows(user: string | undefined, need: AccessNeed): boolean;
}

/** No `auth:` configured: an open registry, as CNCF distribution is by default. */
export const openAccess: AccessControl = {
  check: async () => ({}),
  allows: () => true,
};
