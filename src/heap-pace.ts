// How far V8 lets the heap grow between full garbage collections, for a process that streams
// large blobs.
//
// Every 64 KiB read from an upstream socket is a new ArrayBuffer. The ones a blob transfer keeps
// for a few tens of milliseconds (the clients' window, the queue to the disk) outlive two young
// collections, and their bytes then count as old generation. With V8's own pacing for a small
// heap (the next full collection at about 1.1–2 × what survived the last one) that started a
// full collection every ~100 ms of a cold pull-through: measured, 8–10 per 256 MiB layer, and a
// fifth of the process's CPU on the collector's helper threads plus the marking barriers on the
// event loop. Growing by 3.5 × (V8's own range tops out at 4 ×) leaves one or two, for about
// 15–25 MiB more peak memory; 2 × left half of them (see bench/README.md).

import { setFlagsFromString } from 'node:v8';

/** The heap may grow to (1 + this / 100) × what survived the last full collection. */
export const HEAP_GROWING_PERCENT = 250;

/**
 * Sets the growth of the heap between full collections, unless the process was started with its
 * own (`node --heap-growing-percent=N dist/cli.js …`; 0 gives V8's adaptive default back).
 * Only a number V8 reads when it sets its next limit changes: nothing else of the heap is touched.
 */
export function paceHeapForStreaming(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((arg) => /^--heap[-_]growing[-_]percent(=|$)/.test(arg))) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}
