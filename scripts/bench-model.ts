/**
 * `npm run bench:model [-- --quick]`: the model alone (no HTTP), paired in one run.
 *
 *  1. addon vs plain C++ libtorch loop (build/Release/densenet_bench) vs Python torch, b1 and b8,
 *     fp32 and bf16, same threads and the same optimisations (channels-last weights + input,
 *     profiling executor off). Target: addon <= 1.00x the plain C++ loop.
 *  2. Each optimisation step's effect, with the C++ driver: traced baseline -> freeze ->
 *     channels-last -> profiling executor off (the default), and the alternatives that lost.
 *
 * Pairing: every contender is one long-lived process (the addon is this process), loaded once;
 * rounds alternate between them in rotating order. Printed: medians, and ratios as the median of
 * per-round ratios (robust to load drifting during the run). Numbers from
 * different runs are not comparable on a noisy VM (docs/design.md#measuring).
 *
 * Allocator: glibc malloc's page faults dominate timing noise (docs/design.md#allocator-settings), so this
 * script re-executes itself with GLIBC_TUNABLES (the value the server uses) unless it is already
 * set, and passes it to every child. --no-tunables keeps the environment as it is.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GLIBC_TUNABLES } from '../src/config.js';
import { cpuHasAvx512Bf16 } from '../src/device.js';
import { Model, type LoadOptions } from '../src/model.js';
import { formatCommand, run } from './lib/exec.js';
import { findTorchPython } from './lib/python.js';
import { median } from './lib/stats.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DRIVER = join(ROOT, 'build', 'Release', 'densenet_bench');
const TORCH_PY = join(ROOT, 'scripts', 'torch_forward.py');

const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    model: { type: 'string', default: join(ROOT, 'models', 'densenet121.pt') },
    threads: { type: 'string', default: String(availableParallelism()) },
    rounds: { type: 'string' },
    'no-python': { type: 'boolean', default: false },
    'no-steps': { type: 'boolean', default: false },
    'steps-only': { type: 'boolean', default: false },
    'no-tunables': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  process.stdout.write(
    'Usage: npm run bench:model -- [--quick] [--model models/densenet121.pt] [--threads N] [--rounds R]\n' +
      '         [--no-python] [--no-steps | --steps-only] [--no-tunables]\n',
  );
  process.exit(0);
}

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

const threads = Number(opt.threads);
const rounds = Number(opt.rounds ?? (opt.quick ? 4 : 12));
const modelPath = resolve(opt.model!);
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
      return line.split(' ').slice(1).map(Number);
    },
    async close() {
      child.stdin.write('quit\n');
      child.stdin.end();
      await exited;
    },
  };
}

function driverArgs(o: { freeze?: boolean; channelsLast?: boolean; ofi?: boolean; profiling?: boolean; precision?: string }, model = modelPath) {
  const a = ['--model', model, '--threads', String(threads), '--precision', o.precision ?? 'fp32', '--serve'];
  if (o.freeze === false) a.push('--no-freeze');
  if (o.channelsLast === false) a.push('--no-channels-last');
  if (o.ofi) a.push('--optimize-for-inference');
  if (o.profiling) a.push('--profiling-executor');
  return a;
}

async function addonRunner(name: string, options: LoadOptions): Promise<Runner> {
  const m = await Model.load(modelPath, { threads, ...options });
  process.stderr.write(`  ${name}: ${m.info.device} threads=${m.info.threads} ${m.info.optimizations.join(',')}\n`);
  const inputs = new Map<number, Float32Array>();
  return {
    name,
    async forward(b, iters) {
      let x = inputs.get(b);
      if (!x) {
        x = new Float32Array(b * 3 * 224 * 224).map(() => Math.random() * 4 - 2);
        inputs.set(b, x);
      }
      const times: number[] = [];
      for (let i = 0; i < iters; i++) {
        const t0 = performance.now();
        await m.forward(x, [b, 3, 224, 224]);
        times.push(performance.now() - t0);
      }
      return times;
    },
    async close() {
      void m.dispose();
    },
  };
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
      const t = await r.forward(b, per);
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
    `bench:model  model=${modelPath}  threads=${threads}  rounds=${rounds}  GLIBC_TUNABLES=${process.env.GLIBC_TUNABLES ?? '(unset)'}  ` +
      `OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? '(unset)'}`,
  );
  if (precisions.length === 1) console.log('bf16 skipped: this CPU lacks avx512_bf16');

  const summary: string[] = [];
  for (const precision of opt['steps-only'] ? [] : precisions) {
    const runners: Runner[] = [
      await addonRunner('addon', { precision }),
      await lineRunner('c++', DRIVER, driverArgs({ precision })),
    ];
    if (python) {
      const pyArgs = [TORCH_PY, 'serve', '--model', modelPath, '--threads', String(threads), '--channels-last', '--no-profiling', '--precision', precision];
      runners.push(await lineRunner('python', python, pyArgs));
    }
    for (const b of [1, 8]) {
      const p = await paired(runners, b);
      const m = p.median;
      const line =
        `${precision} b${b}:  addon ${fmt(m.get('addon')!)}  c++ ${fmt(m.get('c++')!)}` +
        (python ? `  python ${fmt(m.get('python')!)}` : '') +
        `   addon/c++ ${ratio(p.ratio('addon', 'c++'))}` +
        (python ? `  python/c++ ${ratio(p.ratio('python', 'c++'))}` : '') +
        `   (addon ${(m.get('addon')! / b).toFixed(1)} ms/image)`;
      console.log(line);
      summary.push(line);
    }
    for (const r of runners) await r.close();
  }

  if (!opt['no-steps']) {
    // A traced, unfrozen model with the same architecture: the starting point of the steps.
    const dir = await mkdtemp(join(tmpdir(), 'bench-model-'));
    try {
      let traced: string | undefined;
      if (python) {
        traced = join(dir, 'traced.pt');
        await run(python, ['-c', `import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.densenet121(weights=None).eval()
with torch.no_grad():
    torch.jit.trace(m, torch.randn(1, 3, 224, 224)).save(${JSON.stringify(traced)})`], { quiet: true });
      }
      const steps: [string, string, string[]][] = [
        ...(traced ? ([['traced (unfrozen, NCHW, profiling executor)', 'traced', driverArgs({ freeze: false, channelsLast: false, profiling: true }, traced)]] as [string, string, string[]][]) : []),
        ['+ freeze (the exported file)', 'frozen', driverArgs({ channelsLast: false, profiling: true })],
        ['+ channels-last weights and input', 'cl', driverArgs({ profiling: true })],
        ['+ profiling executor off = DEFAULT', 'default', driverArgs({})],
        ['  alt: optimize_for_inference (NCHW)', 'ofi', driverArgs({ channelsLast: false, ofi: true })],
        ['  alt: channels-last + optimize_for_inference', 'cl+ofi', driverArgs({ ofi: true })],
        ...(precisions.length > 1 ? ([['  opt-in: default + bf16 autocast', 'bf16', driverArgs({ precision: 'bf16' })]] as [string, string, string[]][]) : []),
      ];
      const runners: Runner[] = [];
      for (const [, key, args] of steps) runners.push(await lineRunner(key, DRIVER, args));
      const base = traced ? 'traced' : 'frozen';
      console.log(`\noptimisation steps (plain C++ driver, ${threads} threads, paired; ratio = median of per-round ratios vs ${base}):`);
      for (const b of [1, 8]) {
        const p = await paired(runners, b);
        for (const [label, key] of steps) {
          console.log(`  b${b}  ${label.padEnd(46)} ${fmt(p.median.get(key)!)}  ${ratio(p.ratio(key, base))}`);
        }
      }
      for (const r of runners) await r.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  console.log('\nsummary:\n' + summary.map((l) => `  ${l}`).join('\n'));
}

await main();
