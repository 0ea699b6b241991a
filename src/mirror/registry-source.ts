import { Agent, request } from 'undici';
import type { UpstreamConfig } from '../config/schema.js';
import { UpstreamClient, UpstreamError } from '../proxy/client.js';
import type { ContentSource, SourceBlob, SourceManifest } from './content.js';

/** A source image named as a user names it: host[:port]/path[:tag|@digest]. */
export interface RemoteRef {
  host: string;
  path: string;
  tag?: string;
  digest?: string;
}

export class RefError extends Error {}

export function parseRemoteRef(text: string): RemoteRef {
  const ref = text.replace(/^docker:\/\//, '');
  const slash = ref.indexOf('/');
  const host = slash === -1 ? '' : ref.slice(0, slash);
  if (!host || !(host.includes('.') || host.includes(':') || host === 'localhost')) {
    throw new RefError(`"${text}" does not start with a registry host (e.g. quay.io/org/repo:tag)`);
  }
  let rest = ref.slice(slash + 1);
  let digest: string | undefined;
  let tag: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.test(digest)) throw new RefError(`"${text}": "${digest}" is not a digest`);
  }
  const colon = rest.lastIndexOf(':');
  if (colon !== -1) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(rest)) {
    throw new RefError(`"${text}": "${rest}" is not a repository path`);
  }
  if (tag !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(tag)) throw new RefError(`"${text}": "${tag}" is not a tag`);
  return { host: host.toLowerCase(), path: rest, ...(digest ? { digest } : { tag: tag ?? 'latest' }) };
}

/**
 * The local repository a remote image lands in: its host and path, as the pull-through cache
 * stores it (quay.io/openshift-release-dev/ocp-release stays that; a port's ":" becomes "_", since a
 * colon cannot stand in a repository name), or `destPrefix/path` without the host.
 */
export function localRepository(ref: RemoteRef, destPrefix?: string): string {
  return destPrefix ? `${destPrefix.replace(/\/+$/, '')}/${ref.path}` : `${ref.host.replace(':', '_')}/${ref.path}`;
}

export interface RegistrySourceOptions {
  /** Upstreams from the config: a source on the same host uses their URL, credentials and TLS settings. */
  upstreams: UpstreamConfig[];
  authFile?: string;
  insecure?: boolean;
  timeoutMs?: number;
}

/** Remote registries, one UpstreamClient per host (the pull-through cache's client: auth, redirects, typed errors). */
export class RegistrySource implements ContentSource {
  readonly description = 'remote registries';
  private readonly clients = new Map<string, Promise<UpstreamClient>>();

  constructor(private readonly options: RegistrySourceOptions) {}

  /** srcRepo is "host/path". */
  private client(srcRepo: string): { host: string; path: string; client: Promise<UpstreamClient> } {
    const slash = srcRepo.indexOf('/');
    const host = srcRepo.slice(0, slash);
    let client = this.clients.get(host);
    if (!client) {
      client = this.connect(host);
      this.clients.set(host, client);
    }
    return { host, path: srcRepo.slice(slash + 1), client };
  }

  private async connect(host: string): Promise<UpstreamClient> {
    const configured = this.options.upstreams.find((u) => new URL(u.url).host === host);
    const insecure = Boolean(this.options.insecure || configured?.insecure);
    const base: UpstreamConfig = configured
      ? { ...configured, remotePrefix: '' }
      : { prefix: '', url: `https://${host}`, remotePrefix: '', tagTTL: 0, offline: false, insecure, timeout: this.options.timeoutMs ?? 30_000 };
    if (this.options.authFile) {
      delete base.username;
      delete base.password;
      base.authFile = this.options.authFile;
    }
    base.insecure = insecure;
    if (!configured && insecure && !(await speaksTls(host))) base.url = `http://${host}`;
    return new UpstreamClient(base, { userAgent: 'airlock-sync' });
  }

  async manifest(srcRepo: string, reference: string): Promise<SourceManifest> {
    const { path, client } = this.client(srcRepo);
    const result = await (await client).getManifest(path, reference);
    return { digest: result.digest, bytes: result.body!, mediaType: result.mediaType };
  }

  async blob(srcRepo: string, digest: string, size?: number): Promise<SourceBlob> {
    const { path, client } = this.client(srcRepo);
    const c = await client;
    const result = await c.getBlob(path, digest);
    return { size: result.size ?? size, stream: result.body, where: `${c.url}/v2/${path}/blobs/${digest}` };
  }

  async close(): Promise<void> {
    for (const client of this.clients.values()) await (await client.catch(() => undefined))?.close();
  }
}

/** Whether the host answers TLS (with --insecure, a plain-HTTP registry is spoken to over http://). */
async function speaksTls(host: string): Promise<boolean> {
  const agent = new Agent({ connect: { rejectUnauthorized: false, timeout: 10_000 } });
  try {
    const res = await request(`https://${host}/v2/`, { dispatcher: agent, headersTimeout: 10_000 });
    await res.body.dump();
    return true;
  } catch {
    return false;
  } finally {
    await agent.close();
  }
}

export function isGoneUpstream(e: unknown): boolean {
  return e instanceof UpstreamError && e.kind === 'notfound';
}
