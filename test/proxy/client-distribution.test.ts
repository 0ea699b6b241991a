// The client against a real CNCF distribution registry: anonymous pulls, and Basic auth via htpasswd.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UpstreamClient, UpstreamError } from '../../src/proxy/client.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { DOCKER_MANIFEST, OCI_MANIFEST, pushImage, type PushedImage } from '../helpers/push.js';
import { readAll, upstreamConfig, type UpstreamInput } from './fixtures.js';

function clientFor(registry: Distribution, extra: Partial<UpstreamInput> = {}): UpstreamClient {
  return new UpstreamClient(upstreamConfig({ prefix: 'up', url: registry.url, insecure: true, ...extra }));
}

describe('UpstreamClient against distribution, anonymous', () => {
  let registry: Distribution;
  let docker: PushedImage;
  let oci: PushedImage;
  let client: UpstreamClient;

  beforeAll(async () => {
    registry = await startDistribution();
    docker = await pushImage(registry.url, 'team/app', 'v1', { layers: 2, layerSize: 300_000 });
    oci = await pushImage(registry.url, 'team/app', 'oci', { format: 'oci' });
    client = clientFor(registry);
  });
  afterAll(async () => {
    await client?.close();
    await registry?.stop();
  });

  it('GETs a manifest by tag byte-exact, with digest, media type and size', async () => {
    const m = await client.getManifest('team/app', 'v1');
    expect(m.body?.equals(docker.manifest)).toBe(true);
    expect(m).toMatchObject({ digest: docker.manifestDigest, mediaType: DOCKER_MANIFEST, size: docker.manifest.length });
  });

  it('GETs an OCI manifest by digest', async () => {
    const m = await client.getManifest('team/app', oci.manifestDigest);
    expect(m).toMatchObject({ digest: oci.manifestDigest, mediaType: OCI_MANIFEST, size: oci.manifest.length });
    expect(m.body?.equals(oci.manifest)).toBe(true);
  });

  it('HEADs a manifest: digest, media type and size without a body', async () => {
    const m = await client.getManifest('team/app', 'v1', { method: 'HEAD' });
    expect(m).toEqual({ digest: docker.manifestDigest, mediaType: DOCKER_MANIFEST, size: docker.manifest.length });
  });

  it('streams a blob with its size', async () => {
    const digest = docker.layerDigests[1]!;
    const blob = await client.getBlob('team/app', digest);
    expect(blob.size).toBe(300_000);
    expect((await readAll(blob.body)).equals(docker.blobs.get(digest)!)).toBe(true);
  });

  it('streams the rest of a blob from an offset with a range request', async () => {
    const digest = docker.layerDigests[1]!;
    const blob = await client.getBlob('team/app', digest, 123_456);
    expect(blob.offset).toBe(123_456);
    expect(blob.size).toBe(300_000 - 123_456);
    expect((await readAll(blob.body)).equals(docker.blobs.get(digest)!.subarray(123_456))).toBe(true);
  });

  it('abort() stops a blob transfer', async () => {
    const blob = await client.getBlob('team/app', docker.layerDigests[0]!);
    blob.abort();
    expect(blob.body.destroyed).toBe(true);
    // The client still works afterwards (the aborted connection is not reused).
    expect((await client.headBlob('team/app', docker.layerDigests[0]!)).size).toBe(300_000);
  });

  it('HEADs a blob for its size', async () => {
    expect(await client.headBlob('team/app', docker.configDigest)).toEqual({ size: docker.blobs.get(docker.configDigest)!.length });
  });

  it('lists tags', async () => {
    expect((await client.listTags('team/app')).sort()).toEqual(['oci', 'v1']);
  });

  it('reports missing manifests, blobs and repositories as notfound, naming upstream and repository', async () => {
    const missingTag = await client.getManifest('team/app', 'nope').catch((e: unknown) => e);
    expect(missingTag).toBeInstanceOf(UpstreamError);
    expect(missingTag).toMatchObject({ kind: 'notfound', status: 404, repository: 'team/app', upstream: registry.url });
    expect((missingTag as Error).message).toContain(`upstream ${registry.url} has no manifest team/app:nope`);
    await expect(client.getBlob('team/app', `sha256:${'0'.repeat(64)}`)).rejects.toMatchObject({ kind: 'notfound' });
    await expect(client.headBlob('team/app', `sha256:${'0'.repeat(64)}`)).rejects.toMatchObject({ kind: 'notfound' });
    await expect(client.listTags('team/none')).rejects.toMatchObject({ kind: 'notfound' });
  });
});

describe('UpstreamClient against distribution with htpasswd (Basic auth)', () => {
  let registry: Distribution;
  let image: PushedImage;
  const dir = mkdtempSync(join(tmpdir(), 'airlock-basic-'));

  beforeAll(async () => {
    registry = await startDistribution({ users: { alice: 'wonderland' } });
    image = await pushImage(registry.url, 'private/app', 'v1', { credentials: { username: 'alice', password: 'wonderland' } });
  });
  afterAll(async () => {
    await registry?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pulls with the right username/password', async () => {
    const client = clientFor(registry, { username: 'alice', password: 'wonderland' });
    expect((await client.getManifest('private/app', 'v1')).digest).toBe(image.manifestDigest);
    const blob = await client.getBlob('private/app', image.layerDigests[0]!);
    expect((await readAll(blob.body)).equals(image.blobs.get(image.layerDigests[0]!)!)).toBe(true);
    await client.close();
  });

  it('pulls with credentials from an authFile entry for the upstream host', async () => {
    const authFile = join(dir, 'pull-secret.json');
    const auth = Buffer.from('alice:wonderland').toString('base64');
    writeFileSync(authFile, JSON.stringify({ auths: { [registry.host]: { auth }, 'quay.io': { auth: 'eDp5' } } }));
    const client = clientFor(registry, { authFile });
    expect((await client.getManifest('private/app', 'v1')).digest).toBe(image.manifestDigest);
    await client.close();
  });

  it('says the credentials were rejected when the password is wrong', async () => {
    const client = clientFor(registry, { username: 'alice', password: 'wrong' });
    const err = await client.getManifest('private/app', 'v1').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unauthorized', status: 401 });
    expect((err as Error).message).toContain(`credentials were rejected by ${registry.url}`);
    expect((err as Error).message).toContain('private/app');
    await client.close();
  });

  it('says anonymous access was refused when no credentials are configured', async () => {
    const client = clientFor(registry);
    const err = await client.getManifest('private/app', 'v1').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unauthorized' });
    expect((err as Error).message).toContain(`${registry.url} refused anonymous access`);
    await client.close();
  });
});

describe('distribution test helper in pull-through mode', () => {
  it('serves an image it fetched from its remoteurl', async () => {
    const origin = await startDistribution();
    const mirror = await startDistribution({ proxy: { remoteurl: origin.url } });
    try {
      const image = await pushImage(origin.url, 'library/app', 'v1');
      const client = clientFor(mirror);
      const m = await client.getManifest('library/app', 'v1');
      expect(m.body?.equals(image.manifest)).toBe(true);
      const blob = await client.getBlob('library/app', image.layerDigests[0]!);
      expect((await readAll(blob.body)).equals(image.blobs.get(image.layerDigests[0]!)!)).toBe(true);
      await client.close();
    } finally {
      await mirror.stop();
      await origin.stop();
    }
  });
});
