// How busy the machine was with work that is not the benchmark. On a small shared machine (the
// reference one has 2 cores) another process's CPU use changes every figure, so the run
// measures it: CPU time of the whole machine minus that of the bench and its servers.
import { readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // USER_HZ: the unit of /proc/stat and /proc/<pid>/stat on Linux

function machineBusyTicks() {
  const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  return user + nice + system + irq + softirq + steal;
}

/** utime + stime of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file; 0 once it is gone. */
function statTicks(path) {
  try {
    // the command name (field 2) may contain spaces; fields after ")" are fixed
    const after = readFileSync(path, 'utf8').split(') ')[1].split(' ');
    return Number(after[11]) + Number(after[12]);
  } catch {
    return 0;
  }
}

function processTicks(pid) {
  return statTicks(`/proc/${pid}/stat`);
}

/** CPU seconds (user + system, all threads) a process has used so far. */
export function cpuSeconds(pid) {
  return processTicks(pid) / TICKS_PER_SECOND;
}

/** CPU seconds (user + system) one thread of a process has used so far. */
export function threadCpuSeconds(pid, tid) {
  return statTicks(`/proc/${pid}/task/${tid}/stat`) / TICKS_PER_SECOND;
}

/** A snapshot; `foreignCpu(a, b)` turns two of them into the cores used by other processes. */
export function cpuSnapshot(pids) {
  return {
    at: performance.now(),
    machine: machineBusyTicks(),
    ours: pids.reduce((sum, pid) => sum + processTicks(pid), processTicks(process.pid)),
  };
}

/**
 * Average number of cores busy with other processes between two snapshots (same pid list).
 * Undefined for spans under a second: with 10 ms ticks the quotient is noise there.
 */
export function foreignCpu(a, b) {
  const seconds = (b.at - a.at) / 1000;
  if (seconds < 1) return undefined;
  const foreign = Math.max(0, b.machine - a.machine - (b.ours - a.ours)) / TICKS_PER_SECOND;
  return foreign / seconds;
}

export function loadAverage() {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
}
