// Schema migrations, applied in order inside one transaction each; PRAGMA user_version records
// how many have run. Append only: never edit a migration that has shipped.
export const MIGRATIONS: string[] = [
  `
  CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
  );
  -- One row per blob on disk; size is the verified byte count.
  CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    last_access INTEGER NOT NULL
  ) WITHOUT ROWID;
  -- A blob is served only from repositories that link it. cached = fetched from an upstream.
  CREATE TABLE repo_blobs (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    cached      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
  ) WITHOUT ROWID;
  CREATE INDEX repo_blobs_by_digest ON repo_blobs(digest);
  -- Manifest bytes are small and kept here byte-exact.
  CREATE TABLE manifests (
    repo_id       INTEGER NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content       BLOB NOT NULL,
    subject       TEXT,
    artifact_type TEXT,
    annotations   TEXT,
    cached        INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_access   INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
  ) WITHOUT ROWID;
  CREATE INDEX manifests_by_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
  -- What a manifest points at: blobs (config, layers) and child manifests (index entries).
  CREATE TABLE manifest_refs (
    repo_id     INTEGER NOT NULL,
    parent      TEXT NOT NULL,
    child       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, parent, child)
  ) WITHOUT ROWID;
  CREATE INDEX manifest_refs_by_child ON manifest_refs(repo_id, child);
  CREATE TABLE tags (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    cached      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
  ) WITHOUT ROWID;
  CREATE INDEX tags_by_digest ON tags(repo_id, digest);
  CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
  ) WITHOUT ROWID;
  -- Counters that must survive restarts (cache hits, bytes served, ...).
  CREATE TABLE counters (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  `
  -- Who opened an upload session, so open sessions can be bounded per user.
  ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
  CREATE INDEX uploads_by_owner ON uploads(owner);
  `,
  `
  -- Text facts about each upstream that must survive restarts (the last error operators see).
  CREATE TABLE upstream_notes (
    prefix      TEXT PRIMARY KEY,
    last_error  TEXT
  ) WITHOUT ROWID;
  `,
  `
  -- Cache eviction walks cached blobs from the least recently served.
  CREATE INDEX blobs_by_last_access ON blobs(last_access);
  `,
  `
  -- Where a mirrored repository's content comes from (sync, import --map, an export's record):
  -- mirror sets map each origin to its local repository.
  CREATE TABLE repo_origins (
    repo        TEXT PRIMARY KEY,
    origin      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  `
  -- Garbage collection: which manifests reference a blob, in any repository; and the record of
  -- each collection (the last one is reported in stats and metrics).
  CREATE INDEX manifest_refs_by_child_only ON manifest_refs(child);
  CREATE TABLE gc_runs (
    id                 INTEGER PRIMARY KEY,
    started_at         INTEGER NOT NULL,
    duration_ms        INTEGER NOT NULL,
    dry_run            INTEGER NOT NULL,
    removed_manifests  INTEGER NOT NULL,
    removed_blobs      INTEGER NOT NULL,
    freed_bytes        INTEGER NOT NULL
  );
  `,
  `
  -- Dashboard: the rolling history of the cache figures (one row a minute, a day of them) and the
  -- recent audit events (pushes, deletes, refusals), both bounded by the server that writes them.
  CREATE TABLE stats_history (
    at                  INTEGER PRIMARY KEY,
    hits                INTEGER NOT NULL,
    misses              INTEGER NOT NULL,
    stale_served        INTEGER NOT NULL,
    bytes_from_cache    INTEGER NOT NULL,
    bytes_from_upstream INTEGER NOT NULL,
    storage_bytes       INTEGER NOT NULL
  );
  CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    action      TEXT NOT NULL,
    user        TEXT NOT NULL,
    repo        TEXT,
    digest      TEXT,
    tag         TEXT,
    code        TEXT,
    remote      TEXT
  );
  -- What the dashboard learnt from an image's config blob: an OpenShift release, a file-based
  -- catalog, or neither (kind ''), so each config is read once.
  CREATE TABLE image_kinds (
    repo_id     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    version     TEXT,
    PRIMARY KEY (repo_id, digest)
  ) WITHOUT ROWID;
  CREATE INDEX image_kinds_by_kind ON image_kinds(kind) WHERE kind <> '';
  -- The classifier walks manifests in the order they arrived.
  CREATE INDEX manifests_by_created ON manifests(created_at, repo_id, digest);
  `,
  `
  -- What /api/v1/stats and /metrics report about storage, kept up to date by triggers in the
  -- transaction of each change: counting it on every request scanned every manifest (COUNT
  -- DISTINCT over the table, content included), ~0.1 s of CPU per 40k manifests, blocking the
  -- server for each scrape. One row; the counts start from what is stored.
  CREATE INDEX manifests_by_digest ON manifests(digest);
  CREATE TABLE storage_totals (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    repositories  INTEGER NOT NULL,
    manifests     INTEGER NOT NULL,
    blobs         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL
  );
  INSERT INTO storage_totals (id, repositories, manifests, blobs, bytes) VALUES (1,
    (SELECT COUNT(*) FROM repositories r WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)),
    (SELECT COUNT(DISTINCT digest) FROM manifests),
    (SELECT COUNT(*) FROM blobs),
    (SELECT COALESCE(SUM(size), 0) FROM blobs));
  -- A repository counts once it holds a manifest; a manifest digest once, however many repositories hold it.
  CREATE TRIGGER storage_totals_manifest_repo_in AFTER INSERT ON manifests
    WHEN NOT EXISTS (SELECT 1 FROM manifests WHERE repo_id = NEW.repo_id AND digest <> NEW.digest)
    BEGIN UPDATE storage_totals SET repositories = repositories + 1 WHERE id = 1; END;
  CREATE TRIGGER storage_totals_manifest_in AFTER INSERT ON manifests
    WHEN NOT EXISTS (SELECT 1 FROM manifests WHERE digest = NEW.digest AND repo_id <> NEW.repo_id)
    BEGIN UPDATE storage_totals SET manifests = manifests + 1 WHERE id = 1; END;
  CREATE TRIGGER storage_totals_manifest_repo_out AFTER DELETE ON manifests
    WHEN NOT EXISTS (SELECT 1 FROM manifests WHERE repo_id = OLD.repo_id)
    BEGIN UPDATE storage_totals SET repositories = repositories - 1 WHERE id = 1; END;
  CREATE TRIGGER storage_totals_manifest_out AFTER DELETE ON manifests
    WHEN NOT EXISTS (SELECT 1 FROM manifests WHERE digest = OLD.digest)
    BEGIN UPDATE storage_totals SET manifests = manifests - 1 WHERE id = 1; END;
  CREATE TRIGGER storage_totals_blob_in AFTER INSERT ON blobs
    BEGIN UPDATE storage_totals SET blobs = blobs + 1, bytes = bytes + NEW.size WHERE id = 1; END;
  CREATE TRIGGER storage_totals_blob_out AFTER DELETE ON blobs
    BEGIN UPDATE storage_totals SET blobs = blobs - 1, bytes = bytes - OLD.size WHERE id = 1; END;
  CREATE TRIGGER storage_totals_blob_size AFTER UPDATE OF size ON blobs
    BEGIN UPDATE storage_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1; END;
  `,
  `
  -- A repository is listed (catalog, tags/list) from its first manifest on, and stays listed with
  -- no tags once its last manifest is deleted, as distribution and zot answer, until garbage
  -- collection finds it still empty. Uploads alone never list one.
  ALTER TABLE repositories ADD COLUMN listed INTEGER NOT NULL DEFAULT 0;
  UPDATE repositories SET listed = 1 WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = repositories.id);
  CREATE TRIGGER repositories_listed AFTER INSERT ON manifests
    BEGIN UPDATE repositories SET listed = 1 WHERE id = NEW.repo_id AND listed = 0; END;
  `,
  `
  -- The record of a collection keeps how many emptied repositories it forgot (stats, metrics).
  ALTER TABLE gc_runs ADD COLUMN forgotten_repositories INTEGER NOT NULL DEFAULT 0;
  `,
];
