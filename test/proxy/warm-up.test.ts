// The start-up warm-up of the upstream HTTP client: one request to our own listener, never a failure.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { warmUpHttpClient } from '../../src/proxy/client.js';

describe('warmUpHttpClient', () => {
  it('sends one GET /healthz to the given listener', async () => {
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.end('{"status":"ok"}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      await warmUpHttpClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      expect(seen).toEqual(['GET /healthz']);
    } finally {
      server.close();
    }
  });

  it('resolves without an error when nothing answers', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await expect(warmUpHttpClient(`http://127.0.0.1:${port}`)).resolves.toBeUndefined();
  });
});
