/**
 * The two servers `npm run bench` compares, each started as a child process on a free
 * 127.0.0.1 port and timed from spawn to the first GET /readyz 200:
 * - densenet-serve as `npm start` runs it (node dist/src/server/main.js, NODE_ENV=production,
 *   the allocator settings and V8 flags of npm start and the Dockerfile);
 * - the Python baseline (scripts/baseline/server.py) under gunicorn, with Debian's Python.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { GLIBC_TUNABLES, NODE_FLAGS } from '../../../src/config.js';
import { run } from '../exec.js';
import { findTorchPython } from '../python.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SERVER_ENTRY = join(ROOT, 'dist/src/server/main.js');
/** Both made by `npm run build:native`: the libtorch addon and the preprocessing workers' image addon. */
const ADDONS = ['densenet.node', 'densenet_image.node'].map((f) => join(ROOT, 'build/Release', f));
const BASELINE_DIR = join(ROOT, 'scripts/baseline');
const READY_TIMEOUT_MS = 180_000;

export interface Server {
  name: string;
  url: string;
  pid: number;
  /** Spawn to the first GET /readyz 200, ms. */
  startMs: number;
  output(): string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
// A bench that dies or is interrupted leaves no server behind.
process.on('exit', () => live.forEach((p) => p.kill('SIGKILL')));

export async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

function newestMtime(dir: string, name: RegExp): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p, name) : name.test(e.name) ? statSync(p).mtimeMs : 0);
  }
  return newest;
}

const stale = (output: string, sources: string, name: RegExp): boolean =>
  !existsSync(output) || statSync(output).mtimeMs < newestMtime(join(ROOT, sources), name);

/** densenet-serve runs from dist/ and build/ (as npm start and the image do): rebuild what is older than its sources. */
export async function ensureBuilt(log: (s: string) => void): Promise<void> {
  if (ADDONS.some((a) => stale(a, 'native', /\.(cc|h)$/))) {
    log('an addon is missing or older than native/: npm run build:native');
    await run('npm', ['run', 'build:native'], { cwd: ROOT, hint: 'the addon needs libtorch-dev, cmake and g++ (npm run setup)' });
  }
  if (stale(SERVER_ENTRY, 'src', /\.ts$/)) {
    log('dist/ is older than src/: npm run build:ts');
    await run('npm', ['run', 'build:ts'], { cwd: ROOT, hint: 'fix the TypeScript errors above' });
  }
}

/** Debian's Python with torch, and with Flask and gunicorn (npm run setup -- --test). */
export async function baselinePython(): Promise<string> {
  const py = await findTorchPython();
  const r = await execa(py, ['-c', 'import flask, gunicorn, PIL'], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) {
    throw new Error(`${py} has no Flask or gunicorn: run \`npm run setup -- --test\` (installs python3-flask and gunicorn), or pass --no-baseline`);
  }
  return py;
}

/** One GET /readyz; resolves its status (0 when the connection failed). */
function readyz(url: string): Promise<number> {
  return new Promise((done) => {
    const req = http.get(`${url}/readyz`, { agent: false, timeout: READY_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => done(0));
  });
}

async function start(name: string, file: string, args: string[], env: NodeJS.ProcessEnv, port: number): Promise<Server> {
  const url = `http://127.0.0.1:${port}`;
  const t0 = performance.now();
  const proc = spawn(file, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let out = '';
  const keep = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 200_000) out = out.slice(-100_000); // densenet-serve logs every request
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = once(proc, 'exit');
  exited.then(() => live.delete(proc), () => undefined);
  const server: Server = {
    name,
    url,
    pid: proc.pid!,
    startMs: NaN,
    output: () => out,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      // gunicorn: SIGINT is its quick shutdown (SIGTERM waits up to 30 s for busy threads).
      proc.kill(name === 'baseline' ? 'SIGINT' : 'SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
  while (performance.now() - t0 < READY_TIMEOUT_MS) {
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    if ((await readyz(url)) === 200) {
      server.startMs = performance.now() - t0;
      return server;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await server.stop();
  throw new Error(`${name} was not ready within ${READY_TIMEOUT_MS / 1000} s (exit ${proc.exitCode ?? proc.signalCode ?? 'none'}):\n${out.slice(-3000)}`);
}

/** densenet-serve with the environment npm start gives it, plus the bench's --env settings. */
export async function startServe(modelPath: string, extraEnv: Record<string, string>): Promise<Server> {
  const port = await freePort();
  const env = {
    ...process.env,
    NODE_ENV: 'production',
    GLIBC_TUNABLES: process.env.GLIBC_TUNABLES || GLIBC_TUNABLES,
    HOST: '127.0.0.1',
    PORT: String(port),
    MODEL_PATH: resolve(ROOT, modelPath),
    ...extraEnv,
  };
  return start('densenet-serve', process.execPath, [...NODE_FLAGS, SERVER_ENTRY], env, port);
}

export const BASELINE_ARGS = ['-m', 'gunicorn', '-w', '1', '--threads', '4'];

export async function startBaseline(python: string, modelPath: string): Promise<Server> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, MODEL_PATH: resolve(ROOT, modelPath) };
  delete env.GLIBC_TUNABLES; // a plain Python deployment; nothing tuned
  const args = [...BASELINE_ARGS, '-b', `127.0.0.1:${port}`, '--chdir', BASELINE_DIR, 'server:app'];
  return start('baseline', python, args, env, port);
}
