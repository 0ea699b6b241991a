// Shared bits for the proxy tests: upstream configs built through the real schema (so defaults and
// unit conversions are the production ones) and tiny real HTTP servers on 127.0.0.1.

import { createServer, type RequestListener } from 'node:http';
import { configSchema, type ConfigInput, type UpstreamConfig } from '../../src/config/schema.js';

export type UpstreamInput = NonNullable<ConfigInput['upstreams']>[number];

export function upstreamConfig(input: UpstreamInput): UpstreamConfig {
  return configSchema.parse({ upstreams: [input] }).upstreams[0]!;
}

export interface TestHttpServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** A real node:http server on an ephemeral 127.0.0.1 port. */
export async function startHttpServer(handler: RequestListener): Promise<TestHttpServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Reads a whole Node stream (test data is small). */
export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
