/**
 * Abuse of the request path (issue 11 part 2), against a listening app with the fake backend, so
 * the timing of forwards and decodes is ours: bodies refused before they are read, work of
 * clients that left dropped, the deadline checked before each decode, echoed values cut, a
 * socket nobody reads closed, internal errors kept out of responses, a failed forward that
 * leaves no queue behind. After each: status + JSON error, still serving, gauges back at 0.
 * The real model and real image decoding are in server-hostile.test.ts.
 */
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import t, { type Test } from 'tap';
import { MAX_BODY_LIMIT, configFrom, connectionTimeoutMs, type Config } from '../src/config.js';
import { INTERNAL_MESSAGE } from '../src/errors.js';
import { buildApp } from '../src/server/app.js';
import { fakeBackend, fakeImage, type FakeBackend } from './helpers/fake-backend.js';
import { capturingLogger, headersOnly, leave, send } from './helpers/http.js';

const json = { 'content-type': 'application/json' };
const b64 = (d: number): string => fakeImage(d).toString('base64');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function serve(over: Partial<Config> = {}, opts: { delayMs?: number; ready?: boolean; extra?: (app: FastifyInstance) => void } = {}) {
  const backend = fakeBackend(opts.delayMs ?? 5);
  const logger = capturingLogger();
  const app = await buildApp(configFrom({ logLevel: 'info', ...over }), { backend, ready: opts.ready ?? true, logger });
  opts.extra?.(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  t.teardown(() => app.close());
  return { app, backend, url, logger };
}

/** Counts decodes and makes each take `ms`. */
function slowDecodes(backend: FakeBackend, ms: number): { count: number } {
  const seen = { count: 0 };
  const real = backend.preprocess.bind(backend);
  backend.preprocess = async (image) => {
    seen.count++;
    await sleep(ms);
    return real(image);
  };
  return seen;
}

/** The status line, headers and JSON body of a raw HTTP reply. */
function parseReply(reply: string): { status: number; head: string; body: Record<string, unknown> } {
  const [head = '', body = ''] = reply.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]), head, body: body ? JSON.parse(body) : {} };
}

async function gauge(url: string, name: string): Promise<number> {
  const text = (await send(url, '/metrics', {})).body as string;
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
}

async function stillServing(t: Test, url: string): Promise<void> {
  const r = await send(url, '/predict', json, JSON.stringify({ image: b64(4) }));
  t.equal(r.status, 200, 'a normal request is answered');
  t.equal(r.body.predictions?.[0]?.class_id, 4);
}

const inference = [
  { name: 'JSON', path: '/predict', headers: json },
  { name: 'raw image', path: '/predict', headers: { 'content-type': 'image/jpeg' } },
  { name: 'multipart', path: '/predict', headers: { 'content-type': 'multipart/form-data; boundary=xyz' } },
  { name: 'v2 infer', path: '/v2/models/densenet121/infer', headers: json },
];

t.test('not ready: 503 NOT_READY + Retry-After before the body is read, for every body type', async (t) => {
  const { url } = await serve({}, { ready: false });
  for (const c of inference) {
    const r = parseReply(await headersOnly(url, c.path, c.headers, 2000));
    t.equal(r.status, 503, `${c.name}: answered without its 10 MB body`);
    t.match(r.head, /retry-after: \d+/i);
    t.match(r.body, { code: 'NOT_READY', error: String, message: String });
  }
});

t.test('queue full: 503 QUEUE_FULL before the body is read; served again once the queue drains', async (t) => {
  const { url } = await serve({ maxBatch: 1, queueLimit: 1 }, { delayMs: 1500 });
  const held = [1, 2].map((d) => send(url, '/predict', json, JSON.stringify({ image: b64(d) })));
  await sleep(300);
  for (const c of inference) {
    const r = parseReply(await headersOnly(url, c.path, c.headers, 1000));
    t.equal(r.status, 503, `${c.name}: refused at once`);
    t.match(r.head, /retry-after: \d+/i);
    t.equal(r.body.code, 'QUEUE_FULL');
  }
  t.same((await Promise.all(held)).map((r) => r.status), [200, 200], 'the admitted requests are answered');
  await stillServing(t, url);
});

