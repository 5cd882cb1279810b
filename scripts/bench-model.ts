/**
 * `npm run bench:model [-- --quick]`: the model alone (no HTTP), paired in one run.
 *
 *  1. addon vs plain C++ libtorch loop (build/Release/densenet_bench) vs Python torch, b1 and b8,
 *     fp32 and bf16, same threads and the same optimisations (the DenseNet executor; Python:
 *     channels-last weights + input, profiling executor off). Target: addon <= 1.03x the C++ loop.
 *     fp32 also: the C++ loop on the plain graph (--no-dense-executor) and, when the optional
 *     devDependency onnxruntime-node is installed, onnxruntime on the same weights exported to
 *     ONNX (models/export.py --onnx-from), same threads. Targets: addon <= 1.0x onnxruntime at
 *     b8, <= 1.1x at b1.
 *  2. Each optimisation step's effect, with the C++ driver: traced baseline -> freeze ->
 *     channels-last -> profiling executor off -> DenseNet executor (the default), and the
 *     alternatives that lost; each step next to the previous one.
 *  3. --profile: the executor's per-step times (densenet_bench --profile-ops) and the torch
 *     profiler's op shares for the plain graph in Python, b1 and b8.
 * --cpu compares process CPU time per forward instead of wall time, with 1 thread by default:
 * on a machine shared with other jobs that measures the work itself, not the scheduler.
 *
 * Pairing: every contender is one long-lived process (the addon and onnxruntime are this
 * process), loaded once; rounds alternate between them in rotating order, and each contender's
 * first forward in a round is not timed (another runtime's threads may still be spinning).
 * Printed: medians, and ratios as the median of per-round ratios (robust to load drifting during
 * the run). Numbers from different runs are not comparable on a noisy VM
 * (docs/design.md#measuring, docs/forward.md#measuring).
 *
 * Allocator: glibc malloc's page faults dominate timing noise (docs/design.md#allocator-settings), so this
 * script re-executes itself with GLIBC_TUNABLES (the value the server uses) unless it is already
 * set, and passes it to every child. --no-tunables keeps the environment as it is.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { GLIBC_TUNABLES } from '../src/config.js';
import { cpuHasAvx512Bf16 } from '../src/device.js';
import { Model, type LoadOptions } from '../src/model.js';
import { UsageError, defineCli, optInt, str } from './lib/args.js';
import { describeFailure, runMain } from './lib/cli.js';
import { formatCommand, run } from './lib/exec.js';
import { findTorchPython } from './lib/python.js';
import { median } from './lib/stats.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DRIVER = join(ROOT, 'build', 'Release', 'densenet_bench');
const TORCH_PY = join(ROOT, 'scripts', 'torch_forward.py');
const EXPORT_PY = join(ROOT, 'models', 'export.py');

const CLI = defineCli({
  name: 'bench:model',
  summary:
    'The model alone, paired in one run: the addon, the plain C++ driver (plain graph and DenseNet executor), ' +
    'Python torch and onnxruntime-node, rounds alternating; then each optimisation step against the previous one.',
  options: {
    quick: { type: 'boolean', help: 'fewer rounds (4)' },
    model: { type: 'string', help: 'TorchScript model file', default: join(ROOT, 'models', 'densenet121.pt'), valueName: 'file' },
    threads: { type: 'string', help: 'intra-op threads for every contender (default: all CPUs; 1 with --cpu)', valueName: 'n' },
    rounds: { type: 'string', help: 'rounds (default 12, 4 with --quick)', valueName: 'n' },
    batches: { type: 'string', help: 'comma-separated batch sizes', default: '1,8', valueName: 'list' },
    'no-python': { type: 'boolean', help: 'leave Python torch out' },
    'no-onnx': { type: 'boolean', help: 'leave onnxruntime-node out' },
    onnx: { type: 'string', help: 'an ONNX export of the same model (default: made with models/export.py --onnx-from)', valueName: 'file' },
    'no-steps': { type: 'boolean', help: 'skip the optimisation steps' },
    'steps-only': { type: 'boolean', help: 'only the optimisation steps' },
    'no-tunables': { type: 'boolean', help: 'keep the environment as it is (no GLIBC_TUNABLES)' },
    profile: { type: 'boolean', help: 'also print the op profiles (torch profiler, executor steps)' },
    cpu: { type: 'boolean', help: 'compare process CPU time per forward instead of wall time (robust to a busy machine)' },
    'serve-onnx': { type: 'string', help: '(internal) serve onnxruntime forwards on stdin for the parent run', valueName: 'file' },
  },
});

const parsed = (() => {
  try {
    return CLI.parse(process.argv.slice(2));
  } catch (err) {
    const f = describeFailure(err);
    process.stderr.write(`${CLI.name}: ${f.line}\n`);
    process.exit(f.exitCode);
  }
})();
if (!parsed) process.exit(0);
const opt = parsed.values as Record<string, string | boolean | undefined>;
const usage = (() => {
  try {
    const batchList = str(parsed, 'batches').split(',');
    if (!batchList.every((b) => /^\d+$/.test(b) && Number(b) >= 1 && Number(b) <= 256)) {
      throw new UsageError(`--batches must be a comma-separated list of integers between 1 and 256, got '${str(parsed, 'batches')}'`);
    }
    return { threads: optInt(parsed, 'threads', 1, 1024), rounds: optInt(parsed, 'rounds', 1, 1000), batches: batchList.map(Number) };
  } catch (err) {
    const f = describeFailure(err);
    process.stderr.write(`${CLI.name}: ${f.line}\n`);
    process.exit(f.exitCode);
  }
})();

// GLIBC_TUNABLES only acts at process start: re-execute once with it set.
if (!opt['no-tunables'] && process.env.GLIBC_TUNABLES === undefined) {
  process.stderr.write(`GLIBC_TUNABLES=${GLIBC_TUNABLES} (set for this benchmark and its children; --no-tunables to skip)\n`);
  const r = await run(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    inherit: true,
    reject: false,
    quiet: true,
    env: { ...process.env, GLIBC_TUNABLES },
  });
  process.exit(r.exitCode);
}

const threads = usage.threads ?? (opt.cpu ? 1 : availableParallelism());
/** What a runner reports per forward: wall-clock ms, or (--cpu) the process's CPU ms. */
const metric = opt.cpu ? 'cpu' : 'wall';
const batches = usage.batches;
const rounds = usage.rounds ?? (opt.quick ? 4 : 12);
const modelPath = resolve(String(opt.model));
const childEnv = { ...process.env };

