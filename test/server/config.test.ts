// `airlock serve` configuration through the real CLI: bad configs exit 2 naming the key and the
// reason; AIRLOCK_* environment variables override the file; flags override both.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { http } from '../helpers/http.js';
import { freePort, runCli, startCli, type CliProcess } from './cli.js';

let dir: string;
const children: CliProcess[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-config-'));
});
afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill()));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function configFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('bad configuration exits 2 with the key path and the reason', () => {
  it('YAML that does not parse', async () => {
    const path = configFile('broken.yaml', 'listen: "127.0.0.1:5000\nstorage: [unclosed\n');
    const { code, stderr } = await runCli(['serve', '--config', path], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toContain(path);
    expect(stderr).toMatch(/not valid YAML/);
    expect(stderr).toMatch(/line \d+/);
  });

  it('an unknown key, at the top and nested', async () => {
    const top = await runCli(['serve', '--config', configFile('unknown.yaml', 'listen: "127.0.0.1:0"\nstorge: ./x\n')], { cwd: dir });
    expect(top.code).toBe(2);
    expect(top.stderr).toMatch(/unknown key\(s\) "storge"/);

    const nested = await runCli(['serve', '--config', configFile('nested.yaml', 'log:\n  levl: debug\n')], { cwd: dir });
    expect(nested.code).toBe(2);
    expect(nested.stderr).toMatch(/\blog: unknown key\(s\) "levl"/);
  });

  it('a bad listen value', async () => {
    const { code, stderr } = await runCli(['serve', '--config', configFile('listen.yaml', 'listen: "localhost"\n')], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toMatch(/\blisten: must be HOST:PORT/);
    const port = await runCli(['serve', '--config', configFile('port.yaml', 'listen: "0.0.0.0:70000"\n')], { cwd: dir });
    expect(port.code).toBe(2);
    expect(port.stderr).toMatch(/\blisten: must be HOST:PORT/);
  });

  it('a wrong value deeper in the tree names its whole path', async () => {
    const path = configFile('deep.yaml', 'upstreams:\n  - prefix: quay.io\n    url: ftp://quay.io\n  - prefix: docker.io\n    url: https://registry-1.docker.io\n    tagTTL: soon\n');
    const { code, stderr } = await runCli(['serve', '--config', path], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toMatch(/upstreams\.0\.url: must start with http:\/\/ or https:\/\//);
    expect(stderr).toMatch(/upstreams\.1\.tagTTL: "soon" is not a duration/);
  });

  it('a --config that does not exist', async () => {
    const missing = join(dir, 'nope.yaml');
    const { code, stderr } = await runCli(['serve', '--config', missing], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toContain(`config file ${missing} does not exist`);
  });

  it('an AIRLOCK_CONFIG that does not exist, and a bad AIRLOCK_LISTEN', async () => {
    const missing = join(dir, 'env-nope.yaml');
    const viaEnv = await runCli(['serve'], { cwd: dir, env: { AIRLOCK_CONFIG: missing } });
    expect(viaEnv.code).toBe(2);
    expect(viaEnv.stderr).toContain(missing);
    const badListen = await runCli(['serve'], { cwd: dir, env: { AIRLOCK_LISTEN: 'nonsense' } });
    expect(badListen.code).toBe(2);
    expect(badListen.stderr).toMatch(/\blisten: must be HOST:PORT/);
  });

  it('an unknown flag and an unknown command exit 2 with the usage', async () => {
    const flag = await runCli(['serve', '--lissen', '127.0.0.1:0'], { cwd: dir });
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/--lissen/);
    expect(flag.stderr).toMatch(/Usage:/);
    const command = await runCli(['serv'], { cwd: dir });
    expect(command.code).toBe(2);
    expect(command.stderr).toMatch(/unknown command "serv"/);
  });
});

describe('start-up failures', () => {
  it('a listen address already in use exits 1 naming the address', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      const { code, stderr } = await runCli(['serve', '--listen', `127.0.0.1:${port}`, '--storage', join(dir, 's-busy')], { cwd: dir });
      expect(code).toBe(1);
      expect(stderr).toContain(`127.0.0.1:${port}`);
      expect(stderr).toMatch(/already in use/);
      // One line a person can act on, not a stack trace.
      expect(stderr.trim().split('\n')).toHaveLength(1);
    } finally {
      blocker.close();
    }
  });
});

describe('--help', () => {
  it('airlock --help and airlock serve --help exit 0 with the usage on stdout', async () => {
    for (const args of [['--help'], ['serve', '--help']]) {
      const { code, stdout } = await runCli(args, { cwd: dir });
      expect(code).toBe(0);
      expect(stdout).toMatch(/Usage:/);
      expect(stdout).toMatch(/airlock serve \[--config FILE\] \[--listen HOST:PORT\] \[--storage DIR\] \[--log-level LEVEL\]/);
    }
  });
});

describe('precedence: file < environment < flags', () => {
  it('AIRLOCK_LISTEN and AIRLOCK_STORAGE override the file; --listen and --storage override the environment', async () => {
    const [filePort, envPort, flagPort] = [await freePort(), await freePort(), await freePort()];
    const storages = { file: join(dir, 's-file'), env: join(dir, 's-env'), flag: join(dir, 's-flag') };
    const path = configFile('layers.yaml', `listen: "127.0.0.1:${filePort}"\nstorage: ${JSON.stringify(storages.file)}\nlog: { level: info }\n`);

    const fromFile = await startCli(['--config', path], { cwd: dir });
    children.push(fromFile);
    expect(fromFile.port).toBe(filePort);
    expect((await http(fromFile.url, '/v2/')).status).toBe(200);
    expect(existsSync(join(storages.file, 'airlock.db'))).toBe(true);
    await fromFile.kill();

    const env = { AIRLOCK_LISTEN: `127.0.0.1:${envPort}`, AIRLOCK_STORAGE: storages.env };
    const fromEnv = await startCli(['--config', path], { cwd: dir, env });
    children.push(fromEnv);
    expect(fromEnv.port).toBe(envPort);
    expect((await http(fromEnv.url, '/v2/')).status).toBe(200);
    expect(existsSync(join(storages.env, 'airlock.db'))).toBe(true);
    await fromEnv.kill();

    const fromFlags = await startCli(['--config', path, '--listen', `127.0.0.1:${flagPort}`, '--storage', storages.flag], { cwd: dir, env });
    children.push(fromFlags);
    expect(fromFlags.port).toBe(flagPort);
    expect((await http(fromFlags.url, '/v2/')).status).toBe(200);
    expect(existsSync(join(storages.flag, 'airlock.db'))).toBe(true);
  });

  it('AIRLOCK_CONFIG names the file; --config wins over it', async () => {
    const port = await freePort();
    const fileA = configFile('a.yaml', `listen: "127.0.0.1:${port}"\nstorage: ${JSON.stringify(join(dir, 's-a'))}\n`);
    const fileB = configFile('b.yaml', 'listen: "127.0.0.1:0"\nlog: { levl: oops }\n');
    const viaEnv = await startCli([], { cwd: dir, env: { AIRLOCK_CONFIG: fileA } });
    children.push(viaEnv);
    expect(viaEnv.port).toBe(port);
    await viaEnv.kill();
    // --config points at the broken file: it, not AIRLOCK_CONFIG, is what gets read.
    const { code, stderr } = await runCli(['serve', '--config', fileB], { cwd: dir, env: { AIRLOCK_CONFIG: fileA } });
    expect(code).toBe(2);
    expect(stderr).toContain(fileB);
  });

  it('AIRLOCK_LOG_LEVEL and --log-level set the log level', async () => {
    const storage = join(dir, 's-log');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const quiet = await startCli(['--listen', `127.0.0.1:${port}`, '--storage', storage], { cwd: dir, env: { AIRLOCK_LOG_LEVEL: 'warn' }, url });
    children.push(quiet);
    await http(url, '/v2/');
    await quiet.kill();
    // At warn, neither the start-up line nor request lines (info) are written.
    expect(quiet.logLines().filter((l) => (l.level ?? 0) < 40)).toEqual([]);

    const loud = await startCli(['--listen', '127.0.0.1:0', '--storage', storage, '--log-level', 'debug'], { cwd: dir, env: { AIRLOCK_LOG_LEVEL: 'warn' } });
    children.push(loud);
    expect(loud.logLines().some((l) => l.msg === 'airlock listening')).toBe(true);
  });
});
