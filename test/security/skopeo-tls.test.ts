/**
 * The real clients against airlock with TLS and access control, set up with the real commands:
 * `airlock cert` makes the CA and server certificate, `airlock user add --password-stdin` writes the
 * htpasswd file, and skopeo pushes (`copy --all`, multi-arch) and pulls back over HTTPS, trusting the
 * CA through --cert-dir / --src-cert-dir / --dest-cert-dir, with `--creds` and with a pull-secret
 * style `--authfile`. The read-only cluster identity can pull but not push; a wrong password and an
 * MD5 (`$apr1$`) htpasswd entry do not get in.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOciLayoutImage, MEDIA_TYPES, sha256Digest, type BuiltOciImage } from '../helpers/images.js';
import { expectError, expectStatus } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { listBlobsOfDir, listDirInstanceManifests, readDirManifest, skopeo, skopeoCopy } from '../helpers/skopeo.js';
import { CLI, runCli } from '../server/cli.js';
import { basic, decodeJwt, httpsCall, tempDirs } from './support.js';

const MIRROR = { user: 'mirror', password: 'mirror-Secret-1' };
const CLUSTER = { user: 'cluster', password: 'cluster-Secret-2' };
const LEGACY = { user: 'legacy', password: 'legacy-secret' };
/** `openssl passwd -apr1 -salt airlock1 legacy-secret`: the right password, in a hash scheme airlock refuses. */
const LEGACY_APR1 = '$apr1$airlock1$X1P94K2QlJrWpT2Fpvxst0';

const tmp = tempDirs('skopeo');
let srv: TestServer;
let certDir: string;
/** Holds ca.crt only: containers/image pairs every *.key in a cert dir with a client *.cert. */
let trustDir: string;
let ca: Buffer;
let htpasswd: string;
let image: BuiltOciImage;
let reg: string;

