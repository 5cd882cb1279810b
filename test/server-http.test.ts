/**
 * The real model over real HTTP: multipart uploads of real image files (made here), JSON base64,
 * raw bodies and v2 infer, each answer checked against a direct preprocess + single forward.
 */
import t, { type Test } from 'tap';
import { makeImage } from './helpers/images.js';
import { startServer } from './helpers/server.js';
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
