// Disk full: a real tmpfs of a few MiB as the storage volume. Pushes that do not fit must fail with
// a clear error, leave nothing half-written behind, and everything acknowledged before must stay
// intact and served. (CI runs as root, which mounting needs.)
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

const digestOf = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('storage volume full', () => {
  let mountPoint: string;
  let server: TestServer;
  const repo = 'full/test';

  async function pushBlob(data: Buffer): Promise<Response> {
    return fetch(`${server.url}/v2/${repo}/blobs/uploads/?digest=${digestOf(data)}`, {
      method: 'POST',
      body: data,
      headers: { 'Content-Type': 'application/octet-stream' },
    });
  }

  beforeAll(async () => {
    mountPoint = mkdtempSync(join(tmpdir(), 'airlock-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', mountPoint]);
    server = await startTestServer({ storage: mountPoint });
  });

  afterAll(async () => {
    await server?.close();
    execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('refuses what does not fit with 507 STORAGE_FULL, keeps earlier content and frees the partial upload', async () => {
    const kept = randomBytes(1024 * 1024);
    expect((await pushBlob(kept)).status).toBe(201);
    const config = Buffer.from('{}');
    expect((await pushBlob(config)).status).toBe(201);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digestOf(kept), size: kept.length }],
      }),
    );
    const put = await fetch(`${server.url}/v2/${repo}/manifests/v1`, {
      method: 'PUT',
      body: manifest,
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(put.status).toBe(201);

    const tooBig = await pushBlob(randomBytes(20 * 1024 * 1024));
    expect(tooBig.status).toBe(507);
    const body = (await tooBig.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe('STORAGE_FULL');
    expect(body.errors[0]!.message).toMatch(/storage is full/);

    // Nothing of the failed push is left taking space.
    expect(readdirSync(join(mountPoint, 'uploads'))).toEqual([]);

    // Earlier content is intact and the server goes on serving.
    const blob = await fetch(`${server.url}/v2/${repo}/blobs/${digestOf(kept)}`);
    expect(blob.status).toBe(200);
    expect(digestOf(Buffer.from(await blob.arrayBuffer()))).toBe(digestOf(kept));
    const got = await fetch(`${server.url}/v2/${repo}/manifests/v1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(Buffer.from(await got.arrayBuffer()).equals(manifest)).toBe(true);

    // And what fits still goes in.
    const small = randomBytes(64 * 1024);
    expect((await pushBlob(small)).status).toBe(201);
  });

  it('a chunked upload that runs out of space reports it and can be cancelled to free the space', async () => {
    const start = await fetch(`${server.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    const location = start.headers.get('location')!;
    const chunk = await fetch(`${server.url}${location}`, {
      method: 'PATCH',
      body: randomBytes(20 * 1024 * 1024),
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    expect(chunk.status).toBe(507);
    expect(((await chunk.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('STORAGE_FULL');
    const cancel = await fetch(`${server.url}${location}`, { method: 'DELETE' });
    expect(cancel.status).toBe(204);
    expect(readdirSync(join(mountPoint, 'uploads'))).toEqual([]);
    expect((await pushBlob(randomBytes(2 * 1024 * 1024))).status).toBe(201);
  });
});
