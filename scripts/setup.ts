/**
 * `npm run setup [-- --test]` (after `npm install`): everything a fresh Debian 12 machine needs,
 * each step skipped when already done, so a second run takes seconds.
 *   1. Debian packages (dpkg-query first; apt-get only for what is missing, as root)
 *   2. the native addons (only if build/Release/densenet.node or densenet_image.node is missing or older than their sources)
 *   3. TypeScript -> dist/ (only if a source is newer than the last build)
 *   4. the default model export (idempotent exporter)
 *   5. a smoke check: load the model through the addon and run one forward
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bool, defineCli, isMain } from './lib/args.js';
import { runMain } from './lib/cli.js';
import { ScriptError } from './lib/errors.js';
import { run } from './lib/exec.js';
import { exportModel } from './export-model.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Needed to build and run: libtorch + headers, oneDNN's headers (the DenseNet executor; libtorch already links libdnnl), Python torch for the exporter, the OpenMP OpenBLAS (4x faster than netlib BLAS). */
export const RUNTIME_PACKAGES = ['libtorch-dev', 'libdnnl-dev', 'python3-torch', 'python3-torchvision', 'libopenblas0-openmp', 'python3', 'cmake', 'g++', 'make'] as const;
/** Needed only by the tests (`--test`): container build/run, Prometheus scrape test, offline base image, the README's curl examples, `npm run lint`'s C++ check, the Python baseline of `npm run bench` (Flask, gunicorn), the try-it page's browser test. */
export const TEST_PACKAGES = ['docker.io', 'prometheus', 'debootstrap', 'curl', 'clang-format', 'python3-flask', 'gunicorn', 'chromium'] as const;

/** Both made by one `npm run build:native`: the libtorch addon and the image addon of the preprocessing workers. */
const NATIVE_ADDONS = [join(ROOT, 'build', 'Release', 'densenet.node'), join(ROOT, 'build', 'Release', 'densenet_image.node')];
const TS_STAMP = join(ROOT, 'dist', '.setup-build-stamp');

export const CLI = defineCli({
  name: 'setup',
  summary: 'Sets up this machine (Debian 12, as root for the package step) and this checkout. Each step is\nskipped when it is already done.',
  options: {
    test: { type: 'boolean', help: 'also install the packages the tests need' },
    'force-build': { type: 'boolean', help: 'rebuild the addon and TypeScript even if they look up to date' },
  },
  details: `Steps:
  1. Debian packages: ${RUNTIME_PACKAGES.join(' ')}
     with --test also: ${TEST_PACKAGES.join(' ')}
  2. native addons (npm run build:native) if build/Release/densenet.node or densenet_image.node is missing
     or older than native/ or CMakeLists.txt
  3. TypeScript (npm run build:ts) if a file in src/ is newer than the last build
  4. the default model (npm run export-model: ImageNet weights if downloadable, else seeded random)
  5. smoke check: load the model through the addon and run one forward
`,
});

const log = (line: string): void => console.log(line);
const step = (n: number, title: string): void => console.log(`\n[${n}/5] ${title}`);

async function missingPackages(pkgs: readonly string[]): Promise<string[]> {
  // One call for all; unknown packages are reported on stderr (exit 1) and simply not listed.
  const r = await run('dpkg-query', ['-W', '-f=${Package}:${db:Status-Status}\\n', ...pkgs], { quiet: true, reject: false });
  const installed = new Set(
    r.stdout.split('\n').filter((l) => l.endsWith(':installed')).map((l) => l.slice(0, -':installed'.length).split(':')[0]),
  );
  return pkgs.filter((p) => !installed.has(p));
}

