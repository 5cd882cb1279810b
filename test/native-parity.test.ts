// Addon logits vs Python PyTorch on the same TorchScript file and the same seeded input, b1 and b8.
// The addon runs its fast path (the DenseNet executor, native/dense_block.h); Python runs the
// file as is. Parity bound: max abs diff <= 1e-4. The info test fails if the executor silently
// fell back to the plain graph.
import t from 'tap';
import { Model } from '../src/model.js';
import { ensureDefaultModel } from './helpers/model.js';
import { maxAbsDiff, pythonForward, seededInput, topk } from './helpers/native.js';

const { modelPath } = await ensureDefaultModel();
const model = await Model.load(modelPath, { threads: 2 });
t.teardown(() => model.dispose());

t.test('info describes the loaded model', async (t) => {
  t.equal(model.info.device, 'cpu');
  t.equal(model.info.precision, 'fp32');
  t.equal(model.info.threads, 2);
  t.same(model.info.inputShape, [3, 224, 224]);
  t.equal(model.info.numClasses, 1000);
  t.match(model.info.torchVersion, /^\d+\.\d+/);
  t.equal(typeof model.info.cudaAvailable, 'boolean');
  t.ok(model.info.optimizations.includes('dense_executor(4 blocks, 58 layers)'), `optimizations: ${model.info.optimizations.join(', ')}`);
  t.ok(model.info.loadSeconds > 0);
});

t.test('logits match Python torch at b1 and b8 (max abs diff <= 1e-4)', async (t) => {
  const cases = [1, 8].map((n, i) => ({ shape: [n, 3, 224, 224] as const, data: seededInput(n * 3 * 224 * 224, 1234 + i) }));
  const ref = await pythonForward(modelPath, cases.map((c) => ({ data: c.data, shape: c.shape })));
  for (const [i, c] of cases.entries()) {
    const out = await model.forward(c.data, c.shape);
    const n = c.shape[0];
    t.same(out.shape, [n, 1000], `b${n} shape`);
    const expected = ref[i]!;
    const diff = maxAbsDiff(out.data, expected);
    t.ok(diff <= 1e-4, `b${n}: max abs diff ${diff.toExponential(2)} <= 1e-4`);
    for (let r = 0; r < n; r++) t.same(topk(out.data, 1000, r, 5), topk(expected, 1000, r, 5), `b${n} row ${r} top-5`);
    // A different row gives different logits (guards against a constant output).
    if (n > 1) t.not(out.data[0], out.data[1000], 'rows differ');
  }
});

t.test('warmup runs each batch size and reports seconds', async (t) => {
  const s = await model.warmup([1, 2]);
  t.ok(s > 0 && s < 120, `warm-up took ${s.toFixed(2)} s`);
});
