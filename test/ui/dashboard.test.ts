// The dashboard in a real headless Chromium against a real airlock holding a nested tagless
// release, a multi-arch image pushed by skopeo, a pull-through upstream that is then stopped, and
// two users: an administrator and a pull-only cluster account. Screenshots go to test-results/ui/.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/index.js';
import { buildOciLayoutImage } from '../helpers/images.js';
import { ART_DEV, buildSyntheticRelease, type SyntheticRelease } from '../helpers/payloads.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { skopeoCopy } from '../helpers/skopeo.js';
import { writeHtpasswd } from '../security/support.js';
import { basic, launchChromium, manifestSize, openPage, pushLabelledImage, screenshot, type PushedManifest } from './support.js';

const ADMIN = basic('admin', 'admin-secret');
const CLUSTER = basic('cluster', 'cluster-secret');
const RELEASE_REPO = 'ocp4/openshift4/release';

let dir: string;
let upstream: TestServer;
let server: RunningServer;
let host: string;
let browser: Browser;
let release: PushedManifest;
let component: PushedManifest;
let signature: PushedManifest;
let multiDigest: string;
let synthetic: SyntheticRelease;
const PAYLOAD_REPO = 'mirror/openshift4';
const SYNTHETIC_REPO = 'mirror/release';
const asAdmin = { destInsecure: true, extra: ['--dest-creds', 'admin:admin-secret'] };

