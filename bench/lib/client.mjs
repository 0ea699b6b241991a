// A minimal Distribution API client over undici, used to seed, verify and time transfers.
// Every unexpected answer throws a BenchError carrying the request and the response (status,
// headers, body excerpt), because those are what a bug report against a server needs.
import { createHash } from 'node:crypto';
import { request } from 'undici';

export class BenchError extends Error {
  constructor(message, detail = {}) {
    super(message);
    this.name = 'BenchError';
    this.detail = detail;
  }
}

/** The Accept header container runtimes send for manifests (containerd / CRI-O order). */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

async function describe(res, method, url, reqHeaders) {
  let body = '';
  try {
    body = (await res.body.text()).slice(0, 2000);
  } catch {
    // the body may already be consumed or broken; the status is still worth reporting
  }
  return { request: `${method} ${url}`, requestHeaders: reqHeaders, status: res.statusCode, headers: res.headers, body };
}

export class RegistryClient {
  /** @param {string} name server label for messages, @param {string} base e.g. http://127.0.0.1:5000 */
  constructor(name, base) {
    this.name = name;
    this.base = base;
  }

  url(pathOrUrl) {
    return new URL(pathOrUrl, this.base).toString();
  }

  /** One request; throws unless the status is one of `expect`. The body is left to the caller. */
  async call(method, pathOrUrl, { headers = {}, body, expect = [200] } = {}) {
    const url = this.url(pathOrUrl);
    const res = await request(url, { method, headers, body });
    if (!expect.includes(res.statusCode)) {
      const detail = await describe(res, method, url, headers);
      throw new BenchError(`${this.name}: ${method} ${url} answered ${res.statusCode}, expected ${expect.join('/')}`, detail);
    }
    return res;
  }

  /** Like call, but reads the whole body (for small responses). */
  async fetch(method, pathOrUrl, options = {}) {
    const res = await this.call(method, pathOrUrl, options);
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, body };
  }

  async startUpload(repo) {
    const res = await this.fetch('POST', `/v2/${repo}/blobs/uploads/`, { expect: [202] });
    return this.location(res, 'POST upload');
  }

  location(res, what) {
    const loc = res.headers.location;
    if (!loc) throw new BenchError(`${this.name}: ${what} answered without a Location header`, { headers: res.headers });
    return this.url(loc);
  }

  static withDigest(location, digest) {
    const u = new URL(location);
    u.searchParams.set('digest', digest);
    return u.toString();
  }

  /** Monolithic upload: POST opens a session, one PUT ?digest= carries the whole body. */
  async pushMonolithic(repo, data, digest) {
    const loc = await this.startUpload(repo);
    const res = await this.fetch('PUT', RegistryClient.withDigest(loc, digest), {
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(data.length) },
      body: data,
      expect: [201],
    });
    this.checkDigestHeader(res, digest, `PUT blob ${digest}`);
  }

  /**
   * Chunked upload: POST, then one PATCH per chunk with Content-Range (following the Location each
   * answer returns), then PUT ?digest= without a body. `chunks` is any iterable of Buffers.
   * The digest is computed on the way when not given. Returns the digest.
   */
  async pushChunked(repo, chunks, digest) {
    let loc = await this.startUpload(repo);
    const hash = digest ? undefined : createHash('sha256');
    let offset = 0;
    for (const chunk of chunks) {
      hash?.update(chunk);
      const res = await this.fetch('PATCH', loc, {
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(chunk.length),
          'content-range': `${offset}-${offset + chunk.length - 1}`,
        },
        body: chunk,
        expect: [202],
      });
      offset += chunk.length;
      const range = res.headers.range;
      if (range !== `0-${offset - 1}`) {
        throw new BenchError(`${this.name}: PATCH answered Range ${range}, expected 0-${offset - 1}`, { headers: res.headers });
      }
      loc = this.location(res, 'PATCH');
    }
    const final = digest ?? `sha256:${hash.digest('hex')}`;
    const res = await this.fetch('PUT', RegistryClient.withDigest(loc, final), { expect: [201] });
    this.checkDigestHeader(res, final, `PUT blob ${final}`);
    return final;
  }

  async putManifest(repo, reference, mediaType, manifest) {
    const res = await this.fetch('PUT', `/v2/${repo}/manifests/${reference}`, {
      headers: { 'content-type': mediaType },
      body: manifest.data,
      expect: [201],
    });
    this.checkDigestHeader(res, manifest.digest, `PUT manifest ${repo}:${reference}`);
  }

  checkDigestHeader(res, digest, what) {
    const got = res.headers['docker-content-digest'];
    if (got !== digest) {
      throw new BenchError(`${this.name}: ${what} answered Docker-Content-Digest ${got}, expected ${digest}`, { headers: res.headers });
    }
  }

  /**
   * Streams a blob GET to the end. Counts bytes, optionally hashes, never keeps the body.
   * `onChunk` lets callers watch progress (the RSS workload marks its window with it).
   */
  async download(path, { hash = false } = {}) {
    const started = performance.now();
    const res = await this.call('GET', path);
    const h = hash ? createHash('sha256') : undefined;
    let bytes = 0;
    for await (const chunk of res.body) {
      bytes += chunk.length;
      h?.update(chunk);
    }
    const seconds = (performance.now() - started) / 1000;
    return { status: res.statusCode, headers: res.headers, bytes, seconds, digest: h ? `sha256:${h.digest('hex')}` : undefined };
  }
}
