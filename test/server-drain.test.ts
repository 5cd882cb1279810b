/**
 * SIGTERM while requests are in flight: every request is answered (200 with predictions), the
 * process exits 0 and says it drained. The server is a child process (`node --import tsx
 * src/server/main.ts`), the way it runs in production.
 */
import t from 'tap';
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
