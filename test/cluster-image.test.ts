/**
 * The image tag hashes exactly what the Dockerfile copies (issue 12.7): a scratch build context
 * made of the real Dockerfile and .dockerignore plus stand-in files; editing scripts/deploy.ts,
 * tests or docs keeps the tag, editing the server changes it; third_party/ and host models count
 * only for the build argument that uses them. And the Dockerfile's order: the model is exported in
 * a layer that copies only the exporter's own import closure, before the sources.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInputFiles, buildInputsHash, dockerfileInputs, dockerignoreMatcher } from '../scripts/lib/docker.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DOCKERFILE = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

let ctx = '';
const put = async (rel: string, content: string) => {
  await mkdir(dirname(join(ctx, rel)), { recursive: true });
  await writeFile(join(ctx, rel), content);
};

t.before(async () => {
  ctx = await mkdtemp(join(tmpdir(), 'densenet-image-ctx-'));
  await copyFile(join(ROOT, 'Dockerfile'), join(ctx, 'Dockerfile'));
  await copyFile(join(ROOT, '.dockerignore'), join(ctx, '.dockerignore'));
  for (const f of [
    'package.json', 'package-lock.json', 'CMakeLists.txt', 'tsconfig.json', 'tsconfig.build.json',
    'models/export.py', 'models/README.md', 'models/densenet121.pt', 'models/densenet121.json', 'models/old.pth',
    'scripts/export-model.ts', 'scripts/deploy.ts', 'scripts/lib/args.ts', 'scripts/lib/cli.ts', 'scripts/lib/errors.ts',
    'scripts/lib/exec.ts', 'scripts/lib/python.ts', 'scripts/lib/kube.ts',
    'src/card.ts', 'src/errors.ts', 'src/server/main.ts', 'native/engine.cc',
    'third_party/README.md', 'third_party/libtorch/lib/libtorch_cuda.so',
    'test/a.test.ts', 'knative/service.yaml', 'README.md', 'docs/cluster.md', 'node_modules/x/index.js', 'build/Release/densenet.node',
  ]) await put(f, `${f} v1\n`);
});
t.teardown(() => rm(ctx, { recursive: true, force: true }));

/** Whether editing `rel` (appending a line) changes the tag; the file is restored afterwards. */
async function changes(rel: string, args: Record<string, string> = {}): Promise<boolean> {
  const original = readFileSync(join(ctx, rel), 'utf8');
  const before = await buildInputsHash(ctx, args);
  await put(rel, `${original}# edited\n`);
  const after = await buildInputsHash(ctx, args);
  await put(rel, original);
  return before !== after;
}

