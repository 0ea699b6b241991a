// The asynchronous MetadataStore the PostgreSQL store implements: today's interface with every
// result in a Promise, and reposLinkingBlob read lazily as an AsyncIterable. (Replaced by
// MetadataStore itself once that interface is asynchronous.)

import type { MetadataStore } from '../metadata.js';

type Promised = {
  [K in keyof MetadataStore]: MetadataStore[K] extends (...a: infer A) => infer R ? (...a: A) => Promise<Awaited<R>> : never;
};

export type AsyncMetadataStore = Omit<Promised, 'reposLinkingBlob'> & {
  reposLinkingBlob(digest: string): AsyncIterable<string>;
};
