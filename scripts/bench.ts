/**
 * `npm run bench [-- --quick] [-- --duration 10] [-- --concurrency 1,4,16] [-- --threads N]`
 *
 * HTTP load (autocannon, in this process) against densenet-serve started here as a child
 * process (with GLIBC_TUNABLES, as in the Dockerfile), at each concurrency, batching on
 * (MAX_BATCH=8) and off (MAX_BATCH=1), JSON and multipart bodies. In the same run, in a separate
 * child (so the load generator does not share its process), the raw model numbers: preprocess
 * time and forward time at batch 1, 4 and 8. Prints req/s, p50/p95/p99 and the ratios against
 * the targets:
 *   p50 at c=1            <= 1.10 x (preprocess + forward b1)
 *   req/s at c=16 (batch) >= 0.95 x raw batched capacity (MAX_BATCH / forward(MAX_BATCH))
 * All traffic stays on 127.0.0.1 and every run is bounded in time. The machine is shared: the
 * load average is printed with the results; compare only numbers from one run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import sharp from 'sharp';
import { GLIBC_TUNABLES } from '../src/config.js';
import { median, percentile } from './lib/stats.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const MAX_BATCH = 8;

interface Args {
  quick: boolean;
  duration: number;
  concurrency: number[];
  raw: boolean;
  modelPath: string;
  /** THREADS for the server and the raw model (default: the server's default, all CPUs). */
  threads: number | undefined;
}

const USAGE = `Usage: npm run bench -- [--quick] [--duration 1..120] [--concurrency 1,4,16] [--threads N] [--model PATH]

HTTP load (autocannon) against a server this command starts on 127.0.0.1, batching on and off,
JSON and multipart bodies, with the raw model forward measured in the same run and the target ratios.
  --quick        3 s per run instead of 10
  --duration S   seconds per load run
  --concurrency  comma-separated client concurrencies (default 1,4,16)
  --threads N    THREADS for the server and the raw model (default: the server's default)
  --model PATH   model file (default MODEL_PATH or models/densenet121.pt)`;

function parseArgs(argv: string[]): Args {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    process.exit(0);
  }
  const quick = argv.includes('--quick');
  const val = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const duration = Number(val('--duration') ?? (quick ? 3 : 10));
  const concurrency = (val('--concurrency') ?? '1,4,16').split(',').map(Number);
  if (!(duration > 0 && duration <= 120) || !concurrency.every((c) => Number.isInteger(c) && c >= 1 && c <= 256)) {
    throw new Error(USAGE);
  }
  const threads = val('--threads') === undefined ? undefined : Number(val('--threads'));
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 256)) throw new Error('--threads must be an integer >= 1');
  return { quick, duration, concurrency, raw: argv.includes('--raw'), modelPath: val('--model') ?? process.env.MODEL_PATH ?? 'models/densenet121.pt', threads };
}

/** A 640×480 photo-like JPEG (smooth gradients + noise), made here: no stored fixtures. */
async function benchImage(): Promise<Buffer> {
  const w = 640;
  const h = 480;
  const px = Buffer.alloc(w * h * 3);
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const n = rnd() * 30;
      px[i] = Math.min(255, (x / w) * 200 + n);
      px[i + 1] = Math.min(255, (y / h) * 180 + n);
      px[i + 2] = Math.min(255, ((x + y) / (w + h)) * 220 + n);
    }
  }
  return sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}


interface RawNumbers {
  preprocessMs: number;
  /** CPU time (all threads of the process) per preprocessed image, sequential. */
  preprocessCpuMs: number;
  /** One image's whole path, back to back: preprocess, then forward b1 (median of the sums). */
  sequentialMs: number;
  forwardMs: Record<number, number>;
  device: string;
  threads: number;
  optimizations: string[];
}

