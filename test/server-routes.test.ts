/**
 * Routes and error mapping with buildApp() + inject and a fake backend (no libtorch):
 * response shapes, validation, auth, readiness, request ids, v2 protocol, metrics.
 * The real model over real HTTP is in server-http.test.ts.
 */
import os from 'node:os';
import t from 'tap';
import type { InjectOptions } from 'fastify';
import { buildApp } from '../src/server/app.js';
import { configFrom, type Config } from '../src/config.js';
import { fakeBackend, fakeImage, FAKE_CLASSES, FAKE_SIZE } from './helpers/fake-backend.js';

const b64 = (d: number) => fakeImage(d).toString('base64');

async function app(over: Partial<Config> = {}, ready = true) {
  const backend = fakeBackend(2);
  const a = await buildApp(configFrom({ logLevel: 'silent', ...over }), { backend, ready, version: '9.9.9' });
  t.teardown(() => a.close());
  return { a, backend };
}

function multipart(files: { name?: string; data: Buffer }[], fields: Record<string, string> = {}) {
  const boundary = '----densenetTestBoundary';
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(fields)) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  files.forEach((f, i) =>
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${f.name ?? 'file'}"; filename="f${i}.png"\r\nContent-Type: image/png\r\n\r\n`),
      f.data,
      Buffer.from('\r\n'),
    ),
  );
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, payload: Buffer.concat(parts) };
}

t.test('JSON single image: original response shape, sorted softmax', async (t) => {
  const { a } = await app();
  const r = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(3), topk: 3 } });
  t.equal(r.statusCode, 200);
  const body = r.json();
  t.same(Object.keys(body).sort(), ['batch_size', 'latency_ms', 'model_variant', 'predictions']);
  t.equal(body.predictions.length, 3);
  t.equal(body.predictions[0].class_id, 3);
  t.equal(body.predictions[0].class_name, 'label3');
  t.equal(body.model_variant, 'densenet121_fake');
  t.equal(body.batch_size, 1);
  t.ok(body.predictions[0].confidence >= body.predictions[1].confidence);
  t.type(body.latency_ms, 'number');
});

t.test('JSON batch_size runs the image N times as one batch', async (t) => {
  const { a, backend } = await app();
  const r = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(2), batch_size: 4 } });
  t.equal(r.statusCode, 200);
  t.equal(r.json().batch_size, 4);
  t.same(backend.batches, [4]);
});

t.test('JSON images[]: one result per image, per-image error kept in place', async (t) => {
  const { a } = await app();
  const r = await a.inject({ method: 'POST', url: '/predict', payload: { images: [b64(1), Buffer.from('BAD!').toString('base64'), b64(7)] } });
  t.equal(r.statusCode, 200);
  const { results } = r.json();
  t.equal(results[0].predictions[0].class_id, 1);
  t.same(results[1], { error: 'Bad Request', code: 'CORRUPT_IMAGE', message: 'corrupt image' });
  t.equal(results[2].predictions[0].class_id, 7);
});

t.test('raw image/* body and topk in the query', async (t) => {
  const { a } = await app();
  const r = await a.inject({ method: 'POST', url: '/predict?topk=1', headers: { 'content-type': 'image/jpeg' }, payload: fakeImage(5) });
  t.equal(r.statusCode, 200);
  t.same(r.json().predictions.map((p: { class_id: number }) => p.class_id), [5]);
});

t.test('multipart: any field name, topk field, several files in order', async (t) => {
  const { a } = await app();
  const one = await a.inject({ method: 'POST', url: '/predict', ...multipart([{ name: 'image', data: fakeImage(6) }], { topk: '2' }) });
  t.equal(one.statusCode, 200);
  t.equal(one.json().predictions.length, 2);
  const many = await a.inject({ method: 'POST', url: '/predict', ...multipart([0, 1, 2, 3].map((d) => ({ name: `f${d}`, data: fakeImage(d) }))) });
  t.equal(many.statusCode, 200);
  t.same(many.json().results.map((x: { predictions: { class_id: number }[] }) => x.predictions[0]!.class_id), [0, 1, 2, 3]);
});

