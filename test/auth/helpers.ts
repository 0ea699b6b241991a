import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../src/log.js';

/** A real pino logger whose JSON lines are kept for assertions. */
export function captureLogger(): { log: Logger; lines: () => Record<string, unknown>[]; text: () => string } {
  const raw: string[] = [];
  const log = createLogger('debug', { write: (line: string) => void raw.push(line) });
  return {
    log,
    lines: () => raw.map((l) => JSON.parse(l) as Record<string, unknown>),
    text: () => raw.join(''),
  };
}

/** A fresh temp directory, removed by the returned cleanup. */
export function tempDir(prefix = 'airlock-auth-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function basicHeader(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** Cheapest bcrypt cost, so tests spend their time on behaviour rather than hashing. */
export const TEST_COST = 4;
