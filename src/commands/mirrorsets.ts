// airlock mirrorsets --host HOST[:PORT] [--format idms|itms|icsp|registries.conf] [--out FILE]

import { renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { StorageViewError } from '../mirror/local-content.js';
import { readStoreOrigins } from './store-claim.js';
import { airlockMirrorSetDocument, isMirrorSetFormat, MIRROR_SET_FORMATS } from '../mirror/mirror-set-documents.js';
import { isValidMirrorHost } from '../mirror/mirror-sets.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { STORE_OPTIONS } from './storage-target.js';

export const MIRRORSETS_HELP = `Usage: airlock mirrorsets --host HOST[:PORT] [--format idms|itms|icsp|registries.conf] [--out FILE]
                          [--config FILE] [--storage DIR]

Writes ready-to-apply mirror sets that send a cluster's pulls of the original names (quay.io/…,
registry.redhat.io/…) to this airlock at HOST[:PORT]: one entry per configured upstream
(url host + remotePrefix → prefix) and per recorded origin of synced or imported content
(origin → local repository).

  --format idms             ImageDigestMirrorSet (config.openshift.io/v1), the default
  --format itms             ImageTagMirrorSet (config.openshift.io/v1)
  --format icsp             ImageContentSourcePolicy (operator.openshift.io/v1alpha1, legacy)
  --format registries.conf  CRI-O / podman / skopeo containers-registries.conf v2 (TOML), mirrors
                            with pull-from-mirror = "digest-only" (insecure = true when airlock
                            serves plain HTTP)
  --out FILE                write to FILE instead of standard output

The store is only read (no lock is taken; a running server may hold it; with database: and
blobs.s3 in the config, the origins recorded in the shared PostgreSQL are read). The same documents come
from a running server at GET /api/v1/mirrorsets?host=HOST&format=FORMAT.

Example:
  airlock mirrorsets --config /etc/airlock/airlock.yaml --host mirror.example.com:5000 --out idms.yaml
  oc apply -f idms.yaml
  airlock mirrorsets --host mirror.example.com:5000 --format registries.conf --out /etc/containers/registries.conf.d/airlock.conf
`;

export interface MirrorsetsIo {
  stdout: CommandOutput;
  stderr: CommandOutput;
}

export async function mirrorsetsCommand(args: string[], io: MirrorsetsIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      host: { type: 'string' },
      format: { type: 'string', short: 'f' },
      out: { type: 'string', short: 'o' },
      ...STORE_OPTIONS,
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    io.stdout.write(MIRRORSETS_HELP);
    return EXIT_OK;
  }
  const usage = (why: string) => {
    io.stderr.write(`airlock mirrorsets: ${why}\n\n${MIRRORSETS_HELP}`);
    return EXIT_USAGE;
  };
  if (positionals.length) return usage(`unexpected argument "${positionals[0]}"`);
  if (!values.host) return usage('--host HOST[:PORT] is required: the name clusters reach this airlock at');
  if (!isValidMirrorHost(values.host)) return usage(`--host "${values.host}" is not HOST or HOST:PORT`);
  const format = values.format ?? 'idms';
  if (!isMirrorSetFormat(format)) return usage(`--format must be one of ${MIRROR_SET_FORMATS.join(', ')}, not "${format}"`);

  const config = loadConfig({ config: values.config, storage: values.storage });
  let origins;
  try {
    origins = await readStoreOrigins(config);
  } catch (e) {
    if (!(e instanceof StorageViewError)) throw e;
    io.stderr.write(`airlock mirrorsets: ${e.message}\n`);
    return EXIT_FAILURE;
  }
  const text = airlockMirrorSetDocument(format, config.upstreams, origins, { host: values.host, insecure: !config.tls });
  if (!values.out) {
    io.stdout.write(text);
    return EXIT_OK;
  }
  try {
    // Whole or not at all: a half-written file must never reach `oc apply`.
    const temp = `${values.out}.tmp-${process.pid}`;
    writeFileSync(temp, text);
    renameSync(temp, values.out);
  } catch (e) {
    io.stderr.write(`airlock mirrorsets: cannot write ${values.out}: ${(e as Error).message}\n`);
    return EXIT_FAILURE;
  }
  io.stderr.write(`airlock mirrorsets: wrote ${format} for ${values.host} to ${values.out} (${countSources(config.upstreams.length, origins.length)})\n`);
  return EXIT_OK;
}

function countSources(upstreams: number, origins: number): string {
  return `${upstreams} upstream${upstreams === 1 ? '' : 's'}, ${origins} recorded origin${origins === 1 ? '' : 's'}`;
}
