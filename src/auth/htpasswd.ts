import { createHmac, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import type { Logger } from '../log.js';
import { writeFileAtomically } from './secret-files.js';

/**
 * htpasswd files as written by `htpasswd -B` (Apache) or `airlock user add`: one `user:hash` per line.
 * Only bcrypt hashes are honoured; MD5 ($apr1$), SHA-1 ({SHA}) and crypt(3) entries are too weak to
 * trust, so they are refused (and logged) rather than silently accepted.
 */

/** The bcrypt revisions in the wild; they differ only in historic bugs that do not affect verification. */
const BCRYPT_HASH_RE = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;

/** bcrypt looks at the first 72 bytes of a password only; longer ones would be silently truncated. */
export const MAX_PASSWORD_BYTES = 72;

export const DEFAULT_BCRYPT_COST = 12;

/** How long a verified password is trusted without running bcrypt again. */
const VERIFIED_TTL_MS = 5 * 60_000;
const VERIFIED_MAX = 10_000;

/** Why a user name is unusable, or undefined when it is fine. */
export function userNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'user name must not be empty';
  if (name.includes(':')) return 'user name must not contain ":" (it separates name and hash in the htpasswd file)';
  if (/\s/.test(name)) return 'user name must not contain whitespace';
  // "*" in an auth rule means "any authenticated user"; a user literally called "*" would be ambiguous.
  if (name === '*') return 'user name "*" is reserved (it means "any authenticated user" in auth rules)';
  return undefined;
}

/** Why a password is unusable, or undefined when it is fine. */
export function passwordProblem(password: string): string | undefined {
  if (password.length === 0) return 'password must not be empty';
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) {
    return `password must be at most ${MAX_PASSWORD_BYTES} bytes (bcrypt ignores everything after that)`;
  }
  return undefined;
}

export function isBcryptHash(hash: string): boolean {
  return BCRYPT_HASH_RE.test(hash);
}

/** Names the hash scheme of a refused entry, for a log line that tells the operator what to fix. */
function describeHashScheme(hash: string): string {
  if (hash.startsWith('$apr1$')) return 'Apache MD5 ($apr1$)';
  if (hash.startsWith('{SHA}')) return 'SHA-1 ({SHA})';
  if (hash.startsWith('$1$')) return 'MD5-crypt ($1$)';
  if (hash.startsWith('$5$') || hash.startsWith('$6$')) return 'SHA-crypt';
  if (hash.startsWith('$2')) return 'malformed bcrypt';
  if (hash.length === 0) return 'empty hash';
  return 'crypt(3) or plain text';
}

interface ParsedHtpasswd {
  hashes: Map<string, string>;
  problems: { line: number; user?: string; reason: string }[];
}

function parseHtpasswd(text: string): ParsedHtpasswd {
  const hashes = new Map<string, string>();
  const problems: ParsedHtpasswd['problems'] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/\r$/, '');
    const lineNumber = index + 1;
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) {
      problems.push({ line: lineNumber, reason: 'not a "user:hash" line' });
      return;
    }
    const user = line.slice(0, colon);
    // Apache htpasswd never writes anything after the hash, but some tools append ":comment".
    const hash = line.slice(colon + 1).split(':')[0]!.trim();
    const nameProblem = userNameProblem(user);
    if (nameProblem) {
      problems.push({ line: lineNumber, reason: nameProblem });
      return;
    }
    if (!isBcryptHash(hash)) {
      problems.push({ line: lineNumber, user, reason: `${describeHashScheme(hash)} hash refused; only bcrypt ($2y$/$2b$/$2a$) is accepted — re-create it with "airlock user add" or "htpasswd -B"` });
      return;
    }
    if (hashes.has(user)) {
      // Apache honours the first entry for a user; do the same so both tools agree.
      problems.push({ line: lineNumber, user, reason: 'duplicate entry ignored (the first one counts)' });
      return;
    }
    hashes.set(user, hash);
  });
  return { hashes, problems };
}

/** Identifies one version of the file: an atomic replace changes the inode even within the same mtime tick. */
function fileVersion(s: { mtimeMs: number; size: number; ino: number }): string {
  return `${s.mtimeMs}:${s.size}:${s.ino}`;
}

/** A syntactically valid bcrypt hash of nothing anyone knows, to spend the same time on unknown users. */
function dummyHash(cost: number): string {
  const salt = bcrypt.genSaltSync(cost);
  return salt + 'A'.repeat(60 - salt.length);
}

/** The users of one htpasswd file, re-read whenever the file changes on disk. */
export class Htpasswd {
  private hashes = new Map<string, string>();
  private version: string | undefined;
  private dummy = dummyHash(10);
  private readonly verified = new Map<string, number>();
  private readonly verifiedKey = randomBytes(32);
  /** One re-read at a time: concurrent logins share it instead of each logging the same warnings. */
  private reloading: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /** Loads the file; a missing or unreadable file is an error here, at startup, where it is easy to see. */
  static async load(path: string, log: Logger): Promise<Htpasswd> {
    const htpasswd = new Htpasswd(path, log);
    try {
      await htpasswd.reloadIfChanged();
    } catch (e) {
      throw new Error(`cannot read htpasswd file ${path}: ${(e as Error).message}`);
    }
    return htpasswd;
  }

