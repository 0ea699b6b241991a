// airlock verify REF [--mirrorsets FILE] [--json]

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { StorageViewError } from '../mirror/local-content.js';
import { openStoreView } from './store-claim.js';
import { MirrorSetFileError, parseMirrorSetFile } from '../mirror/mirror-set-files.js';
import { airlockRulesForHost, type MirrorRule } from '../mirror/mirror-sets.js';
import { mergeRules, stripRegistryHost } from '../mirror/resolve.js';
import { parseLocalReference, verifyPayload, VerifyError, type VerifyReport } from '../mirror/verify.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';
import { createProgress, formatBytes, formatSeconds } from './progress.js';
import { STORE_OPTIONS } from './storage-target.js';

export const VERIFY_HELP = `Usage: airlock verify REF [--mirrorsets FILE] [--json] [--config FILE] [--storage DIR]

Answers "will a cluster find everything?" before an install or upgrade. REF is a local reference
(repo:tag or repo@sha256:…) to
  - an OpenShift release image: every component its release-manifests/image-references names
    (quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:…), or
  - an operator catalog image in file-based-catalog form: every olm.bundle image and related image
    under /configs.
Each image is resolved the way CRI-O resolves it through mirror sets: those in --mirrorsets FILE
(ImageDigestMirrorSet / ImageTagMirrorSet / ImageContentSourcePolicy YAML as oc adm release mirror
prints it, the imageContentSourcePolicy.yaml oc adm catalog mirror writes, an install-config's
imageContentSources, or a registries.conf), else airlock's own (see airlock mirrorsets). The
mirror's host in the file is taken to be this airlock; its repository path is looked up here.
Then this mirror must hold the manifest there, every child of an index, and every blob. When
REF's repository has a recorded origin (sync, import --map), REF itself is checked under that name
too (origin@digest), as an upgrade pulls the release image through the same mirror sets.

Each missing or unresolvable image is printed with the reason; --json prints one JSON document
instead. The store is only read (a running server may hold it; with database: and blobs.s3 in
the config, the shared PostgreSQL and bucket the replicas serve are read).

Exit codes: 0 everything is there, 1 something is missing (or REF cannot be read), 2 bad usage.

Example:
  airlock verify quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64 --mirrorsets idms.yaml
  airlock verify redhat/redhat-operator-index:v4.16 --json | jq '.missing[].reference'
`;

export interface VerifyIo {
  stdout: CommandOutput & { isTTY?: boolean };
  stderr: CommandOutput & { isTTY?: boolean };
}

function describeRules(file: string | undefined, rules: readonly MirrorRule[]): string {
  const sources = rules.length;
  return file ? `the ${sources} mirror set source(s) in ${file}` : `airlock's own mirror sets (${sources} source(s))`;
}

export async function verifyCommand(args: string[], io: VerifyIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      mirrorsets: { type: 'string', short: 'm' },
      json: { type: 'boolean' },
      ...STORE_OPTIONS,
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    io.stdout.write(VERIFY_HELP);
    return EXIT_OK;
  }
  const usage = (why: string) => {
    io.stderr.write(`airlock verify: ${why}\n\n${VERIFY_HELP}`);
    return EXIT_USAGE;
  };
  if (positionals.length !== 1) return usage(positionals.length ? `one REF only, got ${positionals.length}` : 'REF is required');
  const ref = positionals[0]!;
  if (!parseLocalReference(ref)) return usage(`"${ref}" is not a local reference: use repo:tag or repo@sha256:…`);

  let fileRules: MirrorRule[] | undefined;
  if (values.mirrorsets !== undefined) {
    let text: string;
    try {
      text = readFileSync(values.mirrorsets, 'utf8');
    } catch (e) {
      return usage(`cannot read --mirrorsets ${values.mirrorsets}: ${(e as Error).message}`);
    }
    try {
      fileRules = mergeRules(parseMirrorSetFile(text, values.mirrorsets));
    } catch (e) {
      if (e instanceof MirrorSetFileError) return usage(e.message);
      throw e;
    }
  }

  const config = loadConfig({ config: values.config, storage: values.storage });
  const started = Date.now();
  let view;
  try {
    view = await openStoreView(config);
  } catch (e) {
    if (e instanceof StorageViewError) {
      io.stderr.write(`airlock verify: ${e.message}\n`);
      return EXIT_FAILURE;
    }
    throw e;
  }
  try {
    // airlock's own rules name local repositories directly (host ""): nothing to strip.
    const origins = await view.origins();
    const rules = fileRules ?? mergeRules(airlockRulesForHost(config.upstreams, origins, '', 'all'));
    const selfOrigin = origins.find((o) => o.repo === parseLocalReference(ref)!.repo)?.origin;
    const toLocal = fileRules ? stripRegistryHost : (repository: string) => repository;
    const progress = createProgress({ label: 'verify', output: io.stderr });
    let report: VerifyReport;
    try {
      report = await verifyPayload(view.content, ref, {
        rules,
        toLocal,
        selfOrigin,
        onPlan: (images) => {
          progress.grow(images);
          progress.note(`verify ${ref}: ${images} image(s) needed, resolved through ${describeRules(values.mirrorsets, rules)}`);
        },
        // The bytes to check are only known image by image: the total grows with them.
        onChecked: (_image, bytes) => {
          progress.grow(0, bytes);
          progress.advance(1, bytes);
        },
      });
    } finally {
      progress.stop();
    }
    const seconds = (Date.now() - started) / 1000;
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ ...report, mirrorSets: values.mirrorsets ?? 'airlock', seconds, ok: report.missing.length === 0 }, null, 2)}\n`);
    } else {
      for (const m of report.missing) io.stdout.write(`MISSING ${m.reference} (${m.neededBy}): ${m.message}\n`);
      io.stdout.write(
        `verify ${ref} (${report.kind}): ${report.complete} of ${report.images} images complete, ${report.missing.length} missing; ` +
          `checked ${report.manifests} manifests, ${report.blobs} blobs (${formatBytes(report.bytes)}) in ${formatSeconds(seconds)}\n`,
      );
    }
    return report.missing.length ? EXIT_FAILURE : EXIT_OK;
  } catch (e) {
    if (e instanceof VerifyError) {
      if (values.json) io.stdout.write(`${JSON.stringify({ ref, ok: false, error: e.message }, null, 2)}\n`);
      io.stderr.write(`airlock verify: ${e.message}\n`);
      return EXIT_FAILURE;
    }
    throw e;
  } finally {
    await view.close();
  }
}