async function loggedIn(user: string, password: string): Promise<BrowserContext> {
  const context = await browser.newContext({ baseURL: server.url });
  const page = await context.newPage();
  await page.goto('/ui/login');
  await page.fill('#user', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL('**/ui/'), page.click('button[type=submit]')]);
  await page.close();
  return context;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-ui-'));
  const htpasswd = join(dir, 'users.htpasswd');
  await writeHtpasswd(htpasswd, { admin: 'admin-secret', cluster: 'cluster-secret' });

  upstream = await startTestServer();
  await pushLabelledImage(upstream.url, ADMIN, 'team/app', { tag: 'v1' });

  server = await startServer(
    {
      listen: '127.0.0.1:0',
      storage: join(dir, 'storage'),
      log: { level: 'silent' },
      auth: {
        htpasswd,
        anonymous: [],
        rules: [
          { users: ['admin'], repos: ['**'], actions: ['*'] },
          { users: ['cluster'], repos: ['**'], actions: ['pull'] },
        ],
      },
      upstreams: [{ prefix: 'upstream.test', url: upstream.url, insecure: true }],
      cache: { maxBytes: '1GiB' },
    },
    { historyStepMs: 250 },
  );
  host = new URL(server.url).host;

  // A nested tagless release: a component and the payload, both pushed by digest, and a signature referring to it.
  component = await pushLabelledImage(server.url, ADMIN, RELEASE_REPO);
  release = await pushLabelledImage(server.url, ADMIN, RELEASE_REPO, { labels: { 'io.openshift.release': '4.16.3' } });
  signature = await pushLabelledImage(server.url, ADMIN, RELEASE_REPO, {
    artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
    subject: { digest: release.digest, size: await manifestSize(server.url, ADMIN, RELEASE_REPO, release.digest) },
  });

  // A multi-arch image, pushed by a real client.
  const built = buildOciLayoutImage(join(dir, 'multi'), { tag: '1.0' });
  multiDigest = built.indexDigest;
  await skopeoCopy(built.ociRef, `docker://${host}/library/multi:1.0`, { destInsecure: true, extra: ['--dest-creds', 'admin:admin-secret'] });

  // A release payload as `oc adm release mirror` leaves it: components and the release image pushed by
  // digest with skopeo, and the origin of the components recorded, so airlock's mirror sets resolve them.
  synthetic = buildSyntheticRelease(join(dir, 'synthetic'), { components: { etcd: true, cli: false, installer: false } });
  for (const c of synthetic.components) await skopeoCopy(c.built.ociRef, `docker://${host}/${PAYLOAD_REPO}@${c.built.indexDigest}`, asAdmin);
  await skopeoCopy(synthetic.release.ociRef, `docker://${host}/${SYNTHETIC_REPO}@${synthetic.release.digest}`, asAdmin);
  const origins = await fetch(`${server.url}/api/v1/origins`, {
    method: 'PUT',
    headers: { authorization: ADMIN, 'content-type': 'application/json' },
    body: JSON.stringify({ origins: [{ repo: PAYLOAD_REPO, origin: ART_DEV }] }),
  });
  expect(origins.status).toBe(200);

  // Pulled through once, then the upstream goes away and the next miss fails.
  const cached = await fetch(`${server.url}/v2/upstream.test/team/app/manifests/v1`, { headers: { authorization: ADMIN } });
  expect(cached.status).toBe(200);
  await upstream.close();
  const failed = await fetch(`${server.url}/v2/upstream.test/team/app/manifests/v2`, { headers: { authorization: ADMIN } });
  expect(failed.status).toBeGreaterThanOrEqual(500);

  // A refusal for the Activity page: the cluster account may not push.
  const refused = await fetch(`${server.url}/v2/${RELEASE_REPO}/blobs/uploads/`, { method: 'POST', headers: { authorization: CLUSTER } });
  expect(refused.status).toBe(403);

  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('dashboard in a browser', () => {
  it('sends anonymous visitors to the login form and shows them nothing when `anonymous` is empty', async () => {
    const context = await browser.newContext({ baseURL: server.url });
    const { page, problems } = await openPage(context);
    await page.goto('/');
    expect(new URL(page.url()).pathname).toBe('/ui/login');
    await expect(page.locator('form[action="/ui/login"]').count()).resolves.toBe(1);
    await page.goto(`/ui/repositories/${RELEASE_REPO}`);
    expect(new URL(page.url()).pathname).toBe('/ui/login');
    expect(await page.content()).not.toContain(release.digest);
    await screenshot(page, 'login');

    const api = await context.request.get('/api/v1/repositories');
    expect(api.status()).toBe(401);
    const manifests = await context.request.get(`/api/v1/repositories/${RELEASE_REPO}/manifests`);
    expect(manifests.status()).toBe(401);
    expect(await manifests.text()).not.toContain(release.digest);
    expect(problems).toEqual([]);
    await context.close();
  });

  it('refuses a wrong password on the login form', async () => {
    const context = await browser.newContext({ baseURL: server.url });
    const { page } = await openPage(context);
    await page.goto('/ui/login');
    await page.fill('#user', 'admin');
    await page.fill('#password', 'wrong');
    await page.click('button[type=submit]');
    await expect(page.locator('[role=alert]').textContent()).resolves.toContain('invalid user name or password');
    expect(new URL(page.url()).pathname).toBe('/ui/login');
    await context.close();
  });

  it('shows the overview with storage, cache figures, the history chart and the failing upstream', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);
    const response = await page.goto('/ui/');
    expect(response?.headers()['content-security-policy']).toContain("default-src 'none'");
    await expect(page.locator('[data-user]').textContent()).resolves.toBe('admin');
    await expect(page.locator('[data-upstream="upstream.test"] [data-state]').getAttribute('data-state')).resolves.toBe('failing');
    await expect(page.locator('[data-upstream="upstream.test"]').textContent()).resolves.toContain('unreachable');
    await expect(page.locator('[data-figure="disk-free"]').textContent()).resolves.toMatch(/free of/);
    await expect(page.locator('[data-figure="cache-budget"]').textContent()).resolves.toContain('1.0 GiB');
    await expect(page.locator('[data-figure="hit-ratio"]').textContent()).resolves.toMatch(/% hits/);
    expect(await page.locator('svg.chart').count()).toBe(2);
    const cookie = (await context.cookies()).find((c) => c.name === 'airlock_session');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    await screenshot(page, 'overview');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('walks the nested tree to the tagless release and shows its digest, referrers and pull commands', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);
    await page.goto('/ui/repositories');
    await page.click('[data-folder="ocp4"]');
    await page.click('[data-folder="ocp4/openshift4"]');
    await screenshot(page, 'repositories-tree');
    await page.click(`[data-repo="${RELEASE_REPO}"]`);
    expect(new URL(page.url()).pathname).toBe(`/ui/repositories/${RELEASE_REPO}`);

    const row = page.locator(`tbody[data-digest="${release.digest}"]`);
    await expect(row.locator('code').first().textContent()).resolves.toBe(release.digest);
    await expect(row.textContent()).resolves.toContain('tagless');
    await expect(row.textContent()).resolves.toContain('release');
    await expect(row.textContent()).resolves.toContain('application/vnd.dev.sigstore.bundle.v0.3+json');
    expect(await page.locator(`tbody[data-digest="${component.digest}"]`).count()).toBe(1);
    expect(await page.locator(`tbody[data-digest="${signature.digest}"]`).count()).toBe(1);

    await row.locator('summary').click();
    await expect(row.locator('code', { hasText: 'podman pull' }).textContent()).resolves.toBe(`podman pull ${host}/${RELEASE_REPO}@${release.digest}`);
    await expect(row.locator('code', { hasText: 'oc adm release info' }).textContent()).resolves.toContain(`${RELEASE_REPO}@${release.digest}`);
    await expect(row.locator('code', { hasText: 'skopeo copy' }).textContent()).resolves.toContain(`docker://${host}/${RELEASE_REPO}@${release.digest}`);
    await row.locator('button[data-copy]').first().click();
    await screenshot(page, 'repository-release');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('finds the multi-arch image by prefix and lists its platforms', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);
    await page.goto('/ui/repositories');
    await page.fill('input[name=prefix]', 'library/mu');
    await Promise.all([page.waitForURL('**prefix=library%2Fmu**'), page.click('form.search button[type=submit]')]);
    await page.click('[data-repo="library/multi"]');
    const row = page.locator(`tbody[data-digest="${multiDigest}"]`);
    await expect(row.textContent()).resolves.toContain('1.0');
    await expect(row.textContent()).resolves.toContain('linux/amd64, linux/arm64');
    await expect(page.locator('table[data-table=tags]').textContent()).resolves.toContain('1.0');
    await screenshot(page, 'repository-multiarch');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('lists the release with its version, and the activity of pushes and refusals', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);
    await page.goto('/ui/releases');
    const row = page.locator(`table[data-table=release] tr[data-digest="${release.digest}"]`);
    await expect(row.textContent()).resolves.toContain('4.16.3');
    await expect(row.textContent()).resolves.toContain(RELEASE_REPO);
    await screenshot(page, 'releases');

    await page.goto('/ui/activity');
    const activity = page.locator('table[data-table=activity]');
    await expect(activity.locator('tr[data-action=push]').first().textContent()).resolves.toContain('admin');
    await expect(activity.locator('tr[data-action=denied]', { hasText: 'cluster' }).first().textContent()).resolves.toContain(RELEASE_REPO);
    await screenshot(page, 'activity');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('checks a release for completeness on request, and names what a later check finds missing', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);
    await page.goto('/ui/releases');
    const row = page.locator(`table[data-table=release] tr[data-digest="${synthetic.release.digest}"]`);
    await expect(row.textContent()).resolves.toContain('4.16.0');
    await Promise.all([page.waitForURL('**/ui/releases'), row.locator('[data-action=check]').click()]);
    await row.locator('[data-completeness=complete]').waitFor({ timeout: 30_000 });
    await expect(row.textContent()).resolves.toContain('3 of 3 images');
    await screenshot(page, 'releases-complete');

    // A component goes away: the next check says so, and names it.
    const gone = synthetic.components.find((c) => c.name === 'cli')!;
    const deleted = await fetch(`${server.url}/v2/${PAYLOAD_REPO}/manifests/${gone.built.indexDigest}`, { method: 'DELETE', headers: { authorization: ADMIN } });
    expect(deleted.status).toBe(202);
    await Promise.all([page.waitForURL('**/ui/releases'), row.locator('[data-action=check]').click()]);
    await row.locator('[data-completeness=incomplete]').waitFor({ timeout: 30_000 });
    await expect(row.textContent()).resolves.toContain('1 missing');
    await expect(row.textContent()).resolves.toContain(gone.reference);
    await screenshot(page, 'releases-incomplete');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('shows the mirror sets for the host the browser used, in every format, to copy or download', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);
    await page.goto('/ui/');
    await page.click('nav a[href="/ui/mirrorsets"]');
    const doc = page.locator('#mirrorset-document');
    await expect(doc.textContent()).resolves.toContain('kind: ImageDigestMirrorSet');
    await expect(doc.textContent()).resolves.toContain(`${host}/upstream.test`);
    await screenshot(page, 'mirrorsets');
    await page.click('[data-format="registries.conf"]');
    await expect(doc.textContent()).resolves.toContain('[[registry]]');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('a[download]')]);
    expect(download.suggestedFilename()).toBe('airlock-registries.conf');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('deletes through a confirmed form with the session CSRF token, and refuses a post without it', async () => {
    const context = await loggedIn('admin', 'admin-secret');
    const { page, problems } = await openPage(context);

    const forged = await context.request.post('/ui/delete', { form: { repo: RELEASE_REPO, reference: signature.digest, _csrf: 'forged' } });
    expect(forged.status()).toBe(403);
    expect(await context.request.get(`/api/v1/repositories/${RELEASE_REPO}/manifests`).then((r) => r.text())).toContain(signature.digest);

    await page.goto(`/ui/repositories/${RELEASE_REPO}`);
    const row = page.locator(`tbody[data-digest="${signature.digest}"]`);
    await row.locator('summary').click();
    await row.locator('[data-action=delete-manifest]').click();
    await screenshot(page, 'confirm-delete');
    await Promise.all([page.waitForURL(`**/ui/repositories/${RELEASE_REPO}`), page.click('button.danger')]);
    expect(await page.locator(`tbody[data-digest="${signature.digest}"]`).count()).toBe(0);
    expect(await page.locator(`tbody[data-digest="${release.digest}"]`).count()).toBe(1);

    // Deleting a repository's only image leads to its page, which says what became of it.
    const lone = await pushLabelledImage(server.url, ADMIN, 'scratch/lone', { tag: 'v1' });
    await page.goto('/ui/repositories/scratch/lone');
    const loneRow = page.locator(`tbody[data-digest="${lone.digest}"]`);
    await loneRow.locator('summary').click();
    await loneRow.locator('[data-action=delete-manifest]').click();
    const [emptied] = await Promise.all([page.waitForResponse('**/ui/repositories/scratch/lone'), page.click('button.danger')]);
    expect(emptied.status()).toBe(200);
    await expect(page.locator('main').textContent()).resolves.toContain('Its last image was deleted');

    await page.goto('/ui/activity');
    const deletes = page.locator('table[data-table=activity] tr[data-action=delete]');
    await expect(deletes.nth(0).textContent()).resolves.toContain('scratch/lone');
    await expect(deletes.nth(1).textContent()).resolves.toContain(RELEASE_REPO);
    expect(problems).toEqual([]);
    await context.close();
  });

  it('gives the pull-only user read-only views and no way to act', async () => {
    const context = await loggedIn('cluster', 'cluster-secret');
    const { page, problems } = await openPage(context);
    await page.goto('/ui/');
    await expect(page.locator('[data-user]').textContent()).resolves.toBe('cluster');
    expect(await page.locator('nav a[href="/ui/activity"]').count()).toBe(0);

    // No catalog right: no listing, but a repository it may pull opens by name.
    await page.goto('/ui/repositories');
    expect(await page.locator('table[data-table=repositories]').count()).toBe(0);
    await page.fill('input[name=open]', 'library/multi');
    await Promise.all([page.waitForURL('**/ui/repositories/library/multi'), page.click('form.search button[type=submit]')]);
    await expect(page.locator('table[data-table=manifests]').textContent()).resolves.toContain(multiDigest);
    expect(await page.locator('[data-action^=delete], [data-action=delete-tag]').count()).toBe(0);
    await screenshot(page, 'pull-only-repository');

    const confirm = await page.goto(`/ui/delete?repo=library/multi&reference=1.0`);
    expect(confirm?.status()).toBe(403);
    expect(await page.locator('form[action="/ui/delete"]').count()).toBe(0);
    // Even with its own valid token, the post is refused and the tag stays.
    await page.goto('/ui/');
    const csrf = await page.locator('form[action="/ui/logout"] input[name=_csrf]').getAttribute('value');
    const post = await context.request.post('/ui/delete', { form: { repo: 'library/multi', reference: '1.0', _csrf: csrf! } });
    expect(post.status()).toBe(403);
    const tags = await fetch(`${server.url}/v2/library/multi/tags/list`, { headers: { authorization: ADMIN } }).then((r) => r.json() as Promise<any>);
    expect(tags.tags).toEqual(['1.0']);

    expect(await page.locator('nav a[href="/ui/mirrorsets"]').count()).toBe(0);
    expect((await page.goto('/ui/mirrorsets'))?.status()).toBe(403);
    expect((await page.goto('/ui/activity'))?.status()).toBe(403);
    expect((await page.goto('/ui/releases'))?.status()).toBe(403);
    expect(problems.filter((p) => !p.includes('403'))).toEqual([]);
    await context.close();
  });
});

