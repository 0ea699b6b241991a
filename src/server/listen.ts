import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
const SHUTDOWN_GRACE_MS = 30_000;

/** Wraps the app with a request id and one access-log line per request. */
function withRequestLog(log: Logger, listener: (req: IncomingMessage, res: ServerResponse) => unknown) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const incomingId = req.headers['x-request-id'];
    const id = typeof incomingId === 'string' && REQUEST_ID_RE.test(incomingId) ? incomingId : randomUUID();
    res.setHeader('X-Request-Id', id);
    const started = performance.now();
    // Read now: by the time 'close' fires the socket may already be detached (req.socket === null).
    const remote = req.socket.remoteAddress;
    res.once('close', () => {
      log.info(
        {
          reqId: id,
          method: req.method,
          url: req.url,
          status: res.statusCode,
          ms: Math.round((performance.now() - started) * 10) / 10,
          remote,
          ...(res.writableFinished ? {} : { aborted: true }),
        },
        'request',
      );
    });
    listener(req, res);
  };
}

export interface Listening {
  server: Server;
  port: number;
  url: string;
  /** Stops accepting, lets in-flight requests finish (up to a grace period), then resolves. */
  close(): Promise<void>;
}

export async function listen(app: Hono<any>, config: Config, log: Logger): Promise<Listening> {
  // `hostname`: an HTTP/1.0 request may come without a Host header (load-balancer probes do).
  const listener = withRequestLog(log, getRequestListener(app.fetch, { hostname: 'localhost' }));
  const tls = config.tls;
  // Node enforces headersTimeout only when it sweeps its connections (every 30 s by default): sweep
  // often enough that a slow-loris client is cut off close to the configured limit.
  const connectionsCheckingInterval = Math.min(1_000, Math.max(50, Math.floor(config.limits.headersTimeout / 4)));
  const server: Server = tls
    ? createHttpsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key), connectionsCheckingInterval }, listener)
    : createHttpServer({ connectionsCheckingInterval }, listener);

  // Slow clients cannot pin connections: headers must arrive promptly and an idle connection
  // (no bytes either way) is closed. There is no whole-request timeout, since a 10 GiB layer
  // over a slow link legitimately takes long while bytes keep flowing.
  server.headersTimeout = config.limits.headersTimeout;
  server.requestTimeout = 0;
  // Between requests Node applies keepAliveTimeout instead of the socket timeout: bound it by idleTimeout too.
  server.keepAliveTimeout = config.limits.idleTimeout > 0 ? Math.min(65_000, config.limits.idleTimeout) : 65_000;
  server.setTimeout(config.limits.idleTimeout, (socket) => socket.destroy());
  server.maxHeadersCount = 200;

  const sep = config.listen.lastIndexOf(':');
  const host = config.listen.slice(0, sep).replace(/^\[|\]$/g, '') || '0.0.0.0';
  const port = Number(config.listen.slice(sep + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actualPort = (server.address() as AddressInfo).port;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `${tls ? 'https' : 'http'}://${shownHost}:${actualPort}`;

  let closing: Promise<void> | undefined;
  return {
    server,
    port: actualPort,
    url,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const sweep = setInterval(() => server.closeIdleConnections(), 250);
        const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
        server.close(() => {
          clearInterval(sweep);
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