t.test('the Dockerfile is read for its COPY sources, conditions and ARG defaults', async (t) => {
  const { copies, argDefaults } = dockerfileInputs(DOCKERFILE);
  t.match(argDefaults, { TORCH_SOURCE: 'apt', MODEL_SOURCE: 'export', NODE_VERSION: '24' });
  t.same(copies.find((c) => c.source === 'third_party/')?.when, { arg: 'TORCH_SOURCE', value: 'context' });
  t.same(copies.find((c) => c.source === 'models/')?.when, { arg: 'MODEL_SOURCE', value: 'context' });
  t.notOk(copies.some((c) => c.source.startsWith('/app')), 'COPY --from lines are not context inputs');
  const files = await buildInputFiles(ctx);
  t.ok(files.includes('src/server/main.ts') && files.includes('native/engine.cc') && files.includes('package-lock.json'));
  t.notOk(files.some((f) => /^(test|knative|docs|node_modules|build)\//.test(f) || f === 'README.md' || f === 'scripts/deploy.ts'), `not hashed: ${files.join(' ')}`);
});

t.test('issue 12.7: only what goes into the image changes the tag', async (t) => {
  for (const f of ['scripts/deploy.ts', 'scripts/lib/kube.ts', 'test/a.test.ts', 'knative/service.yaml', 'README.md', 'docs/cluster.md', 'node_modules/x/index.js', 'build/Release/densenet.node']) {
    t.notOk(await changes(f), `${f}: same tag`);
  }
  for (const f of ['src/server/main.ts', 'native/engine.cc', 'package-lock.json', 'scripts/export-model.ts', 'models/export.py', 'Dockerfile']) {
    t.ok(await changes(f), `${f}: new tag`);
  }
  t.notOk(await changes('third_party/libtorch/lib/libtorch_cuda.so'), 'third_party/: not an input of the CPU image');
  t.ok(await changes('third_party/README.md', { TORCH_SOURCE: 'context' }), 'third_party/: an input with TORCH_SOURCE=context');
  t.notOk(await changes('models/densenet121.pt'), 'host model: not an input when the build exports its own');
  t.ok(await changes('models/densenet121.pt', { MODEL_SOURCE: 'context' }), 'host model: an input with MODEL_SOURCE=context');
  t.notOk(await changes('models/old.pth', { MODEL_SOURCE: 'context' }), '.dockerignore keeps checkpoints out');
  const a = await buildInputsHash(ctx);
  t.not(await buildInputsHash(ctx, { MODEL_SOURCE: 'context' }), a, 'build args are part of the tag');
  t.equal(await buildInputsHash(ctx, { TORCH_SOURCE: 'apt' }), a, 'an argument given at its default is the same build');
});

t.test('.dockerignore patterns', async (t) => {
  const m = dockerignoreMatcher('# c\nnode_modules\n/build\nmodels/*.pth\n**/__pycache__\n');
  t.ok(m('node_modules') && m('node_modules/a/b') && m('build/x') && m('models/a.pth') && m('src/__pycache__/x'));
  t.notOk(m('src/node_modules_x') || m('models/a.pt') || m('models/sub/a.pth') || m('rebuild'));
});

/** Relative imports a file needs at run time (type-only imports are erased by tsx). */
function importClosure(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (rel: string): void => {
    if (seen.has(rel)) return;
    seen.add(rel);
    const text = readFileSync(join(ROOT, rel), 'utf8');
    for (const m of text.matchAll(/^(?!import type)(?:import|export)[^;]*?from\s+'(\.{1,2}\/[^']+)'|import\('(\.{1,2}\/[^']+)'\)/gm)) {
      const spec = (m[1] ?? m[2])!;
      visit(posix.normalize(posix.join(posix.dirname(rel), spec)).replace(/\.js$/, '.ts'));
    }
  };
  visit(entry);
  return seen;
}

t.test('issue 12.7: the model is exported before the sources, from the exporter files alone', async (t) => {
  const lines = DOCKERFILE.replace(/\\\n/g, ' ').split('\n');
  const exportRun = lines.findIndex((l) => /^RUN .*npm run export-model/.test(l));
  const copySrc = lines.findIndex((l) => /^COPY src\/ src\//.test(l));
  const copyNative = lines.findIndex((l) => /^COPY native\//.test(l));
  t.ok(exportRun > 0 && exportRun < copySrc && exportRun < copyNative, 'export RUN before COPY src/ and native/: a code change keeps the cached model layer');
  const copiedBefore = new Set(
    lines
      .slice(0, exportRun)
      .filter((l) => /^COPY /.test(l) && !/--from=/.test(l))
      .flatMap((l) => {
        const parts = l.trim().split(/\s+/).slice(1);
        const dest = parts.pop()!;
        return parts.map((p) => (dest.endsWith('/') && !p.endsWith('/') && dest !== './' ? posix.join(dest, posix.basename(p)) : p));
      }),
  );
  const closure = importClosure('scripts/export-model.ts');
  const missing = [...closure].filter((f) => !copiedBefore.has(f));
  t.same(missing, [], `every file the exporter imports is copied before the export step (closure: ${[...closure].join(', ')})`);
  t.ok(copiedBefore.has('models/export.py'), 'and the Python exporter');
});

t.test('the runtime stage checks the image at build time: one forward on the model', async (t) => {
  const runtime = DOCKERFILE.slice(DOCKERFILE.indexOf('AS runtime'));
  const smoke = runtime.indexOf('Model.load(process.env.MODEL_PATH');
  t.ok(smoke > runtime.indexOf('ENV NODE_ENV=production') && smoke < runtime.indexOf('USER 10001'), 'after the environment it runs with, before dropping root');
  t.match(runtime, /m\.forward\(new Float32Array\(c \* h \* w\), \[1, c, h, w\]\)/);
  t.match(DOCKERFILE, /if \[ "\$TORCH_SOURCE" != context \]; then find third_party -mindepth 1 -delete; fi/, 'apt builds ship no third_party/ content');
});
