import { describe, expect, it } from 'vitest';
import { allowedActions, formatScope, parseScope, repoGlobMatches, ScopeError } from '../../src/auth/access.js';
import type { AuthConfig } from '../../src/config/schema.js';

describe('parseScope', () => {
  it('parses a repository scope with several actions', () => {
    expect(parseScope('repository:team/app:pull,push')).toEqual({ type: 'repository', name: 'team/app', actions: ['pull', 'push'] });
  });

  it('keeps nested repository names whole', () => {
    expect(parseScope('repository:quay.io/openshift-release-dev/ocp-v4.0-art-dev:pull')).toEqual({
      type: 'repository',
      name: 'quay.io/openshift-release-dev/ocp-v4.0-art-dev',
      actions: ['pull'],
    });
  });

  it('splits at the first and the last ":" so a host:port name survives', () => {
    expect(parseScope('repository:registry.local:5000/ns/app:pull')).toEqual({ type: 'repository', name: 'registry.local:5000/ns/app', actions: ['pull'] });
  });

  it('parses the catalog scope', () => {
    expect(parseScope('registry:catalog:*')).toEqual({ type: 'registry', name: 'catalog', actions: ['*'] });
  });

  it('drops empty and repeated actions, allows none', () => {
    expect(parseScope('repository:a:pull,,pull,push').actions).toEqual(['pull', 'push']);
    expect(parseScope('repository:a:').actions).toEqual([]);
  });

  it('rejects scopes without three parts or without a name', () => {
    expect(() => parseScope('repository')).toThrow(ScopeError);
    expect(() => parseScope('repository:team/app')).toThrow(/TYPE:NAME:ACTIONS/);
    expect(() => parseScope(':team/app:pull')).toThrow(ScopeError);
    expect(() => parseScope('repository::pull')).toThrow(/name is empty/);
  });

  it('formats back to the wire form', () => {
    expect(formatScope(parseScope('repository:a/b:pull,push'))).toBe('repository:a/b:pull,push');
  });
});

describe('repoGlobMatches', () => {
  it('** matches any depth, including none', () => {
    expect(repoGlobMatches('**', 'app')).toBe(true);
    expect(repoGlobMatches('**', 'a/b/c/d')).toBe(true);
    expect(repoGlobMatches('ocp4/**', 'ocp4')).toBe(true);
    expect(repoGlobMatches('ocp4/**', 'ocp4/openshift4/release')).toBe(true);
    expect(repoGlobMatches('ocp4/**', 'ocp5/openshift4')).toBe(false);
    expect(repoGlobMatches('**/release', 'a/b/release')).toBe(true);
    expect(repoGlobMatches('**/release', 'release')).toBe(true);
    expect(repoGlobMatches('a/**/z', 'a/z')).toBe(true);
    expect(repoGlobMatches('a/**/z', 'a/b/c/z')).toBe(true);
    expect(repoGlobMatches('a/**/z', 'a/b/c/y')).toBe(false);
  });

  it('* matches exactly one component', () => {
    expect(repoGlobMatches('team/*', 'team/app')).toBe(true);
    expect(repoGlobMatches('team/*', 'team')).toBe(false);
    expect(repoGlobMatches('team/*', 'team/app/sub')).toBe(false);
    expect(repoGlobMatches('*/app', 'team/app')).toBe(true);
    expect(repoGlobMatches('*', 'a/b')).toBe(false);
  });

  it('* inside a component stays inside it', () => {
    expect(repoGlobMatches('team-*/app', 'team-red/app')).toBe(true);
    expect(repoGlobMatches('team-*/app', 'team-red/x/app')).toBe(false);
  });

  it('everything else is literal, dots included', () => {
    expect(repoGlobMatches('quay.io/team/app', 'quay.io/team/app')).toBe(true);
    expect(repoGlobMatches('quay.io/team/app', 'quayXio/team/app')).toBe(false);
    expect(repoGlobMatches('team/app', 'team/app2')).toBe(false);
    expect(repoGlobMatches('team', 'team/app')).toBe(false);
  });
});

