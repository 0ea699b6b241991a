// The asynchronous MetadataStore the PostgreSQL store implements: today's interface with every
// result in a Promise. (Replaced by MetadataStore itself once that interface is asynchronous.)

import type { MetadataStore } from '../metadata.js';

export type AsyncMetadataStore = {
  [K in keyof MetadataStore]: MetadataStore[K] extends (...a: infer A) => infer R ? (...a: A) => Promise<Awaited<R>> : never;
};