const errorCases: { name: string; req: () => InjectOptions; status: number; code: string; over?: Partial<Config> }[] = [
  { name: 'no file in multipart', req: () => ({ method: 'POST', url: '/predict', ...multipart([], { topk: '3' }) }), status: 400, code: 'NO_IMAGE' },
  { name: 'not an image', req: () => ({ method: 'POST', url: '/predict', ...multipart([{ data: Buffer.from('hello') }]) }), status: 415, code: 'UNSUPPORTED_IMAGE' },
  { name: 'corrupt image', req: () => ({ method: 'POST', url: '/predict', payload: { image: Buffer.from('BAD').toString('base64') } }), status: 400, code: 'CORRUPT_IMAGE' },
  { name: 'empty raw body', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'image/png' }, payload: Buffer.alloc(0) }), status: 400, code: 'NO_IMAGE' },
  { name: 'bad JSON', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'application/json' }, payload: '{"image":' }), status: 400, code: 'INVALID_JSON' },
  { name: 'JSON not an object', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'application/json' }, payload: '[1,2]' }), status: 400, code: 'INVALID_REQUEST' },
  { name: 'JSON without image', req: () => ({ method: 'POST', url: '/predict', payload: { topk: 3 } }), status: 400, code: 'NO_IMAGE' },
  { name: 'bad base64', req: () => ({ method: 'POST', url: '/predict', payload: { image: 'not base64!!' } }), status: 400, code: 'INVALID_BASE64' },
  { name: 'base64 not a string', req: () => ({ method: 'POST', url: '/predict', payload: { image: 12 } }), status: 400, code: 'INVALID_BASE64' },
  { name: 'topk 0', req: () => ({ method: 'POST', url: '/predict', payload: { image: b64(1), topk: 0 } }), status: 400, code: 'INVALID_TOPK' },
  { name: 'topk too big', req: () => ({ method: 'POST', url: '/predict', payload: { image: b64(1), topk: FAKE_CLASSES + 1 } }), status: 400, code: 'INVALID_TOPK' },
  { name: 'topk text', req: () => ({ method: 'POST', url: '/predict', payload: { image: b64(1), topk: 'five' } }), status: 400, code: 'INVALID_TOPK' },
  { name: 'batch_size 0', req: () => ({ method: 'POST', url: '/predict', payload: { image: b64(1), batch_size: 0 } }), status: 400, code: 'INVALID_BATCH_SIZE' },
  { name: 'batch_size huge', req: () => ({ method: 'POST', url: '/predict', payload: { image: b64(1), batch_size: 1e12 } }), status: 400, code: 'INVALID_BATCH_SIZE' },
  { name: 'batch_size > MAX_BATCH', req: () => ({ method: 'POST', url: '/predict', payload: { image: b64(1), batch_size: 9 } }), status: 400, code: 'INVALID_BATCH_SIZE' },
  { name: 'unsupported content type', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'text/plain' }, payload: 'hi' }), status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'xml content type', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'application/xml' }, payload: '<a/>' }), status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'raw body too large', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'image/png' }, payload: Buffer.alloc(4096, 1) }), status: 413, code: 'BODY_TOO_LARGE', over: { bodyLimit: 2048 } },
  { name: 'JSON body too large', req: () => ({ method: 'POST', url: '/predict', payload: { image: Buffer.alloc(4096, 1).toString('base64') } }), status: 413, code: 'BODY_TOO_LARGE', over: { bodyLimit: 2048 } },
  { name: 'multipart file too large', req: () => ({ method: 'POST', url: '/predict', ...multipart([{ data: Buffer.alloc(4096, 1) }]) }), status: 413, code: 'FILE_TOO_LARGE', over: { bodyLimit: 2048 } },
  { name: 'multipart files too large in total', req: () => ({ method: 'POST', url: '/predict', ...multipart([{ data: Buffer.alloc(1500, 1) }, { data: Buffer.alloc(1500, 1) }]) }), status: 413, code: 'BODY_TOO_LARGE', over: { bodyLimit: 2048 } },
  { name: 'too many files', req: () => ({ method: 'POST', url: '/predict', ...multipart(Array.from({ length: 5 }, () => ({ data: fakeImage(1) }))) }), status: 413, code: 'TOO_MANY_FILES', over: { maxFiles: 4 } },
  { name: 'too many JSON images', req: () => ({ method: 'POST', url: '/predict', payload: { images: Array.from({ length: 5 }, () => b64(1)) } }), status: 413, code: 'TOO_MANY_FILES', over: { maxFiles: 4 } },
  { name: 'malformed multipart', req: () => ({ method: 'POST', url: '/predict', headers: { 'content-type': 'multipart/form-data; boundary=xyz' }, payload: '--xyz\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nIMG:1' }), status: 400, code: 'INVALID_MULTIPART' },
  { name: 'unknown route', req: () => ({ method: 'GET', url: '/nope' }), status: 404, code: 'NOT_FOUND' },
];

