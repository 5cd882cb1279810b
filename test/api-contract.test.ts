/**
 * One contract for the HTTP API: the OpenAPI document at /openapi.json is generated from the
 * route schemas, every route has schemas, and every response the server really sends (each
 * route, each status it can answer) matches the schema the document publishes for that status.
 * Responses are JSON.stringify'd (not filtered through the schema), so a handler that drifts from
 * its schema fails here. Fake backend, buildApp() + inject.
 */
import t, { type Test } from 'tap';
import type { InjectOptions } from 'fastify';
import { Compile } from 'typebox/compile';
import { buildApp } from '../src/server/app.js';
import { configFrom, type Config } from '../src/config.js';
import { fakeBackend, fakeImage, FAKE_SIZE } from './helpers/fake-backend.js';

async function app(over: Partial<Config> = {}, opts: { ready?: boolean; attach?: boolean } = {}) {
  const backend = fakeBackend(2);
  const a = await buildApp(configFrom({ logLevel: 'silent', ...over }), {
    ...(opts.attach === false ? {} : { backend }),
    ready: opts.ready ?? true,
    version: '9.9.9',
  });
  t.teardown(() => a.close());
  return { a, backend };
}

interface Operation {
  requestBody?: { content: Record<string, { schema: object }> };
  parameters?: { in: string; name: string }[];
  responses: Record<string, { description: string; content?: Record<string, { schema: object }> }>;
}
type Doc = { openapi: string; info: { version: string }; paths: Record<string, Record<string, Operation>> };

const { a: docApp } = await app({ apiToken: 'token-token-token' });
const docRes = await docApp.inject({ url: '/openapi.json' });
const doc = docRes.json() as Doc;

t.test('GET /openapi.json: an OpenAPI 3.1 document with every route', async (t) => {
  t.equal(docRes.statusCode, 200);
  t.equal(doc.openapi, '3.1.0');
  t.equal(doc.info.version, '9.9.9');
  const ops = Object.entries(doc.paths).flatMap(([p, m]) => Object.keys(m).map((x) => `${x.toUpperCase()} ${p}`));
  for (const op of [
    'GET /',
    'GET /health',
    'GET /healthz',
    'GET /readyz',
    'GET /metrics',
    'POST /predict',
    'GET /v2',
    'GET /v2/health/live',
    'GET /v2/health/ready',
    'GET /v2/models/{name}',
    'GET /v2/models/{name}/ready',
    'POST /v2/models/{name}/infer',
    'GET /v2/models/{name}/versions/{version}',
    'GET /v2/models/{name}/versions/{version}/ready',
    'POST /v2/models/{name}/versions/{version}/infer',
  ]) {
    t.ok(ops.includes(op), op);
  }
  const predict = doc.paths['/predict']!.post!;
  t.same(Object.keys(predict.requestBody!.content).sort(), ['application/json', 'application/octet-stream', 'image/*', 'multipart/form-data'], 'every /predict body format');
  t.same((predict as unknown as { security: unknown }).security, [{ bearer: [] }], 'with API_TOKEN the inference routes say so');
});

t.test('every route has schemas: responses, path parameters, request bodies', async (t) => {
  for (const [path, methods] of Object.entries(doc.paths)) {
    if (path === '/openapi.json') continue;
    for (const [method, op] of Object.entries(methods)) {
      const what = `${method.toUpperCase()} ${path}`;
      const statuses = Object.entries(op.responses);
      t.ok(statuses.length > 0 && statuses.every(([, r]) => Object.values(r.content ?? {}).some((m) => m.schema)), `${what}: response schemas`);
      for (const p of path.match(/\{(\w+)\}/g) ?? []) t.ok(op.parameters?.some((x) => x.in === 'path' && `{${x.name}}` === p), `${what}: ${p} described`);
      if (method === 'post') t.ok(op.requestBody, `${what}: request body described`);
    }
  }
});

const compiled = new Map<object, ReturnType<typeof Compile>>();
function conforms(t: Test, pathTpl: string, method: string, r: { statusCode: number; headers: Record<string, unknown>; body: string }): void {
  const op = doc.paths[pathTpl]?.[method];
  const declared = op?.responses[String(r.statusCode)];
  const what = `${method.toUpperCase()} ${pathTpl} -> ${r.statusCode}`;
  if (!t.ok(declared, `${what} is a documented status`, { body: r.body.slice(0, 300) })) return;
  const type = String(r.headers['content-type'] ?? '').split(';')[0]!;
  const media = declared!.content?.[type];
  if (!t.ok(media, `${what}: ${type} is documented`)) return;
  if (type !== 'application/json') return;
  let check = compiled.get(media!.schema);
  if (!check) compiled.set(media!.schema, (check = Compile(media!.schema as never)));
  const body = JSON.parse(r.body) as unknown;
  t.ok(check.Check(body), `${what}: body matches the published schema`, { errors: check.Check(body) ? [] : check.Errors(body).slice(0, 3), body: r.body.slice(0, 300) });
}

const b64 = (d: number) => fakeImage(d).toString('base64');
const fp32 = (d: number) => ({ name: 'input', datatype: 'FP32', shape: [1, 3, 4, 4], data: new Array<number>(FAKE_SIZE).fill(d) });
const infer = (payload: object): InjectOptions => ({ method: 'POST', url: '/v2/models/densenet121/infer', payload });

