#!/usr/bin/env node
// The dashboard's repository views with 100,000 repositories: how long the server spends on each
// (its own Server-Timing figure, and the client's wall time), median and p95 of repeated requests.
// Target: under 200 ms server time for every view. Not a test: run it after a build.
//
//   npm run build && node bench/dashboard.mjs [--repos 100000] [--runs 30]
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startServer } from '../dist/index.js';
import { SqliteMetadataStore } from '../dist/storage/metadata.js';

const { values } = parseArgs({ options: { repos: { type: 'string', default: '100000' }, runs: { type: 'string', default: '30' } } });
const REPOS = Number(values.repos);
const RUNS = Number(values.runs);
const TARGET_MS = 200;

/** Nested names like a mirror of many registries: 50 orgs × 20 teams × N apps, plus a deep release tree. */
function repoName(i) {
  return `org${String(i % 50).padStart(2, '0')}/team${String(Math.floor(i / 50) % 20).padStart(2, '0')}/app${String(i).padStart(6, '0')}`;
}

function seed(storage) {
  // The schema comes from airlock itself; the rows go in with one transaction (seeding 100k
  // repositories through the API would take longer than everything measured here).
  new SqliteMetadataStore(join(storage, 'airlock.db')).close();
  const db = new Database(join(storage, 'airlock.db'));
  db.pragma('journal_mode = WAL');
  const now = Date.now();
  const insertRepo = db.prepare('INSERT INTO repositories (name, created_at) VALUES (?, ?)');
  const insertManifest = db.prepare(
    `INSERT INTO manifests (repo_id, digest, media_type, size, content, cached, created_at, last_access)
     VALUES (?, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, 0, ?, ?)`,
  );
  const insertTag = db.prepare('INSERT INTO tags (repo_id, name, digest, cached, updated_at) VALUES (?, ?, ?, 0, ?)');
  const started = Date.now();
  db.transaction(() => {
    for (let i = 0; i < REPOS; i++) {
      const id = insertRepo.run(repoName(i), now).lastInsertRowid;
      const content = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 100 },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${'1'.repeat(64)}`, size: 1000 + i }],
        }),
      );
      const digest = `sha256:${createHash('sha256').update(content).digest('hex')}`;
      insertManifest.run(id, digest, content.length, content, now, now);
      insertTag.run(id, 'latest', digest, now);
    }
  })();
  db.close();
  return Date.now() - started;
}

async function measure(url) {
  const server = [];
  const wall = [];
  let bytes = 0;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const res = await fetch(url);
    const body = await res.text();
    wall.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`${url}: ${res.status} ${body.slice(0, 200)}`);
    const timing = /app;dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '');
    server.push(timing ? Number(timing[1]) : NaN);
    bytes = body.length;
  }
  const stat = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return { median: s[Math.floor(s.length / 2)], p95: s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] };
  };
  return { server: stat(server), wall: stat(wall), bytes };
}

const storage = mkdtempSync(join(tmpdir(), 'airlock-bench-ui-'));
let server;
try {
  console.log(`seeding ${REPOS} repositories…`);
  console.log(`seeded in ${seed(storage)} ms`);
  server = await startServer({ listen: '127.0.0.1:0', storage, log: { level: 'error' } });
  const base = server.url;
  const middle = repoName(Math.floor(REPOS / 2));
  const views = [
    ['tree root', '/ui/repositories'],
    ['folder org25/', '/ui/repositories?prefix=org25/'],
    ['folder org25/team07/ (100 apps)', '/ui/repositories?prefix=org25/team07/'],
    ['search prefix "org2"', '/ui/repositories?prefix=org2'],
    ['search, a page deep in', `/ui/repositories?prefix=org&last=${encodeURIComponent(middle)}`],
    ['one repository', `/ui/repositories/${middle}`],
    ['overview', '/ui/'],
  ];
  const api = [
    ['JSON first page (n=100)', '/api/v1/repositories?n=100'],
    ['JSON page after the middle', `/api/v1/repositories?n=100&last=${encodeURIComponent(middle)}`],
    ['JSON page n=1000', '/api/v1/repositories?n=1000'],
    ['JSON tree root', '/api/v1/repositories?delimiter=/'],
    ['JSON one repository', `/api/v1/repositories/${middle}/manifests`],
  ];
  console.log(`\n${RUNS} requests each; ms, median / p95 (target: server < ${TARGET_MS} ms)\n`);
  console.log(`${'view'.padEnd(36)} ${'server'.padStart(16)} ${'client wall'.padStart(16)} ${'bytes'.padStart(9)}`);
  let worst = 0;
  for (const [label, path] of [...views, ...api]) {
    const r = await measure(base + path);
    const serverText = Number.isNaN(r.server.median) ? '(no header)' : `${r.server.median.toFixed(1)} / ${r.server.p95.toFixed(1)}`;
    if (!Number.isNaN(r.server.p95)) worst = Math.max(worst, r.server.p95);
    else worst = Math.max(worst, r.wall.p95);
    console.log(`${label.padEnd(36)} ${serverText.padStart(16)} ${`${r.wall.median.toFixed(1)} / ${r.wall.p95.toFixed(1)}`.padStart(16)} ${String(r.bytes).padStart(9)}`);
  }
  console.log(`\nworst p95: ${worst.toFixed(1)} ms — ${worst < TARGET_MS ? 'within' : 'OVER'} the ${TARGET_MS} ms target`);
} finally {
  await server?.close();
  rmSync(storage, { recursive: true, force: true });
}
