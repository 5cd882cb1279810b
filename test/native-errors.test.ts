// Every error the model can raise: bad files -> ModelLoadError naming the file; bad inputs ->
// TypeError/RangeError before the native call; forward failures -> rejected promise (process
// alive); disposed model -> MODEL_DISPOSED; impossible options -> ModelOptionError.
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ForwardError, Model, ModelLoadError, ModelOptionError } from '../src/model.js';
import { ensureDefaultModel } from './helpers/model.js';
import { pythonRun, seededInput } from './helpers/native.js';

const dir = await mkdtemp(join(tmpdir(), 'native-errors-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const { modelPath } = await ensureDefaultModel();

// Fixtures: a truncated copy of the real model, garbage bytes, a zip that is not TorchScript
// (a plain torch.save), and two tiny TorchScript models (one raises for a batch of 3, one
// returns a 4-D tensor instead of [N, K] logits).
const truncated = join(dir, 'truncated.pt');
const full = await readFile(modelPath);
await writeFile(truncated, full.subarray(0, Math.floor(full.length / 2)));
const garbage = join(dir, 'garbage.pt');
await writeFile(garbage, Buffer.from('this is not a model at all\n'.repeat(100)));
const notScript = join(dir, 'state-dict.pt');
const raises = join(dir, 'raises.pt');
const badOutput = join(dir, 'bad-output.pt');
await pythonRun(`
import torch
torch.save({'weight': torch.zeros(3)}, ${JSON.stringify(notScript)})
class Raises(torch.nn.Module):
    def forward(self, x):
        if x.size(0) == 3:
            raise RuntimeError("boom: batch of three")
        return x.mean(dim=(2, 3)) * 2.0
torch.jit.script(Raises()).save(${JSON.stringify(raises)})
class BadOutput(torch.nn.Module):
    def forward(self, x):
        return x * 2.0
torch.jit.script(BadOutput()).save(${JSON.stringify(badOutput)})
`);
const tiny = { inputShape: [3, 4, 4] as const, threads: 1 };

t.test('bad model files reject with ModelLoadError naming the file', async (t) => {
  const cases: [string, string, RegExp?][] = [
    ['missing', join(dir, 'does-not-exist.pt'), /not found/],
    ['truncated', truncated],
    ['garbage bytes', garbage],
    ['a zip that is not TorchScript', notScript],
    ['output is not [N, K]', badOutput, /\[N, numClasses\]/],
  ];
  for (const [name, path, re] of cases) {
    const err = await Model.load(path, tiny).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.type(err, ModelLoadError, `${name}: ModelLoadError`);
    const e = err as ModelLoadError;
    t.equal(e.code, 'MODEL_LOAD_FAILED', `${name}: code`);
    t.equal(e.statusCode, 500, `${name}: status`);
    t.ok(e.message.includes(path), `${name}: message names the file: ${e.message.slice(0, 300)}`);
    t.notMatch(e.message, /Exception raised from|frame #\d/, `${name}: no C++ backtrace`);
    if (re) t.match(e.message, re, `${name}: says why`);
  }
});

t.test('impossible options are ModelOptionError (a RangeError)', async (t) => {
  for (const [opts, re] of [
    [{ device: 'tpu' }, /Expected device/],
    [{ precision: 'fp16' }, /Expected precision/],
    [{ threads: 0 }, /threads/],
    [{ device: 'cuda:0' }, /CUDA is not available|CUDA device/],
  ] as const) {
    await t.rejects(Model.load(raises, { ...tiny, ...(opts as object) }), ModelOptionError, JSON.stringify(opts));
    await t.rejects(Model.load(raises, { ...tiny, ...(opts as object) }), re);
  }
  const err = await Model.load(raises, { ...tiny, precision: 'fp16' as never }).catch((e: unknown) => e);
  t.ok(err instanceof RangeError, 'ModelOptionError is a RangeError');
});

t.test('a forward that fails inside the model rejects; the model keeps working', async (t) => {
  const m = await Model.load(raises, tiny);
  t.teardown(() => m.dispose());
  t.equal(m.info.numClasses, 3);
  const x3 = seededInput(3 * 3 * 4 * 4, 1);
  const err = await m.forward(x3, [3, 3, 4, 4]).catch((e: unknown) => e);
  t.type(err, ForwardError);
  t.equal((err as ForwardError).code, 'FORWARD_FAILED');
  t.match((err as Error).message, /boom: batch of three/);
  const ok = await m.forward(seededInput(2 * 3 * 4 * 4, 2), [2, 3, 4, 4]);
  t.same(ok.shape, [2, 3]);
});

t.test('invalid inputs are rejected in TypeScript with sharp-style messages', async (t) => {
  const m = await Model.load(raises, tiny);
  t.teardown(() => m.dispose());
  await t.rejects(m.forward(new Int32Array(48) as never, [1, 3, 4, 4]), new TypeError('Expected Float32Array for input but received Int32Array'));
  await t.rejects(m.forward([1, 2, 3] as never, [1, 3, 4, 4]), new TypeError('Expected Float32Array for input but received Array'));
  await t.rejects(m.forward(new Float32Array(100), [1, 3, 4, 4]), new RangeError('Expected input length 48 (= 1*3*4*4) but received 100'));
  await t.rejects(m.forward(new Float32Array(48), [1, 3, 16] as never), RangeError);
  await t.rejects(m.forward(new Float32Array(48), [1, 3, 4, 4.5] as never), RangeError);
  await t.rejects(m.forward(new Float32Array(64), [1, 4, 4, 4]), /Expected 3 channels/);
  await t.rejects(m.forward(new Float32Array(0), [0, 3, 4, 4]), RangeError);
  await t.rejects(m.warmup([0]), RangeError);
});

t.test('disposed model: MODEL_DISPOSED, queued calls settle, never a crash', async (t) => {
  const m = await Model.load(raises, tiny);
  const x = seededInput(48, 3);
  const queued = Array.from({ length: 20 }, () => m.forward(x, [1, 3, 4, 4]));
  // Handled from the start: the queued calls are rejected while dispose() is still pending.
  const allSettled = Promise.allSettled(queued);
  void m.dispose();
  await m.dispose(); // idempotent, and resolves once the threads stopped
  t.equal(m.disposed, true);
  const settled = await allSettled;
  for (const s of settled) {
    if (s.status === 'rejected') t.equal((s.reason as { code?: string }).code, 'MODEL_DISPOSED');
    else t.same(s.value.shape, [1, 3]);
  }
  t.ok(settled.some((s) => s.status === 'rejected'), 'calls still queued at dispose are rejected');
  await t.rejects(m.forward(x, [1, 3, 4, 4]), { code: 'MODEL_DISPOSED' });
  await t.rejects(m.warmup([1]), { code: 'MODEL_DISPOSED' });
  t.equal(m.info.numClasses, 3, 'info stays readable');
});

t.test('densenet with an input too small for it: rejected with libtorch message, process alive', async (t) => {
  const copy = join(dir, 'densenet-copy.pt');
  await copyFile(modelPath, copy);
  const m = await Model.load(copy, { threads: 2 });
  t.teardown(() => m.dispose());
  const err = await m.forward(new Float32Array(3 * 8 * 8), [1, 3, 8, 8]).catch((e: unknown) => e);
  t.type(err, ForwardError);
  t.match((err as Error).message, /Output size is too small|too small/);
  t.notMatch((err as Error).message, /Traceback of TorchScript/, 'TorchScript traceback trimmed');
  const ok = await m.forward(seededInput(3 * 224 * 224, 9), [1, 3, 224, 224]);
  t.same(ok.shape, [1, 1000]);
});
