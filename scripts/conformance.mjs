#!/usr/bin/env node
// Runs the OCI distribution-spec conformance suite against throwaway airlock servers: all four
// workflows (pull, push, content discovery, content management) with automatic cross-repository
// mounts on, once anonymous and once under `auth:` (bearer tokens from htpasswd users), each with
// the manifests deleted before and after their blobs.
//
// The suite is Go; build it where GitHub is reachable, then point this script at the binary:
//   git clone -b v1.1.1 https://github.com/opencontainers/distribution-spec
//   (cd distribution-spec/conformance && go test -c -o conformance.test)
//   npm run build && node scripts/conformance.mjs --suite distribution-spec/conformance/conformance.test
//
// Options: --suite FILE (or $OCI_CONFORMANCE_SUITE), --reports DIR (the suite's junit.xml and
// report.html per run; default: none kept), --only anonymous|auth, --config FILE (an airlock config
// whose keys every server starts with, e.g. `database:` and `blobs.s3` to run the suite against the
// shared backends; listen, storage and auth stay the script's). Exit code 0 when every run passed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { AIRLOCK_CLI, startAirlock } from '../bench/lib/servers.mjs';

const { values } = parseArgs({
  options: {
    suite: { type: 'string', default: process.env.OCI_CONFORMANCE_SUITE },
    reports: { type: 'string' },
    only: { type: 'string' },
    config: { type: 'string' },
  },
});
if (!values.suite || !existsSync(values.suite)) {
  console.error('conformance: --suite FILE must name the compiled suite (go test -c in distribution-spec/conformance); see the head of this script');
  process.exit(2);
}
if (!existsSync(AIRLOCK_CLI)) {
  console.error('conformance: build airlock first (npm run build)');
  process.exit(2);
}
const suite = resolve(values.suite);
const baseConfig = values.config ? (parseYaml(readFileSync(values.config, 'utf8')) ?? {}) : {};

const USER = 'conformance';
const PASSWORD = 'conformance-password';
const profiles = [
  { name: 'anonymous', config: () => ({}), credentials: {} },
  {
    name: 'auth',
    config: (root) => {
      const htpasswd = join(root, 'users.htpasswd');
      execFileSync(process.execPath, [AIRLOCK_CLI, 'user', 'add', USER, '--htpasswd', htpasswd, '--password-stdin'], { input: `${PASSWORD}\n` });
      return { auth: { htpasswd, anonymous: [], rules: [{ users: [USER], repos: ['**'], actions: ['*'] }] } };
    },
    credentials: { OCI_USERNAME: USER, OCI_PASSWORD: PASSWORD },
  },
].filter((p) => values.only === undefined || p.name === values.only);

/** Runs the suite once, its output passed through; resolves to its exit code. */
function runSuite(env, cwd) {
  return new Promise((resolveCode) => {
    const child = spawn(suite, [], { cwd, env: { ...process.env, ...env }, stdio: 'inherit' });
    child.on('exit', (code, signal) => resolveCode(code ?? (signal ? 128 : 1)));
  });
}

const results = [];
for (const profile of profiles) {
  for (const deleteManifestBeforeBlobs of [true, false]) {
    const label = `${profile.name}, manifests deleted ${deleteManifestBeforeBlobs ? 'before' : 'after'} blobs`;
    const root = mkdtempSync(join(tmpdir(), 'airlock-conformance-'));
    let server;
    try {
      server = await startAirlock({ root, name: 'airlock', config: { ...baseConfig, ...profile.config(root) } });
      const run = `${profile.name}-${deleteManifestBeforeBlobs ? 'manifests-first' : 'blobs-first'}`;
      const reports = values.reports ? join(resolve(values.reports), run) : 'none';
      if (reports !== 'none') mkdirSync(reports, { recursive: true });
      console.log(`\n== ${label}: ${server.url}`);
      const code = await runSuite(
        {
          OCI_ROOT_URL: server.url,
          // Repositories of their own per run: with --config, the runs may share one database.
          OCI_NAMESPACE: `conformance/${run}/test`,
          OCI_CROSSMOUNT_NAMESPACE: `conformance/${run}/crossmount`,
          OCI_AUTOMATIC_CROSSMOUNT: '1',
          OCI_TEST_PULL: '1',
          OCI_TEST_PUSH: '1',
          OCI_TEST_CONTENT_DISCOVERY: '1',
          OCI_TEST_CONTENT_MANAGEMENT: '1',
          OCI_DELETE_MANIFEST_BEFORE_BLOBS: deleteManifestBeforeBlobs ? '1' : '0',
          OCI_REPORT_DIR: reports,
          ...profile.credentials,
        },
        root,
      );
      server.assertAlive();
      results.push({ label, passed: code === 0 });
    } finally {
      await server?.stop();
      rmSync(root, { recursive: true, force: true });
    }
  }
}

console.log('\nconformance:');
for (const r of results) console.log(`  ${r.passed ? 'pass' : 'FAIL'}  ${r.label}`);
process.exit(results.every((r) => r.passed) ? 0 : 1);