for (const c of errorCases) {
  t.test(`error: ${c.name} -> ${c.status} ${c.code}`, async (t) => {
    const { a } = await app(c.over);
    const r = await a.inject(c.req());
    t.equal(r.statusCode, c.status, r.body);
    const body = r.json();
    t.equal(body.code, c.code);
    t.type(body.error, 'string');
    t.type(body.message, 'string');
    t.match(r.headers['content-type'], /application\/json/);
    const ok = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(4) } });
    t.equal(ok.json().predictions[0].class_id, 4, 'still serving afterwards');
  });
}

t.test('API_TOKEN: 401 with WWW-Authenticate on inference, open health/metrics', async (t) => {
  const { a } = await app({ apiToken: 's3cret-token-value' });
  const payload = { image: b64(1) };
  const none = await a.inject({ method: 'POST', url: '/predict', payload });
  t.equal(none.statusCode, 401);
  t.equal(none.json().code, 'UNAUTHORIZED');
  t.match(none.headers['www-authenticate'], /^Bearer/);
  const wrong = await a.inject({ method: 'POST', url: '/predict', payload, headers: { authorization: 'Bearer s3cret-token-valuX' } });
  t.equal(wrong.statusCode, 401);
  const basic = await a.inject({ method: 'POST', url: '/predict', payload, headers: { authorization: 'Basic czNjcmV0' } });
  t.equal(basic.statusCode, 401);
  const v2 = await a.inject({ method: 'POST', url: '/v2/models/densenet121/infer', payload: {} });
  t.equal(v2.statusCode, 401);
  const right = await a.inject({ method: 'POST', url: '/predict', payload, headers: { authorization: 'Bearer s3cret-token-value' } });
  t.equal(right.statusCode, 200);
  for (const url of ['/health', '/healthz', '/readyz', '/metrics', '/', '/v2/health/ready']) {
    t.equal((await a.inject({ method: 'GET', url })).statusCode, 200, url);
  }
});

t.test('readiness: 503 (v2: 400 {ready: false}) before ready and while draining; inference refused then', async (t) => {
  const { a } = await app({}, false);
  t.equal((await a.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  const notReady = await a.inject({ method: 'GET', url: '/readyz' });
  t.equal(notReady.statusCode, 503);
  t.equal(notReady.json().code, 'NOT_READY');
  // KServe v2 health: 200 means true, a 4xx means false (the spec's words), with the spec's bodies.
  const v2Ready = await a.inject({ method: 'GET', url: '/v2/health/ready' });
  t.equal(v2Ready.statusCode, 400);
  t.same(v2Ready.json(), { ready: false });
  const modelReady = await a.inject({ method: 'GET', url: '/v2/models/densenet121/ready' });
  t.equal(modelReady.statusCode, 400);
  t.same(modelReady.json(), { name: 'densenet121', ready: false });
  const early = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } });
  t.equal(early.statusCode, 503);
  t.ok(early.headers['retry-after']);
  a.ctx.markReady();
  t.equal((await a.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
  t.same((await a.inject({ method: 'GET', url: '/v2/health/ready' })).json(), { ready: true });
  a.ctx.markDraining();
  t.equal((await a.inject({ method: 'GET', url: '/readyz' })).statusCode, 503);
  t.equal((await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } })).json().code, 'SHUTTING_DOWN');
});

t.test('request id: generated, or an incoming x-request-id is honoured', async (t) => {
  const { a } = await app();
  const gen = await a.inject({ method: 'GET', url: '/healthz' });
  t.match(gen.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  const mine = await a.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'abc-123' } });
  t.equal(mine.headers['x-request-id'], 'abc-123');
  const hostile = await a.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'a b\u0000<script>' } });
  t.match(hostile.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'an unsafe id is replaced');
});

