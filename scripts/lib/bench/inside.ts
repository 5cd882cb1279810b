/**
 * What densenet-serve did during the load runs, from its own /metrics: counters read before and
 * after each run and the differences summed per concurrency (mean batch, forward time, how busy
 * the model instances were, queue wait, decode time). It explains a ratio the targets print.
 */
import type { Server } from './servers.js';

/** Sums of the counters this reads; a metric the server lacks reads 0. */
type Snapshot = Record<'batchSum' | 'batchCount' | 'computeSum' | 'busy' | 'waitSum' | 'waitCount' | 'preSum' | 'preCount', number>;

const SERIES: Record<keyof Snapshot, RegExp> = {
  batchSum: /^inference_batch_size_sum (\S+)$/gm,
  batchCount: /^inference_batch_size_count (\S+)$/gm,
  computeSum: /^inference_compute_seconds_sum (\S+)$/gm,
  busy: /^inference_instance_busy_seconds_total\{[^}]*\} (\S+)$/gm,
  waitSum: /^inference_queue_wait_seconds_sum (\S+)$/gm,
  waitCount: /^inference_queue_wait_seconds_count (\S+)$/gm,
  preSum: /^inference_preprocess_seconds_sum (\S+)$/gm,
  preCount: /^inference_preprocess_seconds_count (\S+)$/gm,
};

export async function snapshot(s: Server): Promise<Snapshot> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const out = {} as Snapshot;
  for (const [k, re] of Object.entries(SERIES) as [keyof Snapshot, RegExp][]) {
    out[k] = [...text.matchAll(re)].reduce((sum, m) => sum + Number(m[1]), 0);
  }
  return out;
}

export interface Inside {
  meanBatch: number;
  forwardMs: number;
  /** Instance busy time / (instances x wall time of the runs). */
  busyShare: number;
  queueWaitMs: number;
  preprocessMs: number;
}

export class InsideTracker {
  private readonly totals = new Map<number, { d: Snapshot; seconds: number }>();

  constructor(private readonly instances: number) {}

  add(concurrency: number, before: Snapshot, after: Snapshot, seconds: number): void {
    const t = this.totals.get(concurrency) ?? { d: Object.fromEntries(Object.keys(SERIES).map((k) => [k, 0])) as Snapshot, seconds: 0 };
    for (const k of Object.keys(SERIES) as (keyof Snapshot)[]) t.d[k] += after[k] - before[k];
    t.seconds += seconds;
    this.totals.set(concurrency, t);
  }

  get(concurrency: number): Inside | undefined {
    const t = this.totals.get(concurrency);
    if (!t) return undefined;
    const { d } = t;
    return {
      meanBatch: d.batchSum / d.batchCount,
      forwardMs: (d.computeSum / d.batchCount) * 1000,
      busyShare: d.busy / (this.instances * t.seconds),
      queueWaitMs: (d.waitSum / d.waitCount) * 1000,
      preprocessMs: (d.preSum / d.preCount) * 1000,
    };
  }
}
