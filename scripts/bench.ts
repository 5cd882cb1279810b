/**
 * `npm run bench`: densenet-serve against a plain Python server (scripts/baseline/server.py
 * under gunicorn) on the same model file, the same image and the same body format, both started
 * here on 127.0.0.1 and measured in one run, in alternating rounds. Prints start-up, req/s and
 * latency with ratios, memory, a burst check and the targets of issue 9 with PASS/FAIL, and
 * writes the numbers to bench-results/. Method: docs/benchmarks.md.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { predictRequest } from './lib/client/predict.js';
import { benchImage } from './lib/bench/image.js';
import { burst, loadRun, summarize, topk, type BurstResult, type RunResult } from './lib/bench/load.js';
import { measureRaw, type RawNumbers } from './lib/bench/raw-model.js';
import { HELP, UsageError, options, type Options } from './lib/bench/options.js';
import { render, targets, type BenchResult, type PerConcurrency, type ServerMemory } from './lib/bench/report.js';
import { mb, treeMemory, waitIdle } from './lib/bench/rss.js';
import { InsideTracker, snapshot } from './lib/bench/inside.js';
import { ROOT, baselinePython, ensureBuilt, startBaseline, startServe, type Server } from './lib/bench/servers.js';

const BURST_WITHIN_MS = 5000;
const progress = (s: string): boolean => process.stderr.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const f1 = (n: number): string => n.toFixed(1);

async function metricsRss(s: Server): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  return Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)?.[1] ?? NaN);
}

async function main(): Promise<void> {
  let o: Options | undefined;
  try {
    o = options(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`npm run bench: ${err.message} (see --help)\n`);
    process.exit(2);
  }
  if (!o) return void process.stdout.write(HELP);
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const { exportModel } = await import('./export-model.js');
  await exportModel({ out: o.model, log: progress });
  await ensureBuilt(progress);
  const python = o.baseline ? await baselinePython() : undefined;
  const cpus = availableParallelism();
  const load0 = loadavg();
  console.log(`densenet-serve bench: ${o.body} bodies, ${o.width}x${o.height} JPEG, ${o.duration} s x ${o.rounds} rounds at c=${o.concurrency.join('/')}, load avg at start ${load0.map(f1).join(' ')} (${cpus} CPUs)`);
  if (load0[0]! > cpus * 0.5) {
    console.log(
      `WARNING: the machine is busy (load ${f1(load0[0]!)} on ${cpus} CPUs): absolute numbers are not representative. Other processes on the\n` +
        '  cores hurt an OpenMP team of several threads (THREADS > 1) far more than 1-thread forwards (the baseline\'s).',
    );
  }

  let raw: RawNumbers | undefined;
  if (o.rawModel) {
    progress('raw model (separate process)...');
    raw = await measureRaw({ modelPath: o.model, quick: o.quick, width: o.width, height: o.height }, { ...process.env, ...o.env });
  }

  const img = await benchImage(o.width, o.height);
  const spec = predictRequest([{ name: 'bench.jpg', data: img, mime: 'image/jpeg' }], o.body, 5);
  const starts = { serve: [] as number[], baseline: [] as number[] };
  const atReady = { serve: 0, baseline: 0 };
  let serve: Server | undefined;
  let base: Server | undefined;
  const stopAll = async (): Promise<void> => {
    await Promise.all([serve?.stop(), base?.stop()]);
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  try {
    // Cold starts alternate too; the last pair stays up for the load.
    for (let i = 0; i < o.starts; i++) {
      await serve?.stop();
      serve = await startServe(o.model, o.env);
      starts.serve.push(serve.startMs);
      atReady.serve = treeMemory(serve.pid).rss;
      // Nothing else runs while a server starts or settles (background warm-up), so each start sees a quiet box.
      const settle = await waitIdle(serve.pid);
      progress(`start ${i + 1}: densenet-serve ready in ${f1(serve.startMs)} ms, ${mb(atReady.serve)} MB; idle ${f1(settle)} ms later`);
      if (python) {
        await base?.stop();
        base = await startBaseline(python, o.model);
        starts.baseline.push(base.startMs);
        atReady.baseline = treeMemory(base.pid).rss;
        const settleBase = await waitIdle(base.pid);
        progress(`start ${i + 1}: baseline ready in ${f1(base.startMs)} ms, ${mb(atReady.baseline)} MB; idle ${f1(settleBase)} ms later`);
      }
    }
    const a = serve!;
    const servers = base ? [a, base] : [a];
    const serveInfo = await (await fetch(`${a.url}/`)).json();
    const m = (serveInfo as { model?: Record<string, unknown> }).model ?? {};
    console.log(`densenet-serve: ${m.device}, ${m.precision}, ${m.instances ?? 1} instance(s) x ${m.threads_per_instance ?? m.threads} thread(s), [${String(m.optimizations)}]${Object.keys(o.env).length ? `, env ${JSON.stringify(o.env)}` : ''}`);
    if (base) {
      console.log(`baseline: ${python} -m gunicorn -w 1 --threads 4 server:app (scripts/baseline/server.py)`);
      // Same model, same image: the two must agree (to the one grey level the resamplers may differ by).
      const [x, y] = [await topk(a, spec), await topk(base, spec)];
      const same = x.filter((p) => y.some((q) => q.class_id === p.class_id)).length;
      const diff = Math.max(...x.map((p) => Math.abs(p.confidence - (y.find((q) => q.class_id === p.class_id)?.confidence ?? 0))));
      console.log(`same answer: top-1 ${x[0]!.class_id === y[0]!.class_id ? 'equal' : `DIFFERS (${x[0]!.class_id} vs ${y[0]!.class_id})`}, top-5 overlap ${same}/5, largest confidence difference ${diff.toFixed(4)}`);
    }

    const runs: RunResult[] = [];
    const top = Math.max(...o.concurrency);
    const inside = new InsideTracker(Number(m.instances ?? 1));
    const once = async (s: Server, c: number, d: number, round: number): Promise<RunResult> => {
      const tracked = s === a && round > 0;
      const before = tracked ? await snapshot(a) : undefined;
      const r = await loadRun(s, spec, c, d, round);
      if (before) inside.add(c, before, await snapshot(a), r.seconds);
      runs.push(r);
      const errs = Object.keys(r.errors).length ? ` ${JSON.stringify(r.errors)} e.g. ${Object.values(r.errorExamples)[0]}` : '';
      progress(`  ${round ? `round ${round}` : 'warm-up'} c=${c} ${s.name.padEnd(14)} ${f1(r.rps).padStart(6)} req/s  ${r.ok} ok ${r.failed} failed  peak ${mb(r.peakRss)} MB${errs}`);
      return r;
    };
    // Warm-up traffic (JIT, allocator, the baseline's profiling executor), then idle.
    for (const s of servers) {
      await once(s, top, o.quick ? 2 : 4, 0);
      await once(s, 1, 1, 0);
    }
    await sleep(2000);
    const idle = servers.map((s) => treeMemory(s.pid).rss);
    const serveMetricsRss = await metricsRss(a);

    const perConcurrency: PerConcurrency[] = [];
    for (const c of o.concurrency) {
      const mine: RunResult[][] = [[], []];
      for (let round = 1; round <= o.rounds; round++) {
        // A B, then B A: a drift of the box's speed within a pair cancels over two rounds.
        const order = round % 2 ? [0, 1] : [1, 0];
        for (const i of order) if (servers[i]) mine[i]!.push(await once(servers[i]!, c, o.duration, round));
      }
      perConcurrency.push({
        concurrency: c,
        inside: inside.get(c),
        serve: summarize(mine[0]!),
        ...(base ? { baseline: summarize(mine[1]!) } : {}),
        rpsRatios: base ? mine[0]!.map((r, i) => r.rps / mine[1]![i]!.rps) : [],
      });
    }
    await sleep(2000);
    const memoryOf = (s: Server, i: number): ServerMemory => {
      const mine = runs.filter((r) => r.server === s.name && r.round > 0);
      const now = treeMemory(s.pid);
      return {
        atReady: i === 0 ? atReady.serve : atReady.baseline,
        idleAfterWarmup: idle[i]!,
        peakTopConcurrency: Math.max(...mine.filter((r) => r.concurrency === top).map((r) => r.peakRss)),
        peakLoad: Math.max(...mine.map((r) => r.peakRss)),
        hwm: now.hwm,
        idleAtEnd: now.rss,
      };
    };
    const memory = { serve: memoryOf(a, 0), ...(base ? { baseline: memoryOf(base, 1) } : {}), serveMetricsRss };

    const bursts: { serve?: BurstResult; baseline?: BurstResult } = {};
    if (o.burst > 0) {
      bursts.serve = await burst(a, spec, o.burst, BURST_WITHIN_MS);
      progress(`  burst densenet-serve: ${bursts.serve.ok} ok, ${bursts.serve.rejected} 503, ${bursts.serve.failed} failed, last ${f1(bursts.serve.lastMs)} ms`);
      if (base) {
        bursts.baseline = await burst(base, spec, o.burst, BURST_WITHIN_MS);
        progress(`  burst baseline: ${bursts.baseline.ok} ok, ${bursts.baseline.rejected} 503, ${bursts.baseline.failed} failed, last ${f1(bursts.baseline.lastMs)} ms`);
      }
    }
    await stopAll();

    const result: BenchResult = {
      startedAt,
      seconds: (performance.now() - started) / 1000,
      loadavgStart: load0,
      loadavgEnd: loadavg(),
      cpus,
      options: { ...o },
      image: { width: o.width, height: o.height, bytes: img.length, body: o.body },
      serveInfo,
      starts,
      memory,
      runs: runs.map((r) => ({ ...r, latencies: undefined })),
      perConcurrency,
      burst: bursts,
      ...(raw ? { raw } : {}),
      targets: [],
    };
    result.targets = targets(result, o.burst, BURST_WITHIN_MS);
    console.log(render(result));
    console.log(`\nload avg at start ${load0.map(f1).join(' ')}, at end ${result.loadavgEnd.map(f1).join(' ')}; took ${f1(result.seconds)} s`);
    const dir = join(ROOT, 'bench-results');
    await mkdir(dir, { recursive: true });
    const file = join(dir, `bench-${startedAt.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`results: ${file}`);
  } finally {
    await stopAll();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
