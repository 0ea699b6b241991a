// ReloadingFile: contents re-read when the file changes, the last good contents kept (and reported
// once) when a change cannot be used, a broken file refused at start.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { ReloadingFile } from '../../src/proxy/reloading-file.js';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'airlock-reload-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const parseNumber = (text: string) => {
  const n = Number(text.trim());
  if (!Number.isInteger(n)) throw new Error(`not a number: ${JSON.stringify(text)}`);
  return n;
};

it('reads the file again only when it changed, keeps the last good contents through a bad change, reports each once', () => {
  const path = join(dir, 'value');
  writeFileSync(path, '1');
  const reloaded: string[] = [];
  const refused: string[] = [];
  let reads = 0;
  const file = new ReloadingFile(path, (t) => (reads++, parseNumber(t)), {
    reloaded: (p) => reloaded.push(p),
    refused: (_p, reason) => refused.push(reason),
  });
  expect(file.current()).toBe(1);
  expect(file.current()).toBe(1);
  expect(reads).toBe(1);

  writeFileSync(`${path}.new`, '22');
  renameSync(`${path}.new`, path);
  expect(file.current()).toBe(22);
  expect(reloaded).toEqual([path]);

  writeFileSync(path, 'garbage');
  expect(file.current()).toBe(22);
  expect(file.current()).toBe(22);
  expect(refused).toHaveLength(1);
  expect(refused[0]).toContain('not a number');

  rmSync(path);
  expect(file.current()).toBe(22);
  expect(refused).toHaveLength(2);
  expect(refused[1]).toContain('ENOENT');

  writeFileSync(path, '333');
  expect(file.current()).toBe(333);
  expect(reloaded).toHaveLength(2);
});

it('a file that is missing or unusable at start is an error then', () => {
  expect(() => new ReloadingFile(join(dir, 'none'), parseNumber)).toThrow(/ENOENT/);
  writeFileSync(join(dir, 'bad'), 'x');
  expect(() => new ReloadingFile(join(dir, 'bad'), parseNumber)).toThrow('not a number');
});
