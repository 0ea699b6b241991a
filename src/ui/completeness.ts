// "Is this release or catalog complete here?" for the Releases page: `airlock verify` run inside the
// server, through airlock's own mirror sets (upstreams and recorded origins), on request. A check
// reads the payload's layers, so it runs in the background, one at a time, and its answer is kept
// in memory until the next check of the same image (a restart forgets them).

import type { UpstreamConfig } from '../config/schema.js';
import { airlockRulesForHost, type Origin } from '../mirror/mirror-sets.js';
import { mergeRules } from '../mirror/resolve.js';
import { verifyPayload, type MirrorContent } from '../mirror/verify.js';
import type { Logger } from '../log.js';

export interface Completeness {
  state: 'checking' | 'done' | 'failed';
  checkedAt: string;
  images?: number;
  complete?: number;
  /** The first few missing images, for a person. */
  missing?: { reference: string; reason: string; message: string }[];
  missingCount?: number;
  error?: string;
}

const SHOWN_MISSING = 20;

export class CompletenessChecks {
  private readonly results = new Map<string, Completeness>();
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly content: MirrorContent,
    private readonly upstreams: readonly UpstreamConfig[],
    private readonly origins: () => Promise<Origin[]>,
    private readonly log: Logger,
  ) {}

  get(repo: string, digest: string): Completeness | undefined {
    return this.results.get(`${repo}@${digest}`);
  }

  /** Queues a check (unless one of that image is already waiting or running); returns at once. */
  start(repo: string, digest: string): void {
    const key = `${repo}@${digest}`;
    if (this.results.get(key)?.state === 'checking') return;
    this.results.set(key, { state: 'checking', checkedAt: new Date().toISOString() });
    this.queue = this.queue.then(() => this.run(key));
  }

  /** Resolves when every queued check has finished (tests, shutdown). */
  idle(): Promise<void> {
    return this.queue;
  }

  private async run(ref: string): Promise<void> {
    try {
      // airlock's own rules name local repositories directly (host ""): nothing to strip.
      const rules = mergeRules(airlockRulesForHost(this.upstreams, await this.origins(), '', 'all'));
      const report = await verifyPayload(this.content, ref, { rules, toLocal: (repository) => repository });
      this.results.set(ref, {
        state: 'done',
        checkedAt: new Date().toISOString(),
        images: report.images,
        complete: report.complete,
        missingCount: report.missing.length,
        missing: report.missing.slice(0, SHOWN_MISSING).map((m) => ({ reference: m.reference, reason: m.reason, message: m.message })),
      });
    } catch (e) {
      this.log.info({ ref, err: (e as Error).message }, 'completeness check failed');
      this.results.set(ref, { state: 'failed', checkedAt: new Date().toISOString(), error: (e as Error).message });
    }
  }
}
