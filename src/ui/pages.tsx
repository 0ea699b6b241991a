// The dashboard's pages, rendered on the server with Hono's JSX. Everything works without
// JavaScript: tables are plain HTML, search and paging are GET forms and links, actions are POST
// forms carrying the session's CSRF token. The one script only adds copy buttons.

import type { Child } from 'hono/jsx';
import type { AuditEvent, ClassifiedImage, HistoryPoint, RepositoryCounts, RepositoryNode } from '../storage/metadata.js';
import { ASSETS } from './assets.js';
import { HistoryCharts, StackedBar } from './chart.js';
import { formatAgo, formatBytes, pullCommands, shortDigest, type ManifestView } from './model.js';
import type { Viewer } from './viewer.js';
import type { Completeness } from './completeness.js';

export type Section = 'overview' | 'repositories' | 'releases' | 'mirrorsets' | 'activity' | 'login' | '';

export const repoPath = (name: string) => `/ui/repositories/${name}`;
const q = (params: Record<string, string | undefined>) => {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') search.set(k, v);
  const text = search.toString();
  return text ? `?${text}` : '';
};

export function Layout(props: { title: string; viewer?: Viewer; here: Section; children?: Child; refreshSeconds?: number }) {
  const { viewer } = props;
  const nav: [Section, string, string][] = [['overview', 'Overview', '/ui/']];
  if (viewer) {
    nav.push(['repositories', 'Repositories', '/ui/repositories']);
    if (viewer.catalog) nav.push(['releases', 'Releases & catalogs', '/ui/releases']);
    if (viewer.catalog && viewer.mirrorSets) nav.push(['mirrorsets', 'Mirror sets', '/ui/mirrorsets']);
    if (viewer.catalog) nav.push(['activity', 'Activity', '/ui/activity']);
  }
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        {props.refreshSeconds ? <meta http-equiv="refresh" content={String(props.refreshSeconds)} /> : null}
        <title>{`${props.title} · airlock`}</title>
        <link rel="icon" href={ASSETS.icon.path} type="image/svg+xml" />
        <link rel="stylesheet" href={ASSETS.css.path} />
        <script src={ASSETS.js.path} defer></script>
      </head>
      <body>
        <header class="top">
          <a class="brand" href="/ui/">airlock</a>
          <nav>
            {viewer
              ? nav.map(([id, label, href]) => (
                  <a href={href} class={props.here === id ? 'here' : ''}>
                    {label}
                  </a>
                ))
              : null}
          </nav>
          <div class="who">
            {viewer?.user ? (
              <>
                <span>
                  signed in as <strong data-user>{viewer.user}</strong>
                </span>
                <form method="post" action="/ui/logout">
                  <input type="hidden" name="_csrf" value={viewer.session.csrf} />
                  <button type="submit">Log out</button>
                </form>
              </>
            ) : viewer && !viewer.open ? (
              <a href="/ui/login">Log in</a>
            ) : null}
          </div>
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  );
}

export function MessagePage(props: { viewer?: Viewer; title: string; message: string }) {
  return (
    <Layout title={props.title} viewer={props.viewer} here="">
      <h1>{props.title}</h1>
      <div class="card">
        <p>{props.message}</p>
        <p>
          <a href="/ui/">Back to the overview</a>
        </p>
      </div>
    </Layout>
  );
}

export function LoginPage(props: { csrf: string; next: string; error?: string }) {
  return (
    <Layout title="Log in" here="login">
      <div class="card login">
        <h1>Log in to airlock</h1>
        <p class="muted">The same users as the registry (htpasswd).</p>
        {props.error ? <p class="error" role="alert">{props.error}</p> : null}
        <form method="post" action="/ui/login">
          <input type="hidden" name="_csrf" value={props.csrf} />
          <input type="hidden" name="next" value={props.next} />
          <label for="user">User name</label>
          <input type="text" id="user" name="user" autocomplete="username" required />
          <label for="password">Password</label>
          <input type="password" id="password" name="password" autocomplete="current-password" required />
          <button class="primary" type="submit">
            Log in
          </button>
        </form>
      </div>
    </Layout>
  );
}

