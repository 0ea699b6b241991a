import type { MetadataStore } from '../storage/metadata.js';
import type { CopyItem } from './content.js';

/** A repository glob: `*` within one path component, `**` across any number of them. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      // "a/**" also matches "a" itself: every repository at or below a/.
      if (glob[i - 1] === '/' && i + 2 === glob.length) {
        re = `${re.slice(0, -1)}(?:/.*)?`;
      } else re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else re += c.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

async function allRepositories(meta: MetadataStore): Promise<string[]> {
  const repos: string[] = [];
  let last: string | undefined;
  for (;;) {
    const page = await meta.listRepositories(1000, last);
    repos.push(...page.items);
    if (!page.more || page.items.length === 0) return repos;
    last = page.items[page.items.length - 1];
  }
}

export class SelectionError extends Error {}

/**
 * What `export` copies for each argument: `repo:tag` and `repo@sha256:…` name one image; a plain
 * repository name or a glob (`ocp4/**`) every tag and tagless image of every repository it matches.
 */
export async function selectImages(meta: MetadataStore, selectors: string[]): Promise<CopyItem[]> {
  const origins = new Map((await meta.listOrigins()).map((o) => [o.repo, o.origin]));
  const items = new Map<string, CopyItem>();
  const add = (repo: string, reference: string, tag?: string) => {
    const origin = origins.get(repo);
    const label = tag !== undefined ? `${repo}:${tag}` : `${repo}@${reference}`;
    items.set(label, { srcRepo: repo, reference, destRepo: repo, ...(tag !== undefined ? { tag } : {}), ...(origin ? { origin } : {}), label });
  };
  for (const selector of selectors) {
    const at = selector.indexOf('@');
    if (at > 0) {
      const repo = selector.slice(0, at);
      const digest = selector.slice(at + 1);
      if (!(await meta.getManifest(repo, digest))) throw new SelectionError(`${selector}: no such manifest in the store`);
      add(repo, digest);
      continue;
    }
    const colon = selector.lastIndexOf(':');
    if (colon > 0 && !selector.slice(colon).includes('/') && !selector.includes('*')) {
      const repo = selector.slice(0, colon);
      const tag = selector.slice(colon + 1);
      const found = await meta.getTag(repo, tag);
      if (!found) throw new SelectionError(`${selector}: no such tag in the store`);
      add(repo, found.digest, tag);
      continue;
    }
    const pattern = globToRegExp(selector);
    const repos = (await allRepositories(meta)).filter((r) => pattern.test(r));
    if (!repos.length) throw new SelectionError(`${selector}: matches no repository in the store`);
    let images = 0;
    for (const repo of repos) {
      for (const image of await meta.listImages(repo)) {
        images++;
        if (image.tags.length === 0) add(repo, image.digest);
        for (const tag of image.tags) add(repo, image.digest, tag);
      }
    }
    // A repository whose manifests were all deleted is still listed until garbage collection.
    if (images === 0) throw new SelectionError(`${selector}: matches only repositories whose images were deleted (${repos.slice(0, 3).join(', ')})`);
  }
  return [...items.values()];
}
