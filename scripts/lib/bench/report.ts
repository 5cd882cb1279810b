/**
 * What `npm run bench` prints: one markdown table per topic (start-up, throughput, latency,
 * memory, burst, raw model) and the issue-9 targets with PASS/FAIL, from one BenchResult.
 * The same BenchResult (less the raw latencies) is what lands in bench-results/*.json.
 */
import type { Inside } from './inside.js';
import type { BurstResult, RunResult, Summary } from './load.js';
import { MAX_BATCH, type RawNumbers } from './raw-model.js';
import { MB, mb } from './rss.js';
import { median } from '../stats.js';

export interface ServerMemory {
  atReady: number;
  idleAfterWarmup: number;
  /** Highest RSS sampled while serving c = the highest concurrency. */
  peakTopConcurrency: number;
  /** Highest RSS sampled during any load run. */
  peakLoad: number;
  /** Sum of VmHWM after the load runs (lifetime peaks, start-up included). */
  hwm: number;
  idleAtEnd: number;
}

export interface PerConcurrency {
  concurrency: number;
  serve: Summary;
  baseline?: Summary;
  /** serve / baseline req/s in each round; its median is the ratio reported. */
  rpsRatios: number[];
  /** densenet-serve's own /metrics over its rounds. */
  inside: Inside | undefined;
}

export interface BenchResult {
  startedAt: string;
  seconds: number;
  loadavgStart: number[];
  loadavgEnd: number[];
  cpus: number;
  options: Record<string, unknown>;
  image: { width: number; height: number; bytes: number; body: string };
  serveInfo: unknown;
  /** Spawn -> /readyz 200, ms, one per start. */
  starts: { serve: number[]; baseline: number[] };
  memory: { serve: ServerMemory; baseline?: ServerMemory; serveMetricsRss: number };
  /** Every run, warm-up (round 0) included, without its latencies. */
  runs: (Omit<RunResult, 'latencies'> & { latencies?: undefined })[];
  perConcurrency: PerConcurrency[];
  burst: { serve?: BurstResult; baseline?: BurstResult };
  raw?: RawNumbers;
  targets: Target[];
}

