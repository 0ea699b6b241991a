// gc: { schedule } runs collections inside the server on its own; a bad schedule is a config error.
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { expectStatus, http, pushImage } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { eventually } from '../pullthrough/support.js';
import { ageStore, hasBlobFile } from './support.js';

describe('scheduled garbage collection', () => {
  let s: TestServer | undefined;
  afterAll(async () => {
    await s?.close();
  });

  it('collects on its schedule, with the configured untagged policy, and reports it in stats', async () => {
    s = await startTestServer({ gc: { schedule: '1s', grace: '10m', untaggedOlderThan: '1h' } });
    const deleted = await pushImage(s.url, 'sched/app', { tag: 'v1' });
    expectStatus(await http(s.url, `/v2/sched/app/manifests/${deleted.digest}`, { method: 'DELETE' }), 202);
    const tagless = await pushImage(s.url, 'sched/app', {});
    const tagged = await pushImage(s.url, 'sched/app', { tag: 'keep' });
    ageStore(s.storage, 2 * 3_600_000);
    await eventually(async () => {
      const stats = (await http(s!.url, '/api/v1/stats')).json<{ gc: { removedManifests: number; removedBlobs: number } | null }>();
      expect(stats.gc?.removedManifests).toBe(1);
    }, 15_000);
    for (const digest of [...deleted.blobs.keys(), ...tagless.blobs.keys()]) expect(hasBlobFile(s.storage, digest)).toBe(false);
    for (const digest of tagged.blobs.keys()) expect(hasBlobFile(s.storage, digest)).toBe(true);
  });

  it('absent: no collection; a bad schedule names the key', () => {
    expect(parseConfig({}).gc).toBeUndefined();
    expect(() => parseConfig({ gc: { schedule: 'soon' } })).toThrow(/gc\.schedule/);
    expect(parseConfig({ gc: { schedule: '24h' } }).gc).toEqual({ schedule: 86_400_000, grace: 3_600_000 });
  });
});
