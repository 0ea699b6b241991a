import type { AuthConfig } from '../config/schema.js';

/** What a client may do. `catalog` applies to the registry-wide repository listing only. */
export type Action = 'pull' | 'push' | 'delete' | 'catalog';

export const REPOSITORY_ACTIONS: readonly Action[] = ['pull', 'push', 'delete'];

/** The things access is granted on: one repository, or the registry's catalog. */
export type Resource = { type: 'repository'; name: string } | { type: 'registry'; name: 'catalog' };

/** One scope of the Docker token spec, e.g. `repository:team/app:pull,push` or `registry:catalog:*`. */
export interface Scope {
  /** `repository`, `registry`, … (a resource class such as `repository(plugin)` is kept verbatim). */
  type: string;
  name: string;
  /** As requested: known actions, `*`, or anything else a client sent (which grants nothing). */
  actions: string[];
}

export class ScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScopeError';
  }
}

/**
 * Parses `type:name:actions`. The name may itself contain ':' (a `host:port/repo` reference), so the
 * FIRST ':' ends the type and the LAST ':' starts the actions.
 */
export function parseScope(text: string): Scope {
  const first = text.indexOf(':');
  const last = text.lastIndexOf(':');
  if (first <= 0 || last === first) {
    throw new ScopeError(`invalid scope "${text}": expected TYPE:NAME:ACTIONS, e.g. repository:team/app:pull,push`);
  }
  const type = text.slice(0, first);
  const name = text.slice(first + 1, last);
  if (name === '') throw new ScopeError(`invalid scope "${text}": the resource name is empty`);
  const actions = text
    .slice(last + 1)
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  return { type, name, actions: [...new Set(actions)] };
}

export function formatScope(scope: Scope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(',')}`;
}

/** The scope a client must ask the token endpoint for to perform `actions` on `resource`. */
export function scopeFor(resource: Resource, actions: readonly Action[]): Scope {
  if (resource.type === 'registry') return { type: 'registry', name: 'catalog', actions: ['*'] };
  return { type: 'repository', name: resource.name, actions: [...actions] };
}

/** Turns a parsed scope into a resource we grant on, or undefined for types airlock does not know. */
export function resourceOf(scope: Scope): Resource | undefined {
  if (scope.type === 'repository') return { type: 'repository', name: scope.name };
  if (scope.type === 'registry' && scope.name === 'catalog') return { type: 'registry', name: 'catalog' };
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Repository globs: `**` spans any number of path components (zero included), `*` alone spans
// exactly one, `*` inside a component spans any characters but '/', everything else is literal.

type GlobPart = { kind: 'any-depth' } | { kind: 'component'; re: RegExp };

const compiledGlobs = new Map<string, GlobPart[]>();

function compileGlob(pattern: string): GlobPart[] {
  let parts = compiledGlobs.get(pattern);
  if (!parts) {
    parts = pattern.split('/').map((segment): GlobPart => {
      if (segment === '**') return { kind: 'any-depth' };
      const body = segment
        .split('*')
        .map((literal) => literal.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[^/]*');
      // A lone `*` must match a whole (non-empty) component.
      return { kind: 'component', re: new RegExp(segment === '*' ? '^[^/]+$' : `^${body}$`) };
    });
    compiledGlobs.set(pattern, parts);
  }
  return parts;
}

function matchParts(parts: GlobPart[], pi: number, components: string[], ci: number): boolean {
  if (pi === parts.length) return ci === components.length;
  const part = parts[pi]!;
  if (part.kind === 'any-depth') {
    for (let skip = ci; skip <= components.length; skip++) {
      if (matchParts(parts, pi + 1, components, skip)) return true;
    }
    return false;
  }
  return ci < components.length && part.re.test(components[ci]!) && matchParts(parts, pi + 1, components, ci + 1);
}

/** Whether repository `name` matches the rule glob `pattern`. */
export function repoGlobMatches(pattern: string, name: string): boolean {
  return matchParts(compileGlob(pattern), 0, name.split('/'), 0);
}

// ---------------------------------------------------------------------------------------------

type Rule = AuthConfig['rules'][number];

function ruleListsUser(rule: Rule, user: string): boolean {
  return rule.users.includes(user) || rule.users.includes('*');
}

function grantsCatalog(rule: Rule): boolean {
  return rule.actions.includes('catalog') || rule.actions.includes('*');
}

/**
 * Rules are read top to bottom; the first rule that names the user (or `*`, any authenticated user)
 * and one of whose repo globs matches the repository decides what the user may do there.
 * The catalog is registry-wide, so repo globs do not apply to it; a rule concerns the catalog when its
 * actions include `catalog` or `*`, and the first such rule naming the user grants it.
 */
function firstMatchingRule(config: AuthConfig, user: string, resource: Resource): Rule | undefined {
  return config.rules.find(
    (rule) =>
      ruleListsUser(rule, user) && (resource.type === 'registry' ? grantsCatalog(rule) : rule.repos.some((glob) => repoGlobMatches(glob, resource.name))),
  );
}

function actionsOfRule(rule: Rule, resource: Resource): Action[] {
  if (resource.type === 'registry') return grantsCatalog(rule) ? ['catalog'] : [];
  const all = rule.actions.includes('*');
  return REPOSITORY_ACTIONS.filter((a) => all || rule.actions.includes(a as Rule['actions'][number]));
}

/**
 * What `user` (undefined = anonymous) may do on `resource`: the anonymous actions, plus for an
 * authenticated user the actions of the first matching rule.
 */
export function allowedActions(config: AuthConfig, user: string | undefined, resource: Resource): Set<Action> {
  // `anonymous` holds repository actions only; the catalog is never open without credentials.
  const allowed = new Set<Action>(resource.type === 'repository' ? config.anonymous : []);
  if (user !== undefined) {
    const rule = firstMatchingRule(config, user, resource);
    if (rule) for (const action of actionsOfRule(rule, resource)) allowed.add(action);
  }
  return allowed;
}
