// The dashboard's JSON endpoints and what survives a restart, without a browser: keyset pagination
// of the repository tree, history and activity persisted in the database, and anonymous access
// exactly as `auth.anonymous` allows.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/index.js';
import { writeHtpasswd } from '../security/support.js';
import { basic, pushLabelledImage } from './support.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const json = async (url: string, headers: Record<string, string> = {}) => {
  const res = await fetch(url, { headers });
  return { status: res.status, body: (await res.json()) as any, headers: res.headers };
};

describe('repository listing', () => {
  let dir: string;
  let server: RunningServer;
  // Names whose order trips naive tree listings: "a" < "a-b" < "a.b" < "a/…" in byte order.
  const names = ['a', 'a-b', 'a.b', 'a/x', 'a/y/z', 'a/y/z/deeper', 'b/c', 'c'];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-ui-api-'));
    server = await startServer({ listen: '127.0.0.1:0', storage: dir, log: { level: 'silent' } });
    for (const name of names) await pushLabelledImage(server.url, '', name, { tag: 'v1' });
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function walk(query: string, n: number): Promise<string[]> {
    const seen: string[] = [];
    let last: string | null = null;
    for (let i = 0; i < 50; i++) {
      const { body } = await json(`${server.url}/api/v1/repositories?${query}&n=${n}${last === null ? '' : `&last=${encodeURIComponent(last)}`}`);
      seen.push(...body.repositories.map((r: { name: string; repository: boolean; children: boolean }) => `${r.name}${r.repository ? '' : '/'}${r.repository && r.children ? '+' : ''}`));
      last = body.next;
      if (last === null) return seen;
    }
    throw new Error('pagination did not end');
  }

  it('lists every repository under a prefix, page by page, each once', async () => {
    for (const n of [1, 2, 3, 100]) expect(await walk('prefix=', n)).toEqual(names);
    expect(await walk('prefix=a/', 1)).toEqual(['a/x', 'a/y/z', 'a/y/z/deeper']);
    expect(await walk('prefix=a/y/z', 1)).toEqual(['a/y/z', 'a/y/z/deeper']);
  });

  it('collapses folders with delimiter=/, at any depth and page size', async () => {
    // "a" is a repository with deeper ones ("+"); "b" only a folder.
    for (const n of [1, 2, 100]) expect(await walk('delimiter=/', n)).toEqual(['a+', 'a-b', 'a.b', 'b/', 'c']);
    for (const n of [1, 100]) expect(await walk('prefix=a/&delimiter=/', n)).toEqual(['a/x', 'a/y/']);
    expect(await walk('prefix=a/y/&delimiter=/', 1)).toEqual(['a/y/z+']);
  });

  it('refuses oversized forms and malformed names without failing', async () => {
    const big = await fetch(`${server.url}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `user=${'x'.repeat(100_000)}`,
    });
    expect(big.status).toBe(413);
    const malformed = await json(`${server.url}/api/v1/repositories/a%E0%A4%A/manifests`);
    expect(malformed.status).toBe(400);
    expect(malformed.body.errors[0].code).toBe('NAME_INVALID');
    expect((await fetch(`${server.url}/ui/repositories/a%E0%A4%A`)).status).toBe(400);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('answers bad page sizes with the spec error', async () => {
    const { status, body } = await json(`${server.url}/api/v1/repositories?n=abc`);
    expect(status).toBe(400);
    expect(body.errors[0].code).toBe('PAGINATION_NUMBER_INVALID');
  });
});

describe('history and activity across a restart', () => {
  it('keeps the chart points and the audit events in the database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-ui-persist-'));
    try {
      let server = await startServer({ listen: '127.0.0.1:0', storage: dir, log: { level: 'silent' } }, { historyStepMs: 100 });
      const pushed = await pushLabelledImage(server.url, '', 'team/app', { tag: 'v1' });
      await sleep(350);
      const before = await json(`${server.url}/api/v1/history`);
      expect(before.body.points.length).toBeGreaterThanOrEqual(2);
      await server.close();

      server = await startServer({ listen: '127.0.0.1:0', storage: dir, log: { level: 'silent' } });
      try {
        const after = await json(`${server.url}/api/v1/history`);
        const times = after.body.points.map((p: { at: number }) => p.at);
        for (const point of before.body.points) expect(times).toContain(point.at);
        expect(after.body.points.at(-1).storageBytes).toBeGreaterThan(0);

        const activity = await json(`${server.url}/api/v1/activity`);
        expect(activity.body.events).toContainEqual(expect.objectContaining({ action: 'push', repo: 'team/app', digest: pushed.digest, tag: 'v1', user: '(anonymous)' }));
      } finally {
        await server.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a repository whose last image was deleted', () => {
  it('keeps its page (200, saying so) and an empty manifest list until a garbage collection forgets it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-ui-emptied-'));
    const server = await startServer({ listen: '127.0.0.1:0', storage: dir, log: { level: 'silent' } });
    try {
      const pushed = await pushLabelledImage(server.url, '', 'team/emptied', { tag: 'v1' });
      expect((await fetch(`${server.url}/v2/team/emptied/manifests/${pushed.digest}`, { method: 'DELETE' })).status).toBe(202);
      // As /v2/ sees it: listed, no tags.
      expect((await json(`${server.url}/v2/team/emptied/tags/list`)).body.tags).toEqual([]);

      const page = await fetch(`${server.url}/ui/repositories/team/emptied`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('Its last image was deleted');
      expect(await json(`${server.url}/api/v1/repositories/team/emptied/manifests`)).toMatchObject({ status: 200, body: { name: 'team/emptied', manifests: [], truncated: false } });
      // The dashboard's tree lists it as the catalog does, holding nothing: flat, by folder, and by its own name.
      const emptied = { name: 'team/emptied', repository: true, tags: 0, manifests: 0 };
      expect((await json(`${server.url}/api/v1/repositories`)).body.repositories).toEqual([expect.objectContaining(emptied)]);
      expect((await json(`${server.url}/api/v1/repositories?prefix=team/&delimiter=/`)).body.repositories).toEqual([expect.objectContaining(emptied)]);
      expect((await json(`${server.url}/api/v1/repositories?prefix=team/emptied`)).body.repositories).toEqual([expect.objectContaining(emptied)]);
      expect((await json(`${server.url}/api/v1/repositories?delimiter=/`)).body.repositories).toEqual([expect.objectContaining({ name: 'team', repository: false, children: true })]);

      const gc = await fetch(`${server.url}/api/v1/gc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(((await gc.json()) as { forgotten: string[] }).forgotten).toEqual(['team/emptied']);
      expect((await fetch(`${server.url}/ui/repositories/team/emptied`)).status).toBe(404);
      expect(await json(`${server.url}/api/v1/repositories/team/emptied/manifests`)).toMatchObject({ status: 404, body: { errors: [{ code: 'NAME_UNKNOWN' }] } });
      expect((await json(`${server.url}/api/v1/repositories`)).body.repositories).toEqual([]);
      expect((await json(`${server.url}/api/v1/repositories?delimiter=/`)).body.repositories).toEqual([]);
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('anonymous visitors', () => {
  let dir: string;
  let server: RunningServer;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-ui-anon-'));
    const htpasswd = join(dir, 'users.htpasswd');
    await writeHtpasswd(htpasswd, { admin: 'pw' });
    server = await startServer({
      listen: '127.0.0.1:0',
      storage: join(dir, 'storage'),
      log: { level: 'silent' },
      auth: { htpasswd, anonymous: ['pull'], rules: [{ users: ['admin'], repos: ['**'], actions: ['*'] }] },
    });
    await pushLabelledImage(server.url, basic('admin', 'pw'), 'team/app', { tag: 'v1' });
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('see what `anonymous: [pull]` allows: a repository by name, but no catalog, activity or actions', async () => {
    const overview = await fetch(`${server.url}/ui/`);
    expect(overview.status).toBe(200);
    const listing = await (await fetch(`${server.url}/ui/repositories`)).text();
    expect(listing).toContain('needs the catalog right');
    expect(listing).not.toContain('team/app');
    expect((await fetch(`${server.url}/api/v1/repositories`)).status).toBe(401);
    expect((await fetch(`${server.url}/ui/activity`)).status).toBe(403);
    expect((await fetch(`${server.url}/api/v1/activity`)).status).toBe(401);

    const repo = await fetch(`${server.url}/ui/repositories/team/app`);
    expect(repo.status).toBe(200);
    const page = await repo.text();
    expect(page).toContain('v1');
    expect(page).not.toContain('data-action="delete');
    expect((await json(`${server.url}/api/v1/repositories/team/app/manifests`)).status).toBe(200);

    // A delete posted with the visitor's own session and token is still refused.
    const cookie = repo.headers.get('set-cookie')!.split(';')[0]!;
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await (await fetch(`${server.url}/ui/login`, { headers: { cookie } })).text())![1]!;
    const post = await fetch(`${server.url}/ui/delete`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf, repo: 'team/app', reference: 'v1' }),
      redirect: 'manual',
    });
    expect(post.status).toBe(401);
    expect((await json(`${server.url}/v2/team/app/tags/list`)).body.tags).toEqual(['v1']);
  });
});

describe('under TLS', () => {
  it('marks the session cookie Secure (and HttpOnly, SameSite=Strict)', async () => {
    const { generateCertificates } = await import('../../src/tls/cert.js');
    const { httpsCall } = await import('../security/support.js');
    const { readFileSync } = await import('node:fs');
    const dir = mkdtempSync(join(tmpdir(), 'airlock-ui-tls-'));
    try {
      const certs = await generateCertificates({ hosts: ['localhost'], ips: ['127.0.0.1'], outDir: join(dir, 'tls'), days: 1 });
      const htpasswd = join(dir, 'users.htpasswd');
      await writeHtpasswd(htpasswd, { admin: 'pw' });
      const server = await startServer({
        listen: '127.0.0.1:0',
        storage: join(dir, 'storage'),
        log: { level: 'silent' },
        tls: { cert: certs.serverCert, key: certs.serverKey },
        auth: { htpasswd, anonymous: [], rules: [{ users: ['admin'], repos: ['**'], actions: ['*'] }] },
      });
      try {
        const login = await httpsCall(`${server.url}/ui/login`, { ca: readFileSync(certs.caCert) });
        expect(login.status).toBe(200);
        const cookie = String(login.header('set-cookie'));
        expect(cookie).toMatch(/^airlock_session=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/);
      } finally {
        await server.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
