// The server process: graceful SIGTERM lets an in-flight upload finish; kill -9 loses nothing
// that was acknowledged.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { expectStatus, http, openRequest, pushBlob, pushManifest, MEDIA, sha256, startUpload, withDigest } from '../helpers/http.js';
import { sleep, startCli, waitFor, type CliProcess } from './cli.js';

let storage: string;
const children: CliProcess[] = [];
beforeEach(() => {
  storage = mkdtempSync(join(tmpdir(), 'airlock-lifecycle-'));
});
afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill()));
  rmSync(storage, { recursive: true, force: true });
});

async function serve(): Promise<CliProcess> {
  const child = await startCli(['--listen', '127.0.0.1:0', '--storage', storage]);
  children.push(child);
  return child;
}

it('SIGTERM: an upload in flight completes (202), then the process exits 0; the bytes are kept', async () => {
  const first = await serve();
  const name = 'graceful/upload';
  const data = randomBytes(256 * 1024);
  const half = data.length / 2;
  const location = await startUpload(first.url, name);

  const { req, response } = openRequest(first.url, location, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' } });
  req.write(data.subarray(0, half));
  // The server has the first half on disk before it is asked to stop.
  await waitFor('the first half to arrive', async () => ((await http(first.url, location)).header('range') === `0-${half - 1}` ? true : undefined));

  first.child.kill('SIGTERM');
  await waitFor('the shutdown log line', () => (first.logLines().some((l) => l.msg?.startsWith('shutting down')) ? true : undefined));
  // No new connections are taken any more...
  await waitFor('new connections to be refused', () =>
    http(first.url, '/v2/').then(
      () => undefined,
      (e: Error) => (/ECONNREFUSED/.test(e.message) ? true : undefined),
    ),
  );
  // ...but the request in flight goes on: the rest arrives slowly.
  for (let i = half; i < data.length; i += 32 * 1024) {
    req.write(data.subarray(i, i + 32 * 1024));
    await sleep(50);
  }
  req.end();
  const res = await response;
  expect(res.status).toBe(202);
  expect(res.header('range')).toBe(`0-${data.length - 1}`);
  const { code, signal } = await first.exited;
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(first.logLines().some((l) => l.msg === 'airlock stopped')).toBe(true);

  // Started again on the same storage: the upload is where it was, and completes.
  const second = await serve();
  const status = await http(second.url, location);
  expect(status.status).toBe(204);
  expect(status.header('range')).toBe(`0-${data.length - 1}`);
  expectStatus(await http(second.url, withDigest(location, sha256(data)), { method: 'PUT' }), 201);
  const blob = await http(second.url, `/v2/${name}/blobs/${sha256(data)}`);
  expect(blob.status).toBe(200);
  expect(blob.body.equals(data)).toBe(true);
});

it('SIGTERM with nothing in flight exits 0 promptly', async () => {
  const child = await serve();
  expect((await http(child.url, '/v2/')).status).toBe(200);
  const started = Date.now();
  child.child.kill('SIGTERM');
  expect(await child.exited).toEqual({ code: 0, signal: null });
  expect(Date.now() - started).toBeLessThan(5_000);
});

it('kill -9 right after a push: the acknowledged blob and manifest are served byte-exact after restart', async () => {
  const first = await serve();
  const name = 'durable/app';
  const layer = randomBytes(100_000);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  const layerDigest = await pushBlob(first.url, name, layer);
  const configDigest = await pushBlob(first.url, name, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.dockerManifest,
      config: { mediaType: MEDIA.dockerConfig, digest: configDigest, size: config.length },
      layers: [{ mediaType: MEDIA.dockerLayer, digest: layerDigest, size: layer.length }],
    }),
  );
  const put = await pushManifest(first.url, name, 'v1', manifest, MEDIA.dockerManifest);
  expectStatus(put, 201);

  first.child.kill('SIGKILL');
  expect((await first.exited).signal).toBe('SIGKILL');

  const second = await serve();
  for (const [digest, bytes] of [
    [layerDigest, layer],
    [configDigest, config],
  ] as const) {
    const blob = await http(second.url, `/v2/${name}/blobs/${digest}`);
    expect(blob.status).toBe(200);
    expect(blob.body.equals(bytes)).toBe(true);
  }
  for (const reference of ['v1', put.digest]) {
    const res = await http(second.url, `/v2/${name}/manifests/${reference}`);
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toBe(MEDIA.dockerManifest);
    expect(res.body.equals(manifest)).toBe(true);
  }
  expect((await http(second.url, `/v2/${name}/tags/list`)).json()).toEqual({ name, tags: ['v1'] });
});
