/**
 * SIGTERM while requests are in flight: every request is answered (200 with predictions), the
 * process exits 0 and says it drained. The server is a child process (`node --import tsx
 * src/server/main.ts`), the way it runs in production.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';
import { GLIBC_TUNABLES } from '../src/config.js';
import { ensureDefaultModel } from './helpers/model.js';
import { makeImage } from './helpers/images.js';
import { spawnServer } from './helpers/server.js';

t.test('SIGTERM drains in-flight requests and exits 0', async (t) => {
  const server = await spawnServer({ MAX_BATCH: '2', BATCH_WINDOW_MS: '5' });
  t.teardown(() => server.stop('SIGKILL'));
  t.equal((await fetch(`${server.url}/readyz`)).status, 200, 'ready before');

  const N = 6;
  const images = await Promise.all(Array.from({ length: N }, (_, i) => makeImage('jpeg', { seed: 300 + i, width: 320, height: 240 })));
  // batch_size 2 makes each request a full forward, so the queue holds several forwards of work.
  const inflight = images.map(async (img) => {
    const r = await fetch(`${server.url}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ image: img.toString('base64'), batch_size: 2 }),
    });
    return { status: r.status, body: (await r.json()) as { predictions?: unknown[]; code?: string } };
  });
  // Signal once the server has received every request (pino logs "incoming request").
  const received = () => (server.logs().match(/"url":"\/predict"[^\n]*"msg":"incoming request"|"msg":"incoming request"[^\n]*"url":"\/predict"/g) ?? []).length;
  const until = Date.now() + 60_000;
  while (received() < N && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.equal(received(), N, 'all requests reached the server before SIGTERM');
  const exit = server.stop('SIGTERM');

  const results = await Promise.all(inflight);
  for (const [i, r] of results.entries()) {
    t.equal(r.status, 200, `request ${i} answered: ${JSON.stringify(r.body).slice(0, 120)}`);
    t.equal(r.body.predictions?.length, 5);
  }
  t.equal(await exit, 0, 'exit code 0');
  t.match(server.logs(), /draining: finishing in-flight requests/);
  t.match(server.logs(), /drained; exiting 0/);
  await t.rejects(fetch(`${server.url}/healthz`), 'no longer listening');
});

t.test('SIGINT on an idle server exits 0 too', async (t) => {
  const server = await spawnServer({ MAX_BATCH: '1' });
  t.teardown(() => server.stop('SIGKILL'));
  t.equal(await server.stop('SIGINT'), 0);
});

t.test('SIGTERM while the model loads or warms up: exit 0 once its threads have stopped, never a crash', async (t) => {
  const { modelPath } = await ensureDefaultModel();
  // At "listening" the model has not been loaded yet; at "model loaded" the warm-up is starting.
  for (const after of ['Server listening', '"msg":"model loaded"']) {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server/main.ts'], {
      env: { ...process.env, GLIBC_TUNABLES, HOST: '127.0.0.1', PORT: '0', MODEL_PATH: modelPath, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const exited = once(child, 'exit');
    let reached: () => void = () => undefined;
    const seen = new Promise<void>((resolve) => (reached = resolve));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(after)) reached();
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await seen;
    child.kill('SIGTERM');
    const [code, signal] = (await exited) as [number | null, string | null];
    t.equal(signal, null, `signalled at ${after}: not killed by a signal (${out.slice(-300)})`);
    t.equal(code, 0, `signalled at ${after}: exit 0`);
    t.match(out, /drained; exiting 0/);
  }
});
