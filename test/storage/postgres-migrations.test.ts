// The PostgreSQL schema: migrations apply on a fresh database, once, also when replicas race.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { PG_MIGRATIONS, applyMigrations } from '../../src/storage/postgres/migrations.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { SqliteMetadataStore } from '../../src/storage/metadata.js';
import { createPool } from '../../src/storage/postgres/pool.js';

let server: Postgres;
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await server?.stop();
});

describe('PostgreSQL migrations', () => {
  it('mirror every SQLite migration', () => {
    expect(PG_MIGRATIONS.length).toBeGreaterThanOrEqual(MIGRATIONS.length);
  });

  it('hold every table and column of the SQLite schema, by the same names', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-schema-'));
    const sqlite = new SqliteMetadataStore(join(dir, 'airlock.db'));
    sqlite.close();
    const db = new Database(join(dir, 'airlock.db'), { readonly: true });
    const expected: string[] = [];
    for (const { name } of db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]) {
      for (const col of db.prepare(`SELECT name FROM pragma_table_info(?)`).all(name) as { name: string }[]) expected.push(`${name}.${col.name}`);
    }
    db.close();
    rmSync(dir, { recursive: true, force: true });
    const pool = createPool(await server.createDatabase());
    try {
      await applyMigrations(pool);
      const { rows } = await pool.query<{ c: string }>(
        "SELECT table_name || '.' || column_name AS c FROM information_schema.columns WHERE table_schema = 'public'",
      );
      const actual = new Set(rows.map((r) => r.c));
      expect(expected.length).toBeGreaterThan(40);
      expect(expected.filter((c) => !actual.has(c))).toEqual([]);
    } finally {
      await pool.end();
    }
  });

  it('apply once when several pools open one fresh database at the same time', async () => {
    const url = await server.createDatabase();
    const pools = [createPool(url), createPool(url), createPool(url)];
    try {
      await Promise.all(pools.map((p) => applyMigrations(p)));
      const { rows } = await pools[0]!.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual(PG_MIGRATIONS.map((_, i) => i + 1));
      const totals = await pools[0]!.query('SELECT repositories, manifests, blobs, bytes FROM storage_totals');
      expect(totals.rows).toEqual([{ repositories: 0, manifests: 0, blobs: 0, bytes: 0 }]);
      // Opening again is a no-op.
      await applyMigrations(pools[1]!);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('list, after the upgrade, the repositories that held a manifest before it, and only those', async () => {
    const pool = createPool(await server.createDatabase());
    try {
      // A database as the release before repository listing left it.
      const before = PG_MIGRATIONS.findIndex((m) => m.includes('ADD COLUMN listed'));
      expect(before).toBeGreaterThan(0);
      await pool.query('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      for (let i = 0; i < before; i++) {
        await pool.query(PG_MIGRATIONS[i]!);
        await pool.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [i + 1]);
      }
      await pool.query("INSERT INTO repositories (id, name, created_at) VALUES (1, 'old/app', 0), (2, 'old/blobs-only', 0)");
      await pool.query(
        "INSERT INTO manifests (repo_id, digest, media_type, size, content, cached, created_at, last_access) VALUES (1, 'sha256:aa', 'application/vnd.oci.image.manifest.v1+json', 2, '\\x7b7d', 0, 0, 0)",
      );
      await applyMigrations(pool);
      const { rows } = await pool.query('SELECT name, listed FROM repositories ORDER BY name');
      expect(rows).toEqual([
        { name: 'old/app', listed: 1 },
        { name: 'old/blobs-only', listed: 0 },
      ]);
    } finally {
      await pool.end();
    }
  });

  it('refuses a database newer than this airlock', async () => {
    const url = await server.createDatabase();
    const pool = createPool(url);
    try {
      await applyMigrations(pool);
      await pool.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [PG_MIGRATIONS.length + 1]);
      await expect(applyMigrations(pool)).rejects.toThrow(/newer than this airlock/);
    } finally {
      await pool.end();
    }
  });

  it('takes the pool size from ?max= and rejects a bad one', async () => {
    const pool = createPool(`${server.url}?max=3`);
    expect(pool.options.max).toBe(3);
    await pool.end();
    expect(() => createPool(`${server.url}?max=zero`)).toThrow(/max=zero/);
  });
});
