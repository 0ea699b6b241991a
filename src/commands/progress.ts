import cliProgress from 'cli-progress';
import { formatBytes } from '../config/units.js';
import type { CommandOutput } from './io.js';

/**
 * Progress of a long command (import, export, sync, gc, fsck, backup): a bar with items, bytes,
 * rate and ETA on a terminal (cli-progress draws it), plain log lines otherwise — one every few
 * seconds, so a CI log or a journal shows that work goes on without drowning in lines.
 */
export interface Progress {
  /** Adds to the totals when more work is discovered (an index's children, a layer list). */
  grow(items: number, bytes?: number): void;
  /** Counts finished work. */
  advance(items: number, bytes?: number): void;
  /** A line for the person watching, above the bar (or a log line). */
  note(text: string): void;
  /** Removes the bar; call before printing the summary. */
  stop(): void;
}

export interface ProgressOptions {
  /** What is being done, e.g. "import", "fsck". */
  label: string;
  /** Where to draw; the bar appears only when it is a terminal. */
  output: CommandOutput & { isTTY?: boolean };
  items?: number;
  bytes?: number;
  /** Seconds between plain log lines when not on a terminal. */
  logEvery?: number;
}

export { formatBytes };

/** 75.2 → "1m15s". */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return m < 60 ? `${m}m${s}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}

export function createProgress(options: ProgressOptions): Progress {
  const totals = { items: options.items ?? 0, bytes: options.bytes ?? 0 };
  const done = { items: 0, bytes: 0 };
  const started = Date.now();
  const rate = () => done.bytes / Math.max((Date.now() - started) / 1000, 0.001);
  const eta = () => (totals.bytes > done.bytes && done.bytes > 0 ? (totals.bytes - done.bytes) / rate() : 0);
  const describe = () =>
    `${options.label}: ${done.items}/${totals.items} items, ${formatBytes(done.bytes)}/${formatBytes(totals.bytes)}, ` +
    `${formatBytes(rate())}/s, ETA ${formatSeconds(eta())}`;

  if (options.output.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${options.label} [{bar}] {percentage}% | {value}/{total} items | {doneBytes}/{totalBytes} | {rate}/s | ETA {etaText}`,
        stream: options.output as unknown as NodeJS.WritableStream,
        hideCursor: true,
        clearOnComplete: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    const payload = () => ({
      doneBytes: formatBytes(done.bytes),
      totalBytes: formatBytes(totals.bytes),
      rate: formatBytes(rate()),
      etaText: formatSeconds(eta()),
    });
    bar.start(Math.max(totals.items, 1), 0, payload());
    return {
      grow(items, bytes = 0) {
        totals.items += items;
        totals.bytes += bytes;
        bar.setTotal(Math.max(totals.items, 1));
        bar.update(done.items, payload());
      },
      advance(items, bytes = 0) {
        done.items += items;
        done.bytes += bytes;
        bar.update(done.items, payload());
      },
      note(text) {
        // Printed above the bar, which redraws below it.
        bar.stop();
        options.output.write(`${text}\n`);
        bar.start(Math.max(totals.items, 1), done.items, payload());
      },
      stop() {
        bar.stop();
      },
    };
  }

  const every = (options.logEvery ?? 5) * 1000;
  let lastLine = Date.now();
  return {
    grow(items, bytes = 0) {
      totals.items += items;
      totals.bytes += bytes;
    },
    advance(items, bytes = 0) {
      done.items += items;
      done.bytes += bytes;
      if (Date.now() - lastLine >= every) {
        lastLine = Date.now();
        options.output.write(`${describe()}\n`);
      }
    },
    note(text) {
      options.output.write(`${text}\n`);
    },
    stop() {
      /* nothing drawn */
    },
  };
}