/** One contender: runs `iters` forwards at batch `b`, returns ms per forward. */
interface Runner {
  name: string;
  forward(b: number, iters: number): Promise<number[]>;
  close(): Promise<void>;
}

/** A long-lived child speaking "forward B ITERS" -> "TIMES ..." (densenet_bench --serve, torch_forward.py serve). */
async function lineRunner(name: string, file: string, args: string[]): Promise<Runner> {
  process.stderr.write(`$ ${formatCommand(file, args)}\n`);
  // Interactive stdin/stdout for the whole run, which exec.ts run() (one-shot) cannot do.
  const child: ChildProcessWithoutNullStreams = spawn(file, args, { env: childEnv, stdio: 'pipe' });
  let buf = '';
  let stderr = '';
  const waiting: ((line: string) => void)[] = [];
  const lines: string[] = [];
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  const exited = new Promise<number>((res) => child.on('close', (code) => res(code ?? 1)));
  const next = (): Promise<string> =>
    lines.length
      ? Promise.resolve(lines.shift()!)
      : Promise.race([
          new Promise<string>((res) => waiting.push(res)),
          exited.then((code) => {
            throw new Error(`${name} exited (code ${code}): ${stderr.trim().split('\n').slice(-5).join('\n')}`);
          }),
        ]);
  for (;;) {
    const line = await next();
    if (line.startsWith('INFO')) process.stderr.write(`  ${name}: ${line}\n`);
    if (line === 'READY') break;
  }
  return {
    name,
    async forward(b, iters) {
      child.stdin.write(`forward ${b} ${iters}\n`);
      const line = await next();
      if (!line.startsWith('TIMES')) throw new Error(`${name}: unexpected answer ${line}`);
      const [wall, cpu] = line.slice('TIMES '.length).split(' CPU ');
      return (metric === 'cpu' ? cpu! : wall!).split(' ').map(Number);
    },
    async close() {
      child.stdin.write('quit\n');
      child.stdin.end();
      await exited;
    },
  };
}

interface DriverOptions {
  freeze?: boolean;
  channelsLast?: boolean;
  ofi?: boolean;
  profiling?: boolean;
  precision?: string;
  /** The DenseNet executor (default on, as in the engine). */
  dense?: boolean;
}

function driverArgs(o: DriverOptions, model = modelPath) {
  const a = ['--model', model, '--threads', String(threads), '--precision', o.precision ?? 'fp32', '--serve'];
  if (o.dense === false) a.push('--no-dense-executor');
  if (o.freeze === false) a.push('--no-freeze');
  if (o.channelsLast === false) a.push('--no-channels-last');
  if (o.ofi) a.push('--optimize-for-inference');
  if (o.profiling) a.push('--profiling-executor');
  return a;
}