describe('allowedActions', () => {
  const config: AuthConfig = {
    htpasswd: 'unused',
    anonymous: ['pull'],
    tokenTTL: 300_000,
    rules: [
      { users: ['admin'], repos: ['**'], actions: ['*'] },
      { users: ['ci'], repos: ['team/**'], actions: ['pull', 'push'] },
      { users: ['ci'], repos: ['**'], actions: ['catalog'] },
      { users: ['mirror-writer'], repos: ['**'], actions: ['pull', 'push', 'delete'] },
      { users: ['*'], repos: ['public/**'], actions: ['pull', 'catalog'] },
    ],
  };
  const repo = (name: string) => ({ type: 'repository' as const, name });
  const catalog = { type: 'registry' as const, name: 'catalog' as const };
  const sorted = (s: Set<string>) => [...s].sort();

  it('anonymous gets the anonymous actions on repositories and never the catalog', () => {
    expect(sorted(allowedActions(config, undefined, repo('team/app')))).toEqual(['pull']);
    expect(sorted(allowedActions(config, undefined, catalog))).toEqual([]);
  });

  it('"*" in actions means every action, catalog included', () => {
    expect(sorted(allowedActions(config, 'admin', repo('any/thing')))).toEqual(['delete', 'pull', 'push']);
    expect(sorted(allowedActions(config, 'admin', catalog))).toEqual(['catalog']);
  });

  it('the first rule naming the user and matching the repository decides', () => {
    expect(sorted(allowedActions(config, 'ci', repo('team/app')))).toEqual(['pull', 'push']);
    // team/** does not match, so the next ci rule applies: it grants only the catalog, plus anonymous pull.
    expect(sorted(allowedActions(config, 'ci', repo('other/app')))).toEqual(['pull']);
  });

  it('later rules do not add to an earlier match', () => {
    // public/** (rule 5) would give the catalog too, but mirror-writer matched rule 4 first.
    expect(sorted(allowedActions(config, 'mirror-writer', repo('public/x')))).toEqual(['delete', 'pull', 'push']);
  });

  it('"*" in users means any authenticated user', () => {
    expect(sorted(allowedActions(config, 'somebody', repo('public/x')))).toEqual(['pull']);
    expect(sorted(allowedActions(config, 'somebody', repo('private/x')))).toEqual(['pull']);
    const closed: AuthConfig = { ...config, anonymous: [] };
    expect(sorted(allowedActions(closed, 'somebody', repo('private/x')))).toEqual([]);
    expect(sorted(allowedActions(closed, 'somebody', repo('public/x')))).toEqual(['pull']);
  });

  it('grants the catalog only through a rule with catalog or *, whatever its repo globs', () => {
    // ci's first rule grants no catalog, so it does not concern the catalog; the dedicated rule 3 does.
    expect(sorted(allowedActions(config, 'ci', catalog))).toEqual(['catalog']);
    // Rule 4 has no catalog action; rule 5 (any authenticated user, catalog) applies.
    expect(sorted(allowedActions(config, 'mirror-writer', catalog))).toEqual(['catalog']);
    expect(sorted(allowedActions(config, 'somebody', catalog))).toEqual(['catalog']);
    const noCatalogRule: AuthConfig = { ...config, rules: [{ users: ['*'], repos: ['**'], actions: ['pull', 'push', 'delete'] }] };
    expect(sorted(allowedActions(noCatalogRule, 'somebody', catalog))).toEqual([]);
  });

  it('unions anonymous actions into an authenticated user\'s rights', () => {
    const pushOnly: AuthConfig = { ...config, rules: [{ users: ['pusher'], repos: ['**'], actions: ['push'] }] };
    expect(sorted(allowedActions(pushOnly, 'pusher', repo('a')))).toEqual(['pull', 'push']);
  });
});
