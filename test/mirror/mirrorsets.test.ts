// `airlock mirrorsets` and GET /api/v1/mirrorsets: documents parsed back (YAML / TOML) and checked
// field by field, from configured upstreams and recorded origins; the CLI (reading the storage a
// running server holds) and the API give the same text.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { SqliteMetadataStore } from '../../src/storage/metadata.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { call, tempDirs } from '../pullthrough/support.js';
import { runCli } from '../server/cli.js';
import { basic, writeHtpasswd } from '../security/support.js';

const tmp = tempDirs('mirrorsets');
const HOST = 'mirror.example.com:5000';
let srv: TestServer;
let configFile: string;

const upstreams = [
  { prefix: 'quay.io', url: 'https://quay.io', offline: true },
  { prefix: 'ocp4/openshift4', url: 'https://quay.io', remotePrefix: 'openshift-release-dev/ocp-v4.0-art-dev', offline: true },
  { prefix: 'hub', url: 'https://registry-1.docker.io', offline: true },
];
const origins = [
  { repo: 'ocp4/release', origin: 'quay.io/openshift-release-dev/ocp-release' },
  // A second local home for the payload: the imported copy comes before the pull-through prefix.
  { repo: 'imported/art-dev', origin: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev' },
  { repo: 'registry.redhat.io/redhat/redhat-operator-index', origin: 'registry.redhat.io/redhat/redhat-operator-index' },
];

/** source → mirrors, as every format must state them for HOST, sorted by source. */
const EXPECTED: [string, string[]][] = [
  ['docker.io', [`${HOST}/hub`]],
  ['quay.io', [`${HOST}/quay.io`]],
  ['quay.io/openshift-release-dev/ocp-release', [`${HOST}/ocp4/release`]],
  ['quay.io/openshift-release-dev/ocp-v4.0-art-dev', [`${HOST}/imported/art-dev`, `${HOST}/ocp4/openshift4`]],
  ['registry.redhat.io/redhat/redhat-operator-index', [`${HOST}/registry.redhat.io/redhat/redhat-operator-index`]],
];

beforeAll(async () => {
  const storage = tmp.make('storage');
  // What sync / import --map record.
  const meta = new SqliteMetadataStore(join(storage, 'airlock.db'));
  for (const o of origins) await meta.setOrigin(o.repo, o.origin);
  await meta.close();
  srv = await startTestServer({ storage, upstreams });
  configFile = join(tmp.make('config'), 'airlock.yaml');
  writeFileSync(configFile, toYaml({ storage, upstreams }));
});

afterAll(async () => {
  await srv?.close();
  tmp.cleanup();
});

async function fromApi(format: string, host = HOST): Promise<{ status: number; type: string | undefined; text: string }> {
  const res = await call(srv.url, `/api/v1/mirrorsets?host=${encodeURIComponent(host)}&format=${encodeURIComponent(format)}`);
  return { status: res.status, type: res.headers['content-type'] as string | undefined, text: res.body.toString('utf8') };
}

describe('GET /api/v1/mirrorsets', () => {
  it('format=idms: an ImageDigestMirrorSet with every source, its mirrors and mirrorSourcePolicy', async () => {
    const res = await fromApi('idms');
    expect(res.status).toBe(200);
    expect(res.type).toContain('application/yaml');
    const doc = parseYaml(res.text) as Record<string, any>;
    expect(Object.keys(doc)).toEqual(['apiVersion', 'kind', 'metadata', 'spec']);
    expect(doc.apiVersion).toBe('config.openshift.io/v1');
    expect(doc.kind).toBe('ImageDigestMirrorSet');
    expect(doc.metadata).toEqual({ name: 'airlock-mirror.example.com-5000' });
    expect(Object.keys(doc.spec)).toEqual(['imageDigestMirrors']);
    expect(doc.spec.imageDigestMirrors).toEqual(
      EXPECTED.map(([source, mirrors]) => ({ source, mirrors, mirrorSourcePolicy: 'AllowContactingSource' })),
    );
  });

  it('format=itms: an ImageTagMirrorSet with the same entries under imageTagMirrors', async () => {
    const doc = parseYaml((await fromApi('itms')).text) as Record<string, any>;
    expect(doc.apiVersion).toBe('config.openshift.io/v1');
    expect(doc.kind).toBe('ImageTagMirrorSet');
    expect(Object.keys(doc.spec)).toEqual(['imageTagMirrors']);
    expect(doc.spec.imageTagMirrors).toEqual(EXPECTED.map(([source, mirrors]) => ({ source, mirrors, mirrorSourcePolicy: 'AllowContactingSource' })));
  });

  it('format=icsp: a legacy ImageContentSourcePolicy with repositoryDigestMirrors', async () => {
    const doc = parseYaml((await fromApi('icsp')).text) as Record<string, any>;
    expect(doc.apiVersion).toBe('operator.openshift.io/v1alpha1');
    expect(doc.kind).toBe('ImageContentSourcePolicy');
    expect(doc.metadata.name).toBe('airlock-mirror.example.com-5000');
    expect(doc.spec).toEqual({ repositoryDigestMirrors: EXPECTED.map(([source, mirrors]) => ({ source, mirrors })) });
  });

  it('format=registries.conf: v2 TOML, one [[registry]] per source with digest-only mirrors (insecure: plain HTTP)', async () => {
    const res = await fromApi('registries.conf');
    expect(res.status).toBe(200);
    expect(res.type).toContain('application/toml');
    const doc = parseToml(res.text) as { registry: Record<string, unknown>[] };
    expect(Object.keys(doc)).toEqual(['registry']);
    expect(doc.registry).toEqual(
      EXPECTED.map(([source, mirrors]) => ({
        prefix: source,
        location: source,
        mirror: mirrors.map((location) => ({ location, insecure: true, 'pull-from-mirror': 'digest-only' })),
      })),
    );
  });

  it('the default format is idms; bad host or format: 400 naming the parameter', async () => {
    const res = await call(srv.url, `/api/v1/mirrorsets?host=${HOST}`);
    expect(res.status).toBe(200);
    expect((parseYaml(res.body.toString('utf8')) as { kind: string }).kind).toBe('ImageDigestMirrorSet');
    const badFormat = await fromApi('yaml');
    expect(badFormat.status).toBe(400);
    expect(badFormat.text).toContain('format must be one of idms, itms, icsp, registries.conf');
    const badHost = await fromApi('idms', 'not a host');
    expect(badHost.status).toBe(400);
    expect(badHost.text).toContain('host must be HOST or HOST:PORT');
  });
});

describe('airlock mirrorsets (CLI)', () => {
  it('reads the storage a running server holds and writes the same documents as the API', async () => {
    for (const format of ['idms', 'itms', 'icsp', 'registries.conf']) {
      const r = await runCli(['mirrorsets', '--config', configFile, '--host', HOST, '--format', format]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe((await fromApi(format)).text);
    }
  });

  it('--out FILE writes the file and says what it wrote; the default format is idms', async () => {
    const out = join(tmp.make('out'), 'idms.yaml');
    const r = await runCli(['mirrorsets', '--config', configFile, '--host', HOST, '--out', out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`wrote idms for ${HOST} to ${out} (3 upstreams, 3 recorded origins)`);
    expect(readFileSync(out, 'utf8')).toBe((await fromApi('idms')).text);
  });

  it('bad usage exits 2 with the reason', async () => {
    const noHost = await runCli(['mirrorsets', '--config', configFile]);
    expect(noHost.code).toBe(2);
    expect(noHost.stderr).toContain('--host HOST[:PORT] is required');
    const badFormat = await runCli(['mirrorsets', '--config', configFile, '--host', HOST, '--format', 'json']);
    expect(badFormat.code).toBe(2);
    expect(badFormat.stderr).toContain('--format must be one of idms, itms, icsp, registries.conf');
    const help = await runCli(['mirrorsets', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Example:');
  });

  it('a storage with no database yet (a fresh pull-through cache): the upstreams alone', async () => {
    const empty = tmp.make('empty');
    const cfg = join(empty, 'airlock.yaml');
      writeFileSync(cfg, toYaml({ storage: join(empty, 'storage'), upstreams }));
    const r = await runCli(['mirrorsets', '--config', cfg, '--host', HOST]);
    expect(r.code, r.stderr).toBe(0);
    const doc = parseYaml(r.stdout) as { spec: { imageDigestMirrors: { source: string; mirrors: string[] }[] } };
    expect(doc.spec.imageDigestMirrors.map((e) => [e.source, e.mirrors])).toEqual([
      ['docker.io', [`${HOST}/hub`]],
      ['quay.io', [`${HOST}/quay.io`]],
      ['quay.io/openshift-release-dev/ocp-v4.0-art-dev', [`${HOST}/ocp4/openshift4`]],
    ]);
  });
});

describe('GET /api/v1/mirrorsets under auth:', () => {
  it('needs catalog access: anonymous gets 401, a pull-only user 403, an admin the document', async () => {
    const dir = tmp.make('auth');
    const htpasswd = join(dir, 'users.htpasswd');
    await writeHtpasswd(htpasswd, { admin: 'admin-pw', cluster: 'cluster-pw' });
    const secured = await startTestServer({
      upstreams,
      auth: {
        htpasswd,
        rules: [
          { users: ['admin'], repos: ['**'], actions: ['*'] },
          { users: ['cluster'], repos: ['**'], actions: ['pull'] },
        ],
      },
    });
    try {
      const path = `/api/v1/mirrorsets?host=${HOST}&format=icsp`;
      expect((await call(secured.url, path)).status).toBe(401);
      expect((await call(secured.url, path, { headers: { authorization: basic('cluster', 'cluster-pw') } })).status).toBe(403);
      const ok = await call(secured.url, path, { headers: { authorization: basic('admin', 'admin-pw') } });
      expect(ok.status).toBe(200);
      expect((parseYaml(ok.body.toString('utf8')) as { kind: string }).kind).toBe('ImageContentSourcePolicy');
    } finally {
      await secured.close();
    }
  });
});
