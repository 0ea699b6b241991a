// Bearer token auth as Docker Hub / quay.io do it, for real: a token service on 127.0.0.1 issuing
// opaque tokens, and a gate in front of docker-registry that answers 401 + WWW-Authenticate: Bearer
// unless the request carries a token the service issued.

import { request as httpRequest } from 'node:http';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UpstreamClient } from '../../src/proxy/client.js';
import { startDistribution, type Distribution } from '../helpers/distribution.js';
import { pushImage, type PushedImage } from '../helpers/push.js';
import { readAll, startHttpServer, upstreamConfig, type TestHttpServer, type UpstreamInput } from './fixtures.js';

const TOKEN_USER = { username: 'robot', password: 's3cret' };

describe('UpstreamClient with a Bearer token service', () => {
  let registry: Distribution;
  let image: PushedImage;
  let tokenService: TestHttpServer;
  let gate: TestHttpServer;
  /** Every token request the service saw. */
  let tokenRequests: Array<{ scope: string | null; service: string | null; authorization: string | undefined }>;
  const issued = new Set<string>();
  let tokenLifetimeSeconds: number | undefined;

  beforeAll(async () => {
    registry = await startDistribution();
    image = await pushImage(registry.url, 'team/app', 'v1');

    tokenService = await startHttpServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://token');
      tokenRequests.push({ scope: url.searchParams.get('scope'), service: url.searchParams.get('service'), authorization: req.headers.authorization });
      // Anonymous callers get tokens too (public repositories); known users must present the right password.
      const basic = req.headers.authorization;
      const expected = `Basic ${Buffer.from(`${TOKEN_USER.username}:${TOKEN_USER.password}`).toString('base64')}`;
      if (basic !== undefined && basic !== expected) {
        res.writeHead(401).end();
        return;
      }
      const token = randomUUID();
      issued.add(token);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(tokenLifetimeSeconds === undefined ? { token } : { token, expires_in: tokenLifetimeSeconds }));
    });

    gate = await startHttpServer((req, res) => {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token === undefined || !issued.has(token)) {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="${tokenService.url}/token",service="gate.test",scope="repository:team/app:pull"`,
          'content-type': 'application/json',
        });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
      const { authorization: _dropped, ...headers } = req.headers;
      const forward = httpRequest(`${registry.url}${req.url}`, { method: req.method, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(forward);
    });
  });

  beforeEach(() => {
    tokenRequests = [];
    tokenLifetimeSeconds = undefined;
  });

  afterAll(async () => {
    await gate?.close();
    await tokenService?.close();
    await registry?.stop();
  });

  const clientFor = (extra: Partial<UpstreamInput> = {}, now?: () => number) =>
    new UpstreamClient(upstreamConfig({ prefix: 'up', url: gate.url, insecure: true, ...extra }), now ? { now } : {});

  it('answers the challenge with a pull-scoped token and reuses it for later requests', async () => {
    const client = clientFor();
    expect((await client.getManifest('team/app', 'v1')).digest).toBe(image.manifestDigest);
    expect((await client.getManifest('team/app', 'v1', { method: 'HEAD' })).digest).toBe(image.manifestDigest);
    const blob = await client.getBlob('team/app', image.configDigest);
    expect((await readAll(blob.body)).equals(image.blobs.get(image.configDigest)!)).toBe(true);
    expect(tokenRequests).toEqual([{ scope: 'repository:team/app:pull', service: 'gate.test', authorization: undefined }]);
    await client.close();
  });

  it('sends configured credentials to the token service as Basic', async () => {
    const client = clientFor(TOKEN_USER);
    expect((await client.getManifest('team/app', 'v1')).digest).toBe(image.manifestDigest);
    expect(tokenRequests).toHaveLength(1);
    expect(tokenRequests[0]!.authorization).toBe(`Basic ${Buffer.from('robot:s3cret').toString('base64')}`);
    await client.close();
  });

  it('says the credentials were rejected by the token service when they are wrong', async () => {
    const client = clientFor({ username: 'robot', password: 'wrong' });
    const err = await client.getManifest('team/app', 'v1').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unauthorized' });
    expect((err as Error).message).toContain(`credentials were rejected by ${tokenService.url}`);
    await client.close();
  });

  it('fetches one token for concurrent first requests', async () => {
    const client = clientFor();
    const results = await Promise.all(Array.from({ length: 5 }, () => client.getManifest('team/app', 'v1')));
    expect(results.every((m) => m.digest === image.manifestDigest)).toBe(true);
    expect(tokenRequests).toHaveLength(1);
    await client.close();
  });

  it('keeps a token until expires_in, then fetches a new one', async () => {
    tokenLifetimeSeconds = 300;
    let now = 1_000_000;
    const client = clientFor({}, () => now);
    await client.getManifest('team/app', 'v1');
    now += 200_000;
    await client.getManifest('team/app', 'v1');
    expect(tokenRequests).toHaveLength(1);
    now += 100_000;
    await client.getManifest('team/app', 'v1');
    expect(tokenRequests).toHaveLength(2);
    await client.close();
  });

  it('refreshes a cached token the upstream no longer accepts, and retries', async () => {
    const client = clientFor();
    await client.getManifest('team/app', 'v1');
    issued.clear(); // the registry revokes every token
    expect((await client.getManifest('team/app', 'v1')).digest).toBe(image.manifestDigest);
    expect(tokenRequests).toHaveLength(2);
    await client.close();
  });
});
