/** Human-readable output of the client: check lines, a top-k table per image, the load summary. */
import type { ImageResult } from './predict.js';
import type { LoadProgress, LoadReport } from './load.js';

export interface CheckResult {
  path: string;
  status: number;
  ms: number;
  body: unknown;
}

const fmtMs = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

/** Reads a field that the info document may hold at the top level or under `model`. */
export function infoField(info: unknown, ...keys: string[]): string | undefined {
  if (typeof info !== 'object' || info === null) return undefined;
  const o = info as Record<string, unknown>;
  const model = typeof o.model === 'object' && o.model !== null ? (o.model as Record<string, unknown>) : {};
  for (const k of keys) {
    for (const src of [o, model]) {
      const v = src[k];
      if (typeof v === 'string' || typeof v === 'number') return String(v);
    }
  }
  return undefined;
}

export function formatChecks(url: string, checks: readonly CheckResult[], info: unknown): string {
  const lines = [`densenet-serve at ${url}`];
  for (const c of checks) lines.push(`  GET ${c.path.padEnd(8)} ${c.status}  ${fmtMs(c.ms).padStart(9)}`);
  const parts = [
    ['model', infoField(info, 'variant', 'model_variant', 'name')],
    ['weights', infoField(info, 'weights')],
    ['device', infoField(info, 'device')],
    ['libtorch', infoField(info, 'libtorch_version', 'torch_version')],
    ['threads', infoField(info, 'threads')],
  ].filter((p): p is [string, string] => p[1] !== undefined);
  if (parts.length) lines.push(`  ${parts.map(([k, v]) => `${k}: ${v}`).join(', ')}`);
  const weights = infoField(info, 'weights');
  if (weights && /random/i.test(weights)) {
    lines.push('  note: random-init weights: the classes below are not meaningful (see README, "Weights").');
  }
  return lines.join('\n');
}

export function formatResults(results: readonly ImageResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    out.push('');
    if (r.error) {
      out.push(`${r.image}: error ${r.error.code}: ${r.error.message}`);
      continue;
    }
    const resp = r.response!;
    out.push(
      `${r.image}  latency ${fmtMs(resp.latency_ms)} (server), ${fmtMs(r.client_ms)} (round trip)  batch_size ${resp.batch_size}  ${resp.model_variant}`,
    );
    const nameW = Math.max(10, ...resp.predictions.map((p) => p.class_name.length));
    out.push(`  ${'#'.padStart(3)}  ${'class_id'.padStart(8)}  ${'class_name'.padEnd(nameW)}  confidence`);
    resp.predictions.forEach((p, i) => {
      const bar = '█'.repeat(Math.round(p.confidence * 20));
      out.push(`  ${String(i + 1).padStart(3)}  ${String(p.class_id).padStart(8)}  ${p.class_name.padEnd(nameW)}  ${p.confidence.toFixed(4).padStart(10)} ${bar}`);
    });
  }
  return out.join('\n');
}

export function formatProgress(p: LoadProgress): string {
  return `  ${p.elapsedS.toFixed(1).padStart(5)} s  ${String(p.ok).padStart(6)} ok  ${String(p.failed).padStart(4)} failed  ${p.reqPerS.toFixed(1).padStart(7)} req/s  p50 ${Number.isNaN(p.p50Ms) ? '-' : fmtMs(p.p50Ms)}`;
}

export function formatLoad(r: LoadReport): string {
  const l = r.latency_ms;
  const lines = [
    '',
    `load: ${r.requests} requests in ${r.duration_s.toFixed(1)} s at concurrency ${r.concurrency}: ${r.ok} ok, ${r.failed} failed`,
    `  throughput  ${r.req_per_s.toFixed(2)} req/s`,
    `  latency     p50 ${fmtMs(l.p50)}  p95 ${fmtMs(l.p95)}  p99 ${fmtMs(l.p99)}  (min ${fmtMs(l.min)}, max ${fmtMs(l.max)}, mean ${fmtMs(l.mean)})`,
  ];
  const errs = Object.entries(r.errors);
  lines.push(`  errors      ${errs.length ? errs.map(([k, n]) => `${k}: ${n}`).join(', ') : 'none'}`);
  for (const [k, msg] of Object.entries(r.error_examples)) lines.push(`    e.g. ${k}: ${msg}`);
  if (r.cold_start) {
    const c = r.cold_start;
    lines.push(
      `  cold start  ${c.detected ? 'YES' : 'no'}: first request (${c.first_request}) ${fmtMs(c.first_ms)} vs steady-state median ${fmtMs(c.steady_median_ms)} (${c.ratio.toFixed(1)}x)`,
    );
  }
  return lines.join('\n');
}