// ---- overview ------------------------------------------------------------------------------------

export interface UpstreamHealth {
  prefix: string;
  url: string;
  /** ok, failing, cooling down, offline, or idle (not contacted since start). */
  state: 'ok' | 'failing' | 'cooling down' | 'offline' | 'idle';
  lastError: string | null;
  lastErrorAt: string | null;
  lastSuccessAt: string | null;
  coolingUntil: string | null;
  hits: number;
  misses: number;
  errors: number;
  bytesFromUpstream: number;
}

export interface OverviewData {
  storage: { repositories: number; manifests: number; blobs: number; bytes: number; cachedBytes: number; maxBytes: number | null };
  disk: { total: number; free: number } | null;
  cache: { hits: number; misses: number; hitRatio: number; staleServed: number; bytesFromCache: number; bytesFromUpstream: number };
  upstreams: UpstreamHealth[];
  history: HistoryPoint[];
}

const stateClass = (state: UpstreamHealth['state']) =>
  ({ ok: 'ok', failing: 'failing', 'cooling down': 'cooling', offline: 'offline', idle: 'idle' })[state];

export function OverviewPage(props: { viewer: Viewer; data: OverviewData }) {
  const { data } = props;
  const { storage, disk, cache } = data;
  const diskUsedByOthers = disk ? Math.max(0, disk.total - disk.free - storage.bytes) : 0;
  return (
    <Layout title="Overview" viewer={props.viewer} here="overview">
      <h1>Overview</h1>
      <div class="grid">
        <div class="card">
          <h2>Storage</h2>
          <div class="figure" data-figure="storage-bytes">{formatBytes(storage.bytes)}</div>
          <div class="sub">
            {storage.repositories} repositories · {storage.manifests} manifests · {storage.blobs} blobs
          </div>
          {disk ? (
            <>
              <p>
                <StackedBar
                  segments={[
                    { value: storage.bytes, fill: '#2458c6', label: `airlock ${formatBytes(storage.bytes)}` },
                    { value: diskUsedByOthers, fill: '#9aa5b8', label: `other data ${formatBytes(diskUsedByOthers)}` },
                    { value: disk.free, fill: '#e4e8ef', label: `free ${formatBytes(disk.free)}` },
                  ]}
                />
              </p>
              <div class="legend">
                <span><i class="c1"></i>airlock</span>
                <span><i class="c4"></i>other data</span>
                <span><i class="c0"></i>free</span>
              </div>
              <div class="sub" data-figure="disk-free">
                {formatBytes(disk.free)} free of {formatBytes(disk.total)} on the storage volume
              </div>
            </>
          ) : null}
        </div>
        <div class="card">
          <h2>Pull-through cache budget</h2>
          <div class="figure">{formatBytes(storage.cachedBytes)}</div>
          {storage.maxBytes !== null ? (
            <>
              <p>
                <StackedBar
                  segments={[
                    { value: Math.min(storage.cachedBytes, storage.maxBytes), fill: '#e08a1e', label: `cached ${formatBytes(storage.cachedBytes)}` },
                    { value: Math.max(0, storage.maxBytes - storage.cachedBytes), fill: '#e4e8ef', label: 'budget left' },
                  ]}
                />
              </p>
              <div class="sub" data-figure="cache-budget">
                of cache.maxBytes {formatBytes(storage.maxBytes)} ({Math.round((100 * storage.cachedBytes) / Math.max(1, storage.maxBytes))}%); pushed content
                is never evicted
              </div>
            </>
          ) : (
            <div class="sub">cached content; no cache.maxBytes budget set</div>
          )}
        </div>
        <div class="card">
          <h2>Cache</h2>
          <div class="figure" data-figure="hit-ratio">{(cache.hitRatio * 100).toFixed(1)}% hits</div>
          <div class="sub">
            {cache.hits} hits · {cache.misses} misses · {cache.staleServed} stale serves
          </div>
          <div class="sub">
            {formatBytes(cache.bytesFromCache)} from cache · {formatBytes(cache.bytesFromUpstream)} from upstream
          </div>
        </div>
      </div>
      <div class="card">
        <h2>Last 24 hours</h2>
        <HistoryCharts points={data.history} />
      </div>
      <div class="card">
        <h2>Upstreams</h2>
        {data.upstreams.length === 0 ? (
          <p class="muted">No upstreams configured: this is a push-only mirror.</p>
        ) : (
          <table data-table="upstreams">
            <thead>
              <tr>
                <th>Prefix</th>
                <th>URL</th>
                <th>Health</th>
                <th class="num">Hits</th>
                <th class="num">Misses</th>
                <th class="num">Errors</th>
                <th class="num">Fetched</th>
                <th>Last success</th>
                <th>Last error</th>
              </tr>
            </thead>
            <tbody>
              {data.upstreams.map((u) => (
                <tr data-upstream={u.prefix}>
                  <td>
                    <code>{u.prefix || '(everything else)'}</code>
                  </td>
                  <td class="mono">{u.url}</td>
                  <td>
                    <span class={`badge ${stateClass(u.state)}`} data-state={u.state}>
                      {u.state}
                    </span>
                    {u.coolingUntil ? <div class="sub">skipped until {u.coolingUntil.slice(11, 19)} UTC</div> : null}
                  </td>
                  <td class="num">{u.hits}</td>
                  <td class="num">{u.misses}</td>
                  <td class="num">{u.errors}</td>
                  <td class="num">{formatBytes(u.bytesFromUpstream)}</td>
                  <td>{u.lastSuccessAt ? formatAgo(u.lastSuccessAt) : <span class="muted">none since start</span>}</td>
                  <td class="error">{u.lastError ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    </Layout>
  );
}

// ---- repositories --------------------------------------------------------------------------------

function Crumbs(props: { name: string; leaf?: boolean }) {
  const parts = props.name.split('/').filter((p) => p !== '');
  return (
    <div class="crumbs">
      <a href="/ui/repositories">repositories</a>
      {parts.map((part, i) => {
        const path = parts.slice(0, i + 1).join('/');
        const last = i === parts.length - 1;
        return (
          <>
            {' / '}
            {last && props.leaf ? <strong>{part}</strong> : <a href={`/ui/repositories${q({ prefix: `${path}/` })}`}>{part}</a>}
          </>
        );
      })}
    </div>
  );
}

export function RepositoriesPage(props: {
  viewer: Viewer;
  prefix: string;
  tree: boolean;
  nodes: RepositoryNode[];
  counts: Map<string, RepositoryCounts>;
  next?: string;
}) {
  const { viewer, prefix, tree, nodes } = props;
  return (
    <Layout title="Repositories" viewer={viewer} here="repositories">
      <h1>Repositories</h1>
      {!viewer.catalog ? (
        <div class="card">
          <p>Listing every repository needs the catalog right. Open a repository you may pull by its name:</p>
          <form class="search" method="get" action="/ui/repositories">
            <input type="text" name="open" placeholder="ocp4/openshift4/release" aria-label="repository name" required />
            <button type="submit">Open</button>
          </form>
        </div>
      ) : (
        <div class="card">
          <form class="search" method="get" action="/ui/repositories">
            <input type="search" name="prefix" value={prefix} placeholder="name prefix, e.g. ocp4/openshift4/" aria-label="repository name prefix" />
            <button type="submit">Search</button>
            {prefix ? <a class="button" href="/ui/repositories">Clear</a> : null}
          </form>
          {tree ? <Crumbs name={prefix} /> : <p class="muted">Repositories whose name starts with <code>{prefix}</code>:</p>}
          <table data-table="repositories">
            <thead>
              <tr>
                <th>Name</th>
                <th class="num">Tags</th>
                <th class="num">Manifests</th>
              </tr>
            </thead>
            <tbody>
              {nodes.length === 0 ? (
                <tr>
                  <td colspan={3} class="muted">
                    Nothing here.
                  </td>
                </tr>
              ) : null}
              {nodes.map((node) => {
                const label = tree ? node.name.slice(prefix.length) : node.name;
                const counts = props.counts.get(node.name);
                return (
                  <tr>
                    <td>
                      {node.repository ? (
                        <a class="repo" href={repoPath(node.name)} data-repo={node.name}>
                          {label}
                        </a>
                      ) : null}
                      {node.children ? (
                        <>
                          {node.repository ? ' ' : ''}
                          <a class="folder" href={`/ui/repositories${q({ prefix: `${node.name}/` })}`} data-folder={node.name}>
                            {node.repository ? '' : label}/
                          </a>
                        </>
                      ) : null}
                    </td>
                    <td class="num">{counts ? counts.tags : ''}</td>
                    <td class="num">{counts ? counts.manifests : ''}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <div class="pager">
            {props.next !== undefined ? (
              <a href={`/ui/repositories${q({ prefix, last: props.next })}`} rel="next">
                Next page →
              </a>
            ) : null}
          </div>
        </div>
      )}
    </Layout>
  );
}

function Commands(props: { id: string; host: string; repo: string; digest: string; release: boolean }) {
  return (
    <div class="cmds">
      {pullCommands(props.host, props.repo, props.digest, props.release).map((c, i) => (
        <>
          <span class="label">{c.tool}</span>
          <code id={`${props.id}-${i}`}>{c.command}</code>
          <button type="button" data-copy={`${props.id}-${i}`}>
            Copy
          </button>
        </>
      ))}
    </div>
  );
}

export function RepositoryPage(props: {
  viewer: Viewer;
  name: string;
  host: string;
  views: ManifestView[];
  releaseDigests: Set<string>;
  childPlatforms: Map<string, string>;
  truncated: boolean;
}) {
  const { viewer, name, views } = props;
  const canDelete = viewer.can('delete', name);
  const tagged = views.flatMap((v) => v.tags.map((tag) => ({ tag, view: v }))).sort((a, b) => a.tag.localeCompare(b.tag));
  return (
    <Layout title={name} viewer={viewer} here="repositories">
      <Crumbs name={name} leaf />
      <h1 class="mono">{name}</h1>
      <div class="card">
        <h2>Tags ({tagged.length})</h2>
        {tagged.length === 0 ? (
          <p class="muted">No tags: everything here was pushed by digest.</p>
        ) : (
          <table data-table="tags">
            <thead>
              <tr>
                <th>Tag</th>
                <th>Digest</th>
                <th>Type</th>
                <th class="num">Size</th>
                {canDelete ? <th></th> : null}
              </tr>
            </thead>
            <tbody>
              {tagged.map(({ tag, view }) => (
                <tr>
                  <td>
                    <span class="badge tag">{tag}</span>
                  </td>
                  <td>
                    <a href={`#m-${view.digest.replace(':', '-')}`}>
                      <code>{shortDigest(view.digest)}</code>
                    </a>
                  </td>
                  <td>{view.kind}</td>
                  <td class="num">{formatBytes(view.totalSize)}</td>
                  {canDelete ? (
                    <td>
                      <a href={`/ui/delete${q({ repo: name, reference: tag })}`} data-action="delete-tag">
                        untag
                      </a>
                    </td>
                  ) : null}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
      <div class="card">
        <h2>Manifests ({views.length})</h2>
        {props.truncated ? <p class="notice">Only the first manifests are shown; use the JSON endpoint for all of them.</p> : null}
        <table data-table="manifests">
          <thead>
            <tr>
              <th>Manifest</th>
              <th>Media type</th>
              <th>Platforms</th>
              <th class="num">Total size</th>
              <th class="num">Layers</th>
              <th>Referrers</th>
              <th>Source</th>
              <th>Last pulled</th>
            </tr>
          </thead>
          {views.map((v) => {
            const id = `m-${v.digest.replace(':', '-')}`;
            const platforms = v.platforms.length ? v.platforms : props.childPlatforms.has(v.digest) ? [props.childPlatforms.get(v.digest)!] : [];
            const release = props.releaseDigests.has(v.digest);
            // One body per manifest: its row, then a full-width row for the commands.
            return (
              <tbody id={id} data-digest={v.digest}>
                <tr>
                  <td class="digest">
                    <code>{v.digest}</code>
                    <div>
                      {v.tags.length ? v.tags.map((t) => <span class="badge tag">{t}</span>) : <span class="badge tagless">tagless</span>}{' '}
                      {release ? <span class="badge ok">release</span> : null}
                      {v.parents.length ? <span class="sub"> in index {v.parents.map(shortDigest).join(', ')}</span> : null}
                      {v.subject ? <span class="sub"> refers to {shortDigest(v.subject)}</span> : null}
                    </div>
                  </td>
                  <td class="mono">
                    {v.mediaType}
                    {v.kind === 'artifact' && v.artifactType ? <div class="sub">artifact {v.artifactType}</div> : null}
                  </td>
                  <td>{platforms.join(', ')}</td>
                  <td class="num">{formatBytes(v.totalSize)}</td>
                  <td class="num">{v.layers ?? ''}</td>
                  <td>
                    {v.referrers.map((r) => (
                      <div>
                        <a href={`#m-${r.digest.replace(':', '-')}`}>{r.artifactType ?? shortDigest(r.digest)}</a>
                      </div>
                    ))}
                  </td>
                  <td>
                    <span class={`badge ${v.source}`}>{v.source}</span>
                    <div class="sub">{formatAgo(v.createdAt)}</div>
                  </td>
                  <td>{formatAgo(v.lastPulled)}</td>
                </tr>
                <tr class="more">
                  <td colspan={8}>
                    <details>
                      <summary>pull by digest{canDelete ? ' · delete' : ''}</summary>
                      <Commands id={id} host={props.host} repo={name} digest={v.digest} release={release} />
                      {canDelete ? (
                        <p>
                          <a href={`/ui/delete${q({ repo: name, reference: v.digest })}`} data-action="delete-manifest">
                            delete this manifest…
                          </a>
                        </p>
                      ) : null}
                    </details>
                  </td>
                </tr>
              </tbody>
            );
          })}
        </table>
      </div>
    </Layout>
  );
}

export function ConfirmDeletePage(props: { viewer: Viewer; repo: string; reference: string }) {
  const tag = !props.reference.includes(':');
  return (
    <Layout title="Confirm" viewer={props.viewer} here="repositories">
      <h1>{tag ? 'Remove a tag' : 'Delete a manifest'}</h1>
      <div class="card">
        <p>
          {tag ? 'Remove the tag ' : 'Delete the manifest '}
          <code>{props.reference}</code> from <code>{props.repo}</code>
          {tag ? '? The manifest stays, reachable by digest.' : ', and every tag pointing at it? Clients pulling it by digest will fail.'}
        </p>
        <form method="post" action="/ui/delete">
          <input type="hidden" name="_csrf" value={props.viewer.session.csrf} />
          <input type="hidden" name="repo" value={props.repo} />
          <input type="hidden" name="reference" value={props.reference} />
          <button class="danger" type="submit">
            {tag ? 'Remove tag' : 'Delete manifest'}
          </button>{' '}
          <a class="button" href={repoPath(props.repo)}>
            Cancel
          </a>
        </form>
      </div>
    </Layout>
  );
}

// ---- releases and catalogs -------------------------------------------------------------------------

function CompletenessCell(props: { viewer: Viewer; img: ClassifiedImage; result: Completeness | undefined }) {
  const { result, img } = props;
  const check = (label: string) => (
    <form method="post" action="/ui/releases/check" class="inline">
      <input type="hidden" name="_csrf" value={props.viewer.session.csrf} />
      <input type="hidden" name="repo" value={img.repo} />
      <input type="hidden" name="digest" value={img.digest} />
      <button type="submit" data-action="check">
        {label}
      </button>
    </form>
  );
  if (!result) return <div data-completeness="unchecked">{check('Check')}</div>;
  if (result.state === 'checking') return <span class="badge idle" data-completeness="checking">checking…</span>;
  if (result.state === 'failed') {
    return (
      <div data-completeness="failed">
        <span class="badge failing">cannot check</span>
        <div class="sub error">{result.error}</div>
        {check('Check again')}
      </div>
    );
  }
  const whole = result.missingCount === 0;
  return (
    <div data-completeness={whole ? 'complete' : 'incomplete'}>
      <span class={`badge ${whole ? 'ok' : 'failing'}`}>
        {whole ? 'complete' : `${result.missingCount} missing`}
      </span>
      <div class="sub">
        {result.complete} of {result.images} images · {formatAgo(result.checkedAt)}
      </div>
      {result.missing && result.missing.length ? (
        <details>
          <summary>what is missing</summary>
          {result.missing.map((m) => (
            <div class="sub">
              <code>{m.reference}</code> {m.reason}: {m.message}
            </div>
          ))}
        </details>
      ) : null}
      {check('Check again')}
    </div>
  );
}

export function ReleasesPage(props: {
  viewer: Viewer;
  host: string;
  images: ClassifiedImage[];
  scanning: boolean;
  completeness?: (repo: string, digest: string) => Completeness | undefined;
}) {
  const checking = props.completeness ? props.images.some((i) => props.completeness!(i.repo, i.digest)?.state === 'checking') : false;
  const groups: [string, string, ClassifiedImage[]][] = [
    ['release', 'OpenShift releases', props.images.filter((i) => i.kind === 'release')],
    ['catalog', 'Operator catalogs (file-based)', props.images.filter((i) => i.kind === 'catalog')],
  ];
  return (
    <Layout title="Releases & catalogs" viewer={props.viewer} here="releases" refreshSeconds={checking || props.scanning ? 3 : undefined}>
      <h1>Releases &amp; catalogs</h1>
      {props.scanning ? <p class="notice">Still reading image configurations; reload in a moment for the rest.</p> : null}
      <p class="muted">
        Recognised from image labels: <code>io.openshift.release</code> (release payloads) and{' '}
        <code>operators.operatorframework.io.index.configs.v1</code> (file-based catalogs).{' '}
        {props.completeness
          ? 'Completeness is what airlock verify reports through airlock’s own mirror sets: every image the payload names, its manifests and blobs, here.'
          : null}
      </p>
      {groups.map(([kind, title, images]) => (
        <div class="card">
          <h2>
            {title} ({images.length})
          </h2>
          {images.length === 0 ? (
            <p class="muted">None found.</p>
          ) : (
            <table data-table={kind}>
              <thead>
                <tr>
                  <th>Repository</th>
                  <th>Version</th>
                  <th>Digest</th>
                  <th>Tags</th>
                  <th>Source</th>
                  {props.completeness ? <th>Completeness</th> : null}
                  <th>Pull by digest</th>
                </tr>
              </thead>
              <tbody>
                {images.map((img) => (
                  <tr data-digest={img.digest}>
                    <td>
                      <a href={`${repoPath(img.repo)}#m-${img.digest.replace(':', '-')}`}>{img.repo}</a>
                    </td>
                    <td>
                      <strong>{img.version ?? '–'}</strong>
                    </td>
                    <td>
                      <code>{img.digest}</code>
                    </td>
                    <td>{img.tags.length ? img.tags.map((t) => <span class="badge tag">{t}</span>) : <span class="badge tagless">tagless</span>}</td>
                    <td>
                      <span class={`badge ${img.cached ? 'cached' : 'pushed'}`}>{img.cached ? 'cached' : 'pushed'}</span>
                    </td>
                    {props.completeness ? (
                      <td>
                        <CompletenessCell viewer={props.viewer} img={img} result={props.completeness(img.repo, img.digest)} />
                      </td>
                    ) : null}
                    <td>
                      <code>{`${props.host}/${img.repo}@${img.digest}`}</code>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      ))}
    </Layout>
  );
}

// ---- activity ----------------------------------------------------------------------------------

export function ActivityPage(props: { viewer: Viewer; events: AuditEvent[] }) {
  return (
    <Layout title="Activity" viewer={props.viewer} here="activity">
      <h1>Activity</h1>
      <div class="card">
        <p class="muted">Recent pushes, mounts, deletes and refused requests (the server keeps the last 10,000; the log has them all).</p>
        <table data-table="activity">
          <thead>
            <tr>
              <th>When (UTC)</th>
              <th>What</th>
              <th>User</th>
              <th>Repository</th>
              <th>Digest / tag</th>
              <th>From</th>
            </tr>
          </thead>
          <tbody>
            {props.events.length === 0 ? (
              <tr>
                <td colspan={6} class="muted">
                  Nothing yet.
                </td>
              </tr>
            ) : null}
            {props.events.map((e) => (
              <tr data-action={e.action}>
                <td class="mono">{new Date(e.at).toISOString().replace('T', ' ').slice(0, 19)}</td>
                <td>
                  <span class={`badge ${e.action === 'denied' ? 'failing' : e.action === 'delete' ? 'cooling' : 'ok'}`}>{e.action}</span>
                  {e.code ? <span class="sub"> {e.code}</span> : null}
                </td>
                <td>{e.user}</td>
                <td>{e.repo ? <a href={repoPath(e.repo)}>{e.repo}</a> : ''}</td>
                <td>
                  {e.tag ? <span class="badge tag">{e.tag}</span> : null} {e.digest ? <code>{shortDigest(e.digest)}</code> : null}
                </td>
                <td class="mono">{e.remote ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Layout>
  );
}

// ---- mirror sets -------------------------------------------------------------------------------

const FORMAT_LABELS: Record<string, string> = {
  idms: 'ImageDigestMirrorSet',
  itms: 'ImageTagMirrorSet',
  icsp: 'ImageContentSourcePolicy (legacy)',
  'registries.conf': 'registries.conf (CRI-O, podman)',
};

export function MirrorSetsPage(props: { viewer: Viewer; host: string; format: string; formats: readonly string[]; document: string }) {
  const file = props.format === 'registries.conf' ? 'airlock-registries.conf' : `airlock-${props.format}.yaml`;
  const download = `/ui/mirrorsets/download${q({ host: props.host, format: props.format })}`;
  return (
    <Layout title="Mirror sets" viewer={props.viewer} here="mirrorsets">
      <h1>Mirror sets</h1>
      <div class="card">
        <p class="muted">
          Documents that send a cluster's pulls of the original image names to this airlock: every upstream and every recorded origin
          of mirrored content. They name the registry as clusters reach it:
        </p>
        <form class="search" method="get" action="/ui/mirrorsets">
          <input type="text" name="host" value={props.host} aria-label="host and port clusters use" />
          <input type="hidden" name="format" value={props.format} />
          <button type="submit">Use this host</button>
        </form>
        <nav class="tabs">
          {props.formats.map((f) => (
            <a href={`/ui/mirrorsets${q({ host: props.host, format: f })}`} class={f === props.format ? 'here' : ''} data-format={f}>
              {FORMAT_LABELS[f] ?? f}
            </a>
          ))}
        </nav>
        <div class="doc-actions">
          <button type="button" data-copy="mirrorset-document">
            Copy
          </button>{' '}
          <a class="button" href={download} download={file}>
            Download {file}
          </a>
          <span class="sub">
            {' '}
            also <code>{`GET /api/v1/mirrorsets?host=${props.host}&format=${props.format}`}</code>
          </span>
        </div>
        <pre class="doc">
          <code id="mirrorset-document">{props.document}</code>
        </pre>
      </div>
    </Layout>
  );
}
