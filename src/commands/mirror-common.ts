import type { Config } from '../config/schema.js';
import type { CommandOutput } from './io.js';
import { formatBytes, formatSeconds } from './progress.js';
import { claimStore } from './store-claim.js';
import type { ContentSink } from '../mirror/content.js';
import type { CopyTally } from '../mirror/copy.js';
import { HttpSink } from '../mirror/http-sink.js';
import { removeOrphanUploads, StoreSink } from '../mirror/store.js';

/**
 * Where import and sync write: a server named by --to; else the configured store — the shared
 * backends (PostgreSQL, a bucket) directly, beside the replicas; or a storage directory directly,
 * under its lock, when nobody holds it, or through the server that holds it (which must see the
 * new content at once, not serve a stale view of a store changed behind its back).
 */
export async function openDestination(options: { config: Config; to?: string; authFile?: string; command: string; dryRun?: boolean }): Promise<{ sink: ContentSink; close(): Promise<void> }> {
  if (options.to !== undefined) {
    const sink = new HttpSink(options.to, { authFile: options.authFile, dryRun: options.dryRun });
    return { sink, close: () => sink.close() };
  }
  const claim = await claimStore(options.config, options.command, 'delegate');
  if (claim.kind === 'server') {
    const sink = new HttpSink(claim.url, { authFile: options.authFile, loopback: true, dryRun: options.dryRun });
    return { sink, close: () => sink.close() };
  }
  try {
    const { store } = claim;
    // Under the lock nothing else writes uploads; beside replicas their sessions are theirs.
    if (!claim.shared) await removeOrphanUploads(store);
    const feed = store.cluster?.feed;
    // Replicas keep manifests in memory: tell them what changed, as a replica would.
    const sink = new StoreSink(store, claim.shared ? store.description : `storage ${options.config.storage}`, feed ? (repo) => feed.publish('repo', repo) : undefined);
    return { sink, close: () => claim.release() };
  } catch (e) {
    await claim.release();
    throw e;
  }
}

/** The closing lines of import, export and sync: what was done, what was skipped and why. */
export function writeSummary(out: CommandOutput, verb: string, tally: CopyTally, seconds: number, dryRun = false): void {
  const rate = tally.bytes / Math.max(seconds, 0.001);
  const would = dryRun ? 'would copy ' : '';
  out.write(
    `${verb}: ${tally.images} image(s); ${would}${tally.manifests} manifest(s), ${tally.blobs} blob(s), ${formatBytes(tally.bytes)} ` +
      `in ${formatSeconds(seconds)}${dryRun ? '' : ` (${formatBytes(rate)}/s)`}\n`,
  );
  if (tally.presentItems) out.write(`skipped ${tally.presentItems} item(s), ${formatBytes(tally.presentBytes)}: already present at the destination\n`);
  if (tally.filteredPlatforms) out.write(`skipped ${tally.filteredPlatforms} platform image(s): not matching --filter-by-os\n`);
  if (tally.missing.length) {
    out.write(`skipped ${tally.missing.length} image(s) missing at the source (--skip-missing):\n`);
    for (const m of tally.missing) out.write(`  ${m.label}: ${m.reason}\n`);
  }
  if (tally.failed.length) {
    out.write(`FAILED ${tally.failed.length} image(s):\n`);
    for (const f of tally.failed) out.write(`  ${f.label}: ${f.reason}\n`);
  }
}

/** --map LOCAL=ORIGIN (import) and mapping.txt's SRC=DST lines split at the first "=". */
export function splitPair(text: string, what: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) throw new UsageError(`${what} "${text}" is not LEFT=RIGHT`);
  return [text.slice(0, eq).trim(), text.slice(eq + 1).trim()];
}

/** Bad usage: the command prints the message and exits 2. */
export class UsageError extends Error {}
