// The least a Node.js process can do in the middle of a blob download: GET it from the upstream with
// undici and write each chunk to the client, nothing stored; with "hash", SHA-256 on the way too.
// Started by bench/floor.mjs: node bench/lib/passthrough.mjs <upstream URL> <port> <plain|hash>
import { createHash } from 'node:crypto';
import http from 'node:http';
import { Agent, request } from 'undici';

const [upstream, port, mode] = process.argv.slice(2);
const agent = new Agent({ keepAliveTimeout: 30_000 });

http
  .createServer(async (req, res) => {
    try {
      const up = await request(new URL(req.url, upstream), { dispatcher: agent });
      res.writeHead(up.statusCode, { 'Content-Length': up.headers['content-length'] });
      const hash = mode === 'hash' ? createHash('sha256') : undefined;
      for await (const chunk of up.body) {
        hash?.update(chunk);
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
      }
      res.end();
    } catch {
      res.destroy();
    }
  })
  .listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