/** Child mode (--raw): the model and preprocessing alone, nothing else in the process. */
async function rawMode(args: Args): Promise<void> {
  const { Model } = await import('../src/model.js');
  const { loadCard, cardPathFor } = await import('../src/card.js');
  const { preprocess, specFromCard, configureImageThreads } = await import('../src/preprocess.js');
  configureImageThreads();
  const card = await loadCard(cardPathFor(args.modelPath));
  const { loadConfig } = await import('../src/config.js');
  // The same thread count the server will use (THREADS, or the server's default).
  const model = await Model.load(args.modelPath, { threads: args.threads ?? loadConfig(process.env).threads });
  const sizes = [1, 4, MAX_BATCH];
  await model.warmup(sizes);
  const img = await benchImage();
  const spec = specFromCard(card);
  const pre: number[] = [];
  let tensor: Float32Array = new Float32Array(0);
  for (let i = 0; i < 10; i++) tensor = await preprocess(img, spec, { maxPixels: 40_000_000 }); // JIT, libvips
  const preN = args.quick ? 10 : 30;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < preN; i++) {
    const t0 = performance.now();
    tensor = await preprocess(img, spec, { maxPixels: 40_000_000 });
    pre.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  const preprocessCpuMs = (cpu.user + cpu.system) / 1000 / preN;
  // What one request at c=1 must do at the least: preprocess, then a b1 forward, back to back
  // (the forward runs after the decode has been through the caches, as in the server).
  const seq: number[] = [];
  for (let i = 0; i < (args.quick ? 5 : 15); i++) {
    const t0 = performance.now();
    const x = await preprocess(img, spec, { maxPixels: 40_000_000 });
    await model.forward(x, [1, 3, 224, 224]);
    seq.push(performance.now() - t0);
  }
  const forwardMs: Record<number, number> = {};
  for (const b of sizes) {
    const input = new Float32Array(b * tensor.length);
    for (let i = 0; i < b; i++) input.set(tensor, i * tensor.length);
    const ts: number[] = [];
    const reps = args.quick ? 3 : b === 1 ? 15 : 7;
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await model.forward(input, [b, 3, 224, 224]);
      ts.push(performance.now() - t0);
    }
    forwardMs[b] = median(ts);
  }
  const out: RawNumbers = { preprocessMs: median(pre), preprocessCpuMs, sequentialMs: median(seq), forwardMs, device: model.info.device, threads: model.info.threads, optimizations: model.info.optimizations };
  await model.dispose();
  process.stdout.write(`RAW ${JSON.stringify(out)}\n`);
}

function child(args: string[], env: Record<string, string>): { proc: ChildProcess; output: () => string } {
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: ROOT,
    env: { ...process.env, GLIBC_TUNABLES, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 200_000) out = out.slice(-100_000); // the server logs every request
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  return { proc, output: () => out };
}

async function measureRaw(args: Args): Promise<RawNumbers> {
  const c = child(['scripts/bench.ts', '--raw', '--model', args.modelPath, ...(args.quick ? ['--quick'] : []), ...(args.threads ? ['--threads', String(args.threads)] : [])], {});
  const [code] = (await once(c.proc, 'exit')) as [number | null];
  const line = /^RAW (.*)$/m.exec(c.output());
  if (code !== 0 || !line) throw new Error(`raw model measurement failed (exit ${code}):\n${c.output().slice(-2000)}`);
  return JSON.parse(line[1]!) as RawNumbers;
}

interface Server {
  url: string;
  stop(): Promise<void>;
}

async function startServer(env: Record<string, string>, modelPath: string): Promise<Server> {
  const c = child(['src/server/main.ts'], { HOST: '127.0.0.1', PORT: '0', MODEL_PATH: modelPath, QUEUE_LIMIT: '256', ...env });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready in 180 s:\n${c.output().slice(-2000)}`)), 180_000);
    const check = () => {
      const m = /listening at (http:\/\/127\.0\.0\.1:\d+)/i.exec(c.output());
      if (m && /"msg":"ready"/.test(c.output())) {
        clearTimeout(timer);
        c.proc.stdout!.off('data', check);
        resolve(m[1]!);
      }
    };
    c.proc.stdout!.on('data', check);
    c.proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before ready:\n${c.output().slice(-2000)}`));
    });
  });
  return {
    url,
    async stop() {
      if (c.proc.exitCode !== null) return;
      c.proc.kill('SIGTERM');
      await once(c.proc, 'exit');
    },
  };
}

interface Body {
  headers: Record<string, string>;
  body: Buffer;
}

