// Dashboard sessions: a random id in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in
// memory (a restart asks people to log in again). Every session, anonymous ones included, carries a
// CSRF token that each form posts back: a POST without the token of its own session is refused.

import { randomBytes, timingSafeEqual } from 'node:crypto';

export const SESSION_COOKIE = 'airlock_session';
const SESSION_TTL_MS = 12 * 60 * 60_000;
/** Beyond this many live sessions the oldest go first: memory stays bounded whatever clients do. */
const MAX_SESSIONS = 10_000;

export interface Session {
  id: string;
  /** Undefined: an anonymous visitor (who may still log in). */
  user?: string;
  csrf: string;
  expiresAt: number;
}

export class SessionStore {
  // Insertion order = creation order, so the first entries are the oldest. Anonymous sessions are
  // kept apart: anyone can open those, and a flood of them must not push out logged-in people.
  private readonly users = new Map<string, Session>();
  private readonly anonymous = new Map<string, Session>();

  constructor(private readonly now: () => number = Date.now) {}

  create(user?: string): Session {
    const map = user === undefined ? this.anonymous : this.users;
    while (map.size >= MAX_SESSIONS) map.delete(map.keys().next().value!);
    const session = { id: randomBytes(24).toString('base64url'), user, csrf: randomBytes(24).toString('base64url'), expiresAt: this.now() + SESSION_TTL_MS };
    map.set(session.id, session);
    return session;
  }

  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const session = this.users.get(id) ?? this.anonymous.get(id);
    if (!session) return undefined;
    if (session.expiresAt <= this.now()) {
      this.destroy(id);
      return undefined;
    }
    return session;
  }

  destroy(id: string): void {
    this.users.delete(id);
    this.anonymous.delete(id);
  }
}

/** Whether a posted token is the session's own, compared in constant time. */
export function csrfMatches(session: Session, posted: unknown): boolean {
  if (typeof posted !== 'string') return false;
  const a = Buffer.from(session.csrf);
  const b = Buffer.from(posted);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookie(id: string, secure: boolean, maxAgeSeconds = SESSION_TTL_MS / 1000): string {
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure ? '; Secure' : ''}`;
}
