import { randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createFileExclusively } from './secret-files.js';

/**
 * Bearer tokens of the Docker Registry token spec (docs.docker.com/registry/spec/auth/jwt), issued and
 * checked by airlock itself. Clients treat them as opaque; only this process ever verifies them.
 */

export const TOKEN_ISSUER = 'airlock';
export const DEFAULT_SERVICE = 'airlock';
const ALGORITHM = 'ES256';

/** One grant of the `access` claim: e.g. {type:'repository', name:'team/app', actions:['pull']}. */
export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenClaims {
  iss: string;
  /** The user name; '' for an anonymous token. */
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: AccessEntry[];
}

/** The token endpoint's response body (both names: Docker clients read `token`, OAuth2 ones `access_token`). */
export interface IssuedToken {
  token: string;
  access_token: string;
  /** Seconds. */
  expires_in: number;
  /** RFC 3339. */
  issued_at: string;
}

export interface IssueRequest {
  subject: string;
  access: AccessEntry[];
  service?: string;
  ttlMs: number;
}

export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenError';
  }
}

interface SigningKey {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  kid: string;
}

export function signingKeyPath(storageDir: string): string {
  return join(storageDir, 'auth', 'token-signing-key.json');
}

/** Reads the signing key, creating it (mode 0600) on first start; tokens thus survive restarts. */
async function loadOrCreateSigningKey(file: string): Promise<SigningKey> {
  await mkdir(join(file, '..'), { recursive: true, mode: 0o700 });
  try {
    return await readSigningKey(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const { privateKey } = await generateKeyPair(ALGORITHM, { extractable: true });
  const jwk = await exportJWK(privateKey);
  // Another process may win the race to create it (then ours is discarded): the file on disk is the key.
  await createFileExclusively(file, JSON.stringify({ ...jwk, alg: ALGORITHM }, null, 2) + '\n', 0o600);
  return readSigningKey(file);
}

async function readSigningKey(file: string): Promise<SigningKey> {
  const text = await readFile(file, 'utf8');
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
    if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string') throw new Error('not a private P-256 EC key');
  } catch (e) {
    // Never regenerate over it silently: somebody put that file there.
    throw new TokenError(`token signing key ${file} is unusable (${(e as Error).message}); move it away to have a new one created`);
  }
  const { d: _private, ...publicJwk } = jwk;
  const privateKey = (await importJWK(jwk, ALGORITHM)) as CryptoKey;
  const publicKey = (await importJWK(publicJwk, ALGORITHM)) as CryptoKey;
  return { privateKey, publicKey, kid: await calculateJwkThumbprint(publicJwk) };
}

function isAccessEntry(value: unknown): value is AccessEntry {
  const v = value as AccessEntry;
  return (
    typeof v === 'object' && v !== null && typeof v.type === 'string' && typeof v.name === 'string' && Array.isArray(v.actions) && v.actions.every((a) => typeof a === 'string')
  );
}

export class TokenIssuer {
  private constructor(
    private readonly key: SigningKey,
    private readonly now: () => number,
  ) {}

  /** `now` (ms since epoch) is injectable so expiry can be tested without waiting. */
  static async open(storageDir: string, options: { now?: () => number } = {}): Promise<TokenIssuer> {
    return new TokenIssuer(await loadOrCreateSigningKey(signingKeyPath(storageDir)), options.now ?? Date.now);
  }

  /** The key id (RFC 7638 thumbprint) in every token's header; changes only when the key file does. */
  get keyId(): string {
    return this.key.kid;
  }

  async issue(request: IssueRequest): Promise<IssuedToken> {
    const issuedAtMs = this.now();
    const iat = Math.floor(issuedAtMs / 1000);
    const expiresIn = Math.max(1, Math.round(request.ttlMs / 1000));
    const token = await new SignJWT({ access: request.access })
      .setProtectedHeader({ alg: ALGORITHM, typ: 'JWT', kid: this.key.kid })
      .setIssuer(TOKEN_ISSUER)
      .setSubject(request.subject)
      .setAudience(request.service ?? DEFAULT_SERVICE)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      // Rounded up: iat is rounded down, and a token must live at least the expires_in it is sold with.
      .setExpirationTime(Math.ceil(issuedAtMs / 1000) + expiresIn)
      .setJti(randomUUID())
      .sign(this.key.privateKey);
    return { token, access_token: token, expires_in: expiresIn, issued_at: new Date(iat * 1000).toISOString() };
  }

  /** The claims of a token this issuer signed for `service`, or a TokenError saying why it is refused. */
  async verify(token: string, service = DEFAULT_SERVICE): Promise<TokenClaims> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.key.publicKey, {
        algorithms: [ALGORITHM],
        issuer: TOKEN_ISSUER,
        audience: service,
        requiredClaims: ['sub', 'exp', 'nbf', 'iat', 'jti'],
        currentDate: new Date(this.now()),
      }));
    } catch (e) {
      // jose's messages name the failed check ("exp" claim timestamp check failed, signature verification failed…).
      throw new TokenError(`invalid token: ${(e as Error).message}`);
    }
    const access = payload.access ?? [];
    if (!Array.isArray(access) || !access.every(isAccessEntry)) throw new TokenError('invalid token: malformed "access" claim');
    return { ...(payload as unknown as TokenClaims), access };
  }
}
