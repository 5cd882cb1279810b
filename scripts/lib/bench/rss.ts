/**
 * Resident memory and CPU time of a server, read from /proc: the process and all its descendants
 * (gunicorn's master + worker; Node is one process). VmRSS is now, VmHWM the peak since the
 * process started.
 */
import { readFileSync, readdirSync } from 'node:fs';

export interface Memory {
  /** Sum of VmRSS over the process tree, bytes. */
  rss: number;
  /** Sum of VmHWM (each process's own peak), bytes. */
  hwm: number;
  pids: number[];
}

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0; // exited between the listing and the read
  }
}

function children(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

function tree(root: number): number[] {
  const pids: number[] = [];
  const visit = (pid: number): void => {
    pids.push(pid);
    children(pid).forEach(visit);
  };
  visit(root);
  return pids;
}

export function treeMemory(root: number): Memory {
  const pids = tree(root);
  return {
    rss: pids.reduce((s, p) => s + statusKb(p, 'VmRSS'), 0),
    hwm: pids.reduce((s, p) => s + statusKb(p, 'VmHWM'), 0),
    pids,
  };
}

/** Samples the tree's RSS every `everyMs` until stopped; returns the highest sum seen. */
export function sampleRss(root: number, everyMs = 100): { stop(): number } {
  let peak = treeMemory(root).rss;
  const timer = setInterval(() => (peak = Math.max(peak, treeMemory(root).rss)), everyMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, treeMemory(root).rss);
    },
  };
}

/** CPU seconds (user + system) used so far by the process tree. */
function treeCpuSeconds(root: number): number {
  return tree(root).reduce((sum, pid) => {
    try {
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return sum + (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
    } catch {
      return sum;
    }
  }, 0);
}

/**
 * Waits until the tree uses less than 5 % of one CPU over half a second (densenet-serve warms the
 * remaining batch sizes in the background after it turns ready). Returns the ms waited.
 */
export async function waitIdle(root: number, timeoutMs = 120_000): Promise<number> {
  const t0 = performance.now();
  let cpu = treeCpuSeconds(root);
  while (performance.now() - t0 < timeoutMs) {
    await new Promise((r) => setTimeout(r, 500));
    const now = treeCpuSeconds(root);
    if (now - cpu < 0.025) return performance.now() - t0;
    cpu = now;
  }
  return performance.now() - t0;
}

export const MB = 1e6;
export const mb = (bytes: number): string => (bytes / MB).toFixed(0);