describe('JSON endpoints behind the dashboard', () => {
  it('lists repositories by prefix with keyset pagination for catalog holders only', async () => {
    const first = await fetch(`${server.url}/api/v1/repositories?n=1`, { headers: { authorization: ADMIN } });
    expect(first.status).toBe(200);
    const page1 = (await first.json()) as any;
    expect(page1.repositories).toHaveLength(1);
    expect(first.headers.get('link')).toContain('last=');
    const rest = await fetch(`${server.url}/api/v1/repositories?n=10&last=${encodeURIComponent(page1.next)}`, { headers: { authorization: ADMIN } }).then((r) => r.json() as Promise<any>);
    const names = [...page1.repositories, ...rest.repositories].map((r: { name: string }) => r.name);
    // scratch/lone lost its only image to the delete test above: listed, as in the catalog, until GC.
    expect(names).toEqual(['library/multi', PAYLOAD_REPO, SYNTHETIC_REPO, RELEASE_REPO, 'scratch/lone', 'upstream.test/team/app']);

    const nested = await fetch(`${server.url}/api/v1/repositories?prefix=ocp4/&delimiter=/`, { headers: { authorization: ADMIN } }).then((r) => r.json() as Promise<any>);
    expect(nested.repositories).toEqual([{ name: 'ocp4/openshift4', repository: false, children: true }]);

    const byPrefix = await fetch(`${server.url}/api/v1/repositories?prefix=ocp4/openshift4/`, { headers: { authorization: ADMIN } }).then((r) => r.json() as Promise<any>);
    expect(byPrefix.repositories).toEqual([{ name: RELEASE_REPO, repository: true, children: false, tags: 0, manifests: 2 }]);

    const refused = await fetch(`${server.url}/api/v1/repositories`, { headers: { authorization: CLUSTER } });
    expect(refused.status).toBe(403);
  });

  it('describes every manifest of a repository, tagless ones included', async () => {
    const res = await fetch(`${server.url}/api/v1/repositories/${RELEASE_REPO}/manifests`, { headers: { authorization: CLUSTER } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    const payload = body.manifests.find((m: { digest: string }) => m.digest === release.digest);
    expect(payload).toMatchObject({ mediaType: 'application/vnd.oci.image.manifest.v1+json', kind: 'image', tags: [], layers: 1, source: 'pushed' });
    expect(payload.totalSize).toBeGreaterThan(payload.size);

    const multi = await fetch(`${server.url}/api/v1/repositories/library/multi/manifests`, { headers: { authorization: CLUSTER } }).then((r) => r.json() as Promise<any>);
    const index = multi.manifests.find((m: { digest: string }) => m.digest === multiDigest);
    expect(index).toMatchObject({ kind: 'index', tags: ['1.0'], platforms: ['linux/amd64', 'linux/arm64'] });
    expect(index.children).toHaveLength(2);

    const unknown = await fetch(`${server.url}/api/v1/repositories/no/such/manifests`, { headers: { authorization: ADMIN } });
    expect(unknown.status).toBe(404);
  });

  it('reports upstream health, history and activity', async () => {
    const upstreams = await fetch(`${server.url}/api/v1/upstreams`, { headers: { authorization: CLUSTER } }).then((r) => r.json() as Promise<any>);
    expect(upstreams.upstreams[0]).toMatchObject({ prefix: 'upstream.test', state: 'failing' });
    expect(upstreams.upstreams[0].lastSuccessAt).not.toBeNull();

    const history = await fetch(`${server.url}/api/v1/history`, { headers: { authorization: CLUSTER } }).then((r) => r.json() as Promise<any>);
    expect(history.points.length).toBeGreaterThan(0);

    const activity = await fetch(`${server.url}/api/v1/activity?n=500`, { headers: { authorization: ADMIN } }).then((r) => r.json() as Promise<any>);
    expect(activity.events.some((e: { action: string; digest: string }) => e.action === 'push' && e.digest === release.digest)).toBe(true);
    expect((await fetch(`${server.url}/api/v1/activity`, { headers: { authorization: CLUSTER } })).status).toBe(403);
    expect((await fetch(`${server.url}/api/v1/history`)).status).toBe(401);
  });
});