function bodies(img: Buffer): Record<'json' | 'multipart', Body> {
  const boundary = '----densenetBench';
  const mp = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`),
    img,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return {
    json: { headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify({ image: img.toString('base64') })) },
    multipart: { headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body: mp },
  };
}

interface LoadResult {
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  ok: number;
  failed: number;
}


async function load(url: string, body: Body, connections: number, duration: number): Promise<LoadResult> {
  const times: number[] = [];
  let ok = 0;
  let failed = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const inst = autocannon(
      { url: `${url}/predict`, method: 'POST', headers: body.headers, body: body.body, connections, duration, timeout: 30 },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (status === 200) {
        ok++;
        times.push(ms);
      } else failed++;
    });
  });
  failed += result.errors + result.timeouts;
  times.sort((a, b) => a - b);
  if (ok === 0) process.stdout.write(`  (no request completed within ${duration} s at c=${connections})\n`);
  return { rps: ok / duration, p50: percentile(times, 50), p95: percentile(times, 95), p99: percentile(times, 99), ok, failed };
}

const f1 = (n: number) => n.toFixed(1);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.raw) return rawMode(args);
  const { exportModel } = await import('./export-model.js');
  await exportModel({ out: args.modelPath, log: (s: string) => process.stderr.write(`${s}\n`) });

  const started = performance.now();
  console.log(`densenet-serve bench: ${args.quick ? 'quick, ' : ''}${args.duration}s per run, concurrency ${args.concurrency.join('/')}, load avg at start ${loadavg().map(f1).join(' ')}`);
  const cpus = availableParallelism();
  if (loadavg()[0]! > cpus * 0.5) {
    console.log(
      `WARNING: this machine is busy (load ${f1(loadavg()[0]!)} on ${cpus} CPUs). With other processes on the cores, libtorch's OpenMP\n` +
        '  threads wait for each other at every layer and forwards get many times slower: numbers from this run are not representative.\n' +
        '  (On a shared box, --threads 1 degrades far less.)',
    );
  }
  // The raw numbers are taken before AND after the HTTP runs and averaged: a shared VM's speed
  // drifts over minutes (10-30 % seen here), and both halves of a ratio should see the same box.
  const showRaw = (label: string, r: RawNumbers): void =>
    console.log(
      `  ${label}: preprocess ${f1(r.preprocessMs)} ms/image (${f1(r.preprocessCpuMs)} ms CPU); forward b1 ${f1(r.forwardMs[1]!)} ms, b4 ${f1(r.forwardMs[4]!)} ms, ` +
        `b8 ${f1(r.forwardMs[MAX_BATCH]!)} ms; preprocess then forward b1, back to back ${f1(r.sequentialMs)} ms`,
    );
  console.log('raw model (separate process, no HTTP)...');
  const rawBefore = await measureRaw(args);
  console.log(`  device ${rawBefore.device}, ${rawBefore.threads} threads [${rawBefore.optimizations.join(', ')}]`);
  showRaw('before', rawBefore);

  const img = await benchImage();
  const bodyOf = bodies(img);
  const rows: { batching: string; mode: string; c: number; r: LoadResult }[] = [];
  for (const [batching, maxBatch] of [['on', MAX_BATCH], ['off', 1]] as const) {
    const server = await startServer({ MAX_BATCH: String(maxBatch), ...(args.threads ? { THREADS: String(args.threads) } : {}) }, args.modelPath);
    try {
      // Warm the HTTP paths, the JIT (main thread and preprocessing workers) and the allocator.
      await load(server.url, bodyOf.json, 16, 2);
      await load(server.url, bodyOf.multipart, 1, 1);
      for (const mode of ['json', 'multipart'] as const) {
        for (const c of args.concurrency) {
          const r = await load(server.url, bodyOf[mode], c, args.duration);
          rows.push({ batching, mode, c, r });
          console.log(`  batching ${batching.padEnd(3)} ${mode.padEnd(9)} c=${String(c).padEnd(3)} ${f1(r.rps).padStart(6)} req/s  p50 ${f1(r.p50).padStart(7)}  p95 ${f1(r.p95).padStart(7)}  p99 ${f1(r.p99).padStart(7)} ms  (${r.ok} ok, ${r.failed} failed)`);
        }
      }
    } finally {
      await server.stop();
    }
  }

  const rawAfter = await measureRaw(args);
  showRaw('raw model after the HTTP runs', rawAfter);
  const avg = (a: number, b: number) => (a + b) / 2;
  const raw: RawNumbers = {
    ...rawBefore,
    preprocessMs: avg(rawBefore.preprocessMs, rawAfter.preprocessMs),
    preprocessCpuMs: avg(rawBefore.preprocessCpuMs, rawAfter.preprocessCpuMs),
    sequentialMs: avg(rawBefore.sequentialMs, rawAfter.sequentialMs),
    forwardMs: Object.fromEntries(Object.keys(rawBefore.forwardMs).map((k) => [k, avg(rawBefore.forwardMs[Number(k)]!, rawAfter.forwardMs[Number(k)]!)])),
  };
  const drift = rawAfter.forwardMs[MAX_BATCH]! / rawBefore.forwardMs[MAX_BATCH]!;
  const capacity = (MAX_BATCH / raw.forwardMs[MAX_BATCH]!) * 1000;
  showRaw('raw model, mean of both', raw);
  console.log(`  raw capacity: b1 ${f1(1000 / raw.forwardMs[1]!)} img/s, b4 ${f1(4000 / raw.forwardMs[4]!)} img/s, b${MAX_BATCH} ${f1(capacity)} img/s (b8 forward after/before: ${drift.toFixed(2)})`);

  console.log('\n| batching | body | c | req/s | p50 ms | p95 ms | p99 ms | failed |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const { batching, mode, c, r } of rows) console.log(`| ${batching} | ${mode} | ${c} | ${f1(r.rps)} | ${f1(r.p50)} | ${f1(r.p95)} | ${f1(r.p99)} | ${r.failed} |`);

  const single = raw.preprocessMs + raw.forwardMs[1]!;
  // With THREADS covering every core, the forward and the preprocessing share the same CPUs: per
  // image the forward holds all of them for forward(b8)/8 ms and preprocessing needs
  // preprocessCpuMs more CPU time, spread over the cores. That bounds req/s on this box whatever
  // the server does (the load generator's own CPU comes on top).
  const sharedCores = raw.threads >= cpus;
  const ceiling = sharedCores ? 1000 / (raw.forwardMs[MAX_BATCH]! / MAX_BATCH + raw.preprocessCpuMs / cpus) : capacity;
  console.log(`\nTargets (raw: preprocess + forward b1 = ${f1(single)} ms, back to back ${f1(raw.sequentialMs)} ms; batched capacity ${f1(capacity)} img/s):`);
  for (const mode of ['json', 'multipart'] as const) {
    const c1 = rows.find((x) => x.batching === 'on' && x.mode === mode && x.c === 1);
    if (c1) {
      const ratio = c1.r.p50 / single;
      console.log(
        `  p50 at c=1, ${mode.padEnd(9)} = ${f1(c1.r.p50)} ms = ${ratio.toFixed(2)} x raw   (target <= 1.10: ${ratio <= 1.1 ? 'met' : 'NOT met'}; ` +
          `${(c1.r.p50 / raw.sequentialMs).toFixed(2)} x the back-to-back path)`,
      );
    }
    const cmax = Math.max(...args.concurrency);
    const hi = rows.find((x) => x.batching === 'on' && x.mode === mode && x.c === cmax);
    if (hi) {
      const ratio = hi.r.rps / capacity;
      console.log(
        `  req/s at c=${cmax}, ${mode.padEnd(9)} = ${f1(hi.r.rps)} = ${ratio.toFixed(2)} x raw batched capacity   (target >= 0.95: ${ratio >= 0.95 ? 'met' : 'NOT met'}` +
          (sharedCores ? `; ${(hi.r.rps / ceiling).toFixed(2)} x this box's CPU-bound ceiling)` : ')'),
      );
    }
  }
  if (sharedCores) {
    console.log(
      `  CPU-bound ceiling: forward ${f1(raw.forwardMs[MAX_BATCH]! / MAX_BATCH)} ms/image on all ${cpus} cores + preprocessing ${f1(raw.preprocessCpuMs)} ms CPU/image over ${cpus} cores ` +
        `= ${f1(ceiling)} img/s = ${(ceiling / capacity).toFixed(2)} x raw batched capacity`,
    );
  }
  const on16 = rows.filter((x) => x.batching === 'on' && x.c === Math.max(...args.concurrency));
  const off16 = rows.filter((x) => x.batching === 'off' && x.c === Math.max(...args.concurrency));
  for (const a of on16) {
    const b = off16.find((x) => x.mode === a.mode);
    if (b) console.log(`  batching on/off at c=${a.c}, ${a.mode.padEnd(9)}: ${(a.r.rps / b.r.rps).toFixed(2)} x req/s`);
  }
  console.log(`\nload avg at end ${loadavg().map(f1).join(' ')}; took ${f1((performance.now() - started) / 1000)} s`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
