/**
 * The real model over real HTTP: multipart uploads of real image files (made here), JSON base64,
 * raw bodies and v2 infer (JSON, binary tensor data sent byte for byte as tritonclient does, and
 * encoded images), each answer checked against a direct preprocess + single forward or /predict.
 */
import t, { type Test } from 'tap';
import { makeImage } from './helpers/images.js';
import { startServer } from './helpers/server.js';
import { bytesTensor, fp32Bytes, parseTritonResponse, rawHttp, tritonHttpBytes, tritonRequest } from './helpers/triton.js';
import { softmaxTopk } from '../src/predictions.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (r: Response | Promise<Response>): Promise<any> => (await r).json();

const server = await startServer({ maxBatch: 4 });
t.teardown(() => server.close());
const backend = server.app.ctx.service!.backend;
const labels = backend.card.labels;

async function expected(img: Buffer, k = 5) {
  const tensor = await backend.preprocess(img);
  const { logits } = await backend.forward(tensor, 1);
  return { tensor, logits, top: softmaxTopk(logits, k, labels) };
}

function sameTop(t: Test, got: { class_id: number; confidence: number }[], want: { class_id: number; confidence: number }[]) {
  t.same(got.map((p) => p.class_id), want.map((p) => p.class_id), 'same classes, same order');
  got.forEach((p, i) => t.ok(Math.abs(p.confidence - want[i]!.confidence) <= 2e-4, `confidence ${p.confidence} ~ ${want[i]!.confidence}`));
}

t.test('GET / over HTTP shows the real model', async (t) => {
  const info = await json(fetch(`${server.url}/`));
  t.equal(info.model.name, 'densenet121');
  t.type(info.model.libtorch_version, 'string');
  t.match(info.model.weights, /\S/);
  t.equal(info.model.num_classes, 1000);
  t.same(info.model.input_shape, [3, 224, 224]);
});

t.test('multipart: one JPEG file from disk-like bytes', async (t) => {
  const img = await makeImage('jpeg', { seed: 11 });
  const want = await expected(img);
  const fd = new FormData();
  fd.append('photo', new Blob([img], { type: 'image/jpeg' }), 'photo.jpg');
  const res = await fetch(`${server.url}/predict`, { method: 'POST', body: fd });
  t.equal(res.status, 200);
  t.ok(res.headers.get('x-request-id'));
  const body = await json(res);
  t.equal(body.predictions.length, 5);
  sameTop(t, body.predictions, want.top);
  t.equal(body.model_variant, backend.card.variant);
  t.equal(body.batch_size, 1);
});

t.test('multipart: several formats in one request, results in order', async (t) => {
  const kinds = ['png', 'webp', 'gray', 'jpeg-exif6'] as const;
  const imgs = await Promise.all(kinds.map((k, i) => makeImage(k, { seed: 20 + i })));
  const fd = new FormData();
  imgs.forEach((img, i) => fd.append(`file${i}`, new Blob([img]), `${kinds[i]}.img`));
  fd.append('topk', '3');
  const res = await fetch(`${server.url}/predict`, { method: 'POST', body: fd });
  t.equal(res.status, 200);
  const body = await json(res);
  t.equal(body.results.length, 4);
  for (let i = 0; i < imgs.length; i++) sameTop(t, body.results[i].predictions, (await expected(imgs[i]!, 3)).top);
});

t.test('JSON base64 and raw image/* give the same answer as multipart', async (t) => {
  const img = await makeImage('png', { seed: 5 });
  const want = await expected(img);
  const viaJson = await json(fetch(`${server.url}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ image: img.toString('base64') }) }));
  sameTop(t, viaJson.predictions, want.top);
  const raw = await json(fetch(`${server.url}/predict`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: img }));
  sameTop(t, raw.predictions, want.top);
  const probe = await json(fetch(`${server.url}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ image: img.toString('base64'), batch_size: 4 }) }));
  t.equal(probe.batch_size, 4);
  sameTop(t, probe.predictions, want.top);
});

