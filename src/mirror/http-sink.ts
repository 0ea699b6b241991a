import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { credentialsForHost, loadPullSecret } from '../proxy/pullsecret.js';
import type { ContentSink, ManifestPlacement } from './content.js';

export interface HttpSinkOptions {
  /** Pull-secret form file with an entry for the server's host:port (needed under `auth:`). */
  authFile?: string;
  /**
   * The URL came from the storage lock of a server on this machine: its certificate may name only
   * the public host, so it is not verified (as askServer does).
   */
  loopback?: boolean;
}

export class PushError extends Error {}

/**
 * Pushes into a running airlock over the Distribution API (import --to URL, or an import/sync into
 * a storage directory a server holds): the server itself writes, so it never serves a stale view.
 * Blobs go as one monolithic PUT each, streamed; manifests by digest, then by tag; origins through
 * PUT /api/v1/origins.
 */
export class HttpSink implements ContentSink {
  readonly description: string;
  private readonly base: URL;
  private readonly agent: Dispatcher;
  private readonly authorization: string | undefined;

  constructor(url: string, options: HttpSinkOptions = {}) {
    this.base = new URL(url.endsWith('/') ? url : `${url}/`);
    this.description = `airlock at ${this.base.origin}`;
    this.agent = new Agent({ connect: { rejectUnauthorized: !options.loopback }, headersTimeout: 0, bodyTimeout: 0 });
    const creds = options.authFile ? credentialsForHost(loadPullSecret(options.authFile), this.base.host) : undefined;
    this.authorization = creds && `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
  }

  private async call(method: Dispatcher.HttpMethod, path: string, options: { body?: Buffer | Readable | string; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...options.headers };
    if (this.authorization) headers.authorization = this.authorization;
    const url = new URL(path, this.base);
    const res = await request(url, { method, headers, body: options.body, dispatcher: this.agent });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text };
  }

  private fail(what: string, answer: { status: number; text: string }): never {
    const hint = answer.status === 401 || answer.status === 403 ? ' (pass --authfile with credentials that may push there)' : '';
    throw new PushError(`${this.description}: ${what} answered ${answer.status}${hint}: ${answer.text.slice(0, 300)}`);
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const answer = await this.call('HEAD', `v2/${repo}/blobs/${digest}`);
    if (answer.status === 200) return true;
    if (answer.status === 404) return false;
    this.fail(`HEAD blob ${repo}@${digest}`, answer);
  }

  async putBlob(repo: string, digest: string, size: number | undefined, stream: Readable): Promise<void> {
    const started = await this.call('POST', `v2/${repo}/blobs/uploads/`);
    if (started.status !== 202) {
      stream.destroy();
      this.fail(`starting an upload to ${repo}`, started);
    }
    const location = new URL(String(started.headers.location), this.base);
    location.searchParams.set('digest', digest);
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (size !== undefined) headers['content-length'] = String(size);
    const done = await this.call('PUT', location.pathname.slice(1) + location.search, { body: stream, headers });
    if (done.status !== 201) this.fail(`uploading blob ${digest} to ${repo}`, done);
  }

  async hasManifest(repo: string, digest: string): Promise<boolean> {
    const answer = await this.call('HEAD', `v2/${repo}/manifests/${digest}`, { headers: { accept: '*/*' } });
    if (answer.status === 200) return true;
    if (answer.status === 404) return false;
    this.fail(`HEAD manifest ${repo}@${digest}`, answer);
  }

  async putManifest(repo: string, digest: string, bytes: Buffer, mediaType: string, placement: ManifestPlacement): Promise<void> {
    const reference = placement.tag ?? digest;
    const answer = await this.call('PUT', `v2/${repo}/manifests/${reference}`, { body: bytes, headers: { 'content-type': mediaType } });
    if (answer.status !== 201) this.fail(`storing manifest ${repo}:${reference}`, answer);
  }

  async setOrigin(repo: string, origin: string): Promise<void> {
    const answer = await this.call('PUT', 'api/v1/origins', {
      body: JSON.stringify({ origins: [{ repo, origin }] }),
      headers: { 'content-type': 'application/json' },
    });
    if (answer.status !== 200) this.fail(`recording the origin of ${repo}`, answer);
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    await this.agent.close();
  }
}
