/**
 * Resident memory of a server, read from /proc: the process and all its descendants (gunicorn's
 * master + worker; Node is one process). VmRSS is now, VmHWM the peak since the process started.
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

export function treeMemory(root: number): Memory {
  const pids: number[] = [];
  const visit = (pid: number): void => {
    pids.push(pid);
    children(pid).forEach(visit);
  };
  visit(root);
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

export const MB = 1e6;
export const mb = (bytes: number): string => (bytes / MB).toFixed(0);
