// Users start airlock from code by its package name; this goes through package.json "exports"
// to the built dist/ (npm test builds before it runs the tests).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, startServer } from 'airlock';

describe("import { startServer } from 'airlock'", () => {
  it('starts a working registry from the same config object as the YAML file, and stops it', async () => {
    const storage = mkdtempSync(join(tmpdir(), 'airlock-pkg-'));
    try {
      const server = await startServer({ listen: '127.0.0.1:0', storage, log: { level: 'silent' } });
      const res = await fetch(`${server.url}/v2/`);
      expect(res.status).toBe(200);
      expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
      await server.close();
      await expect(fetch(`${server.url}/v2/`)).rejects.toThrow();
    } finally {
      rmSync(storage, { recursive: true, force: true });
    }
  });

  it('rejects a bad config object with a ConfigError naming the key', async () => {
    await expect(startServer({ listen: 'nowhere' })).rejects.toThrow(ConfigError);
    await expect(startServer({ listen: 'nowhere' })).rejects.toThrow(/listen/);
  });
});
