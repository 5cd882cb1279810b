// Many concurrent forwards on one model each get their own answer, and the event loop keeps
// running while the inference thread works.
import t from 'tap';
import { Model } from '../src/model.js';
import { ensureDefaultModel } from './helpers/model.js';
import { maxAbsDiff, seededInput } from './helpers/native.js';

const { modelPath } = await ensureDefaultModel();
const model = await Model.load(modelPath, { threads: 2 });
t.teardown(() => model.dispose());
const IMG = 3 * 224 * 224;

t.test('16 parallel forwards with different inputs each match their own single forward', async (t) => {
  // Mixed batch sizes (1 and 2), so results routed to the wrong promise cannot match by shape.
  const inputs = Array.from({ length: 16 }, (_, i) => {
    const n = i % 3 === 0 ? 2 : 1;
    return { shape: [n, 3, 224, 224] as const, data: seededInput(n * IMG, 100 + i) };
  });
  await model.warmup([1, 2]);
  const expected = [];
  for (const x of inputs) expected.push(await model.forward(x.data, x.shape));
  const parallel = await Promise.all(inputs.map((x) => model.forward(x.data, x.shape)));
  for (const [i, r] of parallel.entries()) {
    const e = expected[i]!;
    t.same(r.shape, e.shape, `#${i} shape`);
    t.ok(maxAbsDiff(r.data, e.data) <= 1e-6, `#${i} equals its own single forward`);
  }
  // Inputs differ, so outputs differ: a mix-up would have been visible above.
  t.ok(maxAbsDiff(parallel[1]!.data, parallel[2]!.data) > 1e-3, 'different inputs give different logits');
});

t.test('the event loop keeps ticking while a b8 forward runs', async (t) => {
  await model.warmup([8]);
  const x = seededInput(8 * IMG, 7);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  let settled = false;
  const p = model.forward(x, [8, 3, 224, 224]).finally(() => (settled = true));
  // Count ticks only while the forward is still running.
  let ticksWhileRunning = 0;
  const probe = setInterval(() => {
    if (!settled) ticksWhileRunning = ticks;
  }, 1);
  const r = await p;
  clearInterval(timer);
  clearInterval(probe);
  t.same(r.shape, [8, 1000]);
  t.ok(ticksWhileRunning >= 3, `setInterval(5 ms) ticked ${ticksWhileRunning} times during the forward`);
});

t.test('two instances sharing one engine: parallel forwards match their own single forward, and really overlap', async (t) => {
  const two = await Model.load(modelPath, { instances: 2, threads: 1 });
  t.teardown(() => two.dispose());
  t.equal(two.info.instances, 2);
  await two.warmup([1, 2]);
  const inputs = Array.from({ length: 12 }, (_, i) => {
    const n = i % 3 === 0 ? 2 : 1;
    return { shape: [n, 3, 224, 224] as const, data: seededInput(n * IMG, 500 + i) };
  });
  const expected = [];
  for (const x of inputs) expected.push(await model.forward(x.data, x.shape)); // the 1-instance model
  const started = performance.now();
  const parallel = await Promise.all(inputs.map((x) => two.forward(x.data, x.shape).then((r) => ({ ...r, done: performance.now() - started }))));
  for (const [i, r] of parallel.entries()) {
    t.ok(maxAbsDiff(r.data, expected[i]!.data) <= 1e-5, `#${i} (instance ${r.instance}) equals the single forward`);
  }
  t.same([...new Set(parallel.map((r) => r.instance))].sort(), [0, 1], 'both instances ran forwards');
  const busy = parallel.reduce((s, r) => s + r.seconds, 0);
  const wall = Math.max(...parallel.map((r) => r.done)) / 1000;
  t.ok(busy > wall * 1.2, `compute time ${busy.toFixed(2)} s within ${wall.toFixed(2)} s of wall time: forwards overlapped`);
});
