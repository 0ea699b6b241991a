import pg from 'pg';
import type { Logger } from '../log.js';
import { redactUrl } from '../config/redact-url.js';
import { ADVISORY_NAMESPACE } from './schema.js';

/** Jobs that must run on one replica at a time. */
export type LeaderRole = 'gc' | 'eviction' | 'upload-expiry' | (string & {});

export type LeaderRun<T> = { leader: true; value: T } | { leader: false };

export interface LeaderElectionOptions {
  replicaId: string;
  log?: Logger;
}

interface RoleState {
  client?: pg.Client;
  held: boolean;
  /** Aborted when the held lock is lost (its connection died): a running job should stop. */
  lost: AbortController;
  /** Serializes this replica's attempts for the role (advisory locks are re-entrant per session). */
  turn: Promise<unknown>;
}

/**
 * Leader election per role with PostgreSQL session advisory locks: the replica whose dedicated
 * connection holds pg_try_advisory_lock(namespace, key(role)) is the leader for that role. The
 * server releases a session's locks when the session ends, so a replica that dies (or whose
 * connection dies) loses leadership without any timeout of ours, and the next replica to try wins.
 *
 * Leadership is sticky: once held, the lock is kept across runs, so a scheduled job keeps running
 * on the same replica instead of on whichever replica's timer fires first.
 */
export class LeaderElection {
  private readonly roles = new Map<string, RoleState>();
  private closed = false;

  constructor(
    private readonly connectionString: string,
    private readonly options: LeaderElectionOptions,
  ) {}

  /**
   * Runs fn if this replica is (or now becomes) the role's leader, with a signal aborted should
   * leadership be lost while it runs; otherwise does nothing. A database that cannot be reached
   * means "not leader" (logged), never a thrown error: a scheduler just tries again next time.
   */
  async runIfLeader<T>(role: LeaderRole, fn: (signal: AbortSignal) => Promise<T> | T): Promise<LeaderRun<T>> {
    const state = this.state(role);
    const attempt = state.turn.then(() => this.lead(role, state));
    state.turn = attempt.catch(() => {});
    if (!(await attempt)) return { leader: false };
    return { leader: true, value: await fn(state.lost.signal) };
  }

  /** Whether this replica held the role's lock at its last check. */
  isLeader(role: LeaderRole): boolean {
    return this.roles.get(role)?.held ?? false;
  }

  /** Gives the role up (another replica may take it at its next attempt). */
  async resign(role: LeaderRole): Promise<void> {
    const state = this.roles.get(role);
    const client = state?.client;
    if (!state || !client) return;
    this.dropped(role, state, client);
    // The lock is free once the server has ended the session, not before.
    await client.end().catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.roles.keys()].map((role) => this.resign(role)));
  }

  private state(role: string): RoleState {
    let state = this.roles.get(role);
    if (!state) this.roles.set(role, (state = { held: false, lost: new AbortController(), turn: Promise.resolve() }));
    return state;
  }

  /** True when this replica holds the role's lock on a live connection. */
  private async lead(role: string, state: RoleState): Promise<boolean> {
    if (this.closed) return false;
    try {
      const client = state.client ?? (await this.connect(role, state));
      if (state.held) {
        // A round trip proves the session (and so the lock) is still there.
        await client.query('SELECT 1');
        return state.client === client && state.held;
      }
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS locked', [ADVISORY_NAMESPACE, roleKey(role)]);
      if (!rows[0]?.locked || state.client !== client) return false;
      state.held = true;
      this.options.log?.info({ role, replica: this.options.replicaId }, 'leader: this replica now runs the role');
      return true;
    } catch (e) {
      this.options.log?.warn({ role, err: (e as Error).message, database: redactUrl(this.connectionString) }, 'leader: could not check leadership');
      if (state.client) this.dropped(role, state, state.client);
      return false;
    }
  }

  private async connect(role: string, state: RoleState): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.connectionString,
      keepAlive: true,
      // Shows in pg_stat_activity which replica leads what.
      application_name: `airlock ${this.options.replicaId} leader:${role}`.slice(0, 63),
    });
    client.on('error', () => this.dropped(role, state, client));
    client.on('end', () => this.dropped(role, state, client));
    try {
      await client.connect();
    } catch (e) {
      await client.end().catch(() => {});
      throw e;
    }
    state.client = client;
    return client;
  }

  /** The role's connection is gone (or given up): so is the lock, and any running job is told. */
  private dropped(role: string, state: RoleState, client: pg.Client): void {
    if (state.client !== client) return;
    state.client = undefined;
    client.end().catch(() => {});
    if (!state.held) return;
    state.held = false;
    if (!this.closed) this.options.log?.warn({ role }, 'leader: leadership lost (connection ended)');
    state.lost.abort(new Error(`leadership of ${role} lost`));
    state.lost = new AbortController();
  }
}

/** A role's advisory lock key: FNV-1a of its name as a signed 32-bit integer (stable everywhere). */
export function roleKey(role: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`role:${role}`, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash | 0 || 1; // 0 is the schema lock's key
}
