/**
 * The small pure pieces behind import/export/sync: repository globs, source references and the
 * local names they land at, mapping.txt lines, and the tar index that lets a plain tar be read
 * in place (written by GNU tar with long names and by tar-stream with pax headers).
 */
import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { globToRegExp } from '../../src/mirror/select.js';
import { localRepository, parseRemoteRef } from '../../src/mirror/registry-source.js';
import { indexTar } from '../../src/mirror/tar-index.js';
import { mappingItems } from '../../src/commands/sync.js';
import { tempDirs } from '../e2e/support.js';

const tmp = tempDirs('airgap-units');
afterAll(() => tmp.cleanup());

describe('repository globs', () => {
  it('** spans path components (and a/** includes a itself), * stays within one', () => {
    const below = globToRegExp('ocp4/**');
    expect(['ocp4', 'ocp4/release', 'ocp4/a/b/c'].every((r) => below.test(r))).toBe(true);
    expect(['ocp45', 'x/ocp4/release'].some((r) => below.test(r))).toBe(false);
    const one = globToRegExp('a/*/c');
    expect(one.test('a/b/c')).toBe(true);
    expect(one.test('a/b/d/c')).toBe(false);
    expect(globToRegExp('**').test('any/thing/at/all')).toBe(true);
    expect(globToRegExp('quay.io/x').test('quayXio/x')).toBe(false);
  });
});

describe('source references', () => {
  it('parses host, path, tag or digest; no tag means latest', () => {
    expect(parseRemoteRef('quay.io/openshift-release-dev/ocp-release:4.15.3-x86_64')).toEqual({
      host: 'quay.io',
      path: 'openshift-release-dev/ocp-release',
      tag: '4.15.3-x86_64',
    });
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(parseRemoteRef(`registry.example.com:5000/a/b/c@${digest}`)).toEqual({ host: 'registry.example.com:5000', path: 'a/b/c', digest });
    expect(parseRemoteRef('localhost/x')).toEqual({ host: 'localhost', path: 'x', tag: 'latest' });
    expect(parseRemoteRef('docker://quay.io/a/b:1').host).toBe('quay.io');
    expect(() => parseRemoteRef('ubuntu:22.04')).toThrow(/does not start with a registry host/);
    expect(() => parseRemoteRef('quay.io/a/b@sha256:zz')).toThrow(/is not a digest/);
    expect(() => parseRemoteRef('quay.io/A/b:1')).toThrow(/is not a repository path/);
  });

  it('lands at host/path with a port\'s ":" as "_", or at --dest-prefix/path', () => {
    expect(localRepository(parseRemoteRef('quay.io/openshift-release-dev/ocp-release:4.15'))).toBe('quay.io/openshift-release-dev/ocp-release');
    expect(localRepository(parseRemoteRef('registry.example.com:5000/team/app:1'))).toBe('registry.example.com_5000/team/app');
    expect(localRepository(parseRemoteRef('quay.io/team/app:1'), 'ocp4')).toBe('ocp4/team/app');
  });

  it('reads mapping.txt: DST without its host is the repository, its tag the tag, else the source tag', () => {
    const digest = `sha256:${'b'.repeat(64)}`;
    const items = mappingItems(
      [
        '# comment',
        `registry.redhat.io/rh-osbs/ose-operator@${digest}=mirror.example.com:5000/rh-osbs/ose-operator:1a2b3c`,
        'quay.io/team/app:2.0=mirror.example.com/team/app',
        `quay.io/team/tagless@${digest}=mirror.example.com/team/tagless`,
        '',
      ].join('\n'),
    );
    expect(items.map((i) => [i.srcRepo, i.reference, i.destRepo, i.tag, i.origin])).toEqual([
      ['registry.redhat.io/rh-osbs/ose-operator', digest, 'rh-osbs/ose-operator', '1a2b3c', 'registry.redhat.io/rh-osbs/ose-operator'],
      ['quay.io/team/app', '2.0', 'team/app', '2.0', 'quay.io/team/app'],
      ['quay.io/team/tagless', digest, 'team/tagless', undefined, 'quay.io/team/tagless'],
    ]);
    expect(() => mappingItems('no-equals-sign')).toThrow(/is not LEFT=RIGHT/);
  });
});

describe('tar index', () => {
  const longName = `blobs/sha512/${'c'.repeat(128)}`;

  const readAt = (file: string, entry: { offset: number; size: number }) =>
    readFileSync(file).subarray(entry.offset, entry.offset + entry.size);

  it('finds each file of a GNU tar (long names included) at its offset', () => {
    const dir = tmp.make('gnu');
    mkdirSync(join(dir, 'blobs', 'sha512'), { recursive: true });
    writeFileSync(join(dir, longName), 'long-named content');
    writeFileSync(join(dir, 'index.json'), '{"manifests":[]}');
    const file = join(tmp.make('gnu-out'), 'x.tar');
    execFileSync('tar', ['--format=gnu', '-cf', file, '-C', dir, '.']);
    return indexTar(file).then((index) => {
      expect(readAt(file, index.get(longName)!).toString()).toBe('long-named content');
      expect(readAt(file, index.get('index.json')!).toString()).toBe('{"manifests":[]}');
    });
  });

  it('finds each file of a tar-stream tar (pax headers) at its offset, and refuses what is not a tar', async () => {
    const file = join(tmp.make('pax'), 'x.tar');
    const pack = tar.pack();
    const done = pipeline(pack, createWriteStream(file));
    pack.entry({ name: longName, size: 5 }, Buffer.from('hello'));
    pack.entry({ name: 'oci-layout', size: 2 }, Buffer.from('{}'));
    pack.finalize();
    await done;
    const index = await indexTar(file);
    expect(readAt(file, index.get(longName)!).toString()).toBe('hello');
    expect(readAt(file, index.get('oci-layout')!).toString()).toBe('{}');

    const notTar = join(tmp.make('not'), 'x.tar');
    writeFileSync(notTar, Buffer.alloc(2048, 7));
    await expect(indexTar(notTar)).rejects.toThrow(/not a tar file/);
  });
});