t.test('GET / shows model, weights, batching, endpoints, version', async (t) => {
  const { a } = await app();
  const body = (await a.inject({ method: 'GET', url: '/' })).json();
  t.equal(body.version, '9.9.9');
  t.equal(body.model.weights, 'random-init (not trained)');
  t.equal(body.model.random_init, true);
  t.equal(body.model.device, 'cpu');
  t.equal(body.batching.max_batch, 4);
  t.equal(body.batching.batch_window_ms, 50);
  t.equal(body.preprocessing.workers, os.availableParallelism(), 'PREPROCESS_CONCURRENCY default');
  // The fake model runs on 1 thread: the other CPUs may decode during its forward.
  t.equal(body.preprocessing.decodes_during_forward, os.availableParallelism() - 1, 'CPUs - THREADS');
  t.ok(body.endpoints.v2.includes('POST /v2/models/densenet121/infer'));
});

const tensor = (n: number, fill: (i: number) => number) => Array.from({ length: n * FAKE_SIZE }, (_, i) => fill(Math.floor(i / FAKE_SIZE)));

t.test('v2: metadata, infer with flat and nested data', async (t) => {
  const { a } = await app();
  t.same((await a.inject({ method: 'GET', url: '/v2' })).json().name, 'densenet-serve');
  t.same((await a.inject({ method: 'GET', url: '/v2/health/live' })).json(), { live: true });
  const meta = (await a.inject({ method: 'GET', url: '/v2/models/densenet121' })).json();
  t.same(meta.inputs[0], { name: 'input', datatype: 'FP32', shape: [-1, 3, 4, 4] });
  const flat = await a.inject({
    method: 'POST',
    url: '/v2/models/densenet121/infer',
    payload: { id: 'q1', inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 3, 4, 4], data: tensor(2, (i) => [2, 8][i]!) }] },
  });
  t.equal(flat.statusCode, 200, flat.body);
  const out = flat.json();
  t.equal(out.id, 'q1');
  t.equal(out.model_name, 'densenet121');
  t.same(out.outputs[0].shape, [2, FAKE_CLASSES]);
  t.equal(out.outputs[0].datatype, 'FP32');
  t.equal(out.outputs[0].data.length, 2 * FAKE_CLASSES);
  t.same(out.outputs[1], { name: 'labels', datatype: 'BYTES', shape: [2], data: ['label2', 'label8'] });
  const nestedData = [0, 1].map((n) => [0, 1, 2].map(() => [0, 1, 2, 3].map(() => [0, 1, 2, 3].map(() => [5, 6][n]!))));
  const nested = await a.inject({
    method: 'POST',
    url: '/v2/models/densenet121/infer',
    payload: { inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 3, 4, 4], data: nestedData }], outputs: [{ name: 'labels' }] },
  });
  t.equal(nested.statusCode, 200, nested.body);
  t.same(nested.json().outputs, [{ name: 'labels', datatype: 'BYTES', shape: [2], data: ['label5', 'label6'] }]);
});

const v2Bad: [string, unknown, number][] = [
  ['no inputs', {}, 400],
  ['wrong datatype', { inputs: [{ name: 'input', datatype: 'INT8', shape: [1, 3, 4, 4], data: tensor(1, () => 1) }] }, 400],
  ['wrong shape', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 5, 4], data: tensor(1, () => 1) }] }, 400],
  ['N too big', { inputs: [{ name: 'input', datatype: 'FP32', shape: [9, 3, 4, 4], data: [] }] }, 400],
  ['N zero', { inputs: [{ name: 'input', datatype: 'FP32', shape: [0, 3, 4, 4], data: [] }] }, 400],
  ['short data', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: [1, 2, 3] }] }, 400],
  ['non-number', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: tensor(1, () => 1).map((v, i) => (i === 7 ? 'x' : v)) }] }, 400],
  ['bad nesting', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: [[[1, 2]]] }] }, 400],
  ['unknown output', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: tensor(1, () => 1) }], outputs: [{ name: 'probs' }] }, 400],
];
for (const [name, payload, status] of v2Bad) {
  t.test(`v2 infer error: ${name}`, async (t) => {
    const { a } = await app();
    const r = await a.inject({ method: 'POST', url: '/v2/models/densenet121/infer', payload: payload as object });
    t.equal(r.statusCode, status, r.body);
    const body = r.json();
    t.type(body.error, 'string');
    t.equal(body.error, body.message, 'v2 style: error is the message');
  });
}

