import pg from 'pg';
import type { Logger } from '../log.js';
import { redactUrl } from '../config/redact-url.js';

/** The one channel every replica listens on; the payload's kind says what changed. */
export const CHANGES_CHANNEL = 'airlock_changes';

/**
 * What a replica announces. Known kinds: 'repo' (a repository's manifests or tags changed: key is
 * the repository, drop its cached manifests), 'lease-released' (key is the digest whose fill ended).
 */
export type ChangeKind = 'repo' | 'lease-released' | (string & {});

export interface Change {
  kind: ChangeKind;
  key: string;
  /** replicaId of the publisher. */
  origin: string;
}

export type ChangeListener = (key: string, change: Change) => void;

export interface ChangeFeedOptions {
  /** This replica: its own notifications are not delivered back to it (it already knows). */
  replicaId: string;
  /** Sends notifications; the listening connection never runs other queries. */
  pool: pg.Pool;
  log?: Logger;
  channel?: string;
  /** First reconnect delay; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How often the idle listening connection is checked: a dead socket sends no notification. */
  checkEveryMs?: number;
}

/**
 * Cluster-wide change notifications over PostgreSQL LISTEN/NOTIFY.
 *
 * One dedicated connection LISTENs (a pooled one cannot: LISTEN belongs to a session). When it
 * drops, notifications sent meanwhile are lost for good, so after reconnecting the feed reports a
 * resync: callers then drop everything they cache, as if every key had changed.
 */
export class ChangeFeed {
  private client: pg.Client | undefined;
  private readonly listeners = new Map<string, Set<ChangeListener>>();
  private readonly resyncListeners = new Set<() => void>();
  private closed = false;
  private reconnecting: Promise<void> | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private readonly channel: string;

  private constructor(
    private readonly connectionString: string,
    private readonly options: ChangeFeedOptions,
  ) {
    this.channel = options.channel ?? CHANGES_CHANNEL;
  }

  /** Connects and LISTENs; resolves once notifications flow (so nothing published after is missed). */
  static async start(connectionString: string, options: ChangeFeedOptions): Promise<ChangeFeed> {
    const feed = new ChangeFeed(connectionString, options);
    await feed.listen();
    const every = options.checkEveryMs ?? 15_000;
    feed.checkTimer = setInterval(() => feed.check(), every);
    feed.checkTimer.unref();
    return feed;
  }

  /** True while the listening connection is up (false between a drop and the resync). */
  get connected(): boolean {
    return this.client !== undefined;
  }

  /** Calls `listener(key, change)` for every change of `kind` published by another replica. */
  on(kind: ChangeKind, listener: ChangeListener): () => void {
    let set = this.listeners.get(kind);
    if (!set) this.listeners.set(kind, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Calls `listener` after a reconnect: changes may have been missed, drop whatever is cached. */
  onResync(listener: () => void): () => void {
    this.resyncListeners.add(listener);
    return () => this.resyncListeners.delete(listener);
  }

  /**
   * Tells every other replica. Resolves once PostgreSQL has queued the notification; it reaches
   * the others asynchronously (usually within a millisecond on a LAN).
   */
  async publish(kind: ChangeKind, key: string): Promise<void> {
    const payload: Change = { kind, key, origin: this.options.replicaId };
    await this.options.pool.query('SELECT pg_notify($1, $2)', [this.channel, JSON.stringify(payload)]);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.checkTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.connectionString,
      keepAlive: true,
      // Shows in pg_stat_activity whose listening connection this is.
      application_name: `airlock ${this.options.replicaId} changes`.slice(0, 63),
    });
    // Without an 'error' listener a dropped connection would crash the process.
    client.on('error', (err) => this.dropped(client, err));
    client.on('end', () => this.dropped(client));
    client.on('notification', (msg) => {
      if (msg.channel === this.channel && msg.payload !== undefined) this.deliver(msg.payload);
    });
    try {
      await client.connect();
      // The channel is an identifier, not a parameter: quote it.
      await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`);
    } catch (e) {
      await client.end().catch(() => {});
      throw e;
    }
    if (this.closed) {
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
  }

  private deliver(payload: string): void {
    let change: Change;
    try {
      change = JSON.parse(payload) as Change;
    } catch {
      this.options.log?.warn({ payload: payload.slice(0, 200) }, 'change feed: ignoring a notification that is not JSON');
      return;
    }
    if (change.origin === this.options.replicaId) return;
    for (const listener of this.listeners.get(change.kind) ?? []) {
      try {
        listener(change.key, change);
      } catch (e) {
        this.options.log?.error({ err: e, kind: change.kind }, 'change feed: a listener failed');
      }
    }
  }

  /** A cheap round trip on the idle listening connection finds a socket that died silently. */
  private check(): void {
    const client = this.client;
    if (!client) return;
    client.query('SELECT 1').catch((e: Error) => this.dropped(client, e));
  }

  private dropped(client: pg.Client, err?: Error): void {
    if (this.client !== client) return; // already handled (error and end both fire)
    this.client = undefined;
    client.end().catch(() => {});
    if (this.closed) return;
    this.options.log?.warn({ err: err?.message, database: redactUrl(this.connectionString) }, 'change feed: listening connection lost, reconnecting');
    this.reconnecting ??= this.reconnect().finally(() => (this.reconnecting = undefined));
  }

  /** Retries with doubling delays until connected (or closed), then reports the resync. */
  private async reconnect(): Promise<void> {
    let delay = this.options.backoffMs ?? 100;
    const max = this.options.maxBackoffMs ?? 5_000;
    while (!this.closed) {
      await new Promise((r) => setTimeout(r, delay).unref());
      if (this.closed) return;
      try {
        await this.listen();
      } catch (e) {
        this.options.log?.warn({ err: (e as Error).message, retryInMs: Math.min(delay * 2, max) }, 'change feed: reconnect failed');
        delay = Math.min(delay * 2, max);
        continue;
      }
      if (this.closed) return;
      this.options.log?.info('change feed: reconnected, dropping cached state (resync)');
      for (const listener of this.resyncListeners) {
        try {
          listener();
        } catch (e) {
          this.options.log?.error({ err: e }, 'change feed: a resync listener failed');
        }
      }
      return;
    }
  }
}
