import { addUser, DEFAULT_BCRYPT_COST, passwordProblem, userNameProblem } from '../auth/htpasswd.js';
import { acquireLockFile, StorageLockedError, type StorageLock } from '../lifecycle/storage-lock.js';
import {
  EXIT_FAILURE,
  EXIT_INTERRUPTED,
  EXIT_OK,
  EXIT_USAGE,
  HiddenLineReader,
  PromptInterrupted,
  readAll,
  type CommandInput,
  type CommandOutput,
} from './io.js';

export interface UserAddOptions {
  /** The htpasswd file (created when missing). */
  file: string;
  name: string;
  /** Read the password from stdin (scripts, CI) instead of prompting on the terminal. */
  passwordStdin: boolean;
  stdin: CommandInput;
  stdout: CommandOutput;
  stderr: CommandOutput;
  /** bcrypt cost; default 12. */
  cost?: number;
  /** How long to wait for another `user add` on the same file before giving up; default 10 s. */
  lockWaitMs?: number;
}

/**
 * Takes `<file>.lock`, waiting while another `user add` holds it: two runs at once would each
 * rewrite the file from what they read, and one user would be lost.
 */
async function lockHtpasswd(file: string, waitMs: number): Promise<StorageLock> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return acquireLockFile(`${file}.lock`, file, 'user add', 'htpasswd file');
    } catch (e) {
      if (!(e instanceof StorageLockedError) || Date.now() >= deadline) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** `airlock user add`: creates or updates a bcrypt entry in the htpasswd file. Returns the exit code. */
export async function runUserAdd(options: UserAddOptions): Promise<number> {
  const { stderr } = options;
  const nameProblem = userNameProblem(options.name);
  if (nameProblem) {
    stderr.write(`airlock user add: ${nameProblem}\n`);
    return EXIT_USAGE;
  }

  let password: string;
  if (options.passwordStdin) {
    // Like `docker login --password-stdin`: the line break `echo` adds is not part of the password.
    password = (await readAll(options.stdin)).replace(/\r?\n$/, '');
  } else if (options.stdin.isTTY) {
    const reader = new HiddenLineReader(options.stdin, stderr);
    try {
      password = await reader.ask(`Password for ${options.name}: `);
      const again = await reader.ask('Repeat the password: ');
      if (again !== password) {
        stderr.write('airlock user add: the passwords do not match; nothing was changed\n');
        return EXIT_FAILURE;
      }
    } catch (e) {
      if (e instanceof PromptInterrupted) return EXIT_INTERRUPTED;
      throw e;
    } finally {
      reader.close();
    }
  } else {
    stderr.write('airlock user add: stdin is not a terminal, so the password cannot be asked for; pipe it in with --password-stdin\n');
    return EXIT_USAGE;
  }

  const pwProblem = passwordProblem(password);
  if (pwProblem) {
    stderr.write(`airlock user add: ${pwProblem}\n`);
    return EXIT_USAGE;
  }

  let lock: StorageLock;
  try {
    lock = await lockHtpasswd(options.file, options.lockWaitMs ?? 10_000);
  } catch (e) {
    const reason = e instanceof StorageLockedError ? e.message : `cannot write ${options.file}: ${(e as Error).message}`;
    stderr.write(`airlock user add: ${reason}\n`);
    return EXIT_FAILURE;
  }
  try {
    const outcome = await addUser(options.file, options.name, password, options.cost ?? DEFAULT_BCRYPT_COST);
    options.stdout.write(`${outcome === 'added' ? 'added' : 'updated'} user "${options.name}" in ${options.file}\n`);
    return EXIT_OK;
  } catch (e) {
    stderr.write(`airlock user add: cannot write ${options.file}: ${(e as Error).message}\n`);
    return EXIT_FAILURE;
  } finally {
    lock.release();
  }
}
