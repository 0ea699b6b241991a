// The dashboard at /ui/ and the JSON endpoints behind it (/api/v1/repositories, …), on the
// registry's own listener. Access follows the registry's rules: a session from the login form or
// Basic credentials; listing needs the catalog right, a repository needs pull on it, actions need
// delete. With `auth:` and an empty `anonymous`, anonymous visitors only see the login form.

import { statfs } from 'node:fs/promises';
import type { HttpBindings } from '@hono/node-server';
import type { Context, Hono } from 'hono';
import type { Authorizer } from '../auth/authorizer.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Stats } from '../metrics.js';
import { RegistryError } from '../registry/errors.js';
import { isValidName, looksLikeDigest, isValidTag } from '../registry/names.js';
import type { Registry } from '../registry/registry.js';
import type { AccessControl, AccessNeed } from '../server/access.js';
import type { AuditTrail } from '../server/audit-trail.js';
import type { MetadataStore } from '../storage/metadata.js';
import { ASSET_BY_PATH, ASSETS } from './assets.js';
import type { HistorySampler } from './history.js';
import { manifestViews, platformsOfChildren } from './model.js';
import {
  ActivityPage,
  ConfirmDeletePage,
  LoginPage,
  MessagePage,
  MirrorSetsPage,
  OverviewPage,
  ReleasesPage,
  RepositoriesPage,
  RepositoryPage,
  repoPath,
  type OverviewData,
  type UpstreamHealth,
} from './pages.js';
import type { ReleaseClassifier } from './releases.js';
import type { CompletenessChecks } from './completeness.js';
import { isMirrorSetFormat, MIRROR_SET_FORMATS, type MirrorSetFormat } from '../mirror/mirror-set-documents.js';
import { isValidMirrorHost } from '../mirror/mirror-sets.js';
import { csrfMatches, readCookie, SESSION_COOKIE, sessionCookie, SessionStore, type Session } from './session.js';
import { viewerOf as viewerFor, type Viewer } from './viewer.js';

export interface UpstreamCircuit {
  prefix: string;
  url: string;
  offline: boolean;
  circuit: { state: 'closed' | 'open' | 'half-open'; consecutiveFailures: number; lastSuccessAt?: number; lastFailureAt?: number; lastFailure?: string; openUntil?: number };
}

export interface DashboardDeps {
  config: Config;
  meta: MetadataStore;
  registry: Registry;
  stats: Stats;
  access: AccessControl;
  authorizer?: Authorizer;
  log: Logger;
  history: HistorySampler;
  audit: AuditTrail;
  classifier: ReleaseClassifier;
  /** The circuits of the pull-through upstreams (none without upstreams). */
  upstreamCircuits: () => UpstreamCircuit[];
  /** Renders airlock's mirror sets for clusters reaching it at `host`; without it the page is hidden. */
  mirrorSets?: (format: MirrorSetFormat, host: string) => Promise<string>;
  /** Release and catalog completeness (airlock verify inside the server). */
  completeness?: CompletenessChecks;
}

type Env = { Bindings: HttpBindings };
type C = Context<Env>;

/** A malformed %-escape yields a name that fails validation, not an exception. */
const safeDecode = (text: string) => {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
};

/** Forms here are a few fields; anything larger is not one of them. */
const MAX_FORM_BYTES = 16 * 1024;

const PAGE = 100;
const MAX_PAGE = 1000;
const MAX_MANIFESTS = 5000;
/** The repository page of a repository whose last image was deleted. */
const EMPTIED = 'Its last image was deleted: it holds no image now. It stays listed, with no tags, until a garbage collection forgets it; a push fills it again.';
const ACTIVITY_PAGE = 200;