async function ensurePackages(pkgs: readonly string[]): Promise<void> {
  if (!existsSync('/usr/bin/dpkg-query')) {
    log(`  not a Debian system (no dpkg-query): make sure the equivalents of ${pkgs.join(' ')} are installed; continuing`);
    return;
  }
  const missing = await missingPackages(pkgs);
  if (missing.length === 0) {
    log(`  all ${pkgs.length} packages installed: skipped`);
    return;
  }
  const install = ['install', '-y', '--no-install-recommends', ...missing];
  if (process.getuid?.() !== 0) {
    throw new ScriptError(
      `missing Debian packages: ${missing.join(' ')}\n` +
        `run as root:\n  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get ${install.join(' ')}\nthen run npm run setup again`,
    );
  }
  log(`  installing: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update'], { inherit: true, env, hint: 'check network access to the Debian mirrors' });
  await run('apt-get', install, { inherit: true, env, hint: 'see apt-get output above' });
}

/** Newest mtime (ms) of the files under `paths` whose names pass `keep`; 0 if none. */
function newestMtime(paths: readonly string[], keep: (name: string) => boolean): number {
  let newest = 0;
  const visit = (p: string): void => {
    if (!existsSync(p)) return;
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const e of readdirSync(p)) visit(join(p, e));
    } else if (keep(p)) {
      newest = Math.max(newest, st.mtimeMs);
    }
  };
  for (const p of paths) visit(p);
  return newest;
}

async function buildNative(force: boolean): Promise<void> {
  const sources = newestMtime([join(ROOT, 'native'), join(ROOT, 'CMakeLists.txt')], (f) => /\.(cc|cpp|h|hpp|txt)$/.test(f));
  const missing = NATIVE_ADDONS.filter((f) => !existsSync(f));
  const built = missing.length === 0 ? Math.min(...NATIVE_ADDONS.map((f) => statSync(f).mtimeMs)) : 0;
  if (!force && missing.length === 0 && built >= sources) {
    log('  build/Release/densenet.node and densenet_image.node are newer than native/ and CMakeLists.txt: skipped');
    return;
  }
  log(missing.length === 0 ? '  sources changed since the last build: rebuilding' : `  no ${missing.map((f) => basename(f)).join(', ')} yet: building (about a minute)`);
  await run('npm', ['run', 'build:native'], { inherit: true, hint: 'the addon needs libtorch-dev, cmake and g++ (step 1)' });
}

async function buildTs(force: boolean): Promise<void> {
  const inputs = newestMtime(
    [join(ROOT, 'src'), join(ROOT, 'tsconfig.json'), join(ROOT, 'tsconfig.build.json'), join(ROOT, 'package.json')],
    (f) => /\.(ts|json)$/.test(f),
  );
  if (!force && existsSync(TS_STAMP) && statSync(TS_STAMP).mtimeMs >= inputs) {
    log('  dist/ is newer than src/: skipped');
    return;
  }
  const started = Date.now();
  await run('npm', ['run', 'build:ts'], { inherit: true });
  await mkdir(dirname(TS_STAMP), { recursive: true });
  await writeFile(TS_STAMP, `${new Date(started).toISOString()}\n`);
}

async function smokeCheck(modelPath: string, crop: number): Promise<void> {
  // Imported here so steps 1–4 still work (and explain themselves) when the addon cannot load.
  const { Model } = await import('../src/model.js');
  const model = await Model.load(modelPath, { threads: availableParallelism() });
  try {
    const x = new Float32Array(3 * crop * crop);
    const t0 = performance.now();
    const { shape } = await model.forward(x, [1, 3, crop, crop]);
    log(`  ${model.info.device}, libtorch ${model.info.torchVersion}, ${model.info.threads} threads, ` +
      `optimisations [${model.info.optimizations.join(', ')}]: forward -> [${shape.join(', ')}] in ${(performance.now() - t0).toFixed(0)} ms`);
  } finally {
    await model.dispose();
  }
}

async function main(): Promise<void> {
  const p = CLI.parse(process.argv.slice(2));
  if (!p) return;
  const withTest = bool(p, 'test');
  const force = bool(p, 'force-build');
  const t0 = performance.now();

  step(1, `Debian packages${withTest ? ' (with test packages)' : ''}`);
  await ensurePackages(withTest ? [...RUNTIME_PACKAGES, ...TEST_PACKAGES] : RUNTIME_PACKAGES);

  step(2, 'native addons');
  await buildNative(force);

  step(3, 'TypeScript');
  await buildTs(force);

  step(4, 'model export');
  const exported = await exportModel({ log: (l) => log(`  ${l}`) });

  step(5, 'smoke check');
  await smokeCheck(exported.modelPath, exported.card.crop);

  log(`\nsetup done in ${((performance.now() - t0) / 1000).toFixed(1)} s. Try: npm run classify -- some.jpg   (npm start serves HTTP)`);
}

if (isMain(import.meta.url)) await runMain(CLI.name, main);
