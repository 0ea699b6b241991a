// `airlock user add` asks for the password on a real terminal: run the CLI under `script`
// (util-linux), which gives it a pseudo-terminal, and type at its prompts.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Htpasswd } from '../../src/auth/htpasswd.js';
import { createLogger } from '../../src/log.js';
import { runCli } from './cli.js';

const dir = mkdtempSync(join(tmpdir(), 'airlock-prompt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI on a pseudo-terminal, answering each prompt that matches with the next answer. */
function onTerminal(args: string[], answers: [RegExp, string][]): Promise<{ code: number | null; screen: string }> {
  return new Promise((resolve, reject) => {
    const command = ['node', 'dist/cli.js', ...args].map((a) => `'${a}'`).join(' ');
    const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    const pending = [...answers];
    child.stdout.on('data', (data: Buffer) => {
      screen += data.toString('utf8');
      while (pending.length && pending[0]![0].test(screen)) {
        child.stdin.write(`${pending.shift()![1]}\r`);
        screen += '\u0000'; // marks where the answer went, so the same prompt is not matched twice
      }
    });
    const timer = setTimeout(() => child.kill(), 20_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, screen });
    });
  });
}

describe('airlock user add on a terminal', () => {
  it('prompts twice without echoing and writes a bcrypt entry that logs in', async () => {
    const file = join(dir, 'users.htpasswd');
    const { code, screen } = await onTerminal(
      ['user', 'add', 'alice', '--htpasswd', file],
      [
        [/Password for alice: /, 'typed-on-a-tty'],
        [/Repeat the password: /, 'typed-on-a-tty'],
      ],
    );
    expect(code).toBe(0);
    expect(screen).toContain(`added user "alice" in ${file}`);
    expect(screen).not.toContain('typed-on-a-tty');
    expect(readFileSync(file, 'utf8')).toMatch(/^alice:\$2y\$12\$/);
    const users = await Htpasswd.load(file, createLogger('silent'));
    expect(await users.verify('alice', 'typed-on-a-tty')).toBe(true);
  });

  it('refuses to run without a terminal unless --password-stdin is given', async () => {
    const { code, stderr } = await runCli(['user', 'add', 'bob', '--htpasswd', join(dir, 'other.htpasswd')], { cwd: process.cwd() });
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/password-stdin/);
  });
});
