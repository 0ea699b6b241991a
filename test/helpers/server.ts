import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../src/index.js';
import type { ConfigInput } from '../../src/config/schema.js';

export interface TestServer {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** e.g. 127.0.0.1:40123 — what skopeo wants in docker:// references */
  host: string;
  storage: string;
  server: RunningServer;
  /** Stops and starts again on the same storage (and the same port when it is free). */
  restart(): Promise<void>;
  /** Stops the server and removes the storage directory. */
  close(): Promise<void>;
}

/** Starts a real airlock on an ephemeral 127.0.0.1 port with a fresh temp storage dir. */
export async function startTestServer(overrides: Partial<ConfigInput> = {}): Promise<TestServer> {
  const storage = overrides.storage ?? mkdtempSync(join(tmpdir(), 'airlock-test-'));
  const config: ConfigInput = { listen: '127.0.0.1:0', log: { level: 'silent' }, ...overrides, storage };
  let server = await startServer(config);
  const port = server.port;
  const t: TestServer = {
    url: server.url,
    host: `127.0.0.1:${port}`,
    storage,
    server,
    async restart() {
      await server.close();
      server = await startServer({ ...config, listen: `127.0.0.1:${port}` });
      t.server = server;
    },
    async close() {
      await server.close();
      if (!overrides.storage) rmSync(storage, { recursive: true, force: true });
    },
  };
  return t;
}
