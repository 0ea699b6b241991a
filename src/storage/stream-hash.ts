// Running digests of blob bodies (pushes, pull-through fills), computed on a worker thread.
//
// SHA-256 of every byte is the largest single cost of a large transfer on the event loop (a fifth
// of a cold pull-through's CPU in profiles), and while it runs nothing else does: not the socket
// reads, not the writes to the clients. On a worker thread it runs on another core beside them.
// The bytes are copied into a small ring of shared memory slots (a memcpy is a fraction of a hash)
// and hashed there in order; a transfer only waits for the thread when it is a whole ring ahead.

import { createHash, getHashes, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** A running digest over a sequence of buffers. */
export interface StreamHash {
  /**
   * Adds the buffers; the next update is made once this one resolved. The buffers may be kept
   * (unchanged, they are not copied yet) until the next flush, so the caller must not reuse them.
   */
  update(chunks: readonly Buffer[]): Promise<void> | void;
  /** Lets go of the buffers kept by the updates so far (before a pause: an upload between requests). */
  flush(): Promise<void> | void;
  /** A new hash continuing from the state after every update made so far. */
  copy(): Promise<StreamHash>;
  /** The hex digest; the hash is finished afterwards. */
  digest(): Promise<string>;
  /** Lets go of a hash that will not be finished (a failed transfer). */
  dispose(): void;
}

/** A digest computed on the calling thread: for small bodies, where a thread hop costs more than it saves. */
export class InlineHash implements StreamHash {
  constructor(private readonly hash: Hash) {}
  update(chunks: readonly Buffer[]): void {
    for (const chunk of chunks) this.hash.update(chunk);
  }
  flush(): void {}
  copy(): Promise<InlineHash> {
    return Promise.resolve(new InlineHash(this.hash.copy()));
  }
  digest(): Promise<string> {
    return Promise.resolve(this.hash.digest('hex'));
  }
  dispose(): void {}
}

/** Bytes per shared slot: one batch of a transfer (they are read in batches of up to 1 MiB). */
const SLOT_BYTES = 1024 * 1024;
/** Slots per thread: how far transfers may run ahead of their hashing. */
const SLOTS = 8;

// The thread's whole program: a CommonJS script evaluated by the Worker (no file to resolve, so it
// runs the same from the sources under test and from dist/).
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { memory, slotBytes } = workerData;
const hashes = new Map();
parentPort.on('message', (m) => {
  switch (m.op) {
    case 'create': hashes.set(m.id, createHash(m.algorithm)); break;
    case 'update':
      // A hash dropped while its last update waited for a slot: the bytes are not wanted.
      hashes.get(m.id)?.update(new Uint8Array(memory, m.slot * slotBytes, m.length));
      parentPort.postMessage({ op: 'free', slot: m.slot });
      break;
    case 'copy': if (hashes.has(m.from)) hashes.set(m.id, hashes.get(m.from).copy()); break;
    case 'digest': {
      const hash = hashes.get(m.id);
      hashes.delete(m.id);
      parentPort.postMessage({ op: 'digest', id: m.id, hex: hash ? hash.digest('hex') : undefined });
      break;
    }
    case 'drop': hashes.delete(m.id); break;
  }
});
`;

type FromThread = { op: 'free'; slot: number } | { op: 'digest'; id: number; hex: string | undefined };

/** One hashing thread and its ring of slots. */
class HashThread {
  private readonly worker: Worker;
  private readonly memory = new SharedArrayBuffer(SLOT_BYTES * SLOTS);
  private readonly freeSlots: number[] = [];
  private readonly slotWaiters: Array<{ resolve: (slot: number) => void; reject: (e: Error) => void }> = [];
  private readonly digests = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  /** Set once the thread died: its hashes fail, and the pool starts another for new ones. */
  failure: Error | undefined;
  private nextId = 1;
  private reffed = false;

  constructor() {
    for (let i = 0; i < SLOTS; i++) this.freeSlots.push(i);
    // No execArgv: a process started with --input-type=module would evaluate the source as a module.
    this.worker = new Worker(THREAD_SOURCE, { eval: true, execArgv: [], workerData: { memory: this.memory, slotBytes: SLOT_BYTES }, name: 'airlock-hash' });
    this.worker.on('message', (m: FromThread) => {
      if (m.op === 'free') this.release(m.slot);
      else {
        const pending = this.digests.get(m.id);
        this.digests.delete(m.id);
        if (m.hex === undefined) pending?.reject(new Error('digest of a hash that was dropped'));
        else pending?.resolve(m.hex);
        this.awaited();
      }
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      for (const { reject } of this.digests.values()) reject(e);
      this.digests.clear();
      for (const { reject } of this.slotWaiters.splice(0)) reject(e);
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the hashing thread exited (code ${code})`)));
    // A server does not stay up for its hashing thread, nor does a command that is done; but one
    // waiting for a digest or a slot does (see awaited()). After the listeners: they ref it again.
    this.worker.unref();
  }

  /** Ends the thread (see crashHashThreads); its hashes fail as on any fault of the thread. */
  async crash(): Promise<void> {
    await this.worker.terminate();
  }

  /** A new hash on this thread; returns its id. */
  create(algorithm: string): number {
    const id = this.nextId++;
    this.post({ op: 'create', id, algorithm });
    return id;
  }

  /** A new hash continuing from the state of hash `from` (after the updates posted so far). */
  copyOf(from: number): number {
    const id = this.nextId++;
    this.post({ op: 'copy', id, from });
    return id;
  }

  /** Copies the chunks into slots and queues them for hashing; waits only for a free slot. */
  async update(id: number, chunks: readonly Buffer[]): Promise<void> {
    let slot = -1;
    let filled = 0;
    for (const chunk of chunks) {
      let at = 0;
      while (at < chunk.length) {
        if (slot < 0) {
          slot = this.freeSlots.pop() ?? (await this.nextFreeSlot());
          filled = 0;
        }
        const n = Math.min(chunk.length - at, SLOT_BYTES - filled);
        new Uint8Array(this.memory, slot * SLOT_BYTES + filled, n).set(at === 0 && n === chunk.length ? chunk : chunk.subarray(at, at + n));
        filled += n;
        at += n;
        if (filled === SLOT_BYTES) {
          this.post({ op: 'update', id, slot, length: filled });
          slot = -1;
        }
      }
    }
    if (slot >= 0) this.post({ op: 'update', id, slot, length: filled });
  }

  digest(id: number): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    const answer = new Promise<string>((resolve, reject) => {
      this.digests.set(id, { resolve, reject });
      this.post({ op: 'digest', id });
    });
    this.awaited();
    return answer;
  }

  /**
   * Keeps the process alive while someone waits on the thread (a command's last digest would
   * otherwise end the process with the work undone), and lets it go once nobody does.
   */
  private awaited(): void {
    const waiting = this.digests.size + this.slotWaiters.length > 0;
    if (waiting === this.reffed) return;
    this.reffed = waiting;
    if (waiting) this.worker.ref();
    else this.worker.unref();
  }

  drop(id: number): void {
    if (!this.failure) this.post({ op: 'drop', id });
  }

  private post(message: object): void {
    if (this.failure) throw this.failure;
    this.worker.postMessage(message);
  }

  private nextFreeSlot(): Promise<number> {
    if (this.failure) return Promise.reject(this.failure);
    const slot = new Promise<number>((resolve, reject) => this.slotWaiters.push({ resolve, reject }));
    this.awaited();
    return slot;
  }

  private release(slot: number): void {
    const waiter = this.slotWaiters.shift();
    if (waiter) {
      waiter.resolve(slot);
      this.awaited();
    } else this.freeSlots.push(slot);
  }
}

