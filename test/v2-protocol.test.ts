/**
 * KServe Open Inference Protocol v2 against the spec and Triton's extensions, with buildApp() +
 * inject and the fake backend (3x4x4 "images", 10 classes; "IMG:<d>" peaks at class d):
 * versions routes, binary tensor data in and out (bytes built as tritonclient builds them),
 * BYTES image input, classification, health wording, and every kind of bad request.
 */
import t from 'tap';
import type { InjectOptions } from 'fastify';
import { buildApp } from '../src/server/app.js';
import { configFrom, type Config } from '../src/config.js';
import { fakeBackend, fakeImage, FAKE_CLASSES, FAKE_SIZE } from './helpers/fake-backend.js';
import { bytesTensor, fp32Bytes, parseTritonResponse, tritonRequest } from './helpers/triton.js';

async function app(over: Partial<Config> = {}, ready = true, attach = true) {
  const backend = fakeBackend(2);
  const a = await buildApp(configFrom({ logLevel: 'silent', ...over }), { ...(attach ? { backend } : {}), ready, version: '9.9.9' });
  t.teardown(() => a.close());
  return { a, backend };
}

const INFER = '/v2/models/densenet121/infer';
const tensor = (digits: number[]) => digits.flatMap((d) => new Array<number>(FAKE_SIZE).fill(d));
const fp32Input = (digits: number[]) => ({ name: 'input', datatype: 'FP32', shape: [digits.length, 3, 4, 4], data: tensor(digits) });
const b64 = (d: number) => fakeImage(d).toString('base64');

t.test('server metadata lists the extensions; versions routes answer like the unversioned ones', async (t) => {
  const { a } = await app();
  t.same((await a.inject({ url: '/v2' })).json(), { name: 'densenet-serve', version: '9.9.9', extensions: ['binary_tensor_data', 'classification'] });
  const meta = await a.inject({ url: '/v2/models/densenet121/versions/1' });
  t.equal(meta.statusCode, 200);
  t.same(meta.json(), (await a.inject({ url: '/v2/models/densenet121' })).json());
  t.same(meta.json().versions, ['1']);
  t.same(meta.json().inputs.map((i: { name: string; datatype: string }) => `${i.name}:${i.datatype}`), ['input:FP32', 'image:BYTES']);
  t.same(meta.json().outputs.map((o: { name: string }) => o.name), ['logits', 'probabilities', 'labels']);
  t.same((await a.inject({ url: '/v2/models/densenet121/versions/1/ready' })).json(), { name: 'densenet121', ready: true });
  const inf = await a.inject({ method: 'POST', url: '/v2/models/densenet121/versions/1/infer', payload: { inputs: [fp32Input([4])] } });
  t.equal(inf.statusCode, 200);
  t.equal(inf.json().model_version, '1');
  for (const url of ['/v2/models/densenet121/versions/2', '/v2/models/densenet121/versions/2/ready']) {
    const r = await a.inject({ url });
    t.equal(r.statusCode, 404, url);
    t.equal(r.json().code, 'MODEL_NOT_FOUND');
    t.match(r.json().error, /no version "2"/);
  }
  const r = await a.inject({ method: 'POST', url: '/v2/models/densenet121/versions/7/infer', payload: { inputs: [fp32Input([4])] } });
  t.equal(r.statusCode, 404);
});

t.test('health as the spec words it: 200 when true, 400 with {ready: false} / {name, ready: false} when not', async (t) => {
  const loading = (await app({}, false, false)).a;
  t.same((await loading.inject({ url: '/v2/health/live' })).json(), { live: true });
  const sr = await loading.inject({ url: '/v2/health/ready' });
  t.equal(sr.statusCode, 400);
  t.same(sr.json(), { ready: false });
  for (const url of ['/v2/models/densenet121/ready', '/v2/models/densenet121/versions/1/ready']) {
    const mr = await loading.inject({ url });
    t.equal(mr.statusCode, 400, url);
    t.same(mr.json(), { name: 'densenet121', ready: false });
  }
  const inf = await loading.inject({ method: 'POST', url: INFER, payload: { inputs: [fp32Input([1])] } });
  t.equal(inf.statusCode, 503, 'inference before the model loads: 503 NOT_READY with Retry-After');
  t.ok(inf.headers['retry-after']);
  t.equal(inf.json().error, inf.json().message);
  const { a } = await app();
  t.equal((await a.inject({ url: '/v2/models/resnet/ready' })).statusCode, 404, 'a loaded server knows its model');
});

