/**
 * A real listening densenet-serve for tests that need the network (multipart streaming, drain,
 * Prometheus scrapes, the client and README tests). Two ways, both on 127.0.0.1 with a free port
 * and the real default model (exported on first use by ensureDefaultModel()):
 *
 *   const s = await startServer({ maxBatch: 4 });   // in this process: s.url, s.app, await s.close()
 *   const c = await spawnServer({ MAX_BATCH: '4' }); // child `node --import tsx src/server/main.ts`:
 *                                                    // c.url, c.child, c.logs(), await c.stop('SIGTERM') -> exit code
 *
 * Both resolve only once the server is ready (model loaded and warmed up).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { GLIBC_TUNABLES, configFrom, type Config } from '../../src/config.js';
import { buildApp } from '../../src/server/app.js';
import { ensureDefaultModel } from './model.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface TestServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

export async function startServer(overrides: Partial<Config> = {}): Promise<TestServer> {
  const { modelPath } = await ensureDefaultModel();
  const config = configFrom({ host: '127.0.0.1', port: 0, logLevel: 'silent', modelPath, ...overrides });
  const { loadBackend } = await import('../../src/server/load.js');
  const backend = await loadBackend(config);
  const app = await buildApp(config, { version: 'test' });
  const service = app.ctx.attach(backend, { cold: true });
  await (await service.warmup()).background;
  app.ctx.markReady();
  await app.listen({ host: config.host, port: 0 });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    app,
    async close() {
      await app.close();
    },
  };
}

export interface ChildServer {
  url: string;
  child: ChildProcess;
  /** Everything the child wrote so far (JSON log lines and stderr). */
  logs(): string;
  /** Send a signal (default SIGTERM) and resolve the exit code (null if killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function spawnServer(env: Record<string, string> = {}, readyTimeoutMs = 120_000): Promise<ChildServer> {
  const { modelPath } = await ensureDefaultModel();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server/main.ts'], {
    cwd: REPO_ROOT,
    env: { ...process.env, GLIBC_TUNABLES, HOST: '127.0.0.1', PORT: '0', MODEL_PATH: modelPath, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(child, 'exit');
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`server not ready after ${readyTimeoutMs} ms:\n${out.slice(-3000)}`)), readyTimeoutMs);
    const check = (): void => {
      const listen = /listening at (http:\/\/127\.0\.0\.1:\d+)/i.exec(out);
      if (listen && /"msg":"ready"/.test(out)) done(undefined, listen[1]);
    };
    const onExit = (code: number | null): void => done(new Error(`server exited (${code}) before ready:\n${out.slice(-3000)}`));
    function done(err?: Error, u?: string): void {
      clearTimeout(timer);
      child.stdout!.off('data', check);
      child.off('exit', onExit);
      if (err) {
        child.kill('SIGKILL');
        reject(err);
      } else resolve(u!);
    }
    child.stdout!.on('data', check);
    child.on('exit', onExit);
  });
  return {
    url,
    child,
    logs: () => out,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}
