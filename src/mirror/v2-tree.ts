import { existsSync } from 'node:fs';
import { lstat, open, readdir, readFile, readlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseManifest } from '../registry/manifest.js';
import { MissingContentError, type ContentSource, type CopyItem, type SourceBlob, type SourceManifest } from './content.js';
import { checkDigest } from './verify-stream.js';

/**
 * The `v2/` tree that `oc image mirror --dir`, `oc adm release mirror --to-dir` and
 * `oc adm catalog mirror … file://` write: for each repository path R (any depth),
 * `v2/R/blobs/<algo>:<hex>` holds every blob and every manifest's bytes, `v2/R/manifests/<algo>:<hex>`
 * is a hard link to that manifest's blob, and `v2/R/manifests/<tag>` is a symbolic link whose target
 * is the file name `<algo>:<hex>`.
 */
export class V2TreeSource implements ContentSource {
  readonly description: string;

  private constructor(
    readonly root: string,
    readonly repositories: string[],
  ) {
    this.description = `oc v2/ tree ${root}`;
  }

  /** The v2/ directory itself, or a directory holding one; undefined when neither. */
  static find(path: string): string | undefined {
    if (existsSync(join(path, 'v2'))) return join(path, 'v2');
    if (path.replace(/\/+$/, '').endsWith('v2') && !existsSync(join(path, 'index.json'))) return path;
    return undefined;
  }

  static async open(v2: string): Promise<V2TreeSource> {
    const repositories: string[] = [];
    const walk = async (dir: string) => {
      const names = await readdir(dir);
      if (names.includes('manifests') && names.includes('blobs')) repositories.push(relative(v2, dir));
      for (const name of names) {
        if (name === 'manifests' || name === 'blobs') continue;
        if ((await lstat(join(dir, name))).isDirectory()) await walk(join(dir, name));
      }
    };
    await walk(v2);
    return new V2TreeSource(v2, repositories.sort());
  }

  /**
   * Every tag (a symlink under manifests/) and every tagless manifest that no index of the same
   * repository lists, landing at `prefix/R`.
   */
  async items(prefix: string | undefined): Promise<CopyItem[]> {
    const items: CopyItem[] = [];
    for (const repo of this.repositories) {
      const dir = join(this.root, repo, 'manifests');
      const tagged = new Set<string>();
      const digests: string[] = [];
      const destRepo = [prefix, repo].filter((p) => p).join('/');
      for (const name of (await readdir(dir)).sort()) {
        const info = await lstat(join(dir, name));
        if (info.isSymbolicLink()) {
          const target = (await readlink(join(dir, name))).split('/').pop()!;
          tagged.add(target);
          items.push({ srcRepo: repo, reference: target, destRepo, tag: name, label: `${join(dir, name)} → ${target}` });
        } else if (name.includes(':')) {
          digests.push(name);
        }
      }
      const children = new Set<string>();
      for (const digest of digests) {
        try {
          const parsed = parseManifest(await readFile(join(dir, digest)), undefined);
          for (const child of parsed.manifestRefs) children.add(child);
        } catch {
          // An unreadable manifest is reported when it is imported.
        }
      }
      for (const digest of digests) {
        if (!tagged.has(digest) && !children.has(digest)) items.push({ srcRepo: repo, reference: digest, destRepo, label: join(dir, digest) });
      }
    }
    return items;
  }

  async manifest(repo: string, reference: string): Promise<SourceManifest> {
    const dir = join(this.root, repo, 'manifests');
    const digest = reference.includes(':') ? reference : (await readlink(join(dir, reference))).split('/').pop()!;
    const path = existsSync(join(dir, digest)) ? join(dir, digest) : join(this.root, repo, 'blobs', digest);
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MissingContentError(`manifest ${digest} is not in ${this.description} (no ${path})`, digest);
      throw e;
    }
    checkDigest(bytes, digest, path);
    return { digest, bytes };
  }

  async blob(repo: string, digest: string): Promise<SourceBlob> {
    const path = join(this.root, repo, 'blobs', digest);
    try {
      const fh = await open(path, 'r');
      const { size } = await fh.stat();
      return { size, stream: fh.createReadStream({ highWaterMark: 1024 * 1024 }), where: path };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MissingContentError(`blob ${digest} is not in ${this.description} (no ${path})`, digest);
      throw e;
    }
  }

  async close(): Promise<void> {}
}