export interface Target {
  target: string;
  measured: string;
  /** undefined: could not be judged in this run (e.g. --no-baseline). */
  pass: boolean | undefined;
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const x2 = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(2)}x` : '-');
const sec = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function targets(r: BenchResult, burstCount: number, burstWithinMs: number): Target[] {
  const at = (c: number) => r.perConcurrency.find((p) => p.concurrency === c);
  const noBase = 'n/a (--no-baseline)';
  const out: Target[] = [];
  const c16 = at(16);
  const rps = c16?.baseline ? median(c16.rpsRatios) : NaN;
  out.push({
    target: 'req/s at c=16 >= 1.5x baseline',
    measured: !c16 ? 'n/a (c=16 not run)' : c16.baseline ? `${f1(c16.serve.rps)} vs ${f1(c16.baseline.rps)} = ${x2(rps)}` : noBase,
    pass: c16?.baseline ? rps >= 1.5 : undefined,
  });
  const c1 = at(1);
  const p50 = c1?.baseline ? c1.serve.p50 / c1.baseline.p50 : NaN;
  out.push({
    target: 'p50 at c=1 <= 0.75x baseline',
    measured: !c1 ? 'n/a (c=1 not run)' : c1.baseline ? `${f1(c1.serve.p50)} vs ${f1(c1.baseline.p50)} ms = ${x2(p50)}` : noBase,
    pass: c1?.baseline ? p50 <= 0.75 : undefined,
  });
  const m = r.memory.serve;
  out.push({ target: 'RSS under sustained c=16 <= 450 MB', measured: c16 ? `${mb(m.peakTopConcurrency)} MB` : 'n/a (c=16 not run)', pass: c16 ? m.peakTopConcurrency <= 450 * MB : undefined });
  out.push({ target: 'RSS idle after warm-up <= 350 MB', measured: `${mb(m.idleAfterWarmup)} MB`, pass: m.idleAfterWarmup <= 350 * MB });
  const start = median(r.starts.serve);
  out.push({ target: 'start-up (spawn -> /readyz 200) <= 2 s', measured: `${sec(start)} (median of ${r.starts.serve.length})`, pass: start <= 2000 });
  const b = r.burst.serve;
  out.push({
    target: `burst: ${burstCount} at once all answered (200 or 503) within ${burstWithinMs / 1000} s`,
    measured: b ? `${b.ok} ok + ${b.rejected} 503, ${b.failed} failed, last at ${sec(b.lastMs)}` : 'n/a (--burst 0)',
    pass: b ? b.failed === 0 && b.ok + b.rejected === b.requests && b.lastMs <= burstWithinMs : undefined,
  });
  const failed = r.runs.filter((x) => x.server === 'densenet-serve').reduce((s, x) => s + x.failed, 0) + (b?.failed ?? 0);
  out.push({ target: 'no failed requests (densenet-serve, all runs)', measured: `${failed} failed`, pass: failed === 0 });
  return out;
}

export function render(r: BenchResult): string {
  const out: string[] = [];
  const base = r.memory.baseline !== undefined;
  const both = (a: number, b: number | undefined, fmt: (n: number) => string): string[] => (base ? [fmt(a), b === undefined ? '-' : fmt(b)] : [fmt(a)]);
  const servers = base ? ['densenet-serve', 'baseline'] : ['densenet-serve'];

  out.push('\nStart-up: process spawn -> first GET /readyz 200 (densenet-serve from dist/, as npm start)');
  out.push(table(['server', 'median', 'each start'], servers.map((s) => {
    const t = s === 'baseline' ? r.starts.baseline : r.starts.serve;
    return [s, sec(median(t)), t.map(sec).join(', ')];
  })));

  out.push('\nThroughput: req/s, median over rounds; ratio = median of the per-round densenet-serve / baseline ratios (min-max)');
  out.push(table(['c', ...servers.map((s) => `${s} req/s`), ...(base ? ['ratio', 'per-round'] : [])], r.perConcurrency.map((p) => [
    String(p.concurrency),
    ...both(p.serve.rps, p.baseline?.rps, f1),
    ...(base ? [x2(median(p.rpsRatios)), `${x2(Math.min(...p.rpsRatios))}-${x2(Math.max(...p.rpsRatios))}`] : []),
  ])));

  out.push('\nLatency: ms, all rounds pooled (client round trip)' + (base ? '; ratio = densenet-serve / baseline' : ''));
  const pct = (p: PerConcurrency, k: 'p50' | 'p95' | 'p99'): string[] =>
    base ? [f1(p.serve[k]), f1(p.baseline?.[k] ?? NaN), x2(p.serve[k] / (p.baseline?.[k] ?? NaN))] : [f1(p.serve[k])];
  const cols = (k: string): string[] => (base ? [`${k} serve`, `${k} base`, 'ratio'] : [k]);
  out.push(table(['c', ...cols('p50'), ...cols('p95'), ...cols('p99'), 'ok / failed'], r.perConcurrency.map((p) => [
    String(p.concurrency), ...pct(p, 'p50'), ...pct(p, 'p95'), ...pct(p, 'p99'),
    base ? `${p.serve.ok}/${p.serve.failed}, ${p.baseline?.ok ?? 0}/${p.baseline?.failed ?? 0}` : `${p.serve.ok}/${p.serve.failed}`,
  ])));

  out.push('\nInside densenet-serve during its rounds (its /metrics): mean batch, mean forward, share of the instances\' time spent in forwards, mean queue wait, mean decode');
  out.push(table(['c', 'mean batch', 'forward ms', 'instances busy', 'queue wait ms', 'decode ms'], r.perConcurrency.map((p) => {
    const i = p.inside;
    return [String(p.concurrency), ...(i ? [i.meanBatch.toFixed(2), f1(i.forwardMs), `${(i.busyShare * 100).toFixed(0)} %`, f1(i.queueWaitMs), f1(i.preprocessMs)] : ['-', '-', '-', '-', '-'])];
  })));

  const top = Math.max(...r.perConcurrency.map((p) => p.concurrency));
  out.push(`\nMemory: RSS in MB (1 MB = 10^6 bytes) of the whole process tree (gunicorn: master + worker), from /proc`);
  const mem = r.memory;
  const row = (label: string, k: keyof ServerMemory): string[] => [label, ...both(mem.serve[k], mem.baseline?.[k], mb), ...(base ? [x2(mem.serve[k] / (mem.baseline?.[k] ?? NaN))] : [])];
  out.push(table(['', ...servers, ...(base ? ['ratio'] : [])], [
    row('at ready (/readyz 200)', 'atReady'),
    row('idle after the warm-up traffic', 'idleAfterWarmup'),
    row(`peak sampled under c=${top}`, 'peakTopConcurrency'),
    row('peak sampled under any load', 'peakLoad'),
    row('VmHWM after the load runs (lifetime peak)', 'hwm'),
    row('idle after all load runs', 'idleAtEnd'),
  ]));
  out.push(`densenet-serve's own /metrics process_resident_memory_bytes after the warm-up: ${mb(mem.serveMetricsRss)} MB`);

  const bursts = [r.burst.serve, r.burst.baseline].filter((b): b is BurstResult => !!b);
  if (bursts.length) {
    out.push(`\nBurst: ${bursts[0]!.requests} requests fired at once, each allowed ${bursts[0]!.withinMs / 1000} s`);
    out.push(table(['server', '200', '503 + Retry-After', 'failed', 'last answer', 'peak RSS MB'], bursts.map((b) => [
      b.server, String(b.ok), String(b.rejected), b.failed ? `${b.failed} (${Object.entries(b.errors).map(([k, n]) => `${k}: ${n}`).join(', ')})` : '0', sec(b.lastMs), mb(b.peakRss),
    ])));
  }

  if (r.raw) out.push(renderRaw(r.raw, r.perConcurrency.find((p) => p.concurrency === top)?.serve.rps ?? NaN, r.cpus));

  out.push('\nTargets (issue 9; ratios from this run only)');
  out.push(table(['target', 'measured', 'result'], r.targets.map((t) => [t.target, t.measured, t.pass === undefined ? 'n/a' : t.pass ? 'PASS' : 'FAIL'])));
  return out.join('\n');
}