t.test('binary request as tritonclient sends it (no Content-Type) -> binary outputs; same logits as JSON', async (t) => {
  const { a } = await app();
  const digits = [2, 8];
  const { body, jsonSize } = tritonRequest([{ name: 'input', shape: [2, 3, 4, 4], datatype: 'FP32', raw: fp32Bytes(tensor(digits)) }], undefined, 'req-7');
  const bin = await a.inject({ method: 'POST', url: INFER, headers: { 'inference-header-content-length': String(jsonSize) }, payload: body });
  t.equal(bin.statusCode, 200, bin.body);
  t.equal(bin.headers['content-type'], 'application/octet-stream');
  const { json, outputs } = parseTritonResponse(bin.headers['inference-header-content-length'] as string, bin.rawPayload);
  t.equal(json.id, 'req-7');
  const viaJson = (await a.inject({ method: 'POST', url: INFER, payload: { inputs: [fp32Input(digits)] } })).json();
  t.same(outputs.get('logits')!.values, viaJson.outputs[0].data, 'same logits, bit for bit');
  t.same(outputs.get('logits')!.shape, [2, FAKE_CLASSES]);
  t.same(outputs.get('labels')!.values, ['label2', 'label8']);
  t.equal(body.length - jsonSize, 2 * FAKE_SIZE * 4, 'the binary part is the raw float32 tensor');
});

t.test('binary input, JSON outputs when the outputs say binary_data: false; application/octet-stream accepted', async (t) => {
  const { a } = await app();
  const { body, jsonSize } = tritonRequest([{ name: 'input', shape: [1, 3, 4, 4], datatype: 'FP32', raw: fp32Bytes(tensor([6])) }], [{ name: 'labels', binary: false }]);
  const r = await a.inject({ method: 'POST', url: INFER, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(jsonSize) }, payload: body });
  t.equal(r.statusCode, 200, r.body);
  t.match(r.headers['content-type'], /application\/json/);
  t.notOk(r.headers['inference-header-content-length']);
  t.same(r.json().outputs, [{ name: 'labels', datatype: 'BYTES', shape: [1], data: ['label6'] }]);
});

t.test('BYTES image input (base64 in JSON, or binary): the same answers as /predict', async (t) => {
  const { a } = await app();
  const viaPredict = (await a.inject({ method: 'POST', url: '/predict', payload: { images: [b64(3), b64(7)], topk: 3 } })).json();
  const wanted = [{ name: 'probabilities', parameters: { classification: 3 } }, { name: 'labels' }];
  const json = await a.inject({ method: 'POST', url: INFER, payload: { inputs: [{ name: 'image', datatype: 'BYTES', shape: [2], data: [b64(3), b64(7)] }], outputs: wanted } });
  t.equal(json.statusCode, 200, json.body);
  const cls = json.json().outputs[0];
  t.same(cls.shape, [2, 3]);
  t.equal(cls.datatype, 'BYTES');
  const parsed = (cls.data as string[]).map((s) => s.split(':'));
  const predicted = viaPredict.results.flatMap((r: { predictions: { class_id: number; class_name: string; confidence: number }[] }) => r.predictions);
  parsed.forEach(([score, index, label], i) => {
    t.equal(Number(index), predicted[i].class_id, `class ${i}`);
    t.equal(label, predicted[i].class_name);
    t.ok(Math.abs(Number(score) - predicted[i].confidence) < 1e-4, `score ${score} ~ ${predicted[i].confidence}`);
  });
  t.same(json.json().outputs[1].data, ['label3', 'label7']);
  const nested = await a.inject({ method: 'POST', url: INFER, payload: { inputs: [{ name: 'image', datatype: 'BYTES', shape: [2, 1], data: [[b64(3)], [b64(7)]] }], outputs: [{ name: 'labels' }] } });
  t.same(nested.json().outputs[0].data, ['label3', 'label7'], 'shape [N,1], nested data');
  const { body, jsonSize } = tritonRequest([{ name: 'image', shape: [2, 1], datatype: 'BYTES', raw: bytesTensor([fakeImage(3), fakeImage(7)]) }], [{ name: 'probabilities', classCount: 3 }]);
  const bin = await a.inject({ method: 'POST', url: INFER, headers: { 'inference-header-content-length': String(jsonSize) }, payload: body });
  t.equal(bin.statusCode, 200, bin.body);
  const out = parseTritonResponse(bin.headers['inference-header-content-length'] as string, bin.rawPayload).outputs.get('probabilities')!;
  t.same(out.values, cls.data, 'binary BYTES in, binary BYTES classification out: the same strings');
});

