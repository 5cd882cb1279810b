/**
 * Dynamic batching with the real model over HTTP: concurrent requests with different images are
 * coalesced (the batch-size histogram shows batches > 1) and each gets its own answer (equal to
 * a single-image forward). Then a burst past QUEUE_LIMIT gets 503 + Retry-After and the server
 * recovers.
 */
import t from 'tap';
import { makeImage } from './helpers/images.js';
import { startServer } from './helpers/server.js';
import { softmaxTopk } from '../src/predictions.js';

// queueLimit 4 + maxBatch 4: at most 8 images admitted at once (see InferenceService.admit).
// One instance: requests that arrive while it computes must form batches (with two, a lone
// request often finds a free instance; instances have their own tests).
const server = await startServer({ maxBatch: 4, queueLimit: 4, batchWindowMs: 20, instances: 1 });
t.teardown(() => server.close());
const backend = server.app.ctx.service!.backend;

interface Reply {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}
/** POST JSON and read the whole body at once (an unread body can be cut by the keep-alive timeout). */
const post = async (path: string, body: unknown): Promise<Reply> => {
  const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, headers: r.headers, body: await r.json() };
};

async function metric(name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) if (line.startsWith(name)) out.set(line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1)));
  return out;
}

const N = 8;
const images = await Promise.all(Array.from({ length: N }, (_, i) => makeImage(i % 2 ? 'png' : 'jpeg', { seed: 100 + i, width: 320, height: 240 })));
const tensors = await Promise.all(images.map((img) => backend.preprocess(img)));
const single: Float32Array[] = [];
for (const x of tensors) single.push((await backend.forward(x, 1)).logits); // one at a time: batch of 1

t.test('the expected answers differ per image (so a mix-up would be caught)', async (t) => {
  const firstDiff = single.slice(1).map((l) => Math.max(...l.map((v, i) => Math.abs(v - single[0]![i]!))));
  t.ok(firstDiff.every((d) => d > 1e-3), `logits differ between images: ${firstDiff.map((d) => d.toFixed(4))}`);
});

t.test('concurrent v2 requests: each gets its own logits, batches > 1 happen', async (t) => {
  const before = await metric('inference_batch_size');
  const responses = await Promise.all(
    tensors.map((x) => post('/v2/models/densenet121/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 224, 224], data: Array.from(x) }] })),
  );
  for (let i = 0; i < N; i++) {
    t.equal(responses[i]!.status, 200);
    const got = responses[i]!.body.outputs[0].data as number[];
    const diff = Math.max(...got.map((v, j) => Math.abs(v - single[i]![j]!)));
    t.ok(diff < 1e-3, `image ${i}: max logit diff vs its single forward ${diff}`);
  }
  const after = await metric('inference_batch_size');
  const count = after.get('inference_batch_size_count')! - (before.get('inference_batch_size_count') ?? 0);
  const ones = after.get('inference_batch_size_bucket{le="1"}')! - (before.get('inference_batch_size_bucket{le="1"}') ?? 0);
  t.ok(count > 0 && count < N, `${N} images ran in ${count} forwards`);
  t.ok(count - ones > 0, `${count - ones} forwards had more than one image`);
});

t.test('concurrent /predict requests: each gets the top-5 of its own single forward', async (t) => {
  const responses = await Promise.all(images.map((img) => post('/predict', { image: img.toString('base64'), topk: 5 })));
  for (let i = 0; i < N; i++) {
    t.equal(responses[i]!.status, 200);
    const body = responses[i]!.body as { predictions: { class_id: number; confidence: number }[] };
    const want = softmaxTopk(single[i]!, 5, backend.card.labels);
    t.same(body.predictions.map((p) => p.class_id), want.map((p) => p.class_id), `image ${i} classes`);
  }
});

t.test('a burst past QUEUE_LIMIT: 503 + Retry-After, counted, then recovery', async (t) => {
  const img = images[0]!.toString('base64');
  const burst = await Promise.all(Array.from({ length: 20 }, () => post('/predict', { image: img, topk: 1 })));
  const statuses = burst.map((r) => r.status);
  const rejected = burst.filter((r) => r.status === 503);
  t.ok(rejected.length > 0, `some rejected: ${statuses.join(',')}`);
  t.ok(statuses.includes(200), 'some served');
  t.ok(statuses.every((s) => s === 200 || s === 503), 'nothing else');
  for (const r of rejected) {
    t.match(r.headers.get('retry-after'), /^\d+$/, 'Retry-After in seconds');
    t.equal(r.body.code, 'QUEUE_FULL');
  }
  const counted = (await metric('inference_rejected_total')).get('inference_rejected_total{reason="queue_full"}');
  t.ok((counted ?? 0) >= rejected.length, `inference_rejected_total{reason="queue_full"} = ${counted}`);
  const again = await post('/predict', { image: img, topk: 1 });
  t.equal(again.status, 200, 'serves again after the burst');
  t.equal((await metric('inference_queue_depth')).get('inference_queue_depth'), 0, 'queue drained');
});
