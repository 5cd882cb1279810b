/**
 * Fastify owns the lifecycle: app.close() alone turns readiness off, answers what is in flight
 * on every instance, drains the batcher and releases the model. Fake backend, real listener.
 */
import t from 'tap';
import { buildApp } from '../src/server/app.js';
import { configFrom } from '../src/config.js';
import { fakeBackend, fakeImage } from './helpers/fake-backend.js';

async function listening(instances: number, delayMs: number) {
  const backend = fakeBackend(delayMs, instances);
  const config = configFrom({ logLevel: 'silent', host: '127.0.0.1', port: 0, maxBatch: 1, batchWindowMs: 0, cpus: instances });
  const app = await buildApp(config, { backend, ready: true });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return { app, backend, url };
}

const predict = (url: string, d: number) =>
  fetch(`${url}/predict`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: fakeImage(d) }).then(async (r) => ({
    status: r.status,
    body: (await r.json()) as { predictions?: { class_id: number }[]; code?: string },
  }));

t.test('app.close() while both instances are busy: every request answered, then the model is released', async (t) => {
  const { app, backend, url } = await listening(2, 150);
  const inflight = [1, 2, 3, 4].map((d) => predict(url, d));
  const until = Date.now() + 10_000;
  while (backend.running < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  t.equal(backend.running, 2, 'both instances busy');
  const closed = app.close();
  await new Promise((r) => setTimeout(r, 10));
  t.equal(app.ctx.state, 'draining', 'readiness turns 503 first');
  const results = await Promise.all(inflight);
  t.same(results.map((r) => r.status), [200, 200, 200, 200]);
  t.same(results.map((r) => r.body.predictions?.[0]?.class_id), [1, 2, 3, 4]);
  await closed;
  t.ok(backend.disposed, 'the model was released by close()');
  t.equal(app.ctx.service!.batcher.depth, 0);
  t.same([...new Set(backend.batchInstances)].sort(), [0, 1], 'both instances worked');
  const err = await app.ctx.service!.batcher.submit([new Float32Array(48)]).catch((e: unknown) => e);
  t.equal((err as { code: string }).code, 'SHUTTING_DOWN', 'the batcher takes no new work');
});

t.test('app.close() on an idle app releases the model; readiness says draining', async (t) => {
  const { app, backend, url } = await listening(1, 1);
  t.equal((await fetch(`${url}/readyz`)).status, 200);
  await app.close();
  t.ok(backend.disposed);
  t.equal(app.ctx.state, 'draining');
});
