import { resolve } from 'node:path';
import type { AuthConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import { RegistryError } from '../registry/errors.js';
import { isValidName } from '../registry/names.js';
import { allowedActions, formatScope, parseScope, resourceOf, scopeFor, type Action, type Resource } from './access.js';
import { AuthorizationHeaderError, basicChallenge, bearerChallenge, parseAuthorizationHeader, type BearerError, type Credentials } from './challenge.js';
import { Htpasswd } from './htpasswd.js';
import { LoginThrottle, type ThrottleOptions } from './login-throttle.js';
import { DEFAULT_SERVICE, TokenIssuer, type AccessEntry, type IssuedToken } from './tokens.js';

/** What one request needs: e.g. pull on repository team/app, or the catalog. */
export interface AccessNeed {
  resource: Resource;
  actions: Action[];
}

export interface TokenRequest {
  authorizationHeader: string | undefined;
  /** The `service` query parameter; absent or "airlock". */
  service: string | undefined;
  /** The `scope` query parameters; each may hold several space-separated scopes. */
  scopes: string[];
  remoteAddress: string;
}

export interface AuthorizerOptions {
  /** Clock for token times and login back-off (ms since epoch). */
  now?: () => number;
  throttle?: Partial<Omit<ThrottleOptions, 'now'>>;
  /** Directory a relative `htpasswd` path is resolved against; default: the working directory. */
  baseDir?: string;
}

/** The realm users see in Basic challenges from the token endpoint. */
const BASIC_REALM = 'airlock';
const UNKNOWN_ADDRESS = 'unknown';

interface Loaded {
  htpasswd: Htpasswd;
  tokens: TokenIssuer;
}

/**
 * Decides who may do what, free of any HTTP framework: the server hands over header values and what a
 * route needs, and gets back the user or a RegistryError (401 with a challenge, 403, 429) to render.
 */
export class Authorizer {
  private readonly loaded: Promise<Loaded>;
  private readonly throttle: LoginThrottle;
  readonly service = DEFAULT_SERVICE;

  constructor(
    private readonly config: AuthConfig,
    storageDir: string,
    private readonly log: Logger,
    options: AuthorizerOptions = {},
  ) {
    const now = options.now ?? Date.now;
    this.throttle = new LoginThrottle({ ...options.throttle, now });
    const htpasswdPath = resolve(options.baseDir ?? process.cwd(), config.htpasswd);
    this.loaded = Promise.all([Htpasswd.load(htpasswdPath, log), TokenIssuer.open(storageDir, { now })]).then(([htpasswd, tokens]) => ({
      htpasswd,
      tokens,
    }));
    // The failure is reported by ready() (and by every later call); don't let it crash the process unheard.
    this.loaded.catch(() => {});
  }

  /** Resolves once the htpasswd file and the signing key are loaded; await it at startup to fail early. */
  async ready(): Promise<void> {
    await this.loaded;
  }

  /**
   * Lets a request through or throws why not. Accepts Basic credentials (checked against htpasswd) or a
   * bearer token from issueToken. Without credentials, `anonymous` must cover every need.
   */
  async authorize(authorizationHeader: string | undefined, needs: AccessNeed[], realm: string, remoteAddress = UNKNOWN_ADDRESS): Promise<{ user?: string }> {
    const { tokens } = await this.loaded;
    const challenge = (error?: BearerError) =>
      bearerChallenge({ realm, service: this.service, scopes: needs.map((n) => formatScope(scopeFor(n.resource, n.actions))), error });

    const credentials = this.readCredentials(authorizationHeader, challenge);
    if (!credentials) {
      // The version check (GET /v2/, no needs) always asks for credentials: `docker login` and
      // `podman login` treat a 200 there as "login succeeded" without ever sending the password.
      if (needs.length > 0 && this.permits(undefined, needs)) return {};
      throw unauthorized('authentication required', challenge());
    }

    if (credentials.kind === 'basic') {
      const user = await this.checkPassword(credentials, remoteAddress, challenge());
      if (!this.permits(user, needs)) throw denied(user, needs);
      return { user };
    }

    let access: AccessEntry[];
    let user: string | undefined;
    try {
      const claims = await tokens.verify(credentials.token, this.service);
      access = claims.access;
      user = claims.sub === '' ? undefined : claims.sub;
    } catch (e) {
      this.log.info({ remoteAddress, reason: (e as Error).message }, 'bearer token refused');
      throw unauthorized('invalid or expired token', challenge('invalid_token'));
    }
    if (needs.every((need) => tokenCovers(access, need))) return { user };
    // A token for other scopes: tell the client to fetch one for these (insufficient_scope), unless
    // the user could never get one — then say so plainly instead of sending it round in circles.
    if (user !== undefined && !this.permits(user, needs)) throw denied(user, needs);
    throw unauthorized('the token does not grant the requested access', challenge('insufficient_scope'));
  }

  /**
   * The token endpoint: Basic credentials or none (anonymous). Each requested scope is granted the
   * actions the user is allowed; a refused scope yields fewer or no actions, not an error (token spec).
   */
  async issueToken(request: TokenRequest): Promise<IssuedToken> {
    const { tokens } = await this.loaded;
    if (request.service !== undefined && request.service !== this.service) {
      throw new RegistryError('DENIED', `this registry's token service is "${this.service}", not "${request.service}"`, { service: request.service });
    }
    const challenge = () => basicChallenge(BASIC_REALM);
    const credentials = this.readCredentials(request.authorizationHeader, challenge);
    if (credentials?.kind === 'bearer') {
      throw unauthorized('the token endpoint takes Basic credentials (or none for anonymous access)', challenge());
    }
    const user = credentials ? await this.checkPassword(credentials, request.remoteAddress, challenge()) : undefined;
    const access = this.grant(user, request.scopes);
    const issued = await tokens.issue({ subject: user ?? '', access, service: this.service, ttlMs: this.config.tokenTTL });
    this.log.info({ user: user ?? '(anonymous)', remoteAddress: request.remoteAddress, access: access.map((a) => formatScope(a)) }, 'token issued');
    return issued;
  }

  private readCredentials(header: string | undefined, challenge: () => string): Credentials | undefined {
    try {
      return parseAuthorizationHeader(header);
    } catch (e) {
      if (e instanceof AuthorizationHeaderError) throw unauthorized(e.message, challenge());
      throw e;
    }
  }

  /** The user name when the password is right; UNAUTHORIZED when wrong; TOOMANYREQUESTS while backing off. */
  private async checkPassword(credentials: { user: string; password: string }, remoteAddress: string, challenge: string): Promise<string> {
    const { htpasswd } = await this.loaded;
    const { user, password } = credentials;
    const waitMs = this.throttle.retryAfterMs(user, remoteAddress);
    if (waitMs > 0) {
      // Refuse without checking the password, or the answer would still confirm a right guess.
      const seconds = Math.ceil(waitMs / 1000);
      this.log.warn({ user, remoteAddress, retryAfterSeconds: seconds }, 'login refused: too many failed attempts');
      throw new RegistryError('TOOMANYREQUESTS', `too many failed logins for "${user}" from this address; retry in ${seconds}s`, {
        retryAfterSeconds: seconds,
      }).withHeaders({ 'Retry-After': String(seconds) });
    }
    if (user !== '' && (await htpasswd.verify(user, password))) {
      this.throttle.recordSuccess(user, remoteAddress);
      return user;
    }
    this.throttle.recordFailure(user, remoteAddress);
    this.log.warn({ user, remoteAddress }, 'login failed');
    throw unauthorized('invalid user name or password', challenge);
  }

  /** Whether the rules let `user` (undefined = anonymous) do all of `needs`; no credential is checked. */
  permits(user: string | undefined, needs: AccessNeed[]): boolean {
    return needs.every((need) => {
      const allowed = allowedActions(this.config, user, need.resource);
      return need.actions.every((action) => allowed.has(action));
    });
  }

  /** Requested scopes ∩ what the user may do, one access entry per resource. */
  private grant(user: string | undefined, scopeParams: string[]): AccessEntry[] {
    const entries = new Map<string, AccessEntry>();
    for (const text of scopeParams.flatMap((s) => s.split(/\s+/)).filter((s) => s !== '')) {
      let scope;
      try {
        scope = parseScope(text);
      } catch (e) {
        this.log.debug({ scope: text, reason: (e as Error).message }, 'ignoring unparsable scope');
        continue;
      }
      const resource = resourceOf(scope);
      if (!resource || (resource.type === 'repository' && !isValidName(resource.name))) continue;
      const allowed = allowedActions(this.config, user, resource);
      const granted =
        resource.type === 'registry'
          ? // Clients ask for registry:catalog:*; hand back the word they used.
            scope.actions.filter((a) => (a === '*' || a === 'catalog') && allowed.has('catalog'))
          : scope.actions.flatMap((a) => (a === '*' ? [...allowed] : allowed.has(a as Action) ? [a] : []));
      const key = `${resource.type}:${resource.name}`;
      const entry = entries.get(key) ?? { type: resource.type, name: resource.name, actions: [] };
      entry.actions = [...new Set([...entry.actions, ...granted])];
      entries.set(key, entry);
    }
    return [...entries.values()];
  }
}

/** Whether a token's access claim allows every action of one need ('*' allows all). */
function tokenCovers(access: AccessEntry[], need: AccessNeed): boolean {
  const granted = new Set(access.filter((a) => a.type === need.resource.type && a.name === need.resource.name).flatMap((a) => a.actions));
  if (granted.has('*')) return true;
  return need.actions.every((action) => granted.has(action));
}

function unauthorized(message: string, challenge: string): RegistryError {
  return new RegistryError('UNAUTHORIZED', message).withHeaders({ 'WWW-Authenticate': challenge });
}

function describeNeed(need: AccessNeed): string {
  return need.resource.type === 'registry' ? 'list the catalog' : `${need.actions.join(',')} on repository "${need.resource.name}"`;
}

function denied(user: string, needs: AccessNeed[]): RegistryError {
  const scopes = needs.map((n) => formatScope(scopeFor(n.resource, n.actions)));
  return new RegistryError('DENIED', `requested access to the resource is denied: "${user}" may not ${needs.map(describeNeed).join(', ')}`, {
    user,
    scopes,
  });
}
