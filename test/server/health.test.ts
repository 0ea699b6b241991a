import { describe, expect, it } from 'vitest';
import { startTestServer } from '../helpers/server.js';

describe('/healthz and /readyz', () => {
  it('readiness fails with 503 and a reason once the database cannot answer; liveness stays 200', async () => {
    const t = await startTestServer();
    try {
      expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
      await t.server.registry.meta.close();
      const ready = await fetch(`${t.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reason: string }).reason).toMatch(/database/i);
      expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    } finally {
      await t.close();
    }
  });
});
