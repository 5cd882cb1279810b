// No memory growth over a few hundred forwards: input/output buffers and tensors are freed.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Model } from '../src/model.js';
import { ensureDefaultModel } from './helpers/model.js';
import { pythonRun, seededInput } from './helpers/native.js';

const MB = 1024 * 1024;
const rss = () => process.memoryUsage().rss;
async function settle(): Promise<void> {
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((r) => setTimeout(r, 50));
}

t.test('densenet: 150 b1 forwards, RSS growth < 100 MB after warm-up', async (t) => {
  const { modelPath } = await ensureDefaultModel();
  const model = await Model.load(modelPath, { threads: 2 });
  t.teardown(() => model.dispose());
  const x = seededInput(3 * 224 * 224, 5);
  for (let i = 0; i < 20; i++) await model.forward(x, [1, 3, 224, 224]);
  await settle();
  const before = rss();
  for (let i = 0; i < 150; i++) await model.forward(x, [1, 3, 224, 224]);
  await settle();
  const grown = (rss() - before) / MB;
  t.ok(grown < 100, `RSS grew ${grown.toFixed(1)} MB over 150 forwards`);
});

t.test('glue: 3000 forwards of a 3 MB input on a tiny model do not leak the buffers', async (t) => {
  // A leaked input copy would be 3000 x 3 MB = 9 GB; a leaked output a few MB.
  const dir = await mkdtemp(join(tmpdir(), 'native-mem-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'mean.pt');
  await pythonRun(`
import torch
class Mean(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))
torch.jit.script(Mean()).save(${JSON.stringify(path)})
`);
  const model = await Model.load(path, { threads: 1, inputShape: [3, 512, 512] });
  t.teardown(() => model.dispose());
  const x = seededInput(3 * 512 * 512, 6);
  for (let i = 0; i < 50; i++) await model.forward(x, [1, 3, 512, 512]);
  await settle();
  const before = rss();
  // 8 in flight at a time, as a server would have.
  for (let i = 0; i < 3000 / 8; i++) await Promise.all(Array.from({ length: 8 }, () => model.forward(x, [1, 3, 512, 512])));
  await settle();
  const grown = (rss() - before) / MB;
  t.ok(grown < 64, `RSS grew ${grown.toFixed(1)} MB over 3000 forwards`);
});

t.test('releaseMemory(): the forward buffers of every instance go back to the system', async (t) => {
  const { modelPath } = await ensureDefaultModel();
  const model = await Model.load(modelPath, { instances: 2, threads: 1 });
  t.teardown(() => model.dispose());
  const x = seededInput(8 * 3 * 224 * 224, 7);
  await model.releaseMemory();
  await settle();
  const idle = rss();
  await Promise.all([model.forward(x, [8, 3, 224, 224]), model.forward(x, [8, 3, 224, 224])]);
  await settle();
  const busy = rss();
  t.ok(busy - idle > 60 * MB, `two b8 forwards keep their buffers: +${((busy - idle) / MB).toFixed(0)} MB`);
  await model.releaseMemory();
  await settle();
  const after = rss();
  t.ok(after - idle < 30 * MB, `released: ${((after - idle) / MB).toFixed(0)} MB above idle (was +${((busy - idle) / MB).toFixed(0)} MB)`);
  const again = await model.forward(x.subarray(0, 3 * 224 * 224), [1, 3, 224, 224]);
  t.same(again.shape, [1, 1000], 'the model works after the release');
});
