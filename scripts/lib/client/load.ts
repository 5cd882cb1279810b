/**
 * `--load`: C workers send POST /predict back to back for S seconds against the given URL only,
 * every answer validated. Reports req/s, latency percentiles, failures by status and whether the
 * first request met a cold start (what one looks for after Knative scaled the service to zero).
 */
import type { HttpClient, RequestSpec } from './http.js';
import { validatePredictResponse } from './schema.js';
import { percentile } from '../stats.js';

export { percentile };

export interface LoadOptions {
  concurrency: number;
  durationS: number;
  topk: number;
  /** Called about every 250 ms with a snapshot, for the live progress line. */
  onProgress?: (p: LoadProgress) => void;
  /** Called with each successful request's latency, ms (the bench pools them over rounds). */
  onLatency?: (ms: number) => void;
}

export interface LoadProgress {
  elapsedS: number;
  ok: number;
  failed: number;
  reqPerS: number;
  p50Ms: number;
}

export interface ColdStart {
  /** The first request this client made (checks included), e.g. "GET http://…/health". */
  first_request: string;
  first_ms: number;
  steady_median_ms: number;
  ratio: number;
  detected: boolean;
}

export interface LoadReport {
  concurrency: number;
  duration_s: number;
  requests: number;
  ok: number;
  failed: number;
  req_per_s: number;
  latency_ms: { min: number; p50: number; p95: number; p99: number; max: number; mean: number };
  /** Failures keyed by HTTP status ("503") or network/validation code ("ECONNRESET", "INVALID_RESPONSE"). */
  errors: Record<string, number>;
  /** One example message per error key, so that a failure can be understood without rerunning. */
  error_examples: Record<string, string>;
  cold_start?: ColdStart;
}


/** A cold start: the first request took more than 3x the steady-state median and at least 250 ms more. */
export const COLD_START_RATIO = 3;
export const COLD_START_MIN_EXTRA_MS = 250;

export function detectColdStart(first: { what: string; ms: number }, steadyMedianMs: number): ColdStart {
  const ratio = steadyMedianMs > 0 ? first.ms / steadyMedianMs : Infinity;
  return {
    first_request: first.what,
    first_ms: round(first.ms),
    steady_median_ms: round(steadyMedianMs),
    ratio: round(ratio),
    detected: ratio > COLD_START_RATIO && first.ms - steadyMedianMs > COLD_START_MIN_EXTRA_MS,
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** `specs` are sent in turn (one request per image given), each worker taking the next. */
export async function runLoad(client: HttpClient, specs: readonly RequestSpec[], opts: LoadOptions): Promise<LoadReport> {
  if (specs.length === 0) throw new Error('runLoad: no request to send');
  let next = 0;
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const examples: Record<string, string> = {};
  let failed = 0;
  const fail = (key: string, msg: string): void => {
    failed++;
    errors[key] = (errors[key] ?? 0) + 1;
    examples[key] ??= msg;
  };
  const started = performance.now();
  const deadline = started + opts.durationS * 1000;
  const what = client.describe(specs[0]!);

  async function worker(): Promise<void> {
    while (performance.now() < deadline) {
      const spec = specs[next++ % specs.length]!;
      try {
        const res = await client.request(spec);
        if (res.status < 200 || res.status > 299) {
          fail(String(res.status), `${what} answered ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`);
          continue;
        }
        try {
          validatePredictResponse(JSON.parse(res.body.toString('utf8')), { topk: opts.topk, batchSize: 1 });
          latencies.push(res.ms);
          opts.onLatency?.(res.ms);
        } catch (err) {
          fail('INVALID_RESPONSE', (err as Error).message);
        }
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'ERROR';
        fail(code, (err as Error).message);
        // A refused connection repeats instantly: stop hammering instead of spinning.
        if (code === 'ECONNREFUSED') return;
      }
    }
  }

  const timer = opts.onProgress
    ? setInterval(() => {
        const elapsedS = (performance.now() - started) / 1000;
        const sorted = [...latencies].sort((a, b) => a - b);
        opts.onProgress!({ elapsedS, ok: latencies.length, failed, reqPerS: latencies.length / elapsedS, p50Ms: percentile(sorted, 50) });
      }, 250)
    : undefined;
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, () => worker()));
  } finally {
    if (timer) clearInterval(timer);
  }
  const elapsedS = (performance.now() - started) / 1000;
  const sorted = [...latencies].sort((a, b) => a - b);
  const mean = sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : NaN;
  const report: LoadReport = {
    concurrency: opts.concurrency,
    duration_s: round(elapsedS),
    requests: latencies.length + failed,
    ok: latencies.length,
    failed,
    req_per_s: round(latencies.length / elapsedS),
    latency_ms: {
      min: round(sorted[0] ?? NaN),
      p50: round(percentile(sorted, 50)),
      p95: round(percentile(sorted, 95)),
      p99: round(percentile(sorted, 99)),
      max: round(sorted[sorted.length - 1] ?? NaN),
      mean: round(mean),
    },
    errors,
    error_examples: examples,
  };
  // Steady state = the second half of the run, in completion order, after any warm-up.
  const steady = latencies.slice(Math.floor(latencies.length / 2)).sort((a, b) => a - b);
  if (client.first && steady.length) report.cold_start = detectColdStart(client.first, percentile(steady, 50));
  return report;
}