t.test('classification on logits gives "value:index:label" with the logit values (Triton)', async (t) => {
  const { a } = await app();
  const r = await a.inject({ method: 'POST', url: INFER, payload: { inputs: [fp32Input([3])], outputs: [{ name: 'logits', parameters: { classification: 3 } }] } });
  t.same(r.json().outputs[0], { name: 'logits', datatype: 'BYTES', shape: [1, 3], data: ['0:3:label3', '-1:2:label2', '-1:4:label4'] });
  const p = await a.inject({ method: 'POST', url: INFER, payload: { inputs: [fp32Input([3])], outputs: [{ name: 'probabilities' }] } });
  const probs = p.json().outputs[0].data as number[];
  t.equal(probs.length, FAKE_CLASSES);
  t.ok(Math.abs(probs.reduce((s, v) => s + v, 0) - 1) < 1e-5, 'probabilities add up to 1');
});

const input1 = fp32Input([1]);
const v2Bad: { name: string; req: () => InjectOptions; status?: number; code?: string; match?: RegExp }[] = [
  { name: 'unknown output', req: () => ({ payload: { inputs: [input1], outputs: [{ name: 'probs' }] } }), match: /unknown output "probs"/ },
  { name: 'input name does not match', req: () => ({ payload: { inputs: [{ ...input1, name: 'pixels' }] } }), match: /unknown input "pixels"/ },
  { name: 'datatype does not match the input', req: () => ({ payload: { inputs: [{ ...input1, datatype: 'BYTES' }] } }), match: /must be FP32/ },
  { name: 'parameters of the wrong type: classification', req: () => ({ payload: { inputs: [input1], outputs: [{ name: 'logits', parameters: { classification: '3' } }] } }), match: /classification/ },
  { name: 'parameters of the wrong type: binary_data', req: () => ({ payload: { inputs: [input1], outputs: [{ name: 'logits', parameters: { binary_data: 'yes' } }] } }), match: /binary_data/ },
  { name: 'parameters of the wrong type: binary_data_output', req: () => ({ payload: { inputs: [input1], parameters: { binary_data_output: 1 } } }), match: /binary_data_output/ },
  { name: 'parameters of the wrong type: a nested object', req: () => ({ payload: { inputs: [input1], parameters: { custom: { a: 1 } } } }), match: /string, number or boolean/ },
  { name: 'parameters not an object', req: () => ({ payload: { inputs: [input1], parameters: [1] } }) },
  { name: 'negative binary_data_size', req: () => ({ payload: { inputs: [{ ...input1, data: undefined, parameters: { binary_data_size: -4 } }] } }) },
  { name: 'FP32 overflow (1e39 is Infinity as float32)', req: () => ({ payload: { inputs: [{ ...input1, data: tensor([1]).map((v, i) => (i === 5 ? 1e39 : v)) }] } }), match: /element 5 .*not a finite FP32/ },
  { name: 'no inputs', req: () => ({ payload: {} }), match: /missing "inputs"/ },
  { name: 'two inputs', req: () => ({ payload: { inputs: [input1, input1] } }), match: /exactly one input/ },
  { name: 'shape not integers', req: () => ({ payload: { inputs: [{ ...input1, shape: [1, 3, 4, 4.5] }] } }) },
  { name: 'wrong shape', req: () => ({ payload: { inputs: [{ ...input1, shape: [1, 3, 5, 4] }] } }), match: /shape must be/ },
  { name: 'N > MAX_BATCH', req: () => ({ payload: { inputs: [{ ...input1, shape: [9, 3, 4, 4] }] } }), match: /MAX_BATCH/ },
  { name: 'short data', req: () => ({ payload: { inputs: [{ ...input1, data: [1, 2, 3] }] } }) },
  { name: 'classification on a BYTES output', req: () => ({ payload: { inputs: [input1], outputs: [{ name: 'labels', parameters: { classification: 2 } }] } }), match: /FP32 output/ },
  { name: 'classification > classes', req: () => ({ payload: { inputs: [input1], outputs: [{ name: 'logits', parameters: { classification: 11 } }] } }), match: /1\.\.10/ },
  { name: 'an output twice', req: () => ({ payload: { inputs: [input1], outputs: [{ name: 'logits' }, { name: 'logits' }] } }), match: /twice/ },
  { name: 'data and binary_data_size', req: () => ({ payload: { inputs: [{ ...input1, parameters: { binary_data_size: 192 } }] } }), match: /both/ },
  { name: 'BYTES data not base64', req: () => ({ payload: { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: ['%%%'] }] } }), code: 'INVALID_BASE64' },
  { name: 'BYTES image corrupt', req: () => ({ payload: { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [Buffer.from('BAD').toString('base64')] }] } }), code: 'CORRUPT_IMAGE' },
  { name: 'BYTES not an image', req: () => ({ payload: { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [Buffer.from('hello').toString('base64')] }] } }), status: 415, code: 'UNSUPPORTED_IMAGE' },
  { name: 'image shape [1,2]', req: () => ({ payload: { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1, 2], data: [b64(1), b64(2)] }] } }), match: /\[N\] or \[N,1\]/ },
  { name: 'text/plain body', req: () => ({ headers: { 'content-type': 'text/plain' }, payload: 'hi' }), status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'not JSON', req: () => ({ headers: { 'content-type': 'application/json' }, payload: '{"inputs":' }), code: 'INVALID_JSON' },
  ...binaryBad(),
];