t.test('v2 unknown model -> 404 {"error"}', async (t) => {
  const { a } = await app();
  const r = await a.inject({ method: 'GET', url: '/v2/models/resnet50' });
  t.equal(r.statusCode, 404);
  t.match(r.json().error, /resnet50/);
});

t.test('a model failure is a 500 INFERENCE_FAILED, and the next request works', async (t) => {
  const { a, backend } = await app();
  backend.failNext = true;
  const r = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } });
  t.equal(r.statusCode, 500);
  t.equal(r.json().code, 'INFERENCE_FAILED');
  t.notMatch(r.body, /boom/, 'the internal message stays in the log');
  t.match(r.json().message, /internal server error/);
  t.equal((await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } })).statusCode, 200);
});

t.test('metrics: counters and histograms move', async (t) => {
  const { a } = await app({ maxBatch: 1, queueLimit: 1 });
  await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } });
  await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1), topk: 0 } });
  const text = (await a.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(text, /inference_images_total\{endpoint="predict"\} 1/);
  t.match(text, /inference_requests_total\{endpoint="predict",outcome="client_error"\} 1/);
  t.match(text, /http_request_duration_seconds_count\{method="POST",route="\/predict",status_code="200"\} 1/);
  t.match(text, /inference_batch_size_count 1/);
  t.match(text, /model_info\{name="densenet121",variant="densenet121_fake"/);
  t.match(text, /process_cpu_user_seconds_total/);
  // The process's RSS (the bench and the memory targets read it): this process's, to within 2x.
  const rss = Number(/^process_resident_memory_bytes (\d+(?:\.\d+)?(?:e\+?\d+)?)$/m.exec(text)?.[1]);
  const actual = process.memoryUsage.rss();
  t.ok(rss > actual / 2 && rss < actual * 2, `process_resident_memory_bytes ${rss} ~ this process's RSS ${actual}`);
});

t.test('admission: more images than QUEUE_LIMIT in flight -> 503 QUEUE_FULL + Retry-After', async (t) => {
  const { a, backend } = await app({ maxBatch: 2, queueLimit: 2 });
  backend.delayMs = 100;
  const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => a.inject({ method: 'POST', url: '/predict', payload: { image: b64(i % 10) } })));
  const codes = rs.map((r) => r.statusCode);
  t.ok(codes.includes(503), `some rejected: ${codes}`);
  t.ok(codes.includes(200), 'some served');
  const rej = rs.find((r) => r.statusCode === 503)!;
  t.equal(rej.json().code, 'QUEUE_FULL');
  t.match(rej.headers['retry-after'], /^\d+$/);
  const text = (await a.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(text, /inference_rejected_total\{reason="queue_full"\} [1-9]/);
});

t.test('REQUEST_TIMEOUT_MS: a request that cannot finish in time gets 503 + Retry-After', async (t) => {
  const { a, backend } = await app({ requestTimeoutMs: 50, maxBatch: 1 });
  backend.delayMs = 300;
  const [first, second] = await Promise.all([
    a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } }),
    a.inject({ method: 'POST', url: '/predict', payload: { image: b64(2) } }),
  ]);
  for (const r of [first, second]) {
    t.equal(r.statusCode, 503);
    t.equal(r.json().code, 'REQUEST_TIMEOUT');
    t.match(r.headers['retry-after'], /^\d+$/);
  }
  const text = (await a.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(text, /inference_rejected_total\{reason="timeout"\} 2/);
});

t.test('draining: responses carry connection: close, inference 503 SHUTTING_DOWN with Retry-After', async (t) => {
  const { a } = await app();
  a.ctx.markDraining();
  const r = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } });
  t.equal(r.statusCode, 503);
  t.equal(r.json().code, 'SHUTTING_DOWN');
  t.ok(r.headers['retry-after']);
  t.equal(r.headers.connection, 'close');
});