/** No inline script or style anywhere: everything comes from the embedded assets. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function mountDashboard(app: Hono<Env>, deps: DashboardDeps): void {
  const { config, meta, log } = deps;
  const auth = config.auth;
  const sessions = new SessionStore();
  const secure = Boolean(config.tls);
  const viewerOf: typeof viewerFor = (...args) => ({ ...viewerFor(...args), mirrorSets: deps.mirrorSets !== undefined });

  // ---- who is asking ---------------------------------------------------------------------------

  const remoteOf = (c: C) => c.env.incoming.socket.remoteAddress ?? 'unknown';

  /** The visitor's session, opening an anonymous one (for its CSRF token) when there is none. */
  function sessionOf(c: C): Session {
    const existing = sessions.get(readCookie(c.req.header('cookie'), SESSION_COOKIE));
    if (existing) return existing;
    const created = sessions.create();
    c.header('Set-Cookie', sessionCookie(created.id, secure), { append: true });
    return created;
  }

  /**
   * The viewer of a page, or a Response when there is none: the login page for anonymous visitors
   * that `anonymous` does not admit, 401 for wrong Basic credentials.
   */
  async function viewerOrLogin(c: C): Promise<Viewer | Response> {
    const session = sessionOf(c);
    if (!auth) return viewerOf(undefined, undefined, session);
    if (session.user !== undefined) return viewerOf(auth, session.user, session);
    const header = c.req.header('authorization');
    if (header !== undefined && deps.authorizer) {
      try {
        const { user } = await deps.authorizer.authorize(header, [], 'airlock', remoteOf(c));
        if (user !== undefined) return viewerOf(auth, user, session);
      } catch (e) {
        if (!(e instanceof RegistryError)) throw e;
        return html(c, <LoginPage csrf={session.csrf} next={c.req.path} error={e.message} />, e.status);
      }
    }
    if (auth.anonymous.length === 0) return c.redirect(`/ui/login?next=${encodeURIComponent(nextOf(c))}`, 303);
    return viewerOf(auth, undefined, session);
  }

  /** The user behind a JSON request: a dashboard session, else the registry's own check (Basic, Bearer, anonymous). */
  async function apiUser(c: C, needs: AccessNeed[]): Promise<string | undefined> {
    const session = sessions.get(readCookie(c.req.header('cookie'), SESSION_COOKIE));
    if (auth && session?.user !== undefined) {
      const viewer = viewerOf(auth, session.user, session);
      for (const need of needs) {
        const ok = need.resource.type === 'registry' ? viewer.catalog : viewer.can('pull', need.resource.name);
        if (!ok) throw new RegistryError('DENIED', `"${session.user}" may not ${need.resource.type === 'registry' ? 'list the catalog' : `pull ${need.resource.name}`}`);
      }
      return session.user;
    }
    // Figures anyone admitted may see (as on the Overview page): anonymous is enough when it allows anything.
    if (needs.length === 0 && (!auth || (auth.anonymous.length > 0 && c.req.header('authorization') === undefined))) return undefined;
    return (await deps.access.check(c.env.incoming, needs)).user;
  }

  const nextOf = (c: C) => {
    const url = new URL(c.req.url);
    return url.pathname + url.search;
  };

  function html(c: C, page: unknown, status = 200): Response {
    return c.html(`<!DOCTYPE html>${String(page)}`, status as 200);
  }

  const hostOf = (c: C) => c.req.header('host') ?? `${config.listen}`;

  // ---- headers for everything under /ui/ -------------------------------------------------------

  app.post('/ui/*', async (c, next) => {
    const length = Number(c.req.header('content-length'));
    if (!Number.isFinite(length) || length > MAX_FORM_BYTES) {
      c.env.incoming.resume();
      return c.text(`forms are sent with a Content-Length of at most ${MAX_FORM_BYTES} bytes`, 413, { Connection: 'close' });
    }
    await next();
  });

  // Routing sees the normalised URL: "/v2/.." arrives here as "/". Such a request belongs to the
  // v2 handler, which judges the path as sent (the app's not-found handler hands it over).
  const v2Guard = async (c: C, next: () => Promise<void>) => {
    if (/^\/v2(\/|$|\?)/.test(c.env.incoming.url ?? '')) return c.notFound();
    await next();
  };
  for (const path of ['/', '/ui', '/ui/*', '/favicon.ico', '/api/v1/*']) app.use(path, v2Guard);

  app.use('/ui/*', async (c, next) => {
    const started = process.hrtime.bigint();
    await next();
    c.header('Content-Security-Policy', CSP);
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('X-Frame-Options', 'DENY');
    c.header('Referrer-Policy', 'no-referrer');
    if (!c.req.path.startsWith('/ui/assets/')) c.header('Cache-Control', 'no-store');
    // The benchmark reads the server's own time from here.
    c.header('Server-Timing', `app;dur=${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(2)}`);
  });

  app.get('/', (c) => c.redirect('/ui/', 302));
  app.get('/ui', (c) => c.redirect('/ui/', 302));
  app.get('/favicon.ico', (c) => c.body(ASSETS.icon.body, 200, { 'Content-Type': ASSETS.icon.type, 'Cache-Control': 'public, max-age=86400' }));
  app.get('/ui/assets/:file', (c) => {
    const asset = ASSET_BY_PATH.get(c.req.path);
    if (!asset) return c.text('not found', 404);
    return c.body(asset.body, 200, { 'Content-Type': asset.type, 'Cache-Control': 'public, max-age=31536000, immutable' });
  });

  // ---- login / logout ----------------------------------------------------------------------------

  const safeNext = (value: unknown) => (typeof value === 'string' && /^\/ui\/[^\\]*$/.test(value) && !value.startsWith('//') ? value : '/ui/');

  app.get('/ui/login', (c) => {
    const session = sessionOf(c);
    if (!auth) return c.redirect('/ui/', 303);
    if (session.user !== undefined) return c.redirect(safeNext(c.req.query('next')), 303);
    return html(c, <LoginPage csrf={session.csrf} next={safeNext(c.req.query('next'))} />);
  });

  app.post('/ui/login', async (c) => {
    const session = sessionOf(c);
    const form = await c.req.parseBody();
    if (!csrfMatches(session, form._csrf)) return html(c, <LoginPage csrf={session.csrf} next={safeNext(form.next)} error="The form expired; please try again." />, 403);
    if (!auth || !deps.authorizer) return c.redirect('/ui/', 303);
    const user = typeof form.user === 'string' ? form.user : '';
    const password = typeof form.password === 'string' ? form.password : '';
    try {
      const header = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
      const principal = await deps.authorizer.authorize(header, [], 'airlock', remoteOf(c));
      if (principal.user === undefined) throw new RegistryError('UNAUTHORIZED', 'invalid user name or password');
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      deps.audit.record({ action: 'denied', code: e.code, user: user.slice(0, 100) || '(empty)', remote: remoteOf(c) });
      return html(c, <LoginPage csrf={session.csrf} next={safeNext(form.next)} error={e.message} />, e.status);
    }
    // A new session id on login: an id planted before cannot ride on it.
    sessions.destroy(session.id);
    const fresh = sessions.create(user);
    c.header('Set-Cookie', sessionCookie(fresh.id, secure));
    log.info({ user, remote: remoteOf(c) }, 'dashboard login');
    return c.redirect(safeNext(form.next), 303);
  });

  app.post('/ui/logout', async (c) => {
    const session = sessionOf(c);
    const form = await c.req.parseBody();
    if (!csrfMatches(session, form._csrf)) return html(c, <MessagePage title="Refused" message="The form expired; please try again." />, 403);
    sessions.destroy(session.id);
    c.header('Set-Cookie', sessionCookie('', secure, 0));
    return c.redirect(auth ? '/ui/login' : '/ui/', 303);
  });

  // ---- pages -------------------------------------------------------------------------------------

  app.get('/ui/', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    return html(c, <OverviewPage viewer={viewer} data={await overview()} />);
  });

  app.get('/ui/repositories', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    const open = c.req.query('open');
    if (open !== undefined) {
      const name = open.trim().replace(/^\/+|\/+$/g, '');
      if (!isValidName(name)) return html(c, <MessagePage viewer={viewer} title="Not a repository name" message={`"${name.slice(0, 200)}" is not a valid repository name.`} />, 400);
      return c.redirect(repoPath(name), 303);
    }
    if (!viewer.catalog) return html(c, <RepositoriesPage viewer={viewer} prefix="" tree nodes={[]} counts={new Map()} />);
    const prefix = (c.req.query('prefix') ?? '').trim();
    const last = c.req.query('last') || undefined;
    // A prefix naming a folder ("ocp4/" or nothing) browses the tree; any other is a search.
    const tree = prefix === '' || prefix.endsWith('/');
    const page = await meta.browseRepositories(prefix, PAGE, last, tree);
    const counts = new Map((await meta.repositoryCounts(page.items.filter((n) => n.repository).map((n) => n.name))).map((r) => [r.name, r]));
    const next = page.more ? page.items[page.items.length - 1]!.name : undefined;
    return html(c, <RepositoriesPage viewer={viewer} prefix={prefix} tree={tree} nodes={page.items} counts={counts} next={next} />);
  });

  app.get('/ui/repositories/*', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    const name = safeDecode(c.req.path.slice('/ui/repositories/'.length)).replace(/\/+$/, '');
    if (!isValidName(name)) return html(c, <MessagePage viewer={viewer} title="Not a repository name" message={`"${name.slice(0, 200)}" is not a valid repository name.`} />, 400);
    if (!viewer.can('pull', name)) return html(c, <MessagePage viewer={viewer} title="Not allowed" message={`You may not pull ${name}.`} />, viewer.user ? 403 : 401);
    const rows = await meta.repositoryManifests(name, MAX_MANIFESTS + 1);
    if (rows.length === 0) {
      // Emptied by deletes (the dashboard's own delete lands here): still a repository, as in
      // /v2/_catalog and tags/list, until a garbage collection forgets it.
      if (await meta.repositoryExists(name)) return html(c, <MessagePage viewer={viewer} title={name} message={EMPTIED} />);
      return html(c, <MessagePage viewer={viewer} title="No such repository" message={`Nothing is stored in ${name}.`} />, 404);
    }
    const views = manifestViews(rows.slice(0, MAX_MANIFESTS));
    const kinds = await deps.classifier.classifyRepository(name, rows);
    const releases = new Set([...kinds].filter(([, k]) => k.kind === 'release').map(([digest]) => digest));
    return html(
      c,
      <RepositoryPage
        viewer={viewer}
        name={name}
        host={hostOf(c)}
        views={views}
        releaseDigests={releases}
        childPlatforms={platformsOfChildren(views)}
        truncated={rows.length > MAX_MANIFESTS}
      />,
    );
  });

  app.get('/ui/delete', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    const repo = c.req.query('repo') ?? '';
    const reference = c.req.query('reference') ?? '';
    const refused = checkDelete(viewer, repo, reference);
    if (refused) return html(c, <MessagePage viewer={viewer} title={refused.title} message={refused.message} />, refused.status);
    return html(c, <ConfirmDeletePage viewer={viewer} repo={repo} reference={reference} />);
  });

  app.post('/ui/delete', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    const form = await c.req.parseBody();
    if (!csrfMatches(viewer.session, form._csrf)) {
      return html(c, <MessagePage viewer={viewer} title="Refused" message="The form expired or came from elsewhere; nothing was changed." />, 403);
    }
    const repo = typeof form.repo === 'string' ? form.repo : '';
    const reference = typeof form.reference === 'string' ? form.reference : '';
    const refused = checkDelete(viewer, repo, reference);
    if (refused) {
      if (refused.status === 403) deps.audit.record({ action: 'denied', code: 'DENIED', user: viewer.user ?? '(anonymous)', repo, remote: remoteOf(c) });
      return html(c, <MessagePage viewer={viewer} title={refused.title} message={refused.message} />, refused.status);
    }
    try {
      await deps.registry.deleteManifest(repo, reference);
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      return html(c, <MessagePage viewer={viewer} title="Not deleted" message={e.message} />, e.status);
    }
    const user = viewer.user ?? '(anonymous)';
    const tag = looksLikeDigest(reference) ? undefined : reference;
    log.info({ audit: 'delete', user, repo, digest: tag ? undefined : reference, tag, remote: remoteOf(c), via: 'dashboard' }, `delete ${repo}:${reference}`);
    deps.audit.record({ action: 'delete', user, repo, digest: tag ? null : reference, tag: tag ?? null, remote: remoteOf(c) });
    return c.redirect(repoPath(repo), 303);
  });

  function checkDelete(viewer: Viewer, repo: string, reference: string): { status: 400 | 401 | 403; title: string; message: string } | undefined {
    if (!isValidName(repo) || !(looksLikeDigest(reference) || isValidTag(reference))) {
      return { status: 400, title: 'Bad request', message: 'A repository name and a tag or digest are needed.' };
    }
    if (!viewer.can('delete', repo)) {
      return { status: viewer.user || viewer.open ? 403 : 401, title: 'Not allowed', message: `${viewer.user ?? 'Anonymous visitors'} may not delete in ${repo}.` };
    }
    return undefined;
  }

  app.get('/ui/releases', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    if (!viewer.catalog) return html(c, <MessagePage viewer={viewer} title="Not allowed" message="Listing releases and catalogs needs the catalog right." />, 403);
    const caughtUp = await deps.classifier.catchUp(500);
    const checks = deps.completeness;
    return html(
      c,
      <ReleasesPage
        viewer={viewer}
        host={hostOf(c)}
        images={await meta.classifiedImages(1000)}
        scanning={!caughtUp}
        completeness={checks ? (repo, digest) => checks.get(repo, digest) : undefined}
      />,
    );
  });

  app.post('/ui/releases/check', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    const form = await c.req.parseBody();
    if (!csrfMatches(viewer.session, form._csrf)) {
      return html(c, <MessagePage viewer={viewer} title="Refused" message="The form expired or came from elsewhere; nothing was started." />, 403);
    }
    if (!viewer.catalog) return html(c, <MessagePage viewer={viewer} title="Not allowed" message="Checking releases and catalogs needs the catalog right." />, 403);
    const repo = typeof form.repo === 'string' ? form.repo : '';
    const digest = typeof form.digest === 'string' ? form.digest : '';
    if (!deps.completeness || !isValidName(repo) || !looksLikeDigest(digest)) {
      return html(c, <MessagePage viewer={viewer} title="Bad request" message="A repository and a digest are needed." />, 400);
    }
    deps.completeness.start(repo, digest);
    return c.redirect('/ui/releases', 303);
  });

  const mirrorSets = deps.mirrorSets;
  if (mirrorSets) {
    /** The host the browser used (what clusters on the same network reach), or one typed in. */
    const mirrorSetQuery = (c: C): { host: string; format: MirrorSetFormat } | string => {
      const host = (c.req.query('host') || hostOf(c)).trim();
      const format = c.req.query('format') || 'idms';
      if (!isValidMirrorHost(host)) return `"${host.slice(0, 200)}" is not HOST or HOST:PORT, e.g. mirror.example.com:5000`;
      if (!isMirrorSetFormat(format)) return `the format must be one of ${MIRROR_SET_FORMATS.join(', ')}`;
      return { host, format };
    };
    app.get('/ui/mirrorsets', async (c) => {
      const viewer = await viewerOrLogin(c);
      if (viewer instanceof Response) return viewer;
      // The documents name every mirrored repository: as much as the catalog listing shows.
      if (!viewer.catalog) return html(c, <MessagePage viewer={viewer} title="Not allowed" message="Mirror sets name every mirrored repository: they need the catalog right." />, 403);
      const query = mirrorSetQuery(c);
      if (typeof query === 'string') return html(c, <MessagePage viewer={viewer} title="Bad request" message={query} />, 400);
      const document = await mirrorSets(query.format, query.host);
      return html(c, <MirrorSetsPage viewer={viewer} host={query.host} format={query.format} formats={MIRROR_SET_FORMATS} document={document} />);
    });
    app.get('/ui/mirrorsets/download', async (c) => {
      const viewer = await viewerOrLogin(c);
      if (viewer instanceof Response) return viewer;
      if (!viewer.catalog) return c.text('mirror sets need the catalog right', 403);
      const query = mirrorSetQuery(c);
      if (typeof query === 'string') return c.text(query, 400);
      const file = query.format === 'registries.conf' ? 'airlock-registries.conf' : `airlock-${query.format}.yaml`;
      const type = query.format === 'registries.conf' ? 'application/toml; charset=utf-8' : 'application/yaml; charset=utf-8';
      return c.body(await mirrorSets(query.format, query.host), 200, { 'Content-Type': type, 'Content-Disposition': `attachment; filename="${file}"` });
    });
  }

  app.get('/ui/activity', async (c) => {
    const viewer = await viewerOrLogin(c);
    if (viewer instanceof Response) return viewer;
    if (!viewer.catalog) return html(c, <MessagePage viewer={viewer} title="Not allowed" message="The activity of the whole registry needs the catalog right." />, 403);
    return html(c, <ActivityPage viewer={viewer} events={await deps.audit.recent(ACTIVITY_PAGE)} />);
  });

  // ---- JSON --------------------------------------------------------------------------------------

  const catalogNeed: AccessNeed[] = [{ resource: { type: 'registry', name: 'catalog' }, actions: ['*'] }];

  async function api(c: C, needs: AccessNeed[], body: () => unknown | Promise<unknown>): Promise<Response> {
    const started = process.hrtime.bigint();
    try {
      await apiUser(c, needs);
      const value = await body();
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      return c.json(value, 200, { 'Cache-Control': 'no-store', 'Server-Timing': `app;dur=${ms.toFixed(2)}` });
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      return c.json(e.toJSON(), e.status as 400, e.headers);
    }
  }

  const pageSize = (c: C) => {
    const n = c.req.query('n');
    if (n === undefined || n === '') return PAGE;
    if (!/^\d+$/.test(n) || Number(n) < 1) throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be a positive integer, not "${n.slice(0, 20)}"`);
    return Math.min(Number(n), MAX_PAGE);
  };

  app.get('/api/v1/repositories', (c) =>
    api(c, catalogNeed, async () => {
      const prefix = c.req.query('prefix') ?? '';
      const delimiter = c.req.query('delimiter');
      if (delimiter !== undefined && delimiter !== '/') throw new RegistryError('UNSUPPORTED', 'the only delimiter is "/"', undefined, 400);
      const n = pageSize(c);
      const page = await meta.browseRepositories(prefix, n, c.req.query('last') || undefined, delimiter === '/');
      const counts = new Map((await meta.repositoryCounts(page.items.filter((i) => i.repository).map((i) => i.name))).map((r) => [r.name, r]));
      const next = page.more ? page.items[page.items.length - 1]!.name : null;
      if (next !== null) {
        const link = new URLSearchParams({ ...(prefix ? { prefix } : {}), ...(delimiter ? { delimiter } : {}), n: String(n), last: next });
        c.header('Link', `</api/v1/repositories?${link}>; rel="next"`);
      }
      return {
        repositories: page.items.map((i) => ({
          name: i.name,
          repository: i.repository,
          children: i.children,
          ...(i.repository ? { tags: counts.get(i.name)?.tags ?? 0, manifests: counts.get(i.name)?.manifests ?? 0 } : {}),
        })),
        next,
      };
    }),
  );

  app.get('/api/v1/repositories/*', (c) => {
    const rest = safeDecode(c.req.path.slice('/api/v1/repositories/'.length));
    if (!rest.endsWith('/manifests')) return c.json({ errors: [{ code: 'NOT_FOUND', message: `no endpoint at ${c.req.path.slice(0, 200)}`, detail: null }] }, 404);
    const name = rest.slice(0, -'/manifests'.length);
    if (!isValidName(name)) return c.json(new RegistryError('NAME_INVALID', `invalid repository name "${name.slice(0, 200)}"`).toJSON(), 400);
    return api(c, [{ resource: { type: 'repository', name }, actions: ['pull'] }], async () => {
      const rows = await meta.repositoryManifests(name, MAX_MANIFESTS + 1);
      if (rows.length === 0 && !(await meta.repositoryExists(name))) throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
      const views = manifestViews(rows.slice(0, MAX_MANIFESTS));
      return { name, manifests: views, truncated: rows.length > MAX_MANIFESTS };
    });
  });

  app.get('/api/v1/history', (c) => api(c, [], async () => ({ stepSeconds: 60, points: await deps.history.points() })));
  app.get('/api/v1/upstreams', (c) => api(c, [], () => ({ upstreams: upstreamHealth() })));
  app.get('/api/v1/activity', (c) =>
    api(c, catalogNeed, async () => {
      const n = pageSize(c);
      return { events: (await deps.audit.recent(n)).map((e) => ({ ...e, at: new Date(e.at).toISOString() })) };
    }),
  );
  app.get('/api/v1/releases', (c) =>
    api(c, catalogNeed, async () => {
      const complete = await deps.classifier.catchUp(500);
      return {
        complete,
        images: (await meta.classifiedImages(MAX_PAGE)).map((i) => ({
          ...i,
          createdAt: new Date(i.createdAt).toISOString(),
          completeness: deps.completeness?.get(i.repo, i.digest) ?? null,
        })),
      };
    }),
  );

  // ---- figures -----------------------------------------------------------------------------------

  function upstreamHealth(): UpstreamHealth[] {
    const circuits = new Map(deps.upstreamCircuits().map((u) => [u.prefix, u]));
    const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());
    return deps.stats.counters().upstreams.map((u) => {
      const c = circuits.get(u.prefix);
      const circuit = c?.circuit;
      const state: UpstreamHealth['state'] = c?.offline
        ? 'offline'
        : circuit?.state === 'open'
          ? 'cooling down'
          : circuit && circuit.consecutiveFailures > 0
            ? 'failing'
            : circuit?.lastSuccessAt !== undefined
              ? 'ok'
              : 'idle';
      return {
        prefix: u.prefix,
        url: u.url,
        state,
        lastError: circuit?.lastFailure ?? u.lastError,
        lastErrorAt: iso(circuit?.lastFailureAt),
        lastSuccessAt: iso(circuit?.lastSuccessAt),
        coolingUntil: iso(circuit?.openUntil),
        hits: u.hits,
        misses: u.misses,
        errors: u.errors,
        bytesFromUpstream: u.bytesFromUpstream,
      };
    });
  }

  // Counting repositories, manifests and cached bytes scans tables (about a second at 100k repositories): the
  // Overview shows the last count, refreshed in the background when older than COUNTS_MAX_AGE_MS.
  let counted: { at: number; repositories: number; manifests: number; cachedBytes: number } | undefined;
  let counting = false;
  const COUNTS_MAX_AGE_MS = 5 * 60_000;
  async function storageCounts(): Promise<{ repositories: number; manifests: number; cachedBytes: number } | undefined> {
    if (!counting && (!counted || Date.now() - counted.at > COUNTS_MAX_AGE_MS)) {
      counting = true;
      const refresh = async () => {
        try {
          const totals = await meta.totals();
          counted = { at: Date.now(), repositories: totals.repositories, manifests: totals.manifests, cachedBytes: await meta.cachedOnlyBytes() };
        } catch (err) {
          log.warn({ err }, 'counting repositories for the dashboard failed');
        } finally {
          counting = false;
        }
      };
      // The first view waits for the count; later ones get the previous one while it refreshes.
      if (counted) setImmediate(() => void refresh());
      else await refresh();
    }
    return counted;
  }

  async function overview(): Promise<OverviewData> {
    const snap = deps.stats.counters();
    const counts = await storageCounts();
    let disk: OverviewData['disk'] = null;
    try {
      const fs = await statfs(config.storage);
      disk = { total: fs.blocks * fs.bsize, free: fs.bavail * fs.bsize };
    } catch (err) {
      log.debug({ err }, 'statfs of the storage directory failed');
    }
    return {
      storage: { repositories: counts?.repositories ?? 0, manifests: counts?.manifests ?? 0, ...(await meta.blobTotals()), cachedBytes: counts?.cachedBytes ?? 0, maxBytes: config.cache.maxBytes ?? null },
      disk,
      cache: snap.cache,
      upstreams: upstreamHealth(),
      history: [...(await deps.history.points()), await deps.history.current()],
    };
  }
}
