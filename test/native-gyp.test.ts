/**
 * The node-gyp build (binding.gyp) is a documented alternative to cmake-js: CI builds it too.
 * It is built in a scratch copy of the sources (so build/Release of the cmake-js build is left
 * alone), loaded in a child process through DENSENET_ADDON, and must give the same logits as
 * the cmake-js build on the same model and input.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { run } from '../scripts/lib/exec.js';
import { Model } from '../src/model.js';
import { ensureDefaultModel } from './helpers/model.js';
import { ROOT, gypWorkdir, maxAbsDiff, seededInput } from './helpers/native.js';

t.setTimeout(20 * 60 * 1000);

t.test('node-gyp builds the same sources and the addon it makes gives the same logits', async (t) => {
  const { modelPath } = await ensureDefaultModel();
  const dir = await gypWorkdir(t, 'densenet-gyp-');

  // Node's own headers (Debian: /usr/include/node), so node-gyp never tries to download them.
  const nodedir = dirname(dirname(process.execPath));
  t.ok(existsSync(join(nodedir, 'include', 'node', 'node_api.h')), `Node headers under ${nodedir}/include/node`);
  const gyp = join(ROOT, 'node_modules', '.bin', 'node-gyp');
  await run(gyp, ['rebuild', `--nodedir=${nodedir}`, '--jobs=2'], { cwd: dir, quiet: true, timeoutMs: 15 * 60 * 1000 });
  const built = join(dir, 'build', 'Release', 'densenet.node');
  t.ok(existsSync(built), 'node-gyp produced build/Release/densenet.node');

  const input = seededInput(2 * 3 * 224 * 224, 7);
  const inPath = join(dir, 'in.f32');
  const outPath = join(dir, 'out.f32');
  await writeFile(inPath, new Uint8Array(input.buffer));
  // A child process: src/native.ts picks the addon once per process, from DENSENET_ADDON.
  const child = join(dir, 'forward.ts');
  await writeFile(
    child,
    `import { readFile, writeFile } from 'node:fs/promises';
import { Model } from ${JSON.stringify(join(ROOT, 'src', 'model.ts'))};
import { addonPath } from ${JSON.stringify(join(ROOT, 'src', 'native.ts'))};
const buf = await readFile(${JSON.stringify(inPath)});
const m = await Model.load(${JSON.stringify(modelPath)}, { device: 'cpu', threads: 2 });
const r = await m.forward(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4), [2, 3, 224, 224]);
await writeFile(${JSON.stringify(outPath)}, new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.byteLength));
console.log(JSON.stringify({ addonPath, shape: r.shape, optimizations: m.info.optimizations }));
m.dispose();
`,
  );
  const res = await run(process.execPath, ['--import', 'tsx', child], {
    cwd: ROOT,
    quiet: true,
    env: { ...process.env, DENSENET_ADDON: built },
  });
  const reported = JSON.parse(res.stdout.trim().split('\n').pop() ?? '{}') as { addonPath?: string; shape?: number[]; optimizations?: string[] };
  t.equal(reported.addonPath, built, 'the child loaded the node-gyp build');
  t.same(reported.shape, [2, 1000]);
  t.ok(reported.optimizations?.includes('dense_executor(4 blocks, 58 layers)'), `node-gyp build runs the DenseNet executor: ${reported.optimizations?.join(', ')}`);

  const model = await Model.load(modelPath, { device: 'cpu', threads: 2 });
  t.teardown(() => model.dispose());
  const ref = await model.forward(input, [2, 3, 224, 224]);
  const outBuf = await readFile(outPath);
  const got = new Float32Array(outBuf.buffer, outBuf.byteOffset, outBuf.byteLength / 4);
  const diff = maxAbsDiff(ref.data, got);
  t.ok(diff <= 1e-5, `node-gyp vs cmake-js build: max abs diff ${diff.toExponential(2)} <= 1e-5`);
});