/**
 * A digest computed on one of the hashing threads. Updates are collected (as references) until they
 * fill a slot, so the thread gets one message per slot however small the reads are.
 */
class ThreadHash implements StreamHash {
  private finished = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  constructor(
    private readonly thread: HashThread,
    private readonly id: number,
  ) {}
  update(chunks: readonly Buffer[]): Promise<void> | void {
    for (const chunk of chunks) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
    }
    if (this.pendingBytes >= SLOT_BYTES) return this.flush();
  }
  flush(): Promise<void> | void {
    if (this.pendingBytes === 0) return;
    const chunks = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    return this.thread.update(this.id, chunks);
  }
  async copy(): Promise<ThreadHash> {
    await this.flush();
    return new ThreadHash(this.thread, this.thread.copyOf(this.id));
  }
  async digest(): Promise<string> {
    await this.flush();
    this.finished = true;
    return this.thread.digest(this.id);
  }
  dispose(): void {
    this.pending = [];
    this.pendingBytes = 0;
    if (this.finished) return;
    this.finished = true;
    this.thread.drop(this.id);
  }
}

/** Hashing threads, started on first use up to the limit, then shared in turn. */
const threads: HashThread[] = [];
/** Cores left once the event loop has one; never more than four threads. */
const MAX_THREADS = Math.max(1, Math.min(4, availableParallelism() - 1));
let turn = 0;

function nextThread(): HashThread {
  for (let i = threads.length - 1; i >= 0; i--) if (threads[i]!.failure) threads.splice(i, 1);
  if (threads.length < MAX_THREADS) {
    const thread = new HashThread();
    threads.push(thread);
    return thread;
  }
  return threads[turn++ % threads.length]!;
}

/** What createHash takes (its names are case-insensitive). */
const KNOWN_ALGORITHMS = new Set(getHashes().map((name) => name.toLowerCase()));

/** Below this many bytes (when the size is known), a body is hashed on the calling thread. */
export const OFF_THREAD_MIN_BYTES = 4 * 1024 * 1024;

/**
 * A running digest for a body of `expectedBytes` (undefined when not known): on a hashing thread
 * unless the body is known to be small.
 */
export function streamHash(algorithm: string, expectedBytes?: number): StreamHash {
  // Refused here, as createHash refuses it: on a thread, an unknown name would end the thread and
  // every hash on it (a digest read back from storage may name anything).
  if (!KNOWN_ALGORITHMS.has(algorithm.toLowerCase())) throw new Error(`Digest method not supported: ${algorithm}`);
  if (expectedBytes !== undefined && expectedBytes < OFF_THREAD_MIN_BYTES) return new InlineHash(createHash(algorithm));
  const thread = nextThread();
  return new ThreadHash(thread, thread.create(algorithm));
}

/** Ends every hashing thread as a crash would: for the tests of what their hashes then do. */
export async function crashHashThreads(): Promise<void> {
  await Promise.all(threads.map((thread) => thread.crash()));
}

/** Starts the first hashing thread ahead of the first transfer (a server at start-up). */
export function startHashThreads(): void {
  if (threads.length === 0) threads.push(new HashThread());
}
