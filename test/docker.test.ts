/**
 * The real image: builds the project's Dockerfile (unchanged; only the base images are build args,
 * pointing at an offline stand-in made here with the Node major the Dockerfile ships), runs it on
 * 127.0.0.1, checks it runs that Node, waits for /readyz, classifies an image, checks the user is
 * not root, the health check and allocator setting, that a CPU image ships nothing of third_party/
 * and ran its build-time smoke forward, then sends SIGTERM (docker stop) and expects a clean exit 0.
 * Prints the image size and the time from `docker run` to /readyz 200. A second build from a copy
 * of the context with one source file changed must take the exported model from the layer cache.
 *
 * Slow the first time (apt installs libtorch in the build and runtime stages, ~10-20 min on
 * 2 cores); Docker's layer cache makes reruns take a few minutes. Needs docker.io and debootstrap
 * (npm run setup -- --test); dockerd is started here when none answers, and stopped again.
 */
import t from 'tap';
import sharp from 'sharp';
import { appendFile, cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../scripts/lib/exec.js';
import { buildSteps, docker, ensureDockerDaemon, ensureNodeBase, imageNodeMajor, waitForHttp } from './helpers/docker.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const IMAGE = 'densenet-serve:docker-test';
const NAME = `densenet-docker-test-${process.pid}`;

t.setTimeout(2_700_000);

const log = (s: string) => t.comment(s);

t.test('Dockerfile: build, run, classify, non-root, SIGTERM', async (t) => {
  const daemon = await ensureDockerDaemon(log);
  t.teardown(() => daemon.release());
  const base = await ensureNodeBase(ROOT, log);
  t.comment(`stand-in base image: ${base}`);

  const started = Date.now();
  const build = await docker(['build', '--build-arg', `BASE_IMAGE=${base}`, '--build-arg', `RUNTIME_IMAGE=${base}`, '-t', IMAGE, ROOT], {
    reject: false,
    timeoutMs: 2_400_000,
  });
  if (build.exitCode !== 0) {
    const tail = `${build.stdout}\n${build.stderr}`.trim().split('\n').slice(-60).join('\n');
    t.fail(`docker build failed (exit ${build.exitCode}):\n${tail}`);
    return;
  }
  t.pass(`docker build succeeded in ${Math.round((Date.now() - started) / 1000)} s`);
  // Docker keeps a RUN layer only when its command succeeded, so a smoke step taken from the cache
  // passed in an earlier build of the same inputs; with TORCH_SOURCE=apt it cannot skip the forward.
  const smoke = buildSteps(build.stdout).find((s) => s.instruction.includes('smoke forward ok'));
  t.ok(smoke, 'the Dockerfile has a build-time smoke forward step');
  if (smoke?.cached) t.comment('the smoke-forward step came from the layer cache (it passed when that layer was built)');
  else t.match(smoke?.output ?? '', /smoke forward ok: libtorch [\d.]+, output \[1,1000\]/, 'the runtime stage loaded the model and ran one forward at build time');
  const thirdParty = await docker(['run', '--rm', '--entrypoint', 'ls', IMAGE, '-A', '/app/third_party']);
  t.equal(thirdParty.stdout.trim(), '', 'a CPU image (TORCH_SOURCE=apt) ships nothing of third_party/');
  const nodeVersion = (await docker(['run', '--rm', '--entrypoint', 'node', IMAGE, '--version'])).stdout.trim();
  t.match(nodeVersion, new RegExp(`^v${imageNodeMajor(ROOT)}\\.`), `the image runs the Node the Dockerfile ships (${nodeVersion}), not the host's ${process.version}`);
  const size = Number((await docker(['image', 'inspect', '--format', '{{.Size}}', IMAGE])).stdout.trim());
  t.comment(`image size: ${(size / 1e6).toFixed(0)} MB (${IMAGE})`);
  t.ok(size > 0, 'image has a size');

  const inspect = JSON.parse((await docker(['image', 'inspect', IMAGE])).stdout)[0].Config as {
    User: string; ExposedPorts: Record<string, unknown>; Env: string[]; Cmd: string[]; Healthcheck?: { Test: string[] };
  };
  t.match(inspect.User, /^[1-9]\d*(:\d+)?$/, 'image USER is a numeric non-root uid');
  t.ok('8080/tcp' in inspect.ExposedPorts, 'EXPOSE 8080');
  t.ok(inspect.Env.some((e) => e.startsWith('GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432')), 'GLIBC_TUNABLES set');
  t.same(inspect.Cmd.slice(0, 1), ['node'], 'exec-form CMD runs node as PID 1');
  t.equal(inspect.Healthcheck?.Test[0], 'CMD', 'exec-form HEALTHCHECK');

  await docker(['rm', '-f', NAME], { reject: false, quiet: true });
  const runStarted = Date.now();
  await docker(['run', '-d', '--name', NAME, '-p', '127.0.0.1::8080', IMAGE]);
  t.teardown(async () => {
    await docker(['rm', '-f', NAME], { reject: false, quiet: true });
  });
  const port = (await docker(['port', NAME, '8080/tcp'])).stdout.trim().split('\n')[0]!.split(':').pop();
  const baseUrl = `http://127.0.0.1:${port}`;

  let exited = false;
  const watch = setInterval(() => {
    docker(['inspect', '--format', '{{.State.Running}}', NAME], { reject: false, quiet: true }).then(
      (s) => {
        if (s.stdout.trim() === 'false') exited = true;
      },
      () => undefined, // a failed inspect is retried on the next tick
    );
  }, 2000);
  try {
    await waitForHttp(`${baseUrl}/readyz`, 300_000, () => exited);
  } catch (err) {
    const logs = await docker(['logs', '--tail', '60', NAME], { reject: false, quiet: true });
    t.fail(`container never became ready: ${(err as Error).message}\n${logs.stdout}\n${logs.stderr}`);
    return;
  } finally {
    clearInterval(watch);
  }
  const readySeconds = (Date.now() - runStarted) / 1000;
  t.pass(`/readyz answered 200 ${readySeconds.toFixed(1)} s after docker run`);
  t.comment(`container start to /readyz 200: ${readySeconds.toFixed(1)} s (docker run -> model loaded and warmed up, this machine, one run)`);

  const info = (await (await fetch(`${baseUrl}/`)).json()) as { model?: { weights?: string; random_init?: boolean; num_classes?: number; device?: string } };
  t.equal(info.model?.num_classes, 1000, 'GET /: 1000 classes');
  t.equal(info.model?.device, 'cpu');
  t.comment(`weights in the image: ${info.model?.weights} (random_init: ${info.model?.random_init})`);

  const png = await sharp({ create: { width: 320, height: 240, channels: 3, background: { r: 200, g: 120, b: 40 } } })
    .composite([{ input: Buffer.from('<svg width="320" height="240"><circle cx="160" cy="120" r="80" fill="#3050e0"/></svg>'), top: 0, left: 0 }])
    .png()
    .toBuffer();
  const form = new FormData();
  form.append('image', new Blob([png], { type: 'image/png' }), 'test.png');
  const res = await fetch(`${baseUrl}/predict`, { method: 'POST', body: form });
  const body = (await res.json()) as { predictions?: { class_id: number; class_name: string; confidence: number }[]; model_variant?: string; latency_ms?: number };
  t.equal(res.status, 200, `POST /predict: 200 (${JSON.stringify(body).slice(0, 300)})`);
  const preds = body.predictions ?? [];
  t.equal(preds.length, 5, 'top-5');
  t.ok(preds.every((p) => Number.isInteger(p.class_id) && p.class_id >= 0 && p.class_id < 1000 && typeof p.class_name === 'string' && p.class_name.length > 0), 'class ids and names');
  t.ok(preds.every((p, i) => p.confidence >= 0 && p.confidence <= 1 && (i === 0 || preds[i - 1]!.confidence >= p.confidence)), 'softmax confidences, descending');
  t.ok(preds.reduce((s, p) => s + p.confidence, 0) <= 1.0001, 'top-5 of a softmax sums to at most 1');
  t.type(body.model_variant, 'string');
  t.comment(`predict latency in the container: ${body.latency_ms} ms; top-1 ${preds[0]?.class_name} ${preds[0]?.confidence}`);

  const uid = (await docker(['exec', NAME, 'id', '-u'])).stdout.trim();
  t.not(uid, '0', `runs as uid ${uid}, not root`);
  const hc = inspect.Healthcheck!.Test.slice(1);
  const health = await docker(['exec', NAME, ...hc], { reject: false });
  t.equal(health.exitCode, 0, 'the HEALTHCHECK command passes inside the container');
  const tun = (await docker(['exec', NAME, 'node', '-p', 'process.env.GLIBC_TUNABLES'])).stdout.trim();
  t.match(tun, /arena_max=1/, 'allocator setting reaches the server process');

  const stop = await docker(['stop', '--time', '30', NAME]);
  t.equal(stop.exitCode, 0);
  const state = JSON.parse((await docker(['inspect', '--format', '{{json .State}}', NAME])).stdout) as { ExitCode: number; OOMKilled: boolean };
  t.equal(state.ExitCode, 0, 'SIGTERM: the server drained and exited 0 (not killed after the grace period)');
  const logs = await docker(['logs', '--tail', '20', NAME], { reject: false, quiet: true });
  t.comment(`last log lines:\n${`${logs.stdout}\n${logs.stderr}`.trim().split('\n').slice(-5).join('\n')}`);
});

t.test('a source change reuses the exported model from the layer cache', async (t) => {
  const daemon = await ensureDockerDaemon(log);
  t.teardown(() => daemon.release());
  const base = await ensureNodeBase(ROOT, log);
  // A copy of the build context (tracked files) with one server file changed.
  const ctx = await mkdtemp(join(tmpdir(), 'densenet-docker-ctx-'));
  t.teardown(() => rm(ctx, { recursive: true, force: true }));
  const files = (await run('git', ['ls-files', '-z'], { cwd: ROOT, quiet: true })).stdout.split('\0').filter(Boolean);
  for (const f of files) await cp(join(ROOT, f), join(ctx, f), { recursive: true }).catch(() => undefined);
  // Unique per run: a change built before on this daemon would come from the cache.
  await appendFile(join(ctx, 'src', 'server', 'main.ts'), `\n// changed by test/docker.test.ts, pid ${process.pid} at ${Date.now()}\n`);
  const build = await docker(['build', '--build-arg', `BASE_IMAGE=${base}`, '--build-arg', `RUNTIME_IMAGE=${base}`, '-t', `${IMAGE}-changed`, ctx], { reject: false, timeoutMs: 2_400_000 });
  t.teardown(async () => {
    await docker(['rmi', `${IMAGE}-changed`], { reject: false, quiet: true });
  });
  t.equal(build.exitCode, 0, `rebuild succeeded${build.exitCode ? `:\n${`${build.stdout}\n${build.stderr}`.split('\n').slice(-30).join('\n')}` : ''}`);
  const steps = buildSteps(build.stdout);
  const cached = (re: RegExp) => steps.find((s) => re.test(s.instruction))?.cached;
  t.equal(cached(/npm run export-model/), true, 'the export step came from the cache');
  t.equal(cached(/^COPY src\/ src\//), false, 'the changed source was copied again');
});