t.test('MAX_CONCURRENT_REQUESTS: one more is refused before its body; slots come back', async (t) => {
  const { app, url } = await serve({ maxConcurrentRequests: 2 }, { delayMs: 1000 });
  const held = [1, 2].map((d) => send(url, '/predict', json, JSON.stringify({ image: b64(d) })));
  await sleep(300);
  const r = parseReply(await headersOnly(url, '/predict', json, 1000));
  t.equal(r.status, 503);
  t.equal(r.body.code, 'QUEUE_FULL');
  t.match(r.body.message, /MAX_CONCURRENT_REQUESTS 2/);
  t.match(r.head, /retry-after: \d+/i);
  t.same((await Promise.all(held)).map((x) => x.status), [200, 200]);
  // Slots are released however a request ends: answered, refused, or injected.
  app.ctx.config.maxConcurrentRequests = 1;
  for (let i = 0; i < 5; i++) {
    t.equal((await app.inject({ method: 'POST', url: '/predict', payload: { image: 'bad!' } })).statusCode, 400);
  }
  app.ctx.config.maxConcurrentRequests = 2;
  await stillServing(t, url);
});

t.test("a body larger than V8's longest string: 413 from its Content-Length, even with MAX_BATCH 256", async (t) => {
  const { url } = await serve({ maxBatch: 256, queueLimit: 1024, bodyLimit: MAX_BODY_LIMIT });
  for (const path of ['/predict', '/v2/models/densenet121/infer']) {
    const r = parseReply(await headersOnly(url, path, json, 2000, MAX_BODY_LIMIT + 1));
    t.equal(r.status, 413, `${path}: refused before reading`);
    t.equal(r.body.code, 'BODY_TOO_LARGE');
  }
  await stillServing(t, url);
});

t.test('9 requests with batch_size=8 that leave after 100 ms: their queued work is dropped', async (t) => {
  const { url, backend } = await serve({ maxBatch: 8, queueLimit: 64 }, { delayMs: 300 });
  const usual = await send(url, '/predict', json, JSON.stringify({ image: b64(2) }));
  backend.batches.length = 0;
  for (let i = 0; i < 9; i++) void leave(url, '/predict?batch_size=8', { 'content-type': 'image/jpeg' }, fakeImage(1), 100);
  await sleep(200);
  const after = await send(url, '/predict', json, JSON.stringify({ image: b64(3) }));
  t.equal(after.status, 200, `answered, not 503: ${JSON.stringify(after.body).slice(0, 100)}`);
  t.equal(after.body.predictions[0].class_id, 3);
  t.comment(`usual ${usual.ms.toFixed(0)} ms; right after the storm ${after.ms.toFixed(0)} ms (forward: 300 ms)`);
  t.ok(after.ms < usual.ms + 2 * 300 + 1000, 'at most the forward already running ahead of it');
  const images = backend.batches.reduce((a, b) => a + b, 0);
  t.ok(images <= 8 + 8 + 1, `forwarded ${images} images (${backend.batches.join(', ')}), not the storm's 72`);
  t.equal(await gauge(url, 'inference_queue_depth'), 0);
  t.equal(await gauge(url, 'inference_requests_in_flight'), 0);
});

t.test('a /v2 client that leaves: its queued tensors are dropped', async (t) => {
  const { url, backend } = await serve({ maxBatch: 2 }, { delayMs: 300 });
  const v2 = (n: number) => Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [n, 3, 4, 4], data: Array(48 * n).fill(1) }] }));
  const first = send(url, '/v2/models/densenet121/infer', json, v2(2));
  await sleep(50);
  await leave(url, '/v2/models/densenet121/infer', json, v2(2), 100);
  t.equal((await first).status, 200);
  await sleep(400);
  t.same(backend.batches, [2], 'only the first request reached the model');
  t.equal(await gauge(url, 'inference_queue_depth'), 0);
});

