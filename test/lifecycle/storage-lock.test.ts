import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireStorageLock, LOCK_FILE, readLockHolder, StorageLockedError } from '../../src/lifecycle/storage-lock.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../server/cli.js';

const dirs: string[] = [];
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'airlock-lock-'));
  dirs.push(d);
  return d;
}

describe('storage lock', () => {
  it('refuses a second owner, naming the holder, and frees on release', () => {
    const dir = tempDir();
    const lock = acquireStorageLock(dir, 'gc');
    let error: unknown;
    try {
      acquireStorageLock(dir, 'fsck');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(StorageLockedError);
    expect((error as Error).message).toContain(`airlock gc (pid ${process.pid}`);
    lock.release();
    acquireStorageLock(dir, 'fsck').release();
  });

  it('takes over a lock whose owner died (kill -9 leaves the file behind)', async () => {
    const dir = tempDir();
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10)']);
    const deadPid = await new Promise<number>((resolve) => child.once('exit', () => resolve(child.pid!)));
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: deadPid, command: 'serve', since: 1 }));
    expect(readLockHolder(dir)).toBeUndefined();
    const lock = acquireStorageLock(dir, 'fsck');
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8'))).toMatchObject({ pid: process.pid, command: 'fsck' });
    lock.release();
  });

  it('a running server holds its storage and records its URL; a second server on it exits 1 naming the first', async () => {
    const server = await startTestServer();
    servers.push(server);
    expect(readLockHolder(server.storage)).toMatchObject({ pid: process.pid, command: 'serve', url: server.url });
    const second = await runCli(['serve', '--storage', server.storage, '--listen', '127.0.0.1:0']);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`is in use by airlock serve (pid ${process.pid}, serving ${server.url})`);
    await server.server.close();
    expect(readLockHolder(server.storage)).toBeUndefined();
    servers.splice(0);
    rmSync(server.storage, { recursive: true, force: true });
  });
});