  get userCount(): number {
    return this.hashes.size;
  }

  hasUser(user: string): boolean {
    return this.hashes.has(user);
  }

  /**
   * True when the password matches the user's bcrypt hash. Unknown users cost a bcrypt comparison too,
   * so response time does not tell an attacker which user names exist.
   */
  async verify(user: string, password: string): Promise<boolean> {
    try {
      this.reloading ??= this.reloadIfChanged().finally(() => (this.reloading = undefined));
      await this.reloading;
    } catch (e) {
      // Keep serving the users we know: a file briefly missing (being replaced) must not lock everyone out.
      this.log.error({ file: this.path, err: (e as Error).message }, 'cannot re-read htpasswd file; keeping the previous users');
    }
    const hash = this.hashes.get(user);
    if (hash === undefined) {
      await bcrypt.compare(password, this.dummy);
      return false;
    }
    const key = `${hash}\0${createHmac('sha256', this.verifiedKey).update(password).digest('base64')}`;
    const until = this.verified.get(key);
    if (until !== undefined && until > Date.now()) return true;
    if (!(await bcrypt.compare(password, hash))) return false;
    this.rememberVerified(key);
    return true;
  }

  /**
   * bcrypt costs hundreds of milliseconds of CPU by design; a client sending Basic credentials with
   * every request would otherwise pay it (and make the server pay it) each time. A success is
   * remembered briefly, keyed by the stored hash (a changed entry no longer matches) and a keyed
   * HMAC of the password (no cheap password hash sits in memory). Failures are never remembered.
   */
  private rememberVerified(key: string): void {
    if (this.verified.size >= VERIFIED_MAX) {
      const now = Date.now();
      for (const [k, until] of this.verified) if (until <= now || this.verified.size >= VERIFIED_MAX) this.verified.delete(k);
    }
    this.verified.set(key, Date.now() + VERIFIED_TTL_MS);
  }

  private async reloadIfChanged(): Promise<void> {
    const version = fileVersion(await stat(this.path));
    if (version === this.version) return;
    const { hashes, problems } = parseHtpasswd(await readFile(this.path, 'utf8'));
    for (const problem of problems) {
      this.log.warn({ file: this.path, line: problem.line, user: problem.user }, `htpasswd entry refused: ${problem.reason}`);
    }
    this.hashes = hashes;
    this.version = version;
    this.dummy = dummyHash(typicalCost(hashes));
    this.log.info({ file: this.path, users: hashes.size }, 'htpasswd file loaded');
  }
}

/** The most common cost factor among the entries, so an unknown user takes as long as a typical known one. */
function typicalCost(hashes: Map<string, string>): number {
  const counts = new Map<number, number>();
  for (const hash of hashes.values()) {
    const cost = bcrypt.getRounds(hash);
    counts.set(cost, (counts.get(cost) ?? 0) + 1);
  }
  let best = 10;
  let bestCount = 0;
  for (const [cost, count] of counts) {
    if (count > bestCount) [best, bestCount] = [cost, count];
  }
  return best;
}

/**
 * Creates or updates one user's entry, leaving every other line (comments included) untouched.
 * The new file is written beside the old one with mode 0600 and renamed over it, so a reader never sees
 * a half-written file. Returns whether the user was added or replaced.
 */
export async function addUser(file: string, user: string, password: string, cost = DEFAULT_BCRYPT_COST): Promise<'added' | 'updated'> {
  const nameProblem = userNameProblem(user);
  if (nameProblem) throw new Error(nameProblem);
  const pwProblem = passwordProblem(password);
  if (pwProblem) throw new Error(pwProblem);

  // Apache's htpasswd writes $2y$; use the same prefix so the file stays interchangeable with it.
  const hash = (await bcrypt.hash(password, cost)).replace(/^\$2[ab]\$/, '$2y$');
  const entry = `${user}:${hash}`;

  let existing = '';
  try {
    existing = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const lines = existing === '' ? [] : existing.replace(/\n$/, '').split('\n');
  let outcome: 'added' | 'updated' = 'added';
  const updated: string[] = [];
  for (const line of lines) {
    if (line.startsWith(`${user}:`)) {
      // Replace the first entry, drop later duplicates: otherwise the old first one would keep winning.
      if (outcome === 'added') updated.push(entry);
      outcome = 'updated';
    } else {
      updated.push(line);
    }
  }
  if (outcome === 'added') updated.push(entry);
  await writeFileAtomically(file, updated.join('\n') + '\n', 0o600);
  return outcome;
}