/** ms per call of f (wall clock, or this process's CPU time with --cpu). */
async function timed(iters: number, f: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await f();
    const c = process.cpuUsage(c0);
    times.push(metric === 'cpu' ? (c.user + c.system) / 1000 : performance.now() - t0);
  }
  return times;
}

/** The same random input per batch size for every in-process runner. */
const inputs = new Map<number, Float32Array>();
function inputFor(b: number): Float32Array {
  let x = inputs.get(b);
  if (!x) {
    x = new Float32Array(b * 3 * 224 * 224).map(() => Math.random() * 4 - 2);
    inputs.set(b, x);
  }
  return x;
}

async function addonRunner(name: string, options: LoadOptions): Promise<Runner & { model: Model }> {
  const m = await Model.load(modelPath, { threads, ...options });
  process.stderr.write(`  ${name}: ${m.info.device} threads=${m.info.threads} ${m.info.optimizations.join(',')}\n`);
  return {
    name,
    model: m,
    async forward(b, iters) {
      const x = inputFor(b);
      return timed(iters, () => m.forward(x, [b, 3, 224, 224]));
    },
    async close() {
      void m.dispose();
    },
  };
}

/**
 * onnxruntime-node on the same weights (exported to ONNX by models/export.py), same threads,
 * in this process. Undefined, with the reason printed, when the package or Python is missing.
 */
type Ort = typeof import('onnxruntime-node');

