import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { addUser, Htpasswd, isBcryptHash, userNameProblem } from '../../src/auth/htpasswd.js';
import { captureLogger, TEST_COST, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => {
  vi.restoreAllMocks();
  cleanup();
});

function bcryptLine(user: string, password: string, prefix: '$2a$' | '$2b$' | '$2y$'): string {
  return `${user}:${bcrypt.hashSync(password, TEST_COST).replace(/^\$2[aby]\$/, prefix)}`;
}

describe('Htpasswd', () => {
  it('verifies bcrypt entries with the $2a$, $2b$ and $2y$ prefixes', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(file, [bcryptLine('alice', 'a-pass', '$2a$'), bcryptLine('bob', 'b-pass', '$2b$'), bcryptLine('carol', 'c-pass', '$2y$')].join('\n') + '\n');
    const users = await Htpasswd.load(file, captureLogger().log);
    expect(users.userCount).toBe(3);
    expect(await users.verify('alice', 'a-pass')).toBe(true);
    expect(await users.verify('bob', 'b-pass')).toBe(true);
    expect(await users.verify('carol', 'c-pass')).toBe(true);
    expect(await users.verify('alice', 'b-pass')).toBe(false);
    expect(await users.verify('carol', '')).toBe(false);
  });

  it('refuses MD5, SHA and crypt entries with a warning naming the user and line', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(
      file,
      [
        '# comment line',
        'md5user:$apr1$2yXb6vXc$H9F6HhS1j5Xx8c6D8qW4b0',
        'shauser:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=',
        'cryptuser:rl4Ot1dNVYPXU',
        bcryptLine('good', 'pw', '$2y$'),
      ].join('\n'),
    );
    const capture = captureLogger();
    const users = await Htpasswd.load(file, capture.log);
    expect(users.userCount).toBe(1);
    expect(users.hasUser('md5user')).toBe(false);
    // Not even the "password" that would match a naive plain-text or prefix comparison gets in.
    expect(await users.verify('shauser', 'password')).toBe(false);
    expect(await users.verify('cryptuser', 'rl4Ot1dNVYPXU')).toBe(false);

    const warnings = capture.lines().filter((l) => l.level === 40);
    expect(warnings).toEqual([
      expect.objectContaining({ user: 'md5user', line: 2, msg: expect.stringContaining('$apr1$') }),
      expect.objectContaining({ user: 'shauser', line: 3, msg: expect.stringContaining('{SHA}') }),
      expect.objectContaining({ user: 'cryptuser', line: 4, msg: expect.stringContaining('crypt') }),
    ]);
  });

  it('rejects unknown users after a bcrypt comparison against a dummy hash, so timing hides who exists', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(file, bcryptLine('alice', 'pw', '$2y$') + '\n');
    const users = await Htpasswd.load(file, captureLogger().log);
    const compare = vi.spyOn(bcrypt, 'compare');
    expect(await users.verify('mallory', 'pw')).toBe(false);
    expect(compare).toHaveBeenCalledTimes(1);
    const dummy = compare.mock.calls[0]![1] as string;
    expect(isBcryptHash(dummy)).toBe(true);
    // Same cost as the real entries: the comparison takes as long as for a known user.
    expect(bcrypt.getRounds(dummy)).toBe(TEST_COST);
  });

  it('re-reads the file when it changes on disk', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(file, bcryptLine('alice', 'old', '$2y$') + '\n');
    const users = await Htpasswd.load(file, captureLogger().log);
    expect(await users.verify('alice', 'old')).toBe(true);
    expect(await users.verify('bob', 'new')).toBe(false);

    writeFileSync(file, [bcryptLine('alice', 'changed', '$2y$'), bcryptLine('bob', 'new', '$2y$')].join('\n') + '\n');
    expect(await users.verify('alice', 'old')).toBe(false);
    expect(await users.verify('alice', 'changed')).toBe(true);
    expect(await users.verify('bob', 'new')).toBe(true);
  });

  it('runs bcrypt once for a password that keeps being right, every time for a wrong one, and again after the entry changes', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(file, bcryptLine('alice', 'right', '$2y$') + '\n');
    const users = await Htpasswd.load(file, captureLogger().log);
    const compare = vi.spyOn(bcrypt, 'compare');
    for (let i = 0; i < 5; i++) expect(await users.verify('alice', 'right')).toBe(true);
    expect(compare).toHaveBeenCalledTimes(1);
    for (let i = 0; i < 3; i++) expect(await users.verify('alice', 'wrong')).toBe(false);
    expect(compare).toHaveBeenCalledTimes(4);

    // A new entry for the user (password changed): the remembered success no longer applies.
    writeFileSync(file, bcryptLine('alice', 'renewed', '$2y$') + '\n');
    expect(await users.verify('alice', 'right')).toBe(false);
    expect(await users.verify('alice', 'renewed')).toBe(true);
    expect(compare).toHaveBeenCalledTimes(6);
  });

  it('keeps the known users when the file briefly disappears', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(file, bcryptLine('alice', 'pw', '$2y$') + '\n');
    const capture = captureLogger();
    const users = await Htpasswd.load(file, capture.log);
    rmSync(file);
    expect(await users.verify('alice', 'pw')).toBe(true);
    expect(capture.lines().some((l) => l.level === 50 && String(l.msg).includes('keeping the previous users'))).toBe(true);
  });

  it('fails to load a missing file with a message naming it', async () => {
    await expect(Htpasswd.load(join(dir, 'absent'), captureLogger().log)).rejects.toThrow(/cannot read htpasswd file .*absent/);
  });
});

