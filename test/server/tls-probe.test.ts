// A client that speaks TLS to the plain-HTTP listener (a registries.conf without insecure=true,
// `oc` without --insecure) must fail at once instead of hanging until a timeout.
import { connect } from 'node:tls';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { http } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

it('a TLS ClientHello sent to the HTTP port is refused within 2 s', async () => {
  const started = Date.now();
  const outcome = await new Promise<{ error?: Error; secure: boolean }>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: t.server.port, servername: 'localhost', rejectUnauthorized: false });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ error: new Error('handshake still pending after 5 s'), secure: false });
    }, 5_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ secure: true });
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      resolve({ error, secure: false });
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ error: new Error('closed'), secure: false });
    });
  });
  const elapsed = Date.now() - started;
  expect(outcome.secure).toBe(false);
  expect(outcome.error?.message).not.toMatch(/still pending/);
  expect(elapsed).toBeLessThan(2_000);
  // The listener is unharmed.
  expect((await http(t.url, '/v2/')).status).toBe(200);
});
