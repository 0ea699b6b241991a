/**
 * Proves the on-disk image fixtures (test/helpers/images.ts) and the skopeo helpers
 * (test/helpers/skopeo.ts) work with the real skopeo 1.9.3 and a real CNCF distribution 2.8
 * registry (/usr/bin/docker-registry). No network: the only registry reachable is the local one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDockerDirImage,
  buildOciLayoutImage,
  digestHex,
  MEDIA_TYPES,
  sha256Digest,
  type BuiltImage,
} from './helpers/images.js';
import {
  listBlobsOfDir,
  listBlobsOfOciLayout,
  listDirInstanceManifests,
  readDirManifest,
  readOciLayoutIndex,
  readOciLayoutTagged,
  renderRegistriesConf,
  skopeo,
  skopeoCopy,
  skopeoInspectRaw,
  writeRegistriesConf,
} from './helpers/skopeo.js';

const tmpRoots: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `airlock-fixtures-${prefix}-`));
  tmpRoots.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

interface ManifestJson {
  mediaType?: string;
  manifests?: { mediaType: string; digest: string; size: number; platform?: { os: string; architecture: string } }[];
  config?: { mediaType: string; digest: string; size: number };
  layers?: { mediaType: string; digest: string; size: number }[];
}

/** Parses a one-file ustar archive, checking the header checksum and end-of-archive blocks. */
function parseSingleFileTar(tar: Buffer): { name: string; content: Buffer } {
  expect(tar.length % 512).toBe(0);
  const h = tar.subarray(0, 512);
  const stored = parseInt(h.subarray(148, 156).toString('ascii').replace(/\0.*$/s, '').trim(), 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  expect(stored).toBe(sum);
  expect(h.subarray(257, 263).toString('ascii')).toBe('ustar\0');
  expect(String.fromCharCode(h[156]!)).toBe('0');
  const name = h.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
  const size = parseInt(h.subarray(124, 136).toString('ascii').replace(/\0.*$/s, ''), 8);
  const content = tar.subarray(512, 512 + size);
  const dataEnd = 512 + Math.ceil(size / 512) * 512;
  expect(tar.length).toBe(dataEnd + 1024);
  expect(tar.subarray(dataEnd).every((b) => b === 0)).toBe(true);
  return { name, content };
}

/**
 * Checks every image of a built fixture against the bytes on disk: manifest and blob digests match
 * their bytes, layers are gzip'ed one-file tars, and config.rootfs.diff_ids are the uncompressed
 * layers' digests.
 */
function checkImageBytes(
  built: BuiltImage,
  readBlob: (digest: string) => Buffer,
  readManifest: (digest: string) => Buffer,
  layerBytes: number,
): void {
  for (const img of built.images) {
    const mbytes = readManifest(img.manifestDigest);
    expect(sha256Digest(mbytes)).toBe(img.manifestDigest);
    const m = JSON.parse(mbytes.toString('utf8')) as ManifestJson;
    expect(m.config!.digest).toBe(img.configDigest);
    const configBytes = readBlob(img.configDigest);
    expect(sha256Digest(configBytes)).toBe(img.configDigest);
    expect(configBytes.length).toBe(m.config!.size);
    const config = JSON.parse(configBytes.toString('utf8')) as {
      os: string;
      architecture: string;
      rootfs: { type: string; diff_ids: string[] };
    };
    expect(config.os).toBe(img.platform.os);
    expect(config.architecture).toBe(img.platform.architecture);
    expect(config.rootfs.type).toBe('layers');
    expect(m.layers).toHaveLength(img.layers.length);
    const diffIds: string[] = [];
    for (const l of m.layers!) {
      const gz = readBlob(l.digest);
      expect(sha256Digest(gz)).toBe(l.digest);
      expect(gz.length).toBe(l.size);
      const tar = gunzipSync(gz);
      const file = parseSingleFileTar(tar);
      expect(file.content.length).toBe(layerBytes);
      expect(file.name).toMatch(/^layer\d+-/);
      diffIds.push(sha256Digest(tar));
    }
    expect(config.rootfs.diff_ids).toEqual(diffIds);
    expect(img.layers.map((l) => l.diffId)).toEqual(diffIds);
  }
}

describe('OCI image layout fixture', () => {
  it('skopeo inspect --raw shows an OCI index with linux/amd64 and linux/arm64 image manifests', async () => {
    const dir = join(tmp('oci'), 'layout');
    const built = buildOciLayoutImage(dir, { tag: 'v1' });
    expect(built.ociRef).toBe(`oci:${dir}:v1`);

    const { raw, digest, json } = await skopeoInspectRaw(built.ociRef);
    expect(digest).toBe(built.indexDigest);
    expect(raw).toBe(built.indexBytes.toString('utf8'));
    const index = json as ManifestJson;
    expect(index.mediaType).toBe(MEDIA_TYPES.ociIndex);
    expect(index.manifests).toHaveLength(2);
    expect(index.manifests!.map((m) => `${m.platform!.os}/${m.platform!.architecture}`)).toEqual([
      'linux/amd64',
      'linux/arm64',
    ]);
    expect(index.manifests!.map((m) => m.digest)).toEqual(built.manifestDigests);
    for (const m of index.manifests!) expect(m.mediaType).toBe(MEDIA_TYPES.ociManifest);

    // skopeo resolves each platform to the right child manifest and config.
    for (const [i, arch] of ['amd64', 'arm64'].entries()) {
      const r = await skopeo(['inspect', '--override-os', 'linux', '--override-arch', arch, built.ociRef], { check: true });
      const info = JSON.parse(r.stdout) as { Architecture: string; Os: string; Layers: string[] };
      expect(info.Architecture).toBe(arch);
      expect(info.Os).toBe('linux');
      expect(info.Layers).toEqual(built.images[i]!.layers.map((l) => l.digest));
    }
  });

  it('every blob digest matches its bytes and config diff_ids match the uncompressed layers', () => {
    const dir = join(tmp('oci'), 'layout');
    const built = buildOciLayoutImage(dir, { layersPerImage: 3, layerBytes: 3000 });
    const blob = (d: string) => readFileSync(join(dir, 'blobs', 'sha256', digestHex(d)));
    checkImageBytes(built, blob, blob, 3000);
    for (const b of listBlobsOfOciLayout(dir)) expect(sha256Digest(readFileSync(b.path))).toBe(b.digest);
    // 1 index + 2 manifests + 2 configs + 6 layers
    expect(listBlobsOfOciLayout(dir)).toHaveLength(11);
    expect(built.blobDigests).toHaveLength(8);
    expect(JSON.parse(readFileSync(join(dir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    expect(readOciLayoutTagged(dir, 'latest').digest).toBe(built.indexDigest);
    for (const img of built.images) {
      const m = JSON.parse(img.manifestBytes.toString('utf8')) as ManifestJson;
      expect(m.mediaType).toBe(MEDIA_TYPES.ociManifest);
      expect(m.config!.mediaType).toBe(MEDIA_TYPES.ociConfig);
      for (const l of m.layers!) expect(l.mediaType).toBe(MEDIA_TYPES.ociLayerGzip);
    }
  });

  it('round-trips through skopeo copy --all oci: → oci: byte for byte', async () => {
    const root = tmp('oci-copy');
    const src = join(root, 'src');
    const dst = join(root, 'dst');
    const built = buildOciLayoutImage(src, { tag: 'release-1' });
    await skopeoCopy(built.ociRef, `oci:${dst}:copied`);

    expect(readOciLayoutTagged(dst, 'copied').digest).toBe(built.indexDigest);
    const srcBlobs = listBlobsOfOciLayout(src);
    const dstBlobs = listBlobsOfOciLayout(dst);
    expect(dstBlobs.map((b) => b.digest)).toEqual(srcBlobs.map((b) => b.digest));
    for (const [i, b] of dstBlobs.entries()) expect(readFileSync(b.path).equals(readFileSync(srcBlobs[i]!.path))).toBe(true);
    expect(readOciLayoutIndex(dst).manifests).toHaveLength(1);
  });

  it('adds a second tag to an existing layout and keeps the first', async () => {
    const dir = join(tmp('oci-tags'), 'layout');
    const a = buildOciLayoutImage(dir, { tag: 'a' });
    const b = buildOciLayoutImage(dir, { tag: 'b' });
    expect(a.indexDigest).not.toBe(b.indexDigest);
    expect((await skopeoInspectRaw(a.ociRef)).digest).toBe(a.indexDigest);
    expect((await skopeoInspectRaw(b.ociRef)).digest).toBe(b.indexDigest);
  });

  it('is byte-identical for the same seed and unique without one', () => {
    const root = tmp('oci-seed');
    const one = buildOciLayoutImage(join(root, '1'), { seed: 'fixed' });
    const two = buildOciLayoutImage(join(root, '2'), { seed: 'fixed' });
    const three = buildOciLayoutImage(join(root, '3'));
    expect(two.indexDigest).toBe(one.indexDigest);
    expect(two.blobDigests).toEqual(one.blobDigests);
    expect(three.indexDigest).not.toBe(one.indexDigest);
    expect(three.blobDigests.some((d) => one.blobDigests.includes(d))).toBe(false);
  });

  it('writes a single manifest (no index) with singleManifest', async () => {
    const dir = join(tmp('oci-single'), 'layout');
    const built = buildOciLayoutImage(dir, { platforms: [{ os: 'linux', architecture: 's390x' }], singleManifest: true });
    const { digest, json } = await skopeoInspectRaw(built.ociRef);
    expect(digest).toBe(built.indexDigest);
    expect(built.manifestDigests).toEqual([built.indexDigest]);
    expect((json as ManifestJson).mediaType).toBe(MEDIA_TYPES.ociManifest);
  });
});

describe('Docker v2-2 dir: fixture', () => {
  it('skopeo inspect --raw shows a Docker manifest list with linux/amd64 and linux/arm64', async () => {
    const dir = join(tmp('dir'), 'img');
    const built = buildDockerDirImage(dir, {});
    expect(built.dirRef).toBe(`dir:${dir}`);
    const { digest, json } = await skopeoInspectRaw(built.dirRef);
    expect(digest).toBe(built.indexDigest);
    const list = json as ManifestJson;
    expect(list.mediaType).toBe(MEDIA_TYPES.dockerList);
    expect(list.manifests!.map((m) => `${m.platform!.os}/${m.platform!.architecture}`)).toEqual([
      'linux/amd64',
      'linux/arm64',
    ]);
    for (const m of list.manifests!) expect(m.mediaType).toBe(MEDIA_TYPES.dockerManifest);
    const r = await skopeo(['inspect', '--override-arch', 'arm64', built.dirRef], { check: true });
    expect((JSON.parse(r.stdout) as { Layers: string[] }).Layers).toEqual(built.images[1]!.layers.map((l) => l.digest));
  });

  it('every blob digest matches its bytes and config diff_ids match the uncompressed layers', () => {
    const dir = join(tmp('dir'), 'img');
    const built = buildDockerDirImage(dir, { layerBytes: 700 });
    checkImageBytes(
      built,
      (d) => readFileSync(join(dir, digestHex(d))),
      (d) => readDirManifest(dir, d).bytes,
      700,
    );
    expect(readFileSync(join(dir, 'version'), 'utf8')).toBe('Directory Transport Version: 1.1\n');
    expect(readDirManifest(dir).digest).toBe(built.indexDigest);
    expect(listDirInstanceManifests(dir)).toEqual([...built.manifestDigests].sort());
    expect(listBlobsOfDir(dir).map((b) => b.digest)).toEqual([...built.blobDigests].sort());
    for (const img of built.images) {
      const m = JSON.parse(img.manifestBytes.toString('utf8')) as ManifestJson;
      expect(m.mediaType).toBe(MEDIA_TYPES.dockerManifest);
      expect(m.config!.mediaType).toBe(MEDIA_TYPES.dockerConfig);
      for (const l of m.layers!) expect(l.mediaType).toBe(MEDIA_TYPES.dockerLayerGzip);
    }
  });

  it('round-trips through skopeo copy --all dir: → dir: with every file byte-identical', async () => {
    const root = tmp('dir-copy');
    const src = join(root, 'src');
    const dst = join(root, 'dst');
    const built = buildDockerDirImage(src, {});
    await skopeoCopy(built.dirRef, `dir:${dst}`);
    const files = readdirSync(src).sort();
    expect(readdirSync(dst).sort()).toEqual(files);
    for (const f of files) expect(readFileSync(join(dst, f)).equals(readFileSync(join(src, f)))).toBe(true);
    expect(readDirManifest(dst).digest).toBe(built.indexDigest);
  });

  it('has the same layout skopeo itself writes for copy --all oci: → dir:', async () => {
    const root = tmp('dir-layout');
    const oci = buildOciLayoutImage(join(root, 'oci'), {});
    const out = join(root, 'out');
    await skopeoCopy(oci.ociRef, `dir:${out}`);
    // skopeo's own dir: output: version, manifest.json (the index, unchanged), <hex>.manifest.json
    // per instance, and configs + layers as files named by hex digest. Nothing else.
    const expected = [
      'manifest.json',
      'version',
      ...oci.manifestDigests.map((d) => `${digestHex(d)}.manifest.json`),
      ...oci.blobDigests.map(digestHex),
    ].sort();
    expect(readdirSync(out).sort()).toEqual(expected);
    expect(readFileSync(join(out, 'version'), 'utf8')).toBe('Directory Transport Version: 1.1\n');
    expect(readDirManifest(out).bytes.equals(oci.indexBytes)).toBe(true);
    for (const img of oci.images) expect(readDirManifest(out, img.manifestDigest).bytes.equals(img.manifestBytes)).toBe(true);

    // …and buildDockerDirImage writes exactly those kinds of files.
    const docker = buildDockerDirImage(join(root, 'docker'), {});
    const dockerExpected = [
      'manifest.json',
      'version',
      ...docker.manifestDigests.map((d) => `${digestHex(d)}.manifest.json`),
      ...docker.blobDigests.map(digestHex),
    ].sort();
    expect(readdirSync(join(root, 'docker')).sort()).toEqual(dockerExpected);
  });
});

// ---------------------------------------------------------------------------------------------
// A real CNCF distribution registry, for the registries.conf mirror proof.

interface Distribution {
  host: string;
  /** Everything the registry printed (access log included). */
  log: () => string;
  stop: () => Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function startDistributionOnce(root: string): Promise<Distribution | undefined> {
  const port = await freePort();
  const configPath = join(root, `config-${port}.yml`);
  writeFileSync(
    configPath,
    [
      'version: 0.1',
      'log:',
      '  level: info',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(root, 'data')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn('/usr/bin/docker-registry', ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let dead = false;
  void exited.then(() => (dead = true));
  // Ready only when THIS process says it listens on the port (another process may hold it).
  const deadline = Date.now() + 15_000;
  while (!out.includes(`listening on 127.0.0.1:${port}`)) {
    if (dead) return undefined; // e.g. "bind: address already in use": try another port
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`docker-registry did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: `127.0.0.1:${port}`,
    log: () => out,
    stop: async () => {
      if (!dead) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

async function startDistribution(root: string): Promise<Distribution> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const d = await startDistributionOnce(root);
    if (d) return d;
  }
  throw new Error('docker-registry failed to bind a port 5 times');
}

describe('registries.conf mirror through a real registry (docker-registry 2.8)', () => {
  const UPSTREAM = 'quay.io/openshift-release-dev/ocp-v4.0-art-dev';
  let root: string;
  let reg: Distribution;
  let built: ReturnType<typeof buildOciLayoutImage>;
  let mirrorRepo: string;

  beforeAll(async () => {
    root = tmp('mirror');
    reg = await startDistribution(root);
    mirrorRepo = `${reg.host}/ocp4/openshift4`;
    built = buildOciLayoutImage(join(root, 'src'), { tag: '4.16.0-x86_64' });
    // Push by tag (what a mirroring tool does before the cluster pulls by digest).
    await skopeoCopy(built.ociRef, `docker://${mirrorRepo}:4.16.0-x86_64`, { destInsecure: true });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('the OCI index pushed with copy --all is served back unchanged by the registry', async () => {
    const { digest } = await skopeoInspectRaw(`docker://${mirrorRepo}:4.16.0-x86_64`, { insecure: true });
    expect(digest).toBe(built.indexDigest);
  });

  it('a digest pull of the upstream name is served by the pull-from-mirror=digest-only mirror', async () => {
    const conf = join(root, 'registries-digest-only.conf');
    const text = writeRegistriesConf(conf, {
      prefix: UPSTREAM,
      mirror: mirrorRepo,
      pullFromMirror: 'digest-only',
      insecure: true,
    });
    expect(text).toContain(`[[registry.mirror]]\nlocation = "${mirrorRepo}"\ninsecure = true\npull-from-mirror = "digest-only"`);

    const out = join(root, 'pulled');
    await skopeoCopy(`docker://${UPSTREAM}@${built.indexDigest}`, `oci:${out}:pulled`, { registriesConf: conf });

    expect(readOciLayoutTagged(out, 'pulled').digest).toBe(built.indexDigest);
    const srcBlobs = listBlobsOfOciLayout(join(root, 'src'));
    const outBlobs = listBlobsOfOciLayout(out);
    expect(outBlobs.map((b) => b.digest)).toEqual(srcBlobs.map((b) => b.digest));
    for (const [i, b] of outBlobs.entries()) expect(readFileSync(b.path).equals(readFileSync(srcBlobs[i]!.path))).toBe(true);
    // There is no internet here, and the registry's access log shows who served it.
    expect(reg.log()).toContain(`GET /v2/ocp4/openshift4/manifests/${built.indexDigest}`);
  });

  it('a tag pull bypasses a digest-only mirror (so the key is honoured, not ignored)', async () => {
    const conf = join(root, 'registries-digest-only-tag.conf');
    writeRegistriesConf(conf, { prefix: UPSTREAM, mirror: mirrorRepo, pullFromMirror: 'digest-only', insecure: true });
    const r = await skopeo(['inspect', '--raw', `docker://${UPSTREAM}:4.16.0-x86_64`], { registriesConf: conf });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('quay.io');
    expect(r.stderr).not.toContain(mirrorRepo);

    // With pull-from-mirror = "all" the same tag pull is served by the mirror.
    const confAll = join(root, 'registries-all.conf');
    writeRegistriesConf(confAll, { prefix: UPSTREAM, mirror: mirrorRepo, pullFromMirror: 'all', insecure: true });
    const ok = await skopeoInspectRaw(`docker://${UPSTREAM}:4.16.0-x86_64`, { registriesConf: confAll });
    expect(ok.digest).toBe(built.indexDigest);
  });

  it('mirror-by-digest-only = true on the [[registry]] behaves the same way', async () => {
    const conf = join(root, 'registries-mbdo.conf');
    const text = writeRegistriesConf(conf, { prefix: UPSTREAM, mirror: mirrorRepo, mirrorByDigestOnly: true, insecure: true });
    expect(text).toContain('mirror-by-digest-only = true');
    expect(text).not.toContain('pull-from-mirror');
    const byDigest = await skopeoInspectRaw(`docker://${UPSTREAM}@${built.indexDigest}`, { registriesConf: conf });
    expect(byDigest.digest).toBe(built.indexDigest);
    const byTag = await skopeo(['inspect', '--raw', `docker://${UPSTREAM}:4.16.0-x86_64`], { registriesConf: conf });
    expect(byTag.code).not.toBe(0);
  });

  it('skopeo rejects an unknown pull-from-mirror value and the mixed form the helper refuses to write', async () => {
    const conf = join(root, 'registries-bogus.conf');
    writeFileSync(
      conf,
      renderRegistriesConf({ prefix: UPSTREAM, mirror: mirrorRepo, insecure: true, pullFromMirror: 'all' }).replace(
        'pull-from-mirror = "all"',
        'pull-from-mirror = "bogus"',
      ),
    );
    const r = await skopeo(['inspect', '--raw', `docker://${UPSTREAM}@${built.indexDigest}`], { registriesConf: conf });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('unsupported pull-from-mirror value');

    expect(() =>
      renderRegistriesConf({ prefix: UPSTREAM, mirror: mirrorRepo, mirrorByDigestOnly: true, pullFromMirror: 'digest-only' }),
    ).toThrow(/cannot be combined/);
    const mixed = join(root, 'registries-mixed.conf');
    writeFileSync(
      mixed,
      renderRegistriesConf({ prefix: UPSTREAM, mirror: mirrorRepo, insecure: true, pullFromMirror: 'digest-only' }).replace(
        'insecure = true\n',
        'insecure = true\nmirror-by-digest-only = true\n',
      ),
    );
    const m = await skopeo(['inspect', '--raw', `docker://${UPSTREAM}@${built.indexDigest}`], { registriesConf: mixed });
    expect(m.code).not.toBe(0);
    expect(m.stderr).toContain('mirror-by-digest-only');
  });

  it('the Docker dir: fixture pushes with copy --all and is served back unchanged', async () => {
    const docker = buildDockerDirImage(join(root, 'docker'), {});
    await skopeoCopy(docker.dirRef, `docker://${reg.host}/ocp4/docker-list:v1`, { destInsecure: true });
    const { digest, json } = await skopeoInspectRaw(`docker://${reg.host}/ocp4/docker-list:v1`, { insecure: true });
    expect(digest).toBe(docker.indexDigest);
    expect((json as ManifestJson).mediaType).toBe(MEDIA_TYPES.dockerList);
    for (const d of docker.manifestDigests) {
      const child = await skopeoInspectRaw(`docker://${reg.host}/ocp4/docker-list@${d}`, { insecure: true });
      expect(child.digest).toBe(d);
    }
    const back = join(root, 'docker-back');
    await skopeoCopy(`docker://${reg.host}/ocp4/docker-list@${docker.indexDigest}`, `dir:${back}`, { srcInsecure: true });
    const files = readdirSync(join(root, 'docker')).sort();
    expect(readdirSync(back).sort()).toEqual(files);
    for (const f of files) expect(readFileSync(join(back, f)).equals(readFileSync(join(root, 'docker', f)))).toBe(true);
  });
});