function binaryBad(): typeof v2Bad {
  const raw = fp32Bytes(tensor([1]));
  const { body, jsonSize } = tritonRequest([{ name: 'input', shape: [1, 3, 4, 4], datatype: 'FP32', raw }]);
  const hdr = (n: number | string) => ({ 'inference-header-content-length': String(n) });
  const inf = Buffer.from(Float32Array.of(Infinity).buffer);
  const withInf = Buffer.concat([body.subarray(0, jsonSize), inf, raw.subarray(4)]);
  return [
    { name: 'binary: header length past the body', req: () => ({ headers: hdr(body.length + 1), payload: body }), match: /Inference-Header-Content-Length/ },
    { name: 'binary: header length not a number', req: () => ({ headers: hdr('12x'), payload: body }) },
    { name: 'binary: fewer bytes than binary_data_size', req: () => ({ headers: hdr(jsonSize), payload: body.subarray(0, body.length - 4) }), match: /binary_data_size/ },
    { name: 'binary: more bytes than binary_data_size', req: () => ({ headers: hdr(jsonSize), payload: Buffer.concat([body, Buffer.alloc(4)]) }) },
    { name: 'binary: bytes nobody claims', req: () => ({ headers: hdr(Buffer.byteLength(JSON.stringify({ inputs: [input1] }))), payload: Buffer.concat([Buffer.from(JSON.stringify({ inputs: [input1] })), Buffer.alloc(8)]) }), match: /no input claims/ },
    { name: 'binary: Infinity in the FP32 bytes', req: () => ({ headers: hdr(jsonSize), payload: withInf }), match: /not a finite FP32/ },
  ];
}

for (const c of v2Bad) {
  t.test(`v2 error: ${c.name}`, async (t) => {
    const { a } = await app();
    const req = c.req();
    const r = await a.inject({ method: 'POST', url: INFER, ...req });
    t.equal(r.statusCode, c.status ?? 400, r.body);
    const body = r.json();
    t.type(body.error, 'string', 'the spec\'s {"error": "<message>"}');
    t.equal(body.error, body.message);
    t.equal(body.code, c.code ?? (r.statusCode === 400 ? 'INVALID_INFER_REQUEST' : body.code));
    if (c.match) t.match(body.error, c.match);
    t.ok(body.error.length < 300, 'a short message');
    const ok = await a.inject({ method: 'POST', url: INFER, payload: { inputs: [fp32Input([4])], outputs: [{ name: 'labels' }] } });
    t.same(ok.json().outputs[0].data, ['label4'], 'still serving afterwards');
  });
}

t.test('v2 errors are counted as client errors in /metrics', async (t) => {
  const { a } = await app();
  await a.inject({ method: 'POST', url: INFER, payload: { inputs: [{ ...input1, name: 'x' }] } });
  await a.inject({ method: 'POST', url: INFER, payload: { inputs: 'x' } });
  const text = (await a.inject({ url: '/metrics' })).body;
  t.match(text, /inference_requests_total\{endpoint="v2_infer",outcome="client_error"\} 2/);
});
