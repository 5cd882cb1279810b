// src/native.ts: when the addon cannot be loaded, the error says why and what to do.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { run } from '../scripts/lib/exec.js';
import { addonPath, explainLoadFailure, loadNative } from '../src/native.js';
import { ROOT } from './helpers/native.js';

const dir = await mkdtemp(join(tmpdir(), 'native-load-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

t.test('the built addon loads and exposes Model', async (t) => {
  t.equal(addonPath, process.env.DENSENET_ADDON ?? join(ROOT, 'build', 'Release', 'densenet.node'));
  const addon = loadNative();
  t.type(addon.Model, 'function');
});

t.test('advice for each kind of load failure', async (t) => {
  const exists = join(dir, 'exists.node');
  await writeFile(exists, 'x');
  t.match(explainLoadFailure(join(dir, 'missing.node'), new Error('Cannot find module')), /npm run build:native/);
  t.match(
    explainLoadFailure(exists, new Error('libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory')),
    /npm run setup/,
  );
  t.match(
    explainLoadFailure(exists, new Error('was compiled against a different Node.js version using NODE_MODULE_VERSION 108')),
    /npm run build:native/,
  );
  t.match(explainLoadFailure(exists, new Error('undefined symbol: _ZN3c10...')), /Rebuild it with `npm run build:native`/);
});

t.test('a broken .node file gives NativeLoadError with advice (real dlopen, child process)', async (t) => {
  const bad = join(dir, 'bad.node');
  await writeFile(bad, Buffer.alloc(4096, 7));
  const file = join(dir, 'load.mts');
  await writeFile(
    file,
    `import { loadNative } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src', 'native.ts')).href)};
try { loadNative(); console.log('loaded?!'); } catch (e) { console.log(e.name + ': ' + e.message); }`,
  );
  const r = await run(process.execPath, ['--import', 'tsx', file], {
    cwd: ROOT,
    env: { ...process.env, DENSENET_ADDON: bad },
    reject: false,
    quiet: true,
  });
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /NativeLoadError: .*bad\.node/);
  t.match(r.stdout, /npm run build:native/);
});
