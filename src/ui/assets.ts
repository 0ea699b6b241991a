// The dashboard's static assets, embedded in the package so it works with no internet and no
// files beside the build. Served under a content hash, so browsers may cache them forever.

import { createHash } from 'node:crypto';

const CSS = `
:root{--fg:#1d2330;--muted:#5b6477;--line:#dde1e8;--bg:#f5f6f8;--card:#fff;--accent:#2458c6;--ok:#1e7b3a;--warn:#a86200;--bad:#b3261e;--code:#eef1f6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Ubuntu,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.top{display:flex;align-items:center;gap:24px;padding:0 24px;height:52px;background:#151b26;color:#e8ecf3}
header.top .brand{font-weight:700;font-size:16px;color:#fff;letter-spacing:.3px}
header.top nav{display:flex;gap:4px;flex:1}
header.top nav a{color:#c6cede;padding:6px 10px;border-radius:6px}
header.top nav a.here{background:#2a3446;color:#fff}
header.top .who{display:flex;gap:10px;align-items:center;color:#c6cede}
header.top .who form{margin:0}
header.top .who button{background:none;border:1px solid #48536a;color:#e8ecf3;border-radius:6px;padding:3px 10px;cursor:pointer}
main{max-width:1280px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:4px 0 16px}h1.mono{font-size:20px}h2{font-size:16px;margin:0 0 12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:16px;margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px;margin-bottom:16px}
.figure{font-size:26px;font-weight:650}.sub{color:var(--muted);font-size:12.5px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:12.5px;background:#fafbfc}
tr:last-child td{border-bottom:none}
tbody[data-digest] tr:first-child td{border-bottom:none;padding-bottom:2px}
tbody[data-digest] tr.more td{padding-top:0}
td.digest{min-width:320px;max-width:420px}
td{overflow-wrap:anywhere}
table[data-table=manifests] tbody{border-bottom:1px solid var(--line)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
code{background:var(--code);padding:1px 5px;border-radius:4px;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;border:1px solid transparent;white-space:nowrap}
.badge.ok{color:var(--ok);border-color:#b9dfc4;background:#edf8f0}
.badge.failing{color:var(--bad);border-color:#efc2be;background:#fdf0ef}
.badge.cooling{color:var(--warn);border-color:#f0d6b0;background:#fdf6ec}
.badge.idle,.badge.offline{color:var(--muted);border-color:var(--line);background:#f4f5f7}
.badge.tag{color:#1d4ea8;background:#eaf1ff;border-color:#c8d8fb;font-weight:500}
.badge.tagless{color:#6a3fb5;background:#f3edfd;border-color:#dccbf6;font-weight:500}
.badge.cached{color:var(--muted);background:#f4f5f7;border-color:var(--line);font-weight:500}
.badge.pushed{color:var(--ok);background:#edf8f0;border-color:#b9dfc4;font-weight:500}
.bar{width:100%;height:14px}
.legend{display:flex;gap:16px;flex-wrap:wrap;font-size:12.5px;color:var(--muted);margin-top:6px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.legend i.c1{background:#2458c6}.legend i.c2{background:#e08a1e}.legend i.c3{background:#b3261e}.legend i.c4{background:#9aa5b8}.legend i.c0{background:#e4e8ef}
.chart{width:100%;height:auto;display:block}
.chart .axis{stroke:#c5cbd6;stroke-width:1}.chart text{fill:#5b6477;font-size:11px}
.chart .s1{fill:none;stroke:#2458c6;stroke-width:2}.chart .s2{fill:none;stroke:#e08a1e;stroke-width:2}
.chart .a1{fill:#2458c6;opacity:.12}.chart .stale{fill:#b3261e}
form.search{display:flex;gap:8px;margin-bottom:12px}
input[type=text],input[type=password],input[type=search]{padding:7px 10px;border:1px solid #c5cbd6;border-radius:6px;font:inherit;min-width:280px}
button,.button{padding:7px 14px;border:1px solid #c5cbd6;border-radius:6px;background:#fff;font:inherit;cursor:pointer;color:var(--fg)}
button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
button.danger{background:#fff;border-color:#e4a7a2;color:var(--bad)}
.crumbs{color:var(--muted);margin-bottom:8px}.crumbs a{margin:0 2px}
.pager{display:flex;gap:12px;align-items:center;margin-top:12px}
.cmds{display:grid;grid-template-columns:auto minmax(0,1fr) auto;gap:4px 8px;align-items:center;margin-top:6px}
.cmds button{padding:2px 8px;font-size:12px}
.cmds .label{color:var(--muted);font-size:12px}
details summary{cursor:pointer;color:var(--accent)}
.muted{color:var(--muted)}.error{color:var(--bad)}
.notice{background:#fff8e6;border:1px solid #f0d6b0;border-radius:8px;padding:10px 14px;margin-bottom:16px}
.login{max-width:380px;margin:60px auto}.login label{display:block;margin:10px 0 4px;color:var(--muted)}
.login input{width:100%;min-width:0}.login button{margin-top:16px;width:100%}
a.folder{font-weight:600}
nav.tabs{display:flex;gap:4px;border-bottom:1px solid var(--line);margin:12px 0}
nav.tabs a{padding:6px 12px;border:1px solid transparent;border-bottom:none;border-radius:6px 6px 0 0;color:var(--muted)}
nav.tabs a.here{border-color:var(--line);background:#fff;color:var(--fg);margin-bottom:-1px}
.doc-actions{margin:8px 0}
form.inline{display:inline;margin:0}form.inline button{padding:2px 10px;font-size:12.5px;margin-top:4px}
pre.doc{background:#0f1520;color:#dfe6f3;padding:14px;border-radius:8px;overflow:auto;max-height:560px}
pre.doc code{background:none;color:inherit;padding:0;word-break:normal;white-space:pre}
`;

const JS = `
// Copy buttons: the command stays selectable text without JavaScript; this only saves a selection.
document.addEventListener('click', function (event) {
  var button = event.target.closest ? event.target.closest('button[data-copy]') : null;
  if (!button) return;
  var source = document.getElementById(button.getAttribute('data-copy'));
  if (!source) return;
  var text = source.textContent;
  var done = function () { var old = button.textContent; button.textContent = 'Copied'; setTimeout(function () { button.textContent = old; }, 1200); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
  } else {
    selectText(source);
  }
});
function selectText(node) {
  var range = document.createRange();
  range.selectNodeContents(node);
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}
`;

const FAVICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#151b26"/><path d="M9 22V13a7 7 0 0 1 14 0v9" fill="none" stroke="#7fb0ff" stroke-width="3"/><rect x="6" y="16" width="20" height="11" rx="2" fill="#2458c6"/></svg>`;

export interface Asset {
  path: string;
  body: string;
  type: string;
}

function asset(name: string, ext: string, body: string, type: string): Asset {
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 12);
  return { path: `/ui/assets/${name}.${hash}.${ext}`, body, type };
}

export const ASSETS = {
  css: asset('app', 'css', CSS, 'text/css; charset=utf-8'),
  js: asset('app', 'js', JS, 'text/javascript; charset=utf-8'),
  icon: asset('icon', 'svg', FAVICON, 'image/svg+xml'),
};

export const ASSET_BY_PATH = new Map(Object.values(ASSETS).map((a) => [a.path, a]));