t.test('a client that leaves while its images wait for decoding: the rest is not decoded', async (t) => {
  const { url, backend } = await serve({ preprocessConcurrency: 1 });
  const decodes = slowDecodes(backend, 60);
  const body = Buffer.from(JSON.stringify({ images: Array.from({ length: 10 }, (_, i) => b64(i)) }));
  await leave(url, '/predict', json, body, 150);
  await sleep(1200);
  t.ok(decodes.count <= 4, `${decodes.count} of 10 images decoded`);
  t.same(backend.batches, [], 'no forward for it');
  t.equal(await gauge(url, 'inference_preprocess_waiting'), 0);
  await stillServing(t, url);
});

t.test('requests take turns at the decoders: one image is not queued behind ten', async (t) => {
  const { url, backend } = await serve({ preprocessConcurrency: 1, batchWindowMs: 0 });
  slowDecodes(backend, 50);
  const t0 = performance.now();
  const big = send(url, '/predict', json, JSON.stringify({ images: Array.from({ length: 10 }, (_, i) => b64(i)) })).then((r) => ({ ...r, at: performance.now() - t0 }));
  await sleep(20);
  const small = await send(url, '/predict', json, JSON.stringify({ image: b64(7) })).then((r) => ({ ...r, at: performance.now() - t0 }));
  const b = await big;
  t.same([b.status, small.status], [200, 200]);
  t.comment(`10 images answered at ${b.at.toFixed(0)} ms, the single image at ${small.at.toFixed(0)} ms (50 ms per decode)`);
  t.ok(small.at < b.at / 2, 'the single image is decoded after at most two of the ten');
});

t.test('the deadline is checked before each decode', async (t) => {
  const { url, backend } = await serve({ preprocessConcurrency: 1, requestTimeoutMs: 250 });
  const decodes = slowDecodes(backend, 100);
  const r = await send(url, '/predict', json, JSON.stringify({ images: Array.from({ length: 10 }, (_, i) => b64(i)) }));
  t.equal(r.status, 503);
  t.equal(r.body.code, 'REQUEST_TIMEOUT');
  t.ok(r.headers['retry-after']);
  t.ok(decodes.count <= 4, `${decodes.count} of 10 images decoded before the deadline stopped it`);
  await stillServing(t, url);
});

