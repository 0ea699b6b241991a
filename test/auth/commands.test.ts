import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Htpasswd } from '../../src/auth/htpasswd.js';
import { runCert } from '../../src/commands/cert.js';
import type { CommandInput } from '../../src/commands/io.js';
import { runUserAdd } from '../../src/commands/user.js';
import { acquireLockFile } from '../../src/lifecycle/storage-lock.js';
import { captureLogger, TEST_COST, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

function sink(): { write: (s: string) => void; text: () => string } {
  let out = '';
  return { write: (s) => void (out += s), text: () => out };
}

/** A stand-in for a terminal: isTTY, records raw-mode switches, gets keystrokes pushed in. */
function fakeTerminal(): PassThrough & CommandInput & { rawModes: boolean[] } {
  const tty = new PassThrough() as PassThrough & CommandInput & { rawModes: boolean[] };
  tty.isTTY = true;
  tty.rawModes = [];
  tty.setRawMode = (mode: boolean) => tty.rawModes.push(mode);
  return tty;
}

async function verifies(file: string, user: string, password: string): Promise<boolean> {
  return (await Htpasswd.load(file, captureLogger().log)).verify(user, password);
}

describe('runUserAdd', () => {
  it('--password-stdin reads the password from stdin, without the trailing newline', async () => {
    const file = join(dir, 'users.htpasswd');
    const stdin = new PassThrough();
    stdin.end('s3cret: with spaces\n');
    const stdout = sink();
    const stderr = sink();
    const code = await runUserAdd({ file, name: 'mirror-writer', passwordStdin: true, stdin, stdout, stderr, cost: TEST_COST });
    expect(code).toBe(0);
    expect(stdout.text()).toBe(`added user "mirror-writer" in ${file}\n`);
    expect(stderr.text()).toBe('');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await verifies(file, 'mirror-writer', 's3cret: with spaces')).toBe(true);
  });

  it('prompts twice on a terminal without echoing, and updates an existing user', async () => {
    const file = join(dir, 'users.htpasswd');
    const first = new PassThrough();
    first.end('old\n');
    await runUserAdd({ file, name: 'alice', passwordStdin: true, stdin: first, stdout: sink(), stderr: sink(), cost: TEST_COST });

    const tty = fakeTerminal();
    const stdout = sink();
    const stderr = sink();
    const done = runUserAdd({ file, name: 'alice', passwordStdin: false, stdin: tty, stdout, stderr, cost: TEST_COST });
    // Typed with a typo fixed by Backspace, then typed ahead twice in one burst (a paste).
    tty.write('neX\u007fw-pass\rnew-pass\r');
    expect(await done).toBe(0);
    expect(stderr.text()).toBe('Password for alice: \nRepeat the password: \n');
    expect(stderr.text() + stdout.text()).not.toContain('new-pass');
    expect(tty.rawModes).toEqual([true, false]);
    expect(stdout.text()).toBe(`updated user "alice" in ${file}\n`);
    expect(await verifies(file, 'alice', 'new-pass')).toBe(true);
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('fails without changes when the two passwords differ', async () => {
    const file = join(dir, 'users.htpasswd');
    const tty = fakeTerminal();
    const stderr = sink();
    const done = runUserAdd({ file, name: 'alice', passwordStdin: false, stdin: tty, stdout: sink(), stderr, cost: TEST_COST });
    tty.write('one\r');
    tty.write('two\r');
    expect(await done).toBe(1);
    expect(stderr.text()).toContain('do not match');
    expect(() => statSync(file)).toThrow();
  });

  it('stops on Ctrl-C with exit code 130', async () => {
    const tty = fakeTerminal();
    const done = runUserAdd({ file: join(dir, 'f'), name: 'alice', passwordStdin: false, stdin: tty, stdout: sink(), stderr: sink(), cost: TEST_COST });
    tty.write('abc\u0003');
    expect(await done).toBe(130);
    expect(tty.rawModes).toEqual([true, false]);
  });

  it('is a usage error (2) when stdin is not a terminal and --password-stdin is absent', async () => {
    const stderr = sink();
    const code = await runUserAdd({ file: join(dir, 'f'), name: 'alice', passwordStdin: false, stdin: new PassThrough(), stdout: sink(), stderr, cost: TEST_COST });
    expect(code).toBe(2);
    expect(stderr.text()).toContain('--password-stdin');
  });

  it('is a usage error (2) for a bad user name or an empty password', async () => {
    const stderr = sink();
    const stdin = new PassThrough();
    stdin.end('pw\n');
    expect(await runUserAdd({ file: join(dir, 'f'), name: 'bad:name', passwordStdin: true, stdin, stdout: sink(), stderr })).toBe(2);
    expect(stderr.text()).toContain('":"');
    const empty = new PassThrough();
    empty.end('\n');
    expect(await runUserAdd({ file: join(dir, 'f'), name: 'alice', passwordStdin: true, stdin: empty, stdout: sink(), stderr })).toBe(2);
    expect(stderr.text()).toContain('must not be empty');
  });
});

describe('runCert', () => {
  it('writes the certificates and prints the trust instructions', async () => {
    const stdout = sink();
    const code = await runCert({ hosts: ['registry.example.test'], ips: ['127.0.0.1'], outDir: dir, days: 10, stdout, stderr: sink() });
    expect(code).toBe(0);
    for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key']) expect(statSync(join(dir, f)).isFile()).toBe(true);
    expect(stdout.text()).toContain('/etc/containers/certs.d/registry.example.test:5000/ca.crt');
    expect(stdout.text()).toContain('additionalTrustedCA');
  });

  it('is a usage error (2) without any host or IP', async () => {
    const stderr = sink();
    expect(await runCert({ hosts: [], ips: [], outDir: dir, stdout: sink(), stderr })).toBe(2);
    expect(stderr.text()).toContain('at least one host or IP');
  });
});

describe('runUserAdd on one htpasswd file at once', () => {
  it('concurrent runs each add their user: none is lost to another run rewriting the file', async () => {
    const file = join(dir, 'shared.htpasswd');
    const names = Array.from({ length: 8 }, (_, i) => `user${i}`);
    const codes = await Promise.all(
      names.map((name) => {
        const stdin = new PassThrough();
        stdin.end(`${name}-password\n`);
        return runUserAdd({ file, name, passwordStdin: true, stdin, stdout: sink(), stderr: sink(), cost: TEST_COST });
      }),
    );
    expect(codes).toEqual(names.map(() => 0));
    const users = readFileSync(file, 'utf8').trim().split('\n').map((line) => line.split(':')[0]);
    expect(users.sort()).toEqual(names);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it('a run that cannot get the file in time fails naming the holder pid, and changes nothing', async () => {
    const file = join(dir, 'held.htpasswd');
    const held = acquireLockFile(`${file}.lock`, file, 'user add', 'htpasswd file');
    try {
      const stdin = new PassThrough();
      stdin.end('pw-pw-pw\n');
      const stderr = sink();
      const code = await runUserAdd({ file, name: 'late', passwordStdin: true, stdin, stdout: sink(), stderr, cost: TEST_COST, lockWaitMs: 300 });
      expect(code).toBe(1);
      expect(stderr.text()).toContain(`htpasswd file ${file} is in use by airlock user add (pid ${process.pid})`);
      expect(existsSync(file)).toBe(false);
    } finally {
      held.release();
    }
  });
});
