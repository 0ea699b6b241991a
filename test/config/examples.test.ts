// The shipped config files are documentation users copy: each must stay valid for the schema.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';

const files = ['config/airlock.yaml', ...readdirSync('config/examples').map((f) => join('config/examples', f))];

describe('shipped config files', () => {
  it.each(files)('%s is valid', (file) => {
    const config = loadConfig({ config: file }, {});
    expect(config.listen).toMatch(/:\d+$/);
  });

  it('the default file gives the contract defaults', () => {
    const config = loadConfig({ config: 'config/airlock.yaml' }, {});
    expect(config.listen).toBe('0.0.0.0:5000');
    expect(config.storage).toBe('./storage');
    expect(config.log.level).toBe('info');
  });

  it('the pull-through example routes ocp4/openshift4 to the release repository', () => {
    const config = loadConfig({ config: 'config/examples/pull-through.yaml' }, {});
    const ocp = config.upstreams.find((u) => u.prefix === 'ocp4/openshift4');
    expect(ocp?.remotePrefix).toBe('openshift-release-dev/ocp-v4.0-art-dev');
    expect(config.upstreams.find((u) => u.prefix === 'quay.io')?.tagTTL).toBe(600_000);
  });
});