type Case = [tpl: string, req: InjectOptions, expect: number];
const readyCases: Case[] = [
  ['/', { url: '/' }, 200],
  ['/health', { url: '/health' }, 200],
  ['/healthz', { url: '/healthz' }, 200],
  ['/readyz', { url: '/readyz' }, 200],
  ['/metrics', { url: '/metrics' }, 200],
  ['/predict', { method: 'POST', url: '/predict', payload: { image: b64(1) } }, 200],
  ['/predict', { method: 'POST', url: '/predict', payload: { images: [b64(1), Buffer.from('BAD').toString('base64')] } }, 200],
  ['/predict', { method: 'POST', url: '/predict', payload: { image: b64(1), topk: 'x' } }, 400],
  ['/predict', { method: 'POST', url: '/predict', headers: { 'content-type': 'image/png' }, payload: Buffer.from('hello') }, 415],
  ['/predict', { method: 'POST', url: '/predict', payload: { images: new Array(17).fill(b64(1)) } }, 413],
  ['/v2', { url: '/v2' }, 200],
  ['/v2/health/live', { url: '/v2/health/live' }, 200],
  ['/v2/health/ready', { url: '/v2/health/ready' }, 200],
  ['/v2/models/{name}', { url: '/v2/models/densenet121' }, 200],
  ['/v2/models/{name}', { url: '/v2/models/other' }, 404],
  ['/v2/models/{name}/ready', { url: '/v2/models/densenet121/ready' }, 200],
  ['/v2/models/{name}/ready', { url: '/v2/models/other/ready' }, 404],
  ['/v2/models/{name}/versions/{version}', { url: '/v2/models/densenet121/versions/1' }, 200],
  ['/v2/models/{name}/versions/{version}/ready', { url: '/v2/models/densenet121/versions/1/ready' }, 200],
  ['/v2/models/{name}/infer', infer({ inputs: [fp32(2)] }), 200],
  ['/v2/models/{name}/infer', infer({ inputs: [fp32(2)], outputs: [{ name: 'probabilities', parameters: { classification: 2 } }] }), 200],
  ['/v2/models/{name}/infer', infer({ inputs: [{ ...fp32(2), name: 'x' }] }), 400],
  ['/v2/models/{name}/infer', { ...infer({}), headers: { 'content-type': 'text/plain' }, payload: 'x' }, 415],
  ['/v2/models/{name}/versions/{version}/infer', { ...infer({ inputs: [fp32(2)] }), url: '/v2/models/densenet121/versions/1/infer' }, 200],
  ['/v2/models/{name}/versions/{version}/infer', { ...infer({ inputs: [fp32(2)] }), url: '/v2/models/densenet121/versions/3/infer' }, 404],
];

t.test('real responses match the published schemas: ready server', async (t) => {
  const { a, backend } = await app();
  for (const [tpl, req, status] of readyCases) {
    const r = await a.inject(req);
    t.equal(r.statusCode, status, `${req.method ?? 'GET'} ${req.url}`);
    conforms(t, tpl, (req.method ?? 'GET').toLowerCase(), r);
  }
  backend.failNext = true;
  conforms(t, '/predict', 'post', await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } }));
  backend.failNext = true;
  conforms(t, '/v2/models/{name}/infer', 'post', await a.inject(infer({ inputs: [fp32(1)] })));
});

t.test('real responses match the published schemas: loading, auth, limits', async (t) => {
  const loading = (await app({}, { attach: false, ready: false })).a;
  for (const [tpl, req] of [
    ['/', { url: '/' }],
    ['/readyz', { url: '/readyz' }],
    ['/v2/health/ready', { url: '/v2/health/ready' }],
    ['/v2/models/{name}', { url: '/v2/models/densenet121' }],
    ['/v2/models/{name}/ready', { url: '/v2/models/densenet121/ready' }],
    ['/predict', { method: 'POST', url: '/predict', payload: { image: b64(1) } }],
    ['/v2/models/{name}/infer', infer({ inputs: [fp32(1)] })],
  ] as [string, InjectOptions][]) {
    conforms(t, tpl, (req.method ?? 'GET').toLowerCase(), await loading.inject(req));
  }
  const authed = (await app({ apiToken: 'token-token-token', bodyLimit: 2048 })).a;
  conforms(t, '/predict', 'post', await authed.inject({ method: 'POST', url: '/predict', payload: { image: b64(1) } }));
  conforms(t, '/v2/models/{name}/infer', 'post', await authed.inject(infer({ inputs: [fp32(1)] })));
  const auth = { authorization: 'Bearer token-token-token' };
  conforms(t, '/predict', 'post', await authed.inject({ method: 'POST', url: '/predict', headers: { ...auth, 'content-type': 'image/png' }, payload: Buffer.alloc(4096) }));
});

t.test('schema failures keep the codes and cut what they echo', async (t) => {
  const { a } = await app();
  const long = 'seven'.repeat(100_000);
  const r = await a.inject({ method: 'POST', url: '/predict', payload: { image: b64(1), topk: long } });
  t.equal(r.statusCode, 400);
  t.equal(r.json().code, 'INVALID_TOPK');
  t.match(r.json().message, /^"topk" must be an integer in 1\.\.1000, got "sevenseven/);
  t.ok(r.body.length < 300, `a ${r.body.length}-byte answer to a 500 KB value`);
  const q = await a.inject({ method: 'POST', url: '/predict?batch_size=two', headers: { 'content-type': 'image/png' }, payload: fakeImage(1) });
  t.equal(q.json().code, 'INVALID_BATCH_SIZE');
  t.match(q.json().message, /query parameter "batch_size"/);
  const v2 = await a.inject(infer({ inputs: [{ ...fp32(1), shape: 'big' }] }));
  t.equal(v2.json().code, 'INVALID_INFER_REQUEST');
  t.match(v2.json().error, /"inputs\[0\]\.shape" must be an array of integers, got "big"/);
});
