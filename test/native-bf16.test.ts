// Opt-in bf16: where the CPU has avx512_bf16 (this machine and CI do), logits stay within a
// bound of fp32 and the top classes agree, both on the DenseNet executor (the addon's default)
// and on the plain graph with autocast (C++ driver, --no-dense-executor); elsewhere asking for
// it is a clear error. Either way this file asserts something.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { run } from '../scripts/lib/exec.js';
import { cpuHasAvx512Bf16 } from '../src/device.js';
import { Model, ModelOptionError } from '../src/model.js';
import { ensureDefaultModel } from './helpers/model.js';
import { ROOT, maxAbsDiff, seededInput, topk } from './helpers/native.js';

/** Bound and agreement of bf16 logits against fp32 logits, n rows of 1000. */
function agrees(t: Test, a: Float32Array, b: Float32Array, n: number, what: string): void {
  t.ok(b.every(Number.isFinite), `${what}: finite logits`);
  const diff = maxAbsDiff(a, b);
  // Measured ~2e-2 on these random-init weights; 0.1 leaves room, and a broken bf16 path
  // (wrong layout, no conversion) is far off or exactly 0.
  t.ok(diff <= 0.1, `${what}: max abs diff vs fp32 ${diff.toExponential(2)} <= 0.1`);
  t.ok(diff > 0, `${what}: really ran in reduced precision (differs from fp32)`);
  let top1 = 0;
  let top5 = 0;
  for (let r = 0; r < n; r++) {
    const ta = topk(a, 1000, r, 5);
    const tb = topk(b, 1000, r, 5);
    if (ta[0] === tb[0]) top1++;
    top5 += tb.filter((c) => ta.includes(c)).length;
  }
  t.ok(top1 >= n - 1, `${what}: top-1 agreement ${top1}/${n}`);
  t.ok(top5 >= 0.8 * 5 * n, `${what}: top-5 overlap ${top5}/${5 * n}`);
}

const { modelPath } = await ensureDefaultModel();

if (!cpuHasAvx512Bf16()) {
  t.test('bf16 without avx512_bf16 is a clear ModelOptionError', async (t) => {
    await t.rejects(Model.load(modelPath, { device: 'cpu', precision: 'bf16' }), ModelOptionError);
    await t.rejects(Model.load(modelPath, { device: 'cpu', precision: 'bf16' }), /avx512_bf16/);
  });
} else {
  t.test('bf16 logits stay close to fp32 and agree on the top classes', async (t) => {
    const fp32 = await Model.load(modelPath, { device: 'cpu', threads: 2 });
    t.teardown(() => fp32.dispose());
    const bf16 = await Model.load(modelPath, { device: 'cpu', threads: 2, precision: 'bf16' });
    t.teardown(() => bf16.dispose());
    t.equal(bf16.info.precision, 'bf16');
    t.ok(bf16.info.optimizations.includes('dense_executor(4 blocks, 58 layers, bf16)'), bf16.info.optimizations.join(', '));
    const n = 8;
    const x = seededInput(n * 3 * 224 * 224, 77);
    const a = await fp32.forward(x, [n, 3, 224, 224]);
    const b = await bf16.forward(x, [n, 3, 224, 224]);
    t.same(b.shape, [n, 1000]);
    agrees(t, a.data, b.data, n, 'executor');
  });

  t.test('bf16 on the plain graph (autocast) stays close to fp32 too', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'native-bf16-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const logits: Float32Array[] = [];
    for (const precision of ['fp32', 'bf16']) {
      const prefix = join(dir, precision);
      const args = ['--model', modelPath, '--threads', '2', '--precision', precision, '--batches', '4', '--iters', '1', '--warmup', '0', '--dump', prefix];
      const r = await run(join(ROOT, 'build', 'Release', 'densenet_bench'), [...args, '--no-dense-executor'], { quiet: true });
      if (precision === 'bf16') t.match(r.stdout, /autocast_bf16_cpu/);
      const buf = await readFile(`${prefix}.b4.f32`);
      logits.push(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
    }
    agrees(t, logits[0]!, logits[1]!, 4, 'plain graph');
  });
}
