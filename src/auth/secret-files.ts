import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

// Writing files that hold secrets (password hashes, private keys): never half-written, never
// readable by others, not even for the moment between create and chmod.

/** A unique name beside the target, so the final rename/link stays on one file system. */
function tempPathBeside(file: string): string {
  return join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** Creates `temp` with `mode` (O_EXCL) and makes its content durable. */
async function writeDurably(temp: string, content: string, mode: number): Promise<void> {
  const handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode);
  try {
    await handle.writeFile(content, 'utf8');
    // The umask can only remove bits; chmod anyway in case the file system ignored the create mode.
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** temp file (given mode) → fsync → rename over the target: readers see the old or the new file, whole. */
export async function writeFileAtomically(file: string, content: string, mode: number): Promise<void> {
  const temp = tempPathBeside(file);
  try {
    await writeDurably(temp, content, mode);
    await rename(temp, file);
  } catch (e) {
    await unlink(temp).catch(() => {});
    throw e;
  }
}

/**
 * temp file → fsync → hard link to the target, which fails when the target exists. Two processes racing
 * to create the same file both end up using the one that won, and nobody reads a half-written file.
 * Returns false when the file already existed (and leaves it alone).
 */
export async function createFileExclusively(file: string, content: string, mode: number): Promise<boolean> {
  const temp = tempPathBeside(file);
  try {
    await writeDurably(temp, content, mode);
    await link(temp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await unlink(temp).catch(() => {});
  }
}
