/**
 * Load against one server: a timed run at one concurrency (the client's load loop, every answer
 * checked against the response schema) with its RSS sampled meanwhile, and the burst check.
 */
import { HttpClient, type RequestSpec } from '../client/http.js';
import { validatePredictResponse, type Prediction } from '../client/schema.js';
import { runLoad } from '../client/load.js';
import { median, percentile } from '../stats.js';
import { sampleRss } from './rss.js';
import type { Server } from './servers.js';

export interface RunResult {
  server: string;
  concurrency: number;
  round: number;
  rps: number;
  /** Wall time of the run, in-flight requests at the deadline included. */
  seconds: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  errorExamples: Record<string, string>;
  /** Every successful request's client-side latency, ms, ascending. */
  latencies: number[];
  /** Highest RSS of the server's process tree sampled during the run, bytes. */
  peakRss: number;
}

export async function loadRun(server: Server, spec: RequestSpec, concurrency: number, durationS: number, round: number): Promise<RunResult> {
  const client = new HttpClient({ baseUrl: server.url, timeoutMs: 30_000, maxSockets: concurrency });
  const sampler = sampleRss(server.pid);
  const latencies: number[] = [];
  try {
    const r = await runLoad(client, [spec], { concurrency, durationS, topk: 5, onLatency: (ms) => latencies.push(ms) });
    return {
      server: server.name,
      concurrency,
      round,
      rps: r.req_per_s,
      seconds: r.duration_s,
      ok: r.ok,
      failed: r.failed,
      errors: r.errors,
      errorExamples: r.error_examples,
      latencies: latencies.sort((a, b) => a - b),
      peakRss: sampler.stop(),
    };
  } finally {
    sampler.stop();
    client.close();
  }
}

export interface BurstResult {
  server: string;
  requests: number;
  ok: number;
  /** 503 with a Retry-After header: an answer, not a failure. */
  rejected: number;
  failed: number;
  errors: Record<string, number>;
  /** Time from firing to the last answer (or the deadline), ms. */
  lastMs: number;
  withinMs: number;
  peakRss: number;
}

/** `count` requests fired at once on fresh connections; each must be answered within `withinMs`. */
export async function burst(server: Server, spec: RequestSpec, count: number, withinMs: number): Promise<BurstResult> {
  const client = new HttpClient({ baseUrl: server.url, timeoutMs: withinMs, maxSockets: count });
  const sampler = sampleRss(server.pid);
  const errors: Record<string, number> = {};
  const fail = (key: string): void => void (errors[key] = (errors[key] ?? 0) + 1);
  let ok = 0;
  let rejected = 0;
  let lastMs = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: count }, async () => {
      try {
        const res = await client.request(spec);
        if (res.status === 200) ok++;
        else if (res.status === 503 && res.headers['retry-after']) rejected++;
        else fail(res.status === 503 ? '503 without Retry-After' : String(res.status));
      } catch (err) {
        fail((err as { code?: string }).code ?? 'ERROR');
      }
      lastMs = Math.max(lastMs, performance.now() - t0);
    }),
  );
  client.close();
  const failed = Object.values(errors).reduce((a, b) => a + b, 0);
  return { server: server.name, requests: count, ok, rejected, failed, errors, lastMs, withinMs, peakRss: sampler.stop() };
}

export interface Summary {
  /** Median of the rounds' req/s. */
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  ok: number;
  failed: number;
  peakRss: number;
}

/** One server at one concurrency over all rounds: percentiles of all latencies pooled. */
export function summarize(runs: readonly RunResult[]): Summary {
  const all = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  return {
    rps: median(runs.map((r) => r.rps)),
    p50: percentile(all, 50),
    p95: percentile(all, 95),
    p99: percentile(all, 99),
    ok: runs.reduce((s, r) => s + r.ok, 0),
    failed: runs.reduce((s, r) => s + r.failed, 0),
    peakRss: Math.max(...runs.map((r) => r.peakRss)),
  };
}

/** One request's validated top-5: both servers must classify the bench image alike. */
export async function topk(server: Server, spec: RequestSpec): Promise<Prediction[]> {
  const client = new HttpClient({ baseUrl: server.url, timeoutMs: 60_000 });
  try {
    const res = await client.request(spec);
    if (res.status !== 200) throw new Error(`${server.name} answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    return validatePredictResponse(JSON.parse(res.body.toString('utf8')), { topk: 5, batchSize: 1 }).predictions;
  } finally {
    client.close();
  }
}
