// autocannon, adapted to registry traffic and made strict:
//  - HEAD: autocannon's parser (http-parser-js) does not know a response answers a HEAD and waits
//    for Content-Length body bytes that never come; we tell it to skip the body.
//  - Bodies: autocannon concatenates every body into a JS string; for 1 MiB blobs that costs the
//    load generator more CPU than the servers spend, so bodies are only counted, not kept.
//  - Every response's headers go through `check` (status, digest, length); any non-2xx, error,
//    timeout or failed check fails the run loudly instead of producing a figure.
//  - Latency is recorded per response at sub-millisecond precision (autocannon's histogram
//    rounds to whole milliseconds, too coarse for manifest requests).
//  - The run stops at `duration` seconds or `maxRequests` responses, whichever comes first.
import autocannon from 'autocannon';
import { BenchError } from './client.mjs';

function headerMap(flat) {
  const map = {};
  for (let i = 0; i + 1 < flat.length; i += 2) map[String(flat[i]).toLowerCase()] = String(flat[i + 1]);
  return map;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * @param {object} o
 * @param {string} o.base server URL
 * @param {{method: string, path: string, headers?: object}[]} o.requests cycled per connection
 * @param {number} o.connections
 * @param {number} o.duration seconds
 * @param {number} o.maxRequests
 * @param {(status: number, headers: object) => string|undefined} [o.check] returns a problem or undefined
 * @param {number} [o.minBytes] smallest acceptable response size (headers + body) in bytes
 * @param {boolean} [o.keepLatencies] also return every latency (sorted, ms), to merge runs that
 *   went to several servers at once
 */
export async function load(o) {
  const head = o.requests.every((r) => r.method === 'HEAD');
  if (!head && o.requests.some((r) => r.method === 'HEAD')) throw new Error('load(): do not mix HEAD with other methods in one run');
  const problems = [];
  let problemCount = 0;
  const latencies = [];
  let bytes = 0;
  let small = 0;
  let first = Infinity;
  let last = 0;

  const setupClient = (client) => {
    client.pipelinedRequests.addBody = () => {};
    if (head) {
      const key = client.parser.constructor.kOnHeadersComplete;
      if (key === undefined) throw new Error('autocannon no longer uses http-parser-js: revisit the HEAD handling in bench/lib/load.mjs');
      let inner;
      Object.defineProperty(client.parser, key, {
        configurable: true,
        set(fn) {
          inner = fn;
        },
        get() {
          return (info) => {
            inner(info);
            return true; // skipBody
          };
        },
      });
    }
    client.on('headers', (info) => {
      const headers = headerMap(info.headers);
      const problem = info.statusCode >= 300 ? `status ${info.statusCode}` : o.check?.(info.statusCode, headers);
      if (problem) {
        problemCount++;
        if (problems.length < 5) problems.push({ problem, status: info.statusCode, headers });
      }
    });
  };

  const started = performance.now();
  const instance = autocannon({
    url: o.base,
    connections: o.connections,
    duration: o.duration,
    maxOverallRequests: Math.max(o.maxRequests, o.connections),
    requests: o.requests,
    setupClient,
    sampleInt: 100, // autocannon notices "all done" only at a sample tick
    timeout: 30,
  });
  const errorMessages = new Set();
  instance.on('reqError', (err) => {
    if (errorMessages.size < 5) errorMessages.add(err?.message ?? String(err));
  });
  instance.on('response', (_client, _status, resBytes, responseTime) => {
    const now = performance.now();
    // a response's start is its end minus its latency; the first start marks the run's start
    first = Math.min(first, now - responseTime);
    last = now;
    latencies.push(responseTime);
    bytes += resBytes;
    if (o.minBytes && resBytes < o.minBytes) small++;
  });
  const result = await instance; // the tracker is also a promise of the result

  const count = latencies.length;
  const failures = {
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    mismatches: result.mismatches,
    failedChecks: problemCount,
    shortResponses: small,
  };
  if (count === 0 || Object.values(failures).some((n) => n > 0)) {
    throw new BenchError(
      `load ${o.requests.slice(0, 4).map((r) => `${r.method} ${r.path}`).join(' | ')}${o.requests.length > 4 ? ` (and ${o.requests.length - 4} more)` : ''} on ${o.base} (c=${o.connections}): ${count} responses, ${JSON.stringify(failures)}`,
      { failures, statusCodes: result.statusCodeStats, firstProblems: problems, errorMessages: [...errorMessages] },
    );
  }
  latencies.sort((a, b) => a - b);
  const seconds = (last - Math.min(first, last)) / 1000 || (performance.now() - started) / 1000;
  return {
    connections: o.connections,
    requests: count,
    seconds,
    rps: count / seconds,
    bytes,
    latencyMs: {
      mean: latencies.reduce((a, b) => a + b, 0) / count,
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      p999: percentile(latencies, 99.9),
      max: latencies[count - 1],
    },
    statusCodes: result.statusCodeStats,
    ...(o.keepLatencies ? { latencies } : {}),
  };
}

/** The percentile `p` of sorted latencies (ms); for runs merged by the caller. */
export { percentile };
