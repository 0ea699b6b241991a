// Runs the built CLI (`node dist/cli.js`) as a child process, the way an operator does.
// The tests need `npm run build` first (npm test runs tsc before vitest).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);

export interface LogLine {
  msg?: string;
  level?: number;
  [key: string]: unknown;
}

export interface CliProcess {
  child: ChildProcess;
  /** From the "airlock listening" log line, e.g. http://127.0.0.1:40123 */
  url: string;
  port: number;
  stdout(): string;
  stderr(): string;
  /** stdout parsed as JSON log lines. */
  logLines(): LogLine[];
  /** Resolves once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running (for cleanup). */
  kill(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The caller's environment without AIRLOCK_* variables, plus `env`. */
function childEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AIRLOCK_')));
  return { ...clean, ...env };
}

/** `node [nodeArgs] dist/cli.js args`, or with `asExecutable` dist/cli.js itself (its `sh` launcher lines). */
function spawnCli(args: string[], env?: Record<string, string>, cwd?: string, nodeArgs: string[] = [], asExecutable = false) {
  const [command, argv] = asExecutable ? [CLI, args] : [process.execPath, [...nodeArgs, CLI, ...args]];
  const child = spawn(command, argv, { env: childEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

/** Runs the CLI to completion (it must exit within `timeoutMs`). */
export async function runCli(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnCli(args, options.env, options.cwd);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), options.timeoutMs ?? 10_000);
  const { code } = await p.exited;
  clearTimeout(timer);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

function parseLines(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine;
      } catch {
        return { msg: `(not JSON) ${l}` };
      }
    });
}

/**
 * Starts `airlock serve ...` and waits for its "airlock listening" log line, or, with `url`, until
 * that URL answers (for log levels that do not write the line).
 */
export async function startCli(
  args: string[],
  options: {
    env?: Record<string, string>;
    cwd?: string;
    url?: string;
    /** Flags for node itself, before the script. */
    nodeArgs?: string[];
    /** Runs dist/cli.js as the `airlock` executable does (its `sh` launcher lines), not under `node`. */
    asExecutable?: boolean;
  } = {},
): Promise<CliProcess> {
  if (options.asExecutable && options.nodeArgs?.length) throw new Error('node flags need `node dist/cli.js`, not the executable');
  const p = spawnCli(['serve', ...args], options.env, options.cwd, options.nodeArgs, options.asExecutable);
  const deadline = Date.now() + 15_000;
  let listening: LogLine | undefined;
  for (;;) {
    listening = parseLines(p.stdout()).find((l) => l.msg === 'airlock listening');
    if (listening) break;
    if (options.url !== undefined && (await answers(`${options.url}/v2/`))) {
      listening = { url: options.url };
      break;
    }
    if (p.child.exitCode !== null || p.child.signalCode !== null) {
      throw new Error(`airlock exited (${p.child.exitCode ?? p.child.signalCode}) before listening:\n${p.stderr()}\n${p.stdout()}`);
    }
    if (Date.now() > deadline) {
      p.child.kill('SIGKILL');
      throw new Error(`airlock did not log "airlock listening" within 15s:\n${p.stderr()}\n${p.stdout()}`);
    }
    await sleep(20);
  }
  const url = String(listening.url);
  return {
    child: p.child,
    url,
    port: Number(new URL(url).port),
    stdout: p.stdout,
    stderr: p.stderr,
    logLines: () => parseLines(p.stdout()),
    exited: p.exited,
    async kill() {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      await p.exited;
    },
  };
}

async function answers(url: string): Promise<boolean> {
  try {
    const res = await fetch(url);
    await res.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

export { freePort } from '../helpers/distribution.js';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
