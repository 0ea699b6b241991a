import { allowedActions } from '../auth/access.js';
import type { AuthConfig } from '../config/schema.js';
import type { Session } from './session.js';

/** Who is looking at the dashboard, and what they may see and do. */
export interface Viewer {
  /** The logged-in user; undefined for anonymous visitors and for an open registry. */
  user?: string;
  session: Session;
  /** No `auth:`: everyone may do everything, as on /v2/. */
  open: boolean;
  /** May list every repository (the `catalog` right, as /v2/_catalog needs). */
  catalog: boolean;
  can(action: 'pull' | 'push' | 'delete', repo: string): boolean;
  /** The server renders mirror sets (the Mirror sets page is shown). */
  mirrorSets?: boolean;
}

export function viewerOf(auth: AuthConfig | undefined, user: string | undefined, session: Session): Viewer {
  if (!auth) return { user, session, open: true, catalog: true, can: () => true };
  return {
    user,
    session,
    open: false,
    catalog: allowedActions(auth, user, { type: 'registry', name: 'catalog' }).has('catalog'),
    can: (action, repo) => allowedActions(auth, user, { type: 'repository', name: repo }).has(action),
  };
}
