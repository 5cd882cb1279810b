// Process exit with a model in every state: idle (Node must exit by itself: the TSFN is
// unref'd), busy with process.exit() (the atexit hook joins the worker), disposed, and a
// garbage-collected model. Each runs in a child process; a crash or a hang fails the test.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { run } from '../scripts/lib/exec.js';
import { ROOT, pythonRun } from './helpers/native.js';

const dir = await mkdtemp(join(tmpdir(), 'native-life-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const modelPath = join(dir, 'slow.pt');
// A model slow enough (a few 100 ms per call) that process.exit() lands mid-forward.
await pythonRun(`
import torch
class Slow(torch.nn.Module):
    def forward(self, x):
        y = x
        for _ in range(40):
            y = torch.tanh(y @ y.transpose(2, 3) / 64.0)
        return y.mean(dim=(2, 3))
torch.jit.script(Slow()).save(${JSON.stringify(modelPath)})
`);
const modelUrl = pathToFileURL(join(ROOT, 'src', 'model.ts')).href;

async function child(name: string, body: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const file = join(dir, `${name}.mts`);
  await writeFile(
    file,
    `import { Model } from ${JSON.stringify(modelUrl)};
const m = await Model.load(${JSON.stringify(modelPath)}, { threads: 1, inputShape: [3, 256, 256] });
const x = new Float32Array(3 * 256 * 256).fill(0.5);
${body}
`,
  );
  return run(process.execPath, ['--expose-gc', '--import', 'tsx', file], { cwd: ROOT, reject: false, quiet: true, timeoutMs: 60_000 });
}

t.test('idle model: Node exits on its own', async (t) => {
  const r = await child('idle', `await m.forward(x, [1, 3, 256, 256]); console.log('done');`);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /done/);
});

t.test('process.exit() during forwards: clean exit code, no crash', async (t) => {
  const r = await child(
    'busy',
    `for (let i = 0; i < 8; i++) void m.forward(x, [1, 3, 256, 256]);
setTimeout(() => { console.log('exiting'); process.exit(3); }, 150);`,
  );
  t.equal(r.exitCode, 3, r.stderr);
  t.match(r.stdout, /exiting/);
});

t.test('a pending forward keeps Node alive until it settles', async (t) => {
  const r = await child('pending', `m.forward(new Float32Array(2 * 3 * 256 * 256), [2, 3, 256, 256]).then((o) => console.log('shape', o.shape.join('x')));`);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /shape 2x3/);
});

t.test('disposed with queued work, and a garbage-collected model: exits cleanly', async (t) => {
  const r = await child(
    'dispose',
    `const ps = Array.from({ length: 5 }, () => m.forward(x, [1, 3, 256, 256]).then(() => 'ok', (e) => e.code));
m.dispose();
console.log((await Promise.all(ps)).join(','));
{ const { Model: M } = await import(${JSON.stringify(modelUrl)});
  let g = await M.load(${JSON.stringify(modelPath)}, { threads: 1, inputShape: [3, 256, 256] });
  await g.forward(x, [1, 3, 256, 256]); g = undefined; }
globalThis.gc(); await new Promise((r) => setTimeout(r, 100)); globalThis.gc();
console.log('end');`,
  );
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /MODEL_DISPOSED/);
  t.match(r.stdout, /end/);
});

t.test('DenseNet on two instances (oneDNN): process.exit() mid-forward exits cleanly; dispose() resolves once the threads stopped', async (t) => {
  const { ensureDefaultModel } = await import('./helpers/model.js');
  const { modelPath: dense } = await ensureDefaultModel();
  const file = join(dir, 'dense.mts');
  await writeFile(
    file,
    `import { Model } from ${JSON.stringify(modelUrl)};
const x = new Float32Array(4 * 3 * 224 * 224).fill(0.2);
const a = await Model.load(${JSON.stringify(dense)}, { instances: 2, threads: 1 });
const pending = Array.from({ length: 4 }, () => a.forward(x, [4, 3, 224, 224]).then(() => 'ok', (e) => e.code));
await new Promise((r) => setTimeout(r, 50));
await a.dispose();
console.log('disposed', (await Promise.all(pending)).sort().join(','));
const b = await Model.load(${JSON.stringify(dense)}, { instances: 2, threads: 1 });
for (let i = 0; i < 6; i++) void b.forward(x, [4, 3, 224, 224]).catch(() => undefined);
setTimeout(() => { console.log('exiting'); process.exit(3); }, 200);
`,
  );
  for (let i = 0; i < 2; i++) {
    const r = await run(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, reject: false, quiet: true, timeoutMs: 120_000 });
    t.equal(r.exitCode, 3, `run ${i}: exit code 3, no crash (${r.stderr.slice(-300)})`);
    t.match(r.stdout, /disposed (MODEL_DISPOSED,)*(ok,?)*/);
    t.match(r.stdout, /exiting/);
  }
});