function renderRaw(raw: RawNumbers, topRps: number, cpus: number): string {
  const perInstance = (MAX_BATCH * 1000) / raw.forwardMs[MAX_BATCH]!;
  // The forwards (INSTANCES of them, THREADS cores each) and the decodes share the CPUs: per image
  // a forward costs THREADS x forward(b8)/8 ms of CPU and the decode its CPU time, on `cpus` cores.
  const cpuPerImage = (raw.threads * raw.forwardMs[MAX_BATCH]!) / MAX_BATCH + raw.preprocessCpuMs;
  const ceiling = Math.min(raw.instances * perInstance, (1000 * cpus) / cpuPerImage);
  return [
    `\nRaw model (separate process, no HTTP; ${raw.device}, one instance of ${raw.threads} thread(s); the server runs ${raw.instances})`,
    table(['preprocess ms (CPU ms)', 'forward b1', 'b4', `b${MAX_BATCH}`, 'preprocess + b1 back to back', `b${MAX_BATCH} img/s per instance`, 'CPU-bound ceiling img/s', 'densenet-serve top c / ceiling'], [[
      `${f1(raw.preprocessMs)} (${f1(raw.preprocessCpuMs)})`, f1(raw.forwardMs[1]!), f1(raw.forwardMs[4]!), f1(raw.forwardMs[MAX_BATCH]!), f1(raw.sequentialMs), f1(perInstance), f1(ceiling), x2(topRps / ceiling),
    ]]),
  ].join('\n');
}