/** Runs the built CLI with `input` on stdin (what `echo pw | airlock user add … --password-stdin` does). */
function runCliWithInput(args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

function authFile(name: string, user: string, password: string): string {
  const file = join(tmp.make('authfile'), `${name}.json`);
  // The pull-secret format: {"auths":{"host:port":{"auth":"base64(user:pass)"}}}
  writeFileSync(file, JSON.stringify({ auths: { [reg]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
  return file;
}

/** Pulls `ref` back into a `dir:` layout and checks it is the built image, byte for byte. */
function expectSameImage(out: string): void {
  const top = readDirManifest(out);
  expect(top.mediaType).toBe(MEDIA_TYPES.ociIndex);
  expect(top.bytes.equals(image.indexBytes)).toBe(true);
  expect(listDirInstanceManifests(out)).toEqual([...image.manifestDigests].sort());
  for (const child of image.images) expect(readDirManifest(out, child.manifestDigest).bytes.equals(child.manifestBytes)).toBe(true);
  const blobs = listBlobsOfDir(out);
  expect(blobs.map((b) => b.digest)).toEqual([...image.blobDigests].sort());
  for (const b of blobs) expect(sha256Digest(readFileSync(b.path))).toBe(b.digest);
}

beforeAll(async () => {
  certDir = join(tmp.make('cert'), 'pki');
  const cert = await runCli(['cert', '--host', 'localhost', '--ip', '127.0.0.1', '--out', certDir]);
  expect(cert, cert.stderr).toMatchObject({ code: 0 });
  for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key']) expect(existsSync(join(certDir, f)), f).toBe(true);
  trustDir = tmp.make('trust');
  copyFileSync(join(certDir, 'ca.crt'), join(trustDir, 'ca.crt'));
  ca = readFileSync(join(certDir, 'ca.crt'));

  htpasswd = join(tmp.make('users'), 'users.htpasswd');
  for (const { user, password } of [MIRROR, CLUSTER]) {
    const added = await runCliWithInput(['user', 'add', user, '--htpasswd', htpasswd, '--password-stdin'], `${password}\n`);
    expect(added, added.stderr).toMatchObject({ code: 0, stdout: `added user "${user}" in ${htpasswd}\n` });
  }
  appendFileSync(htpasswd, `${LEGACY.user}:${LEGACY_APR1}\n`);

  srv = await startTestServer({
    tls: { cert: join(certDir, 'server.crt'), key: join(certDir, 'server.key') },
    auth: {
      htpasswd,
      rules: [
        { users: [MIRROR.user], repos: ['**'], actions: ['pull', 'push', 'delete'] },
        { users: [CLUSTER.user, LEGACY.user], repos: ['**'], actions: ['pull'] },
      ],
    },
  });
  reg = srv.host;
  image = buildOciLayoutImage(join(tmp.make('oci'), 'layout'), { tag: '4.16.0', layersPerImage: 2, layerBytes: 4096 });
}, 120_000);

afterAll(async () => {
  await srv?.close();
  tmp.cleanup();
});

describe('set up with the real commands', () => {
  it('airlock user add --password-stdin wrote bcrypt (cost 12) entries, mode 0600, without the passwords', () => {
    expect(statSync(htpasswd).mode & 0o777).toBe(0o600);
    const text = readFileSync(htpasswd, 'utf8');
    expect(text).toMatch(new RegExp(`^${MIRROR.user}:\\$2y\\$12\\$[./A-Za-z0-9]{53}$`, 'm'));
    expect(text).toMatch(new RegExp(`^${CLUSTER.user}:\\$2y\\$12\\$[./A-Za-z0-9]{53}$`, 'm'));
    expect(text).not.toContain(MIRROR.password);
    expect(text).not.toContain(CLUSTER.password);
  });

  it('the server speaks HTTPS with the certificate airlock cert made (valid for localhost and 127.0.0.1, signed by ca.crt)', async () => {
    expect(srv.url).toBe(`https://${reg}`);
    const byIp = await httpsCall(`${srv.url}/v2/`, { ca, headers: { authorization: basic(MIRROR.user, MIRROR.password) } });
    expectStatus(byIp, 200);
    const byName = await httpsCall(`${srv.url}/v2/`, { ca, servername: 'localhost', headers: { authorization: basic(MIRROR.user, MIRROR.password) } });
    expectStatus(byName, 200);
    await expect(httpsCall(`${srv.url}/v2/`)).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);
  });

  it('the challenge points skopeo at the HTTPS token endpoint', async () => {
    const res = await httpsCall(`${srv.url}/v2/ocp4/release/manifests/latest`, { ca });
    expectError(res, 401, 'UNAUTHORIZED');
    expect(res.header('www-authenticate')).toBe(`Bearer realm="https://${reg}/auth/token",service="airlock",scope="repository:ocp4/release:pull"`);
  });

  it('skopeo refuses the server without the CA (it really is TLS with a private CA)', async () => {
    const r = await skopeo(['inspect', '--raw', '--creds', `${CLUSTER.user}:${CLUSTER.password}`, `docker://${reg}/ocp4/release:latest`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/x509: certificate signed by unknown authority/);
  });
});

describe('skopeo with --creds', () => {
  it('the mirror identity pushes a multi-arch image (copy --all) and the cluster identity pulls it back byte for byte', async () => {
    const ref = `docker://${reg}/ocp4/creds/release:${image.tag}`;
    await skopeoCopy(image.ociRef, ref, { extra: ['--dest-cert-dir', trustDir, '--dest-creds', `${MIRROR.user}:${MIRROR.password}`] });
    const out = join(tmp.make('pull'), 'image');
    mkdirSync(out);
    await skopeoCopy(ref, `dir:${out}`, { extra: ['--src-cert-dir', trustDir, '--src-creds', `${CLUSTER.user}:${CLUSTER.password}`] });
    expectSameImage(out);

    const inspect = await skopeo(['inspect', '--raw', '--cert-dir', trustDir, '--creds', `${CLUSTER.user}:${CLUSTER.password}`, ref], { check: true });
    expect(sha256Digest(Buffer.from(inspect.stdout))).toBe(image.indexDigest);
  });

  it('the read-only cluster identity cannot push: skopeo fails with "denied" and nothing is stored', async () => {
    const ref = `docker://${reg}/ocp4/by-cluster/release:${image.tag}`;
    const r = await skopeoCopy(image.ociRef, ref, { check: false, extra: ['--dest-cert-dir', trustDir, '--dest-creds', `${CLUSTER.user}:${CLUSTER.password}`] });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/denied/i);
    const auth = basic(MIRROR.user, MIRROR.password);
    expectError(await httpsCall(`${srv.url}/v2/ocp4/by-cluster/release/manifests/${image.tag}`, { ca, headers: { authorization: auth } }), 404, 'MANIFEST_UNKNOWN');
    for (const digest of image.blobDigests) {
      expectStatus(await httpsCall(`${srv.url}/v2/ocp4/by-cluster/release/blobs/${digest}`, { method: 'HEAD', ca, headers: { authorization: auth } }), 404);
    }
  });

  it('a wrong password fails with a clear message', async () => {
    const r = await skopeo(['inspect', '--raw', '--cert-dir', trustDir, '--creds', `${CLUSTER.user}:wrong-password`, `docker://${reg}/ocp4/creds/release:${image.tag}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid user name or password/);
    expect(r.stderr).not.toContain('wrong-password');
  });

  it('an MD5 ($apr1$) htpasswd entry is refused: that user cannot log in, even with the right password', async () => {
    const r = await skopeo(['inspect', '--raw', '--cert-dir', trustDir, '--creds', `${LEGACY.user}:${LEGACY.password}`, `docker://${reg}/ocp4/creds/release:${image.tag}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid user name or password/);
    const token = await httpsCall(`${srv.url}/auth/token?service=airlock&scope=repository:ocp4/creds/release:pull`, {
      ca,
      headers: { authorization: basic(LEGACY.user, LEGACY.password) },
    });
    expectError(token, 401, 'UNAUTHORIZED');
    const v2 = await httpsCall(`${srv.url}/v2/ocp4/creds/release/manifests/${image.tag}`, { ca, headers: { authorization: basic(LEGACY.user, LEGACY.password) } });
    expectError(v2, 401, 'UNAUTHORIZED');
  });
});

describe('skopeo with --authfile (pull-secret format)', () => {
  it('pushes with the mirror pull secret and pulls back with the cluster pull secret', async () => {
    const ref = `docker://${reg}/ocp4/authfile/release:${image.tag}`;
    await skopeoCopy(image.ociRef, ref, { extra: ['--dest-cert-dir', trustDir, '--authfile', authFile('mirror', MIRROR.user, MIRROR.password)] });
    const out = join(tmp.make('pull'), 'image');
    mkdirSync(out);
    const clusterSecret = authFile('cluster', CLUSTER.user, CLUSTER.password);
    await skopeoCopy(ref, `dir:${out}`, { extra: ['--src-cert-dir', trustDir, '--authfile', clusterSecret] });
    expectSameImage(out);
    const tags = await skopeo(['list-tags', '--cert-dir', trustDir, '--authfile', clusterSecret, `docker://${reg}/ocp4/authfile/release`], { check: true });
    expect(JSON.parse(tags.stdout)).toMatchObject({ Tags: [image.tag] });
  });

  it('the cluster pull secret cannot push', async () => {
    const r = await skopeoCopy(image.ociRef, `docker://${reg}/ocp4/authfile-cluster/release:${image.tag}`, {
      check: false,
      extra: ['--dest-cert-dir', trustDir, '--authfile', authFile('cluster-push', CLUSTER.user, CLUSTER.password)],
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/denied/i);
  });

  it('a pull secret with a wrong password fails with a clear message', async () => {
    const r = await skopeo(['inspect', '--raw', '--cert-dir', trustDir, '--authfile', authFile('wrong', MIRROR.user, 'nope'), `docker://${reg}/ocp4/authfile/release:${image.tag}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid user name or password/);
  });

  it('tokens handed out over TLS carry exactly the cluster identity\'s pull grant', async () => {
    const res = await httpsCall(`${srv.url}/auth/token?service=airlock&scope=${encodeURIComponent('repository:ocp4/authfile/release:pull,push')}`, {
      ca,
      headers: { authorization: basic(CLUSTER.user, CLUSTER.password) },
    });
    expectStatus(res, 200);
    const jwt = decodeJwt(res.json<{ token: string }>().token);
    expect(jwt.payload.sub).toBe(CLUSTER.user);
    expect(jwt.payload.access).toEqual([{ type: 'repository', name: 'ocp4/authfile/release', actions: ['pull'] }]);
  });
});
