// The synthetic content both servers hold, pushed through the HTTP API only (the bench must not
// know either server's storage layout), and the checks that each server serves it back exactly.
import { BenchError, MANIFEST_ACCEPT } from './client.mjs';
import { blob, GiB, jsonBlob, KiB, MiB, streamedBlob } from './data.mjs';

export const MT = {
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  OCI_LAYER: 'application/vnd.oci.image.layer.v1.tar+gzip',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_CONFIG: 'application/vnd.docker.container.image.v1+json',
  DOCKER_LAYER: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
};

export const REPOS = { oci: 'bench/oci', docker: 'bench/docker', big: 'bench/big', push: 'bench/push' };

/** Upload chunk size for every chunked push (what oc/skopeo-like clients use is in this range). */
export const CHUNK = 8 * MiB;

const descriptor = (mediaType, b) => ({ mediaType, digest: b.digest, size: b.size });

function imageConfig(layers) {
  return jsonBlob({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'] },
    // Random bytes are not real tarballs; the ids only have to be well-formed for the servers.
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history: layers.map(() => ({ created_by: 'airlock bench' })),
  });
}

/** Builds the content set once; the same object seeds every server. */
export function buildContent() {
  const layer1m = blob('layer-1MiB', 1 * MiB);
  const layer256m = blob('layer-256MiB', 256 * MiB);
  const layer64k = blob('layer-64KiB', 64 * KiB);

  const ociConfig = imageConfig([layer1m, layer256m]);
  const ociManifest = jsonBlob({
    schemaVersion: 2,
    mediaType: MT.OCI_MANIFEST,
    config: descriptor(MT.OCI_CONFIG, ociConfig),
    layers: [descriptor(MT.OCI_LAYER, layer1m), descriptor(MT.OCI_LAYER, layer256m)],
  });

  const dockerConfig = imageConfig([layer64k, layer1m]);
  const dockerManifest = jsonBlob({
    schemaVersion: 2,
    mediaType: MT.DOCKER_MANIFEST,
    config: descriptor(MT.DOCKER_CONFIG, dockerConfig),
    layers: [descriptor(MT.DOCKER_LAYER, layer64k), descriptor(MT.DOCKER_LAYER, layer1m)],
  });

  return {
    layer1m,
    layer256m,
    layer64k,
    ociConfig,
    ociManifest,
    dockerConfig,
    dockerManifest,
    // 1 GiB is generated again for each server instead of being held in memory.
    big: streamedBlob('blob-1GiB', 1 * GiB),
    manifests: [
      { repo: REPOS.oci, tag: 'latest', mediaType: MT.OCI_MANIFEST, blob: ociManifest },
      { repo: REPOS.docker, tag: 'latest', mediaType: MT.DOCKER_MANIFEST, blob: dockerManifest },
    ],
  };
}

function chunked(data) {
  return (function* () {
    for (let o = 0; o < data.length; o += CHUNK) yield data.subarray(o, Math.min(o + CHUNK, data.length));
  })();
}

/**
 * Pushes everything into one server, mixing monolithic and chunked uploads as real clients do.
 * `big: false` leaves out the 1 GiB blob (for stores that keep their objects in RAM).
 */
export async function seed(server, content, { big = true } = {}) {
  const c = server.client;
  // OCI image: small blobs monolithic, the 256 MiB layer in 8 MiB PATCHes.
  await c.pushMonolithic(REPOS.oci, content.ociConfig.data, content.ociConfig.digest);
  await c.pushMonolithic(REPOS.oci, content.layer1m.data, content.layer1m.digest);
  await c.pushChunked(REPOS.oci, chunked(content.layer256m.data), content.layer256m.digest);
  await c.putManifest(REPOS.oci, 'latest', MT.OCI_MANIFEST, content.ociManifest);

  // Docker schema2 image: the small layer goes up in PATCHes of a few KiB to exercise many chunks.
  await c.pushMonolithic(REPOS.docker, content.dockerConfig.data, content.dockerConfig.digest);
  const small = content.layer64k.data;
  const pieces = [small.subarray(0, 10 * KiB), small.subarray(10 * KiB, 40 * KiB), small.subarray(40 * KiB)];
  await c.pushChunked(REPOS.docker, pieces, content.layer64k.digest);
  await c.pushMonolithic(REPOS.docker, content.layer1m.data, content.layer1m.digest);
  await c.putManifest(REPOS.docker, 'latest', MT.DOCKER_MANIFEST, content.dockerManifest);

  // The 1 GiB blob is generated while uploading and hashed on the way; returns its digest so the
  // caller can check that every server received the same bytes.
  if (!big) return undefined;
  return c.pushChunked(REPOS.big, content.big.chunks(CHUNK), content.big.digest);
}

/** Seeds all servers at once (seeding is not timed) and fixes the 1 GiB blob's digest. */
export async function seedAll(servers, content) {
  const digests = await Promise.all(servers.map((s) => seed(s, content)));
  if (new Set(digests).size !== 1) throw new BenchError(`the 1 GiB blob was received with different digests: ${digests.join(', ')}`);
  content.big.digest = digests[0];
}

function expectEqual(server, what, got, want, detail) {
  if (got !== want) throw new BenchError(`${server.name}: ${what} is ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`, detail);
}

/**
 * Reads everything back from one server before any timing starts: a server that answers fast
 * with the wrong bytes must not get a figure.
 */
export async function verify(server, content, { big = true } = {}) {
  const c = server.client;
  for (const m of content.manifests) {
    const byTag = await c.fetch('GET', `/v2/${m.repo}/manifests/${m.tag}`, { headers: { accept: MANIFEST_ACCEPT } });
    expectEqual(server, `GET ${m.repo}:${m.tag} Content-Type`, byTag.headers['content-type'], m.mediaType, byTag.headers);
    expectEqual(server, `GET ${m.repo}:${m.tag} Docker-Content-Digest`, byTag.headers['docker-content-digest'], m.blob.digest, byTag.headers);
    if (!byTag.body.equals(m.blob.data)) throw new BenchError(`${server.name}: GET ${m.repo}:${m.tag} body differs from what was pushed`);

    const head = await c.fetch('HEAD', `/v2/${m.repo}/manifests/${m.blob.digest}`, { headers: { accept: MANIFEST_ACCEPT } });
    expectEqual(server, `HEAD ${m.repo}@digest Content-Length`, Number(head.headers['content-length']), m.blob.size, head.headers);
    expectEqual(server, `HEAD ${m.repo}@digest Content-Type`, head.headers['content-type'], m.mediaType, head.headers);
    expectEqual(server, `HEAD ${m.repo}@digest Docker-Content-Digest`, head.headers['docker-content-digest'], m.blob.digest, head.headers);
    expectEqual(server, `HEAD ${m.repo}@digest body length`, head.body.length, 0);
  }
  const small = await c.fetch('GET', `/v2/${REPOS.oci}/blobs/${content.layer1m.digest}`);
  if (!small.body.equals(content.layer1m.data)) throw new BenchError(`${server.name}: 1 MiB blob body differs from what was pushed`);
  for (const [repo, b] of [
    [REPOS.oci, content.layer256m],
    ...(big ? [[REPOS.big, content.big]] : []),
  ]) {
    const got = await c.download(`/v2/${repo}/blobs/${b.digest}`, { hash: true });
    expectEqual(server, `GET ${repo} blob size`, got.bytes, b.size);
    expectEqual(server, `GET ${repo} blob digest`, got.digest, b.digest);
  }
}
