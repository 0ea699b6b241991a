import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { makeTar } from '../helpers/images.js';

export const CHROMIUM = process.env.AIRLOCK_CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOTS = join(process.cwd(), 'test-results', 'ui');

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A page that collects console errors, page errors and failed responses (CSP violations are console errors). */
export async function openPage(context: BrowserContext): Promise<{ page: Page; problems: string[] }> {
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  return { page, problems };
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

export const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
export const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

async function pushBlob(base: string, auth: string, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/octet-stream' },
    body: data,
  });
  if (res.status !== 201) throw new Error(`blob push to ${repo}: ${res.status} ${await res.text()}`);
  return digest;
}

export interface PushedManifest {
  digest: string;
  configDigest: string;
}

/**
 * Pushes an OCI image (config with the given labels, one gzip'd layer) by digest — tagless, as
 * `oc adm release mirror` pushes release components — or by tag.
 */
export async function pushLabelledImage(
  base: string,
  auth: string,
  repo: string,
  options: { labels?: Record<string, string>; tag?: string; subject?: { digest: string; size: number }; artifactType?: string } = {},
): Promise<PushedManifest> {
  const layer = gzipSync(makeTar([{ name: 'release-manifests/release-metadata', content: randomBytes(256) }]));
  const layerDigest = await pushBlob(base, auth, repo, layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: options.labels ?? {} },
      rootfs: { type: 'layers', diff_ids: [sha256(layer)] },
    }),
  );
  const configDigest = await pushBlob(base, auth, repo, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      ...(options.artifactType ? { artifactType: options.artifactType } : {}),
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
      ...(options.subject ? { subject: { mediaType: OCI_MANIFEST, ...options.subject } } : {}),
    }),
  );
  const digest = sha256(manifest);
  const res = await fetch(`${base}/v2/${repo}/manifests/${options.tag ?? digest}`, {
    method: 'PUT',
    headers: { authorization: auth, 'content-type': OCI_MANIFEST },
    body: manifest,
  });
  if (res.status !== 201) throw new Error(`manifest push to ${repo}: ${res.status} ${await res.text()}`);
  return { digest, configDigest };
}

export async function manifestSize(base: string, auth: string, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${digest}`, { headers: { authorization: auth, accept: OCI_MANIFEST } });
  return (await res.arrayBuffer()).byteLength;
}