t.test('v2 infer: logits equal a direct forward', async (t) => {
  const img = await makeImage('jpeg', { seed: 7 });
  const want = await expected(img);
  const res = await fetch(`${server.url}/v2/models/densenet121/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 224, 224], data: Array.from(want.tensor) }] }),
  });
  t.equal(res.status, 200);
  const body = await json(res);
  const logits = body.outputs[0].data as number[];
  t.equal(logits.length, 1000);
  let maxDiff = 0;
  logits.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - want.logits[i]!))));
  t.ok(maxDiff < 1e-4, `max logit diff ${maxDiff}`);
  t.equal(body.outputs[1].data[0], want.top[0]!.class_name);
});

t.test('v2 binary tensor data, byte for byte as tritonclient sends it: the same logits as the JSON path', async (t) => {
  const img = await makeImage('jpeg', { seed: 9 });
  const { tensor } = await expected(img);
  const { host } = new URL(server.url);
  const { body, jsonSize } = tritonRequest([{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', raw: fp32Bytes(tensor) }]);
  t.equal(body.length - jsonSize, 602_112, 'one 3x224x224 FP32 tensor is 602,112 bytes in binary');
  const res = await rawHttp(server.url, tritonHttpBytes(host, '/v2/models/densenet121/infer', body, jsonSize));
  t.equal(res.status, 200, res.body.toString('utf8', 0, 300));
  t.equal(res.headers['content-type'], 'application/octet-stream');
  const binLogits = parseTritonResponse(res.headers['inference-header-content-length'], res.body).outputs.get('logits')!;
  t.same(binLogits.shape, [1, 1000]);
  const viaJson = await json(
    fetch(`${server.url}/v2/models/densenet121/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 224, 224], data: Array.from(tensor) }], outputs: [{ name: 'logits' }] }),
    }),
  );
  const jsonLogits = viaJson.outputs[0].data as number[];
  let maxDiff = 0;
  (binLogits.values as number[]).forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - jsonLogits[i]!))));
  t.equal(maxDiff, 0, 'binary and JSON logits are identical');
});

t.test('v2 BYTES input with a JPEG (binary, and base64 in JSON): the same top-5 as /predict', async (t) => {
  const img = await makeImage('jpeg', { seed: 31 });
  const fd = new FormData();
  fd.append('file', new Blob([img], { type: 'image/jpeg' }), 'a.jpg');
  const viaPredict = await json(fetch(`${server.url}/predict`, { method: 'POST', body: fd }));
  const top5 = viaPredict.predictions.map((p: { class_id: number }) => p.class_id);
  const { body, jsonSize } = tritonRequest([{ name: 'image', shape: [1], datatype: 'BYTES', raw: bytesTensor([img]) }], [{ name: 'probabilities', classCount: 5 }]);
  const res = await rawHttp(server.url, tritonHttpBytes(new URL(server.url).host, '/v2/models/densenet121/versions/1/infer', body, jsonSize));
  t.equal(res.status, 200, res.body.toString('utf8', 0, 300));
  const cls = parseTritonResponse(res.headers['inference-header-content-length'], res.body).outputs.get('probabilities')!;
  t.same(cls.shape, [1, 5]);
  t.same((cls.values as string[]).map((s) => Number(s.split(':')[1])), top5, 'binary BYTES: same classes, same order');
  (cls.values as string[]).forEach((s, i) => t.ok(Math.abs(Number(s.split(':')[0]) - viaPredict.predictions[i].confidence) < 1e-4, s));
  const viaJson = await json(
    fetch(`${server.url}/v2/models/densenet121/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [img.toString('base64')] }], outputs: [{ name: 'logits', parameters: { classification: 5 } }] }),
    }),
  );
  t.same((viaJson.outputs[0].data as string[]).map((s) => Number(s.split(':')[1])), top5, 'base64 in JSON: same classes, same order');
  t.equal((viaJson.outputs[0].data as string[])[0]!.split(':')[2], viaPredict.predictions[0].class_name, 'with the label');
});
