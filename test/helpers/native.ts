/**
 * Helpers for the native addon tests: seeded inputs, the Python/PyTorch reference forward
 * (scripts/torch_forward.py under the interpreter that has torch), and comparisons.
 */
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../scripts/lib/exec.js';
import { findTorchPython } from '../../scripts/lib/python.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TORCH_FORWARD_PY = join(ROOT, 'scripts', 'torch_forward.py');

/** Deterministic floats in [-2, 2) (mulberry32): same values for the addon and for Python. */
export function seededInput(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let a = seed >>> 0;
  for (let i = 0; i < length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 4 - 2;
  }
  return out;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return m;
}

/** Indices of the k largest values of row `row` of an [N, K] matrix. */
export function topk(data: Float32Array, numClasses: number, row: number, k: number): number[] {
  const r = Array.from(data.subarray(row * numClasses, (row + 1) * numClasses));
  return r
    .map((v, i) => [v, i] as const)
    .sort((x, y) => y[0] - x[0])
    .slice(0, k)
    .map(([, i]) => i);
}

/** Runs the model in Python PyTorch (plain: NCHW, default executor) on each input. */
export async function pythonForward(
  modelPath: string,
  inputs: { data: Float32Array; shape: readonly number[] }[],
  opts: { threads?: number; precision?: 'fp32' | 'bf16' } = {},
): Promise<Float32Array[]> {
  const python = await findTorchPython();
  const dir = await mkdtemp(join(tmpdir(), 'native-ref-'));
  try {
    const args = [TORCH_FORWARD_PY, 'forward', '--model', modelPath, '--threads', String(opts.threads ?? 2), '--precision', opts.precision ?? 'fp32'];
    for (const [i, inp] of inputs.entries()) {
      const inPath = join(dir, `in${i}.f32`);
      await writeFile(inPath, new Uint8Array(inp.data.buffer, inp.data.byteOffset, inp.data.byteLength));
      args.push('--input', inPath, '--shape', inp.shape.join(','), '--output', join(dir, `out${i}.f32`));
    }
    // One process for all inputs: importing torch and loading the model dominate.
    await run(python, args, { quiet: true });
    const outs: Float32Array[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const buf = await readFile(join(dir, `out${i}.f32`));
      outs.push(new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)));
    }
    return outs;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Runs a small Python program with torch (e.g. to make fixture TorchScript files). It is run
 * from a file, not `-c`: torch.jit.script needs the source of the classes it compiles.
 */
export async function pythonRun(code: string): Promise<string> {
  const python = await findTorchPython();
  const dir = await mkdtemp(join(tmpdir(), 'native-py-'));
  try {
    const file = join(dir, 'fixture.py');
    await writeFile(file, code);
    const r = await run(python, [file], { quiet: true });
    return r.stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A temporary copy of what node-gyp builds from (native/, binding.gyp, package.json, and a link to
 * node_modules), removed when the test ends.
 */
export async function gypWorkdir(t: { teardown(fn: () => unknown): void }, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(join(ROOT, 'native'), join(dir, 'native'), { recursive: true });
  await cp(join(ROOT, 'binding.gyp'), join(dir, 'binding.gyp'));
  await cp(join(ROOT, 'package.json'), join(dir, 'package.json'));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}