t.test('echoed values are cut: a 4 MB topk, v2 datatype/shape/output names', async (t) => {
  const { url, logger } = await serve();
  const big = 'x'.repeat(4 * 1024 * 1024);
  const cases: [string, string, Record<string, unknown>, string][] = [
    ['topk', '/predict', { image: b64(1), topk: big }, 'INVALID_TOPK'],
    ['batch_size', '/predict', { image: b64(1), batch_size: big }, 'INVALID_BATCH_SIZE'],
    ['v2 datatype', '/v2/models/densenet121/infer', { inputs: [{ name: 'input', datatype: big, shape: [1, 3, 4, 4], data: [] }] }, 'INVALID_INFER_REQUEST'],
    ['v2 shape', '/v2/models/densenet121/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: Array(500_000).fill(7), data: [] }] }, 'INVALID_INFER_REQUEST'],
    ['v2 outputs', '/v2/models/densenet121/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: Array(48).fill(0) }], outputs: Array.from({ length: 20_000 }, (_, i) => ({ name: `o${i}` })) }, 'INVALID_INFER_REQUEST'],
  ];
  for (const [name, path, body, code] of cases) {
    const r = await send(url, path, json, JSON.stringify(body));
    t.equal(r.status, 400, name);
    t.equal(r.body.code, code);
    t.ok(r.bytes < 600, `${name}: a ${r.bytes}-byte answer`);
  }
  const q = await send(url, `/predict?topk=${'9'.repeat(8000)}`, { 'content-type': 'image/jpeg' }, fakeImage(1));
  t.equal(q.body.code, 'INVALID_TOPK');
  t.ok(q.bytes < 600, `query topk: a ${q.bytes}-byte answer`);
  const longest = Math.max(...logger.lines.map((l) => String(l.msg ?? '').length));
  t.ok(longest < 400, `longest log message ${longest} characters`);
  await stillServing(t, url);
});

t.test('a client that never reads its response: the socket is closed after connectionTimeout', async (t) => {
  const over = { requestTimeoutMs: 500, decodeTimeoutMs: 1000 };
  const { app, url } = await serve(over, {
    // A response far larger than the socket buffers (error bodies are small now that echoes are cut).
    extra: (a) => a.get('/big', async () => 'x'.repeat(16 * 1024 * 1024)),
  });
  const sock = net.connect(Number(new URL(url).port), '127.0.0.1');
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  sock.pause(); // never read
  sock.write('GET /big HTTP/1.1\r\nHost: t\r\n\r\n');
  const connections = () => new Promise<number>((r) => app.server.getConnections((_e, n) => r(n)));
  const t0 = performance.now();
  await sleep(500);
  while ((await connections()) > 0 && performance.now() - t0 < 40_000) await sleep(200);
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  t.equal(await connections(), 0, `the server closed the unread socket after ${s} s (connectionTimeout ${connectionTimeoutMs(configFrom(over))} ms)`);
  sock.destroy();
  await stillServing(t, url);
});

t.test('500s: libtorch and worker messages stay in the log, with the request id', async (t) => {
  const { url, backend, logger } = await serve();
  const secret = 'c10::Error: CUDA out of memory at /opt/libtorch/secret/path.cpp:42';
  const realForward = backend.forward.bind(backend);
  backend.forward = async () => {
    throw new Error(secret);
  };
  const v2 = { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: Array(48).fill(1) }] };
  for (const [path, body] of [['/predict', { image: b64(1) }], ['/v2/models/densenet121/infer', v2]] as const) {
    const r = await send(url, path, json, JSON.stringify(body));
    t.equal(r.status, 500, path);
    t.equal(r.body.code, 'INFERENCE_FAILED');
    t.equal(r.body.message, INTERNAL_MESSAGE);
    t.notMatch(JSON.stringify(r.body), /c10|CUDA|secret/, 'nothing internal in the body');
    const id = r.headers['x-request-id'];
    const line = logger.lines.find((l) => l.reqId === id && l.level === 'error');
    t.ok(line, `an error line with reqId ${id}`);
    t.match(`${line?.msg} ${String((line?.err as Error | undefined)?.message)}`, /CUDA out of memory/, 'the details are logged');
  }
  backend.forward = realForward;
  backend.preprocess = async () => {
    throw new Error('preprocessing worker exited with code 1 (/srv/secret)');
  };
  const p = await send(url, '/predict', json, JSON.stringify({ image: b64(1) }));
  t.equal(p.status, 500);
  t.equal(p.body.message, INTERNAL_MESSAGE);
  t.notMatch(JSON.stringify(p.body), /secret|worker/);
  t.ok(logger.lines.some((l) => l.reqId === p.headers['x-request-id'] && /secret/.test(`${l.msg} ${String((l.err as Error | undefined)?.message)}`)));
});

t.test('a failed forward of a request with more images than MAX_BATCH leaves no queue behind', async (t) => {
  const { app, url, backend } = await serve({ maxBatch: 2 }, { delayMs: 50 });
  backend.failNext = true;
  const r = await send(url, '/predict', json, JSON.stringify({ images: [1, 2, 3, 4, 5].map(b64) }));
  t.equal(r.status, 500);
  t.equal(r.body.code, 'INFERENCE_FAILED');
  t.equal(await gauge(url, 'inference_queue_depth'), 0, 'depth gauge back at 0');
  t.equal(app.ctx.service!.batcher.depth, 0);
  await stillServing(t, url);
  const closed = await Promise.race([app.close().then(() => 'closed'), sleep(5000).then(() => 'hung')]);
  t.equal(closed, 'closed', 'app.close() resolves (the drain is not held up by a phantom queue)');
});