async function ortSession(ort: Ort, file: string) {
  return ort.InferenceSession.create(await readFile(file), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

/**
 * onnxruntime-node on the same weights (exported to ONNX by models/export.py), same threads, in
 * a child process like the other contenders (in this process its thread pool would share the
 * addon's cores between rounds). Undefined, with the reason printed, when the package or
 * Python is missing.
 */
async function ortRunner(python: string | undefined, dir: string, reference: Model): Promise<Runner | undefined> {
  if (opt['no-onnx']) return undefined;
  let ort: Ort;
  try {
    ort = await import('onnxruntime-node');
  } catch {
    console.log('onnxruntime-node is not installed (optional devDependency): onnxruntime comparison skipped');
    return undefined;
  }
  const onnx = typeof opt.onnx === 'string' ? resolve(opt.onnx) : join(dir, 'densenet.onnx');
  if (!opt.onnx) {
    if (!python) {
      console.log('no Python with torch to export the ONNX file (or pass --onnx FILE): onnxruntime comparison skipped');
      return undefined;
    }
    await run(python, [EXPORT_PY, '--onnx-from', modelPath, '--out', onnx], { quiet: true });
  }
  // Same weights: onnxruntime's logits match the addon's (checked here once, then released).
  const session = await ortSession(ort, onnx);
  const x = inputFor(1);
  const theirs = (await session.run({ input: new ort.Tensor('float32', x, [1, 3, 224, 224]) })).logits!.data as Float32Array;
  await session.release();
  const ours = await reference.forward(x, [1, 3, 224, 224]);
  let diff = 0;
  for (let i = 0; i < theirs.length; i++) diff = Math.max(diff, Math.abs(theirs[i]! - ours.data[i]!));
  process.stderr.write(`  onnxruntime-node ${ort.env.versions.common}: opset 13, ${threads} intra-op threads; max abs diff vs addon ${diff.toExponential(2)}\n`);
  if (diff > 1e-3) throw new Error(`onnxruntime's logits differ from the addon's by ${diff}: not the same model`);
  const self = fileURLToPath(import.meta.url);
  return lineRunner('ort', process.execPath, [...process.execArgv, self, '--serve-onnx', onnx, '--threads', String(threads), ...(opt.cpu ? ['--cpu'] : [])]);
}

/** --serve-onnx FILE: this script as onnxruntime's long-lived contender (the line protocol of densenet_bench --serve). */
async function serveOnnx(file: string): Promise<void> {
  const ort = await import('onnxruntime-node');
  const session = await ortSession(ort, file);
  process.stdout.write(`INFO onnxruntime-node ${ort.env.versions.common} intra-op threads=${threads}\nREADY\n`);
  for await (const line of createInterface({ input: process.stdin })) {
    const [cmd, b, n] = line.split(' ');
    if (cmd === 'quit') break;
    if (cmd !== 'forward') {
      process.stdout.write('ERROR unknown command\n');
      continue;
    }
    const batch = Number(b);
    const x = new ort.Tensor('float32', inputFor(batch), [batch, 3, 224, 224]);
    const wall: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < Number(n); i++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await session.run({ input: x });
      wall.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    }
    process.stdout.write(`TIMES ${wall.map((v) => v.toFixed(3)).join(' ')} CPU ${cpu.map((v) => v.toFixed(3)).join(' ')}\n`);
  }
  await session.release();
}

interface Paired {
  /** Median ms per runner over all rounds. */
  median: Map<string, number>;
  /** Median over rounds of (a's time / b's time) in the same round: robust to load drifting between rounds. */
  ratio(a: string, b: string): number;
}

/** Alternating rounds over the runners (rotating order). */
async function paired(runners: Runner[], b: number): Promise<Paired> {
  const per = b === 1 ? 3 : 1;
  for (const r of runners) await r.forward(b, b === 1 ? 3 : 2); // warm-up per shape
  const rounds_ = new Map<string, number[]>(runners.map((r) => [r.name, []])); // per-round medians
  const all = new Map<string, number[]>(runners.map((r) => [r.name, []]));
  for (let round = 0; round < rounds; round++) {
    const order = runners.map((_, i) => runners[(i + round) % runners.length]!);
    for (const r of order) {
      const t = (await r.forward(b, per + 1)).slice(1);
      all.get(r.name)!.push(...t);
      rounds_.get(r.name)!.push(median(t));
    }
  }
  return {
    median: new Map([...all].map(([k, v]) => [k, median(v)])),
    ratio: (a, c) => median(rounds_.get(a)!.map((x, i) => x / rounds_.get(c)![i]!)),
  };
}

const fmt = (ms: number) => `${ms.toFixed(1).padStart(7)} ms`;
const ratio = (r: number) => `${r.toFixed(2)}x`;

async function main(): Promise<void> {
  if (!existsSync(modelPath)) throw new Error(`${modelPath} not found: run \`npm run export-model\``);
  if (!existsSync(DRIVER)) throw new Error(`${DRIVER} not found: run \`npm run build:native\``);
  const python = opt['no-python'] ? undefined : await findTorchPython();
  const precisions = cpuHasAvx512Bf16() ? (['fp32', 'bf16'] as const) : (['fp32'] as const);
  console.log(
    `bench:model  model=${modelPath}  threads=${threads}  rounds=${rounds}  measure=${metric === 'cpu' ? 'process CPU ms per forward' : 'wall ms'}  GLIBC_TUNABLES=${process.env.GLIBC_TUNABLES ?? '(unset)'}  ` +
      `OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? '(unset)'}`,
  );
  if (precisions.length === 1) console.log('bf16 skipped: this CPU lacks avx512_bf16');

  const dir = await mkdtemp(join(tmpdir(), 'bench-model-'));
  const summary: string[] = [];
  try {
    for (const precision of opt['steps-only'] ? [] : precisions) {
      const addon = await addonRunner('addon', { precision });
      const runners: Runner[] = [addon, await lineRunner('c++', DRIVER, driverArgs({ precision }))];
      const fp32 = precision === 'fp32';
      if (fp32) runners.push(await lineRunner('c++plain', DRIVER, driverArgs({ dense: false })));
      if (python) {
        const pyArgs = [TORCH_PY, 'serve', '--model', modelPath, '--threads', String(threads), '--channels-last', '--no-profiling', '--precision', precision];
        runners.push(await lineRunner('python', python, pyArgs));
      }
      const ort = fp32 ? await ortRunner(python, dir, addon.model) : undefined;
      if (ort) runners.push(ort);
      for (const b of batches) {
        const p = await paired(runners, b);
        const m = p.median;
        const col = (name: string, label = name) => (m.has(name) ? `  ${label} ${fmt(m.get(name)!)}` : '');
        const rat = (a: string, c: string) => (m.has(a) && m.has(c) ? `  ${a}/${c} ${ratio(p.ratio(a, c))}` : '');
        const line =
          `${precision} b${b}:` +
          col('addon') +
          col('c++') +
          col('c++plain', 'c++ plain graph') +
          col('python') +
          col('ort', 'onnxruntime') +
          '  |' +
          rat('addon', 'c++') +
          rat('c++', 'c++plain') +
          rat('python', 'c++') +
          rat('addon', 'ort') +
          `   (addon ${(m.get('addon')! / b).toFixed(1)} ms/image)`;
        console.log(line);
        summary.push(line);
      }
      for (const r of runners) await r.close();
    }

    if (!opt['no-steps']) {
      // A traced, unfrozen model with the same architecture: the starting point of the steps.
      let traced: string | undefined;
      if (python) {
        traced = join(dir, 'traced.pt');
        await run(python, ['-c', `import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.densenet121(weights=None).eval()
with torch.no_grad():
    torch.jit.trace(m, torch.randn(1, 3, 224, 224)).save(${JSON.stringify(traced)})`], { quiet: true });
      }
      // [label, key, args, compared with]: main steps against the previous one, alternatives against the default.
      const plain = { dense: false };
      const steps: [string, string, string[], string][] = [];
      if (traced) steps.push(['traced (unfrozen, NCHW, profiling executor)', 'traced', driverArgs({ ...plain, freeze: false, channelsLast: false, profiling: true }, traced), 'traced']);
      steps.push(
        ['+ freeze (the exported file)', 'frozen', driverArgs({ ...plain, channelsLast: false, profiling: true }), traced ? 'traced' : 'frozen'],
        ['+ channels-last weights and input', 'cl', driverArgs({ ...plain, profiling: true }), 'frozen'],
        ['+ profiling executor off (plain graph)', 'plain', driverArgs(plain), 'cl'],
        ['+ DenseNet executor = DEFAULT', 'default', driverArgs({}), 'plain'],
        ['  alt: optimize_for_inference (NCHW)', 'ofi', driverArgs({ ...plain, channelsLast: false, ofi: true }), 'default'],
        ['  alt: channels-last + optimize_for_inference', 'cl+ofi', driverArgs({ ...plain, ofi: true }), 'default'],
      );
      if (precisions.length > 1) {
        steps.push(
          ['  opt-in: bf16 on the executor', 'bf16', driverArgs({ precision: 'bf16' }), 'default'],
          ['  opt-in: bf16 autocast on the plain graph', 'bf16plain', driverArgs({ ...plain, precision: 'bf16' }), 'default'],
        );
      }
      const runners: Runner[] = [];
      for (const [, key, args] of steps) runners.push(await lineRunner(key, DRIVER, args));
      const base = steps[0]![1];
      console.log(
        `\noptimisation steps (plain C++ driver, ${threads} threads, paired; ratios = median of per-round ratios, ` +
          `vs ${base} and vs the step it builds on; alternatives vs the default):`,
      );
      for (const b of batches) {
        const p = await paired(runners, b);
        for (const [label, key, , prev] of steps) {
          const vsPrev = prev === key ? '' : `  ${ratio(p.ratio(key, prev))} vs ${prev}`;
          console.log(`  b${b}  ${label.padEnd(46)} ${fmt(p.median.get(key)!)}  ${ratio(p.ratio(key, base))}${vsPrev}`);
        }
      }
      for (const r of runners) await r.close();
    }

    if (opt.profile) await profile(python);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  console.log('\nsummary:\n' + summary.map((l) => `  ${l}`).join('\n'));
}

/** Where the time goes: the executor's steps (C++ driver) and the plain graph's ops (torch profiler). */
async function profile(python: string | undefined): Promise<void> {
  for (const b of batches) {
    const args = ['--model', modelPath, '--threads', String(threads), '--batches', String(b), '--iters', String(b === 1 ? 20 : 5), '--profile-ops'];
    const r = await run(DRIVER, args, { quiet: true });
    console.log(`\nexecutor steps, b${b} (densenet_bench --profile-ops; ms per forward, share):`);
    for (const l of r.stdout.split('\n').filter((l) => l.startsWith('OP '))) console.log(`  ${l.slice(3)}`);
    if (!python) continue;
    const py = await run(
      python,
      [TORCH_PY, 'profile', '--model', modelPath, '--threads', String(threads), '--batch', String(b), '--channels-last', '--no-profiling', '--iters', String(b === 1 ? 20 : 5)],
      { quiet: true },
    );
    console.log(`plain graph, b${b} (torch profiler, Python, channels-last, profiling executor off; self CPU share, top 8):`);
    for (const l of py.stdout.trim().split('\n').slice(0, 8)) {
      const o = JSON.parse(l) as { op: string; share: number; ms_per_forward: number; calls_per_forward: number };
      console.log(`  ${(o.share * 100).toFixed(1).padStart(5)} %  ${o.ms_per_forward.toFixed(2).padStart(8)} ms  x${o.calls_per_forward}  ${o.op}`);
    }
  }
}

if (typeof opt['serve-onnx'] === 'string') await serveOnnx(opt['serve-onnx']);
else await runMain(CLI.name, main);