describe('addUser', () => {
  it('creates the file with mode 0600 and a $2y$ entry that verifies', async () => {
    const file = join(dir, 'users.htpasswd');
    expect(await addUser(file, 'alice', 'secret', TEST_COST)).toBe('added');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const content = readFileSync(file, 'utf8');
    expect(content).toMatch(/^alice:\$2y\$04\$[./A-Za-z0-9]{53}\n$/);
    expect(await (await Htpasswd.load(file, captureLogger().log)).verify('alice', 'secret')).toBe(true);
  });

  it('replaces an existing entry in place and leaves other lines alone', async () => {
    const file = join(dir, 'users.htpasswd');
    writeFileSync(file, `# operators\n${bcryptLine('alice', 'one', '$2y$')}\n${bcryptLine('bob', 'two', '$2y$')}\n`, { mode: 0o644 });
    expect(await addUser(file, 'alice', 'three', TEST_COST)).toBe('updated');
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe('# operators');
    expect(lines[1]).toMatch(/^alice:/);
    expect(lines[2]).toMatch(/^bob:/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const users = await Htpasswd.load(file, captureLogger().log);
    expect(await users.verify('alice', 'three')).toBe(true);
    expect(await users.verify('alice', 'one')).toBe(false);
    expect(await users.verify('bob', 'two')).toBe(true);
  });

  it('leaves no temp files behind', async () => {
    const file = join(dir, 'users.htpasswd');
    await addUser(file, 'alice', 'secret', TEST_COST);
    await addUser(file, 'bob', 'secret', TEST_COST);
    expect(readdirSync(dir)).toEqual(['users.htpasswd']);
  });

  it('refuses user names with ":" or whitespace, and empty or over-long passwords', async () => {
    const file = join(dir, 'users.htpasswd');
    await expect(addUser(file, 'a:b', 'pw', TEST_COST)).rejects.toThrow(/":"/);
    await expect(addUser(file, 'a b', 'pw', TEST_COST)).rejects.toThrow(/whitespace/);
    await expect(addUser(file, 'a\tb', 'pw', TEST_COST)).rejects.toThrow(/whitespace/);
    await expect(addUser(file, '', 'pw', TEST_COST)).rejects.toThrow(/empty/);
    await expect(addUser(file, 'alice', '', TEST_COST)).rejects.toThrow(/empty/);
    await expect(addUser(file, 'alice', 'x'.repeat(73), TEST_COST)).rejects.toThrow(/72 bytes/);
    expect(userNameProblem('mirror-writer')).toBeUndefined();
  });
});
