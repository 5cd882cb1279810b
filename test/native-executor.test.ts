// The DenseNet executor (native/dense_block.h) on graphs other than the default model: a small
// torchvision DenseNet with non-trivial batch-norm statistics (the default model's random-init
// BNs are identities, which would hide a wrong scale/shift), odd feature-map sizes, a batch of
// 3; one whose stem is narrower than its bottlenecks (workspace sizing); a network that is not a
// DenseNet (the plain graph runs, info says why); and the C++ driver's --no-dense-executor switch
// (same logits as the executor, plain graph in its info).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { run } from '../scripts/lib/exec.js';
import { Model } from '../src/model.js';
import { ROOT, maxAbsDiff, pythonForward, pythonRun, seededInput, topk } from './helpers/native.js';

const dir = await mkdtemp(join(tmpdir(), 'native-executor-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const small = join(dir, 'small-densenet.pt');
const notDense = join(dir, 'not-densenet.pt');
const narrowStem = join(dir, 'narrow-stem-densenet.pt');
await pythonRun(`
import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 3, 2), num_init_features=16, bn_size=2, num_classes=10).eval()
with torch.no_grad():
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.3, 2.0)
            mod.weight.uniform_(0.5, 1.5)
            mod.bias.uniform_(-0.3, 0.3)
        if isinstance(mod, torch.nn.Linear):
            mod.bias.uniform_(-0.1, 0.1)
    torch.jit.freeze(torch.jit.trace(m, torch.rand(1, 3, 72, 72))).save(${JSON.stringify(small)})
    # conv0's output (4 channels at 4x the pixels) is smaller than a bottleneck (64 channels)
    narrow = torchvision.models.DenseNet(growth_rate=16, block_config=(2, 2), num_init_features=4, bn_size=4, num_classes=5).eval()
    torch.jit.freeze(torch.jit.trace(narrow, torch.rand(1, 3, 64, 64))).save(${JSON.stringify(narrowStem)})
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    torch.jit.freeze(torch.jit.trace(net, torch.rand(1, 3, 16, 16))).save(${JSON.stringify(notDense)})
`);

t.test('a small DenseNet with real batch-norm statistics matches Python torch (72x72: odd 9x9 map)', async (t) => {
  const m = await Model.load(small, { threads: 2, inputShape: [3, 72, 72] });
  t.teardown(() => m.dispose());
  t.ok(m.info.optimizations.includes('dense_executor(3 blocks, 7 layers)'), m.info.optimizations.join(', '));
  t.equal(m.info.numClasses, 10);
  const cases = [1, 3].map((n, i) => ({ shape: [n, 3, 72, 72] as const, data: seededInput(n * 3 * 72 * 72, 50 + i) }));
  const ref = await pythonForward(small, cases);
  for (const [i, c] of cases.entries()) {
    const out = await m.forward(c.data, c.shape);
    const diff = maxAbsDiff(out.data, ref[i]!);
    t.ok(diff <= 1e-4, `b${c.shape[0]}: max abs diff ${diff.toExponential(2)} <= 1e-4`);
    for (let r = 0; r < c.shape[0]; r++) t.same(topk(out.data, 10, r, 3), topk(ref[i]!, 10, r, 3), `b${c.shape[0]} row ${r} top-3`);
  }
  // Another input size on the same model: a new plan, still right.
  const x = seededInput(2 * 3 * 64 * 64, 60);
  const [ref64] = await pythonForward(small, [{ data: x, shape: [2, 3, 64, 64] }]);
  const diff = maxAbsDiff((await m.forward(x, [2, 3, 64, 64])).data, ref64!);
  t.ok(diff <= 1e-4, `64x64 b2: max abs diff ${diff.toExponential(2)} <= 1e-4`);
});

t.test('a DenseNet whose stem is narrower than its bottlenecks (workspace sizing) matches Python torch', async (t) => {
  const m = await Model.load(narrowStem, { threads: 1, inputShape: [3, 64, 64] });
  t.teardown(() => m.dispose());
  t.ok(m.info.optimizations.includes('dense_executor(2 blocks, 4 layers)'), m.info.optimizations.join(', '));
  const x = seededInput(2 * 3 * 64 * 64, 62);
  const [ref] = await pythonForward(narrowStem, [{ data: x, shape: [2, 3, 64, 64] }]);
  const diff = maxAbsDiff((await m.forward(x, [2, 3, 64, 64])).data, ref!);
  t.ok(diff <= 1e-4, `b2: max abs diff ${diff.toExponential(2)} <= 1e-4`);
});

t.test('a network that is not a DenseNet runs the plain graph and says why', async (t) => {
  const m = await Model.load(notDense, { threads: 1, inputShape: [3, 16, 16] });
  t.teardown(() => m.dispose());
  const why = m.info.optimizations.find((o) => o.startsWith('dense_executor_unavailable('));
  t.ok(why, m.info.optimizations.join(', '));
  t.match(why, /expected aten::max_pool2d, found aten::adaptive_avg_pool2d/);
  t.ok(m.info.optimizations.some((o) => o.startsWith('channels_last(')), 'the graph rewrites apply instead');
  const x = seededInput(2 * 3 * 16 * 16, 61);
  const [ref] = await pythonForward(notDense, [{ data: x, shape: [2, 3, 16, 16] }]);
  t.ok(maxAbsDiff((await m.forward(x, [2, 3, 16, 16])).data, ref!) <= 1e-5);
});

t.test('densenet_bench --no-dense-executor runs the plain graph, with the same logits', async (t) => {
  const driver = join(ROOT, 'build', 'Release', 'densenet_bench');
  const outputs: Float32Array[] = [];
  for (const [name, extra] of [['executor', []], ['plain', ['--no-dense-executor']]] as const) {
    const prefix = join(dir, name);
    const r = await run(
      driver,
      ['--model', small, '--threads', '2', '--input-shape', '3,72,72', '--batches', '2', '--iters', '1', '--warmup', '0', '--dump', prefix, ...extra],
      { quiet: true },
    );
    const info = r.stdout.split('\n').find((l) => l.startsWith('INFO')) ?? '';
    if (name === 'executor') t.match(info, /dense_executor\(3 blocks, 7 layers\)/);
    else t.notMatch(info, /dense_executor/, `plain: ${info}`);
    const buf = await readFile(`${prefix}.b2.f32`);
    outputs.push(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
  }
  const diff = maxAbsDiff(outputs[0]!, outputs[1]!);
  t.ok(diff <= 1e-4 && diff > 0, `executor vs plain graph: max abs diff ${diff.toExponential(2)} (<= 1e-4, and not the same code)`);
});

t.test('LoadOptions.denseExecutor: false keeps the plain graph, with the same answers', async (t) => {
  const { ensureDefaultModel } = await import('./helpers/model.js');
  const { Model } = await import('../src/model.js');
  const { modelPath } = await ensureDefaultModel();
  const fast = await Model.load(modelPath, { threads: 1 });
  const plain = await Model.load(modelPath, { threads: 1, denseExecutor: false });
  t.teardown(() => Promise.all([fast.dispose(), plain.dispose()]));
  t.match(fast.info.optimizations.join(' '), /dense_executor\(4 blocks, 58 layers\)/);
  t.notMatch(plain.info.optimizations.join(' '), /dense_executor/);
  const x = new Float32Array(3 * 224 * 224).map((_, i) => Math.sin(i) * 2);
  const [a, b] = await Promise.all([fast.forward(x, [1, 3, 224, 224]), plain.forward(x, [1, 3, 224, 224])]);
  let diff = 0;
  for (let i = 0; i < a.data.length; i++) diff = Math.max(diff, Math.abs(a.data[i]! - b.data[i]!));
  t.ok(diff < 1e-4, `max logit diff ${diff}`);
  await t.rejects(Model.load(modelPath, { denseExecutor: 'yes' as unknown as boolean }), TypeError);
});
